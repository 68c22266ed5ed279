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
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A bound medium, ready to serve.
pub trait Medium: Send {
    /// A short description for logs, e.g. `http://127.0.0.1:8080 -> gateway`.
    fn describe(&self) -> String;
    /// Serves until `shutdown` is cancelled, then lets in-flight calls finish.
    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// Binds every binding of `manifest`. Fails on the first that cannot bind.
/// `nats` is the host's NATS connection, present when a binding needs one.
pub async fn bind_all(
    manifest: &Manifest,
    runtime: &Arc<Runtime>,
    nats: Option<&async_nats::Client>,
) -> anyhow::Result<Vec<Box<dyn Medium>>> {
    let mut media: Vec<Box<dyn Medium>> = Vec::new();
    let need_nats = || nats.ok_or_else(|| anyhow::anyhow!("a NATS binding needs a NATS connection"));
    for (i, binding) in manifest.bindings.iter().enumerate() {
        // Bindings of components placed on other hosts are served there.
        if runtime.get(binding.component()).is_none() {
            continue;
        }
        match binding {
            BindingSpec::Http(spec) => media.push(Box::new(http::HttpMedium::bind(i, spec, runtime.clone()).await?)),
            BindingSpec::HttpRpc(_) => {} // grouped by address below
            BindingSpec::Nats(spec) => media.push(Box::new(
                nats::NatsMedium::bind(i, spec, &manifest.app.name, need_nats()?.clone(), runtime.clone()).await?,
            )),
            BindingSpec::Queue(spec) => media.push(Box::new(
                queue::QueueMedium::bind(i, spec, &manifest.app.name, need_nats()?.clone(), runtime.clone()).await?,
            )),
        }
    }
    for server in http_rpc::HttpRpcMedium::bind_all(manifest, runtime).await? {
        media.push(Box::new(server));
    }
    Ok(media)
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
