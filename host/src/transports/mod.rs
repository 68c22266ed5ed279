//! Transports: the media that deliver calls to components.
//!
//! Every medium has the same shape ([`Medium`]): it is bound at start-up (so a
//! busy port fails `membrane up` before anything serves) and then serves until
//! shutdown, handing each call to the dispatcher in [`crate::runtime`]. A new
//! medium is one new file here plus a manifest variant. Transports know
//! nothing of wasmtime; they map a [`crate::runtime::fault::Fault`] to their
//! own error form.

pub mod http;
pub mod http_rpc;
pub mod nats;
pub mod queue;

use crate::manifest::{BindingSpec, Manifest};
use crate::runtime::Runtime;
use crate::runtime::fault::{CallError, Fault, FaultKind};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A bound medium, ready to serve.
pub trait Medium: Send {
    /// A short description for logs, e.g. `http://127.0.0.1:8080 -> gateway`.
    fn describe(&self) -> String;
    /// Serves until `shutdown` is cancelled, then lets in-flight calls finish.
    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// One medium to bind, named by its whole configuration: a reconcile keeps a
/// running medium whose key is unchanged and rebinds only what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The medium's identity (its bindings' configuration).
    pub key: String,
    /// The component(s) it serves.
    pub components: Vec<String>,
    /// The manifest bindings it serves, by index; http-rpc bindings on one
    /// address share one server.
    bindings: Vec<usize>,
}

/// The media that serve the components in `here`.
pub fn plan(manifest: &Manifest, here: &BTreeSet<String>) -> Vec<Planned> {
    let mut planned = Vec::new();
    let mut rpc: BTreeMap<SocketAddr, Vec<usize>> = BTreeMap::new();
    for (i, binding) in manifest.bindings.iter().enumerate() {
        if !here.contains(binding.component()) {
            continue; // served on the hosts that run the component
        }
        match binding {
            BindingSpec::HttpRpc(spec) => rpc.entry(spec.address).or_default().push(i),
            _ => planned.push(Planned {
                key: format!("{binding:?}"),
                components: vec![binding.component().to_string()],
                bindings: vec![i],
            }),
        }
    }
    for (_, bindings) in rpc {
        let specs: Vec<&BindingSpec> = bindings.iter().map(|&i| &manifest.bindings[i]).collect();
        let mut components: Vec<String> = specs.iter().map(|b| b.component().to_string()).collect();
        components.sort();
        components.dedup();
        planned.push(Planned {
            key: format!("{specs:?}"),
            components,
            bindings,
        });
    }
    planned
}

/// Binds one planned medium. `nats` is the host's NATS connection, present
/// when a binding needs one.
pub async fn bind(
    planned: &Planned,
    manifest: &Manifest,
    runtime: &Arc<Runtime>,
    nats: Option<&async_nats::Client>,
) -> anyhow::Result<Box<dyn Medium>> {
    let need_nats = || nats.ok_or_else(|| anyhow::anyhow!("a NATS binding needs a NATS connection"));
    let i = planned.bindings[0];
    Ok(match &manifest.bindings[i] {
        BindingSpec::Http(spec) => Box::new(http::HttpMedium::bind(i, spec, runtime.clone()).await?),
        BindingSpec::HttpRpc(_) => Box::new(http_rpc::HttpRpcMedium::bind(manifest, &planned.bindings, runtime).await?),
        BindingSpec::Nats(spec) => {
            Box::new(nats::NatsMedium::bind(i, spec, &manifest.app.name, need_nats()?.clone(), runtime.clone()).await?)
        }
        BindingSpec::Queue(spec) => Box::new(
            queue::QueueMedium::bind(i, spec, &manifest.app.name, need_nats()?.clone(), runtime.clone()).await?,
        ),
    })
}

