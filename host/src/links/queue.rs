//! Queue links (`delivery = "queue"`): an import whose calls are handed to a
//! JetStream stream, one way and at least once, and served later by the
//! target's `queue` binding for the same function, on whichever host runs it.
//!
//! The caller's call returns as soon as the stream has stored the message
//! (the publish ack), so a slow or stopped consumer never slows the caller.
//! The message is what a `queue` binding expects: a JSON object of the
//! parameters by name, with the caller's `traceparent`. Functions of a
//! queued interface return nothing (checked at load, [`check`]): there is
//! no one to return a result to.
//!
//! The stream is created on first use if missing, with the same
//! configuration as the binding creates it ([`stream_config`]), so a call
//! made before the consumer's host starts is kept, not lost.

use super::link_span;
use crate::bus::Bus;
use crate::codec::json;
use crate::manifest::LinkSpec;
use crate::metrics::Counter;
use crate::runtime::component::Host;
use crate::runtime::context::CallContext;
use crate::runtime::fault::{Fault, FaultKind};
use crate::runtime::state::call_cx;
use crate::runtime::trace;
use async_nats::HeaderMap;
use async_nats::jetstream::stream;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::OnceCell;
use tracing::Instrument as _;
use wasmtime::component::types::{ComponentInstance, ComponentItem};
use wasmtime::component::{Linker, Val};
use wasmtime::{Engine, Result};

/// Where a queue link delivers the calls of one function: the stream of
/// the target's `queue` binding for it (the binding's medium builds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTarget {
    /// The JetStream stream.
    pub stream: String,
    /// The subject the stream captures, where calls are published.
    pub subject: String,
    /// Where the binding's dead letters go.
    pub dead_letter: String,
    /// The most bytes the stream keeps.
    pub max_bytes: u64,
}

/// The stream a queue binding reads, as both the binding and a queue link
/// create it when missing.
/// Bounded by `max_bytes`: a full queue refuses new messages rather than
/// drop accepted ones.
pub fn stream_config(target: &QueueTarget) -> stream::Config {
    stream::Config {
        name: target.stream.clone(),
        subjects: vec![target.subject.clone()],
        max_bytes: i64::try_from(target.max_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::New,
        num_replicas: crate::bus::replicas(),
        ..Default::default()
    }
}

/// The dead-letter stream of `target`: as large as the queue, dropping the
/// oldest letters when full.
pub fn dead_letter_config(target: &QueueTarget) -> stream::Config {
    stream::Config {
        name: format!("{}_DEAD", target.stream),
        subjects: vec![target.dead_letter.clone()],
        max_bytes: i64::try_from(target.max_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::Old,
        num_replicas: crate::bus::replicas(),
        ..Default::default()
    }
}

/// Checks queue link `link` (position `index`) against its interface type:
/// every function returns nothing and has a `queue` binding of the target
/// among `bindings` (the target's queue bindings by function name). The
/// problems name the link.
pub fn check(
    engine: &Engine,
    index: usize,
    link: &LinkSpec,
    import: &ComponentInstance,
    bindings: &BTreeMap<String, QueueTarget>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, item) in import.exports(engine) {
        let ComponentItem::ComponentFunc(func) = item.ty else {
            continue;
        };
        if func.results().len() > 0 {
            problems.push(format!(
                "links[{index}].delivery: function `{name}` of `{}` returns a value, but a queued call returns nothing to its caller",
                link.import
            ));
        }
        if !bindings.contains_key(name) {
            problems.push(format!(
                "links[{index}].delivery: `{}` has no `queue` binding for `{}#{name}` to deliver to",
                link.to, link.import
            ));
        }
    }
    problems
}

/// One function of a queue link.
struct QueuedFunc {
    bus: Bus,
    interface: String,
    function: String,
    target: Arc<str>,
    /// The target's binding for this function: its subject and stream.
    binding: QueueTarget,
    /// The parameters' names, in order.
    names: Vec<String>,
    /// Set once the stream is known to exist.
    stream: OnceCell<()>,
    calls: Counter,
}

/// Defines every function of `interface` (typed `import`) in `linker` as a
/// publish to the target's queue binding for it (`bindings`, by function
/// name), counted in `calls`.
pub fn define_queued(
    linker: &mut Linker<Host>,
    engine: &Engine,
    interface: &str,
    import: &ComponentInstance,
    (target, calls): (Arc<str>, Counter),
    bus: &Bus,
    bindings: &BTreeMap<String, QueueTarget>,
) -> Result<()> {
    let mut root = linker.root();
    let mut instance = root.instance(interface)?;
    for (name, item) in import.exports(engine) {
        let ComponentItem::ComponentFunc(func) = item.ty else {
            continue;
        };
        let Some(binding) = bindings.get(name) else {
            wasmtime::bail!("`{target}` has no queue binding for `{interface}#{name}`");
        };
        let queued = Arc::new(QueuedFunc {
            bus: bus.clone(),
            interface: interface.to_string(),
            function: name.to_string(),
            target: target.clone(),
            binding: binding.clone(),
            names: func.params().map(|(n, _)| n.to_string()).collect(),
            stream: OnceCell::new(),
            calls: calls.clone(),
        });
        instance.func_new_async(name, move |mut store, _ty, params, _results| {
            let queued = queued.clone();
            queued.calls.inc();
            let span = link_span(
                &store.data().component,
                &queued.target,
                (&queued.interface, &queued.function),
                "queue",
            );
            let cx = call_cx(&mut store).under(&span);
            Box::new(async move {
                let result = queued.publish(&cx, params).instrument(span.clone()).await;
                if let Err(fault) = &result {
                    trace::set_failed(&span, fault);
                }
                result.map_err(wasmtime::Error::from)
            })
        })?;
    }
    Ok(())
}

impl QueuedFunc {
    /// Stores one call in the stream, within the caller's deadline.
    async fn publish(&self, cx: &CallContext, params: &[Val]) -> Result<(), Fault> {
        let fault = |kind| Fault::new(self.target.clone(), kind);
        let host = |message: String| fault(FaultKind::Host { message });
        // Fail at once rather than wait out the deadline for a reconnect.
        let client = self.bus.client();
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(fault(FaultKind::Unavailable));
        }
        let budget = cx.deadline.saturating_duration_since(Instant::now());
        let payload: serde_json::Map<String, serde_json::Value> = self
            .names
            .iter()
            .cloned()
            .zip(params.iter().map(json::to_json))
            .collect();
        let payload = serde_json::to_vec(&payload).map_err(|e| host(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(trace::TRACEPARENT, cx.traceparent().as_str());
        let js = crate::bus::jetstream(client);
        let stored = async {
            self.stream
                .get_or_try_init(|| async {
                    js.get_or_create_stream(stream_config(&self.binding))
                        .await
                        .map(|_| ())
                        .map_err(|e| host(format!("cannot create stream {}: {e}", self.binding.stream)))
                })
                .await?;
            let ack = js
                .publish_with_headers(self.binding.subject.clone(), headers, payload.into())
                .await
                .map_err(|e| host(format!("cannot queue the call on {}: {e}", self.binding.subject)))?;
            ack.await
                .map(|_| ())
                .map_err(|e| host(format!("stream {} did not store the call: {e}", self.binding.stream)))
        };
        tokio::time::timeout_at(cx.deadline.into(), stored)
            .await
            .map_err(|_| fault(FaultKind::deadline(budget)))?
    }
}
