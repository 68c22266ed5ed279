//! Remote links: an import served by a component on another host, over NATS.
//!
//! Caller side ([`define_remote`]): the import's host function encodes the
//! arguments with the wire codec, sends a NATS request to the function's
//! subject with the caller's deadline and trace in headers (the `traceparent`
//! names the call's `link` span, so the serving host's span becomes its
//! child), and decodes the reply. No responders is an immediate [`FaultKind::NoResponders`]; a slow
//! target fails at the deadline; a fault on the remote host comes back as
//! the same typed [`Fault`] (a JSON body, marked by [`ERROR_KIND_HEADER`]).
//!
//! This file also owns the protocol both sides share ([`subject`], the
//! headers, [`deadline_from_header`]); the serving side is a service in
//! `transports::rpc`.
//!
//! Subjects: `membrane.<lattice>.rpc.v1.<component>.<interface>.<function>`,
//! with `.` in the interface escaped as `%2E` (and `%` as `%25`).

use super::{chunks, link_span};
use crate::bus::Bus;
use crate::codec::wire;
use crate::metrics::Counter;
use crate::runtime::component::Host;
use crate::runtime::context::CallContext;
use crate::runtime::fault::{Fault, FaultKind};
use crate::runtime::state::call_cx;
use crate::runtime::trace;
use async_nats::HeaderMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument as _;
use wasmtime::component::types::{ComponentInstance, ComponentItem, Type};
use wasmtime::component::{Linker, Val};
use wasmtime::{Engine, Result};

/// Header carrying the caller's deadline, in Unix milliseconds.
pub const DEADLINE_HEADER: &str = "Membrane-Deadline";
/// Header naming the component a remote fault happened in.
pub const COMPONENT_HEADER: &str = "Membrane-Component";
/// Header naming the kind of a failure (`trap`, `deadline`, `bad-request`...);
/// its presence marks an error reply.
pub const ERROR_KIND_HEADER: &str = "Membrane-Error-Kind";
/// Header carrying the W3C trace context: the caller's link span, whose
/// child the serving side's span becomes.
pub const TRACEPARENT_HEADER: &str = crate::runtime::trace::TRACEPARENT;

/// Where a remote link sends its calls.
#[derive(Clone)]
pub struct Lattice {
    /// The host's NATS connection.
    pub bus: Bus,
    /// The lattice name, the subjects' namespace.
    pub name: String,
}

impl Lattice {
    /// The NATS client to use now.
    pub fn client(&self) -> async_nats::Client {
        self.bus.client()
    }
}

struct RemoteFunc {
    lattice: Lattice,
    interface: String,
    function: String,
    /// The link's own deadline (`timeout_ms`), if it sets one.
    timeout: Option<Duration>,
    subject: String,
    target: Arc<str>,
    params: Vec<Type>,
    results: Vec<Type>,
    meter: super::Meter,
    /// Microseconds spent waiting for replies.
    waited: Counter,
}