/// Binds every binding of `manifest` whose component runs in `runtime`.
/// Fails on the first that cannot bind.
pub async fn bind_all(
    manifest: &Manifest,
    runtime: &Arc<Runtime>,
    nats: Option<&async_nats::Client>,
) -> anyhow::Result<Vec<Box<dyn Medium>>> {
    let here = runtime.loaded().iter().map(|c| c.name.to_string()).collect();
    let mut media = Vec::new();
    for planned in plan(manifest, &here) {
        media.push(bind(&planned, manifest, runtime, nats).await?);
    }
    Ok(media)
}

/// How long a stopping medium waits for calls in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How many more messages a draining subscription accepts (see
/// [`serve_subscription`]).
const DRAIN_SLACK: u64 = 1000;
/// A draining subscription idle this long is closed.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// Serves a NATS subscription: each message to `handle` in its own task,
/// until `shutdown`. Then it drains, so that stopping drops no call: NATS
/// stops routing to it (other members of the queue group take over), it
/// handles every message already sent to it, and it waits for the calls in
/// flight.
///
/// The drain is `UNSUB <sid> <received + DRAIN_SLACK>`: the server stops after
/// that many messages in all, and the client keeps the subscription until
/// it has them all, so none that is already on the wire is lost. (async-nats's
/// own `drain` drops the subscription before such messages arrive.) Under
/// load the slack fills in moments; when traffic stops first, the
/// subscription is closed after [`DRAIN_IDLE`] of silence.
pub async fn serve_subscription<F, Fut>(
    mut subscriber: async_nats::Subscriber,
    shutdown: CancellationToken,
    label: String,
    handle: F,
) where
    F: Fn(async_nats::Message) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut in_flight = tokio::task::JoinSet::new();
    let mut received: u64 = 0;
    loop {
        tokio::select! {
            message = subscriber.next() => match message {
                Some(message) => {
                    received += 1;
                    in_flight.spawn(handle(message));
                    while in_flight.try_join_next().is_some() {}
                }
                None => break,
            },
            _ = shutdown.cancelled() => {
                if subscriber.unsubscribe_after(received + DRAIN_SLACK).await.is_ok() {
                    loop {
                        match tokio::time::timeout(DRAIN_IDLE, subscriber.next()).await {
                            Ok(Some(message)) => {
                                in_flight.spawn(handle(message));
                            }
                            Ok(None) => break,
                            Err(_) => {
                                let _ = subscriber.unsubscribe().await;
                                break;
                            }
                        }
                    }
                }
                break;
            }
        }
    }
    let drain = async { while in_flight.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!("{label}: gave up waiting for calls in flight");
    }
}

/// The status code (HTTP semantics, also used in NATS error headers) and the
/// JSON error body of a fault. Every medium reports faults this way.
pub fn fault_reply(fault: &Fault) -> (u16, serde_json::Value) {
    let kind = fault_kind(&fault.kind);
    let status = match kind {
        "deadline" => 504,
        "capacity" | "no-responders" => 503,
        "decode" => 502,
        _ => 500,
    };
    let body = serde_json::json!({
        "error": fault.to_string(),
        "component": &*fault.component,
        "kind": kind,
    });
    (status, body)
}

/// The short name of a fault kind, as it appears in error bodies and headers.
pub fn fault_kind(kind: &FaultKind) -> &str {
    match kind {
        FaultKind::Trap(_) => "trap",
        FaultKind::Deadline(_) => "deadline",
        FaultKind::MemoryExhausted { .. } => "memory",
        FaultKind::AtCapacity { .. } => "capacity",
        FaultKind::Host(_) => "host",
        FaultKind::NoResponders => "no-responders",
        FaultKind::Decode(_) => "decode",
        FaultKind::Remote { kind, .. } => kind,
    }
}

/// [`fault_reply`] for any failed function call: a request that does not fit
/// the function's types is a 400 with `kind: "bad-request"` and the path.
pub fn call_error_reply(error: &CallError) -> (u16, serde_json::Value) {
    match error {
        CallError::BadRequest(e) => {
            let mut body = e.to_json();
            body["kind"] = "bad-request".into();
            (400, body)
        }
        CallError::Fault(f) => fault_reply(f),
    }
}