/// Defines every function of `interface` (typed `import`) in `linker` as a
/// NATS request to component `target` on whichever host runs it, counted and
/// timed in `meter`, its time spent waiting also in `waited`.
pub fn define_remote(
    linker: &mut Linker<Host>,
    engine: &Engine,
    interface: &str,
    import: &ComponentInstance,
    (target, meter, waited): (Arc<str>, super::Meter, Counter),
    (lattice, app): (&Lattice, &str),
    timeout: Option<Duration>,
) -> Result<()> {
    let mut root = linker.root();
    let mut instance = root.instance(interface)?;
    for (name, item) in import.exports(engine) {
        let ComponentItem::ComponentFunc(func) = item.ty else {
            continue;
        };
        let remote = Arc::new(RemoteFunc {
            lattice: lattice.clone(),
            timeout,
            subject: crate::subjects::rpc(&lattice.name, app, &target, interface, name),
            interface: interface.to_string(),
            function: name.to_string(),
            target: target.clone(),
            params: func.params().map(|(_, t)| t).collect(),
            results: func.results().collect(),
            meter: meter.clone(),
            waited: waited.clone(),
        });
        instance.func_new_async(name, move |mut store, _ty, params, results| {
            let remote = remote.clone();
            remote.meter.calls.inc();
            let span = link_span(
                &store.data().component,
                &remote.target,
                (&remote.interface, &remote.function),
                "remote",
            );
            trace::set_attributes(&span, || {
                [("messaging.destination.name", remote.subject.clone().into())]
            });
            // The span travels in the request's `traceparent`.
            let cx = call_cx(&mut store).under(&span);
            Box::new(async move {
                let started = Instant::now();
                let result = remote.call(&cx, params, results).instrument(span.clone()).await;
                let took = started.elapsed();
                remote.waited.add(took.as_micros() as u64);
                remote.meter.seconds.observe(took.as_secs_f64());
                if let Err(fault) = &result {
                    trace::set_failed(&span, fault);
                }
                result.map_err(wasmtime::Error::from)
            })
        })?;
    }
    Ok(())
}

impl RemoteFunc {
    async fn call(&self, cx: &CallContext, params: &[Val], results: &mut [Val]) -> Result<(), Fault> {
        let deadline = match self.timeout {
            Some(timeout) => cx.deadline.min(Instant::now() + timeout),
            None => cx.deadline,
        };
        let fault = |kind| Fault::new(self.target.clone(), kind);
        // Fail at once rather than wait out the deadline for a reconnect.
        let client = self.lattice.client();
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(fault(FaultKind::Unavailable));
        }
        let payload =
            wire::encode(&self.params, params).map_err(|e| fault(FaultKind::Decode { message: e.message }))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(fault(FaultKind::deadline(Duration::ZERO)));
        }
        let mut headers = HeaderMap::new();
        headers.insert(DEADLINE_HEADER, unix_millis(deadline).to_string().as_str());
        headers.insert(TRACEPARENT_HEADER, cx.traceparent().as_str());
        let reply = chunks::request(&client, self.subject.clone(), headers, payload.into(), deadline)
            .await
            .map_err(|e| {
                fault(match e {
                    chunks::Failure::NoResponders => FaultKind::NoResponders,
                    chunks::Failure::TimedOut => FaultKind::deadline(remaining),
                    chunks::Failure::Other(message) => FaultKind::Host { message },
                })
            })?;
        if reply
            .headers
            .as_ref()
            .is_some_and(|h| h.get(ERROR_KIND_HEADER).is_some())
        {
            return Err(remote_fault(&self.target, &reply.payload));
        }
        let values = wire::decode(&self.results, &reply.payload)
            .map_err(|e| fault(FaultKind::Decode { message: e.to_string() }))?;
        for (slot, value) in results.iter_mut().zip(values) {
            *slot = value;
        }
        Ok(())
    }
}

/// `deadline` as Unix milliseconds, for [`DEADLINE_HEADER`].
pub fn unix_millis(deadline: Instant) -> u128 {
    let wall = SystemTime::now() + deadline.saturating_duration_since(Instant::now());
    wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// The fault a remote host sent in an error reply's body. A body that is
/// not one is itself a decode fault of `target`.
pub fn remote_fault(target: &Arc<str>, body: &[u8]) -> Fault {
    serde_json::from_slice::<Fault>(body).unwrap_or_else(|e| {
        Fault::new(
            target.clone(),
            FaultKind::Decode {
                message: format!("an error reply that is not a fault: {e}"),
            },
        )
    })
}

/// The caller's deadline from a request's headers, if it set a valid one.
pub fn deadline_from_header(headers: Option<&HeaderMap>) -> Option<Instant> {
    let millis: u64 = headers?.get(DEADLINE_HEADER)?.as_str().parse().ok()?;
    let wall = UNIX_EPOCH + Duration::from_millis(millis);
    let left = wall.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    Some(Instant::now() + left)
}
