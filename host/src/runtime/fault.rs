//! Typed call failures: what went wrong in which component.
//!
//! Every failed call ends as a [`Fault`] naming the component that failed and a
//! [`FaultKind`] that transports map to their own error form (an HTTP status,
//! later a NATS error header). The innermost fault wins: when `gateway` calls
//! `rater` over a link and `rater` traps, the fault names `rater`.

use std::sync::Arc;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The guest trapped (panic, `unreachable`, bad memory access...).
    Trap(String),
    /// The call ran past its deadline.
    Deadline(Duration),
    /// An instance tried to grow its memory past the cap.
    MemoryExhausted {
        /// The cap, in MiB.
        limit_mib: u64,
    },
    /// All `max_instances` instances are busy; the call was shed at once.
    AtCapacity {
        /// The component's `max_instances`.
        max_instances: u32,
    },
    /// The host could not set up the call (instantiation failed, missing export...).
    Host(String),
    /// A remote link found no host serving the component.
    NoResponders,
    /// Bytes from the wire did not decode as the function's types.
    Decode(String),
    /// A fault reported by the remote host that ran the component, as it
    /// described it (`kind` is the remote fault's kind, e.g. `trap`).
    Remote {
        /// The remote fault's kind.
        kind: String,
        /// The remote fault's full sentence.
        message: String,
    },
}

/// A failed call, naming the culprit component.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Fault {
    /// The component in which the failure happened.
    pub component: Arc<str>,
    /// What happened.
    pub kind: FaultKind,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            // The remote host already named the component in its sentence.
            FaultKind::Remote { message, .. } => f.write_str(message),
            kind => write!(f, "component `{}` {kind}", self.component),
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultKind::Trap(msg) => write!(f, "trapped: {msg}"),
            FaultKind::Deadline(d) => write!(f, "timed out after {} ms", d.as_millis()),
            FaultKind::MemoryExhausted { limit_mib } => {
                write!(f, "exceeded its memory limit of {limit_mib} MiB")
            }
            FaultKind::AtCapacity { max_instances } => {
                write!(f, "is at capacity ({max_instances} instances busy); retry later")
            }
            FaultKind::Host(msg) => write!(f, "could not be called: {msg}"),
            FaultKind::NoResponders => write!(f, "has no responders: no host in the lattice runs it"),
            FaultKind::Decode(msg) => write!(f, "sent bytes that do not decode: {msg}"),
            FaultKind::Remote { message, .. } => f.write_str(message),
        }
    }
}

/// Marker error raised by the epoch callback when a store's deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub(crate) struct DeadlineExceeded;

/// Marker error raised by the limiter when memory growth passes the cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit_mib} MiB exceeded")]
pub(crate) struct MemoryLimitExceeded {
    pub limit_mib: u64,
}

impl Fault {
    /// Classifies a wasmtime error from a call into `component`, whose
    /// deadline budget was `timeout`. A fault raised deeper (in a linked
    /// component) is kept as it is.
    pub fn classify(component: &Arc<str>, timeout: Duration, err: wasmtime::Error) -> Fault {
        if let Some(inner) = err.downcast_ref::<Fault>() {
            return inner.clone();
        }
        let kind = if err.downcast_ref::<DeadlineExceeded>().is_some() {
            FaultKind::Deadline(timeout)
        } else if let Some(m) = err.downcast_ref::<MemoryLimitExceeded>() {
            FaultKind::MemoryExhausted { limit_mib: m.limit_mib }
        } else if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
            FaultKind::Trap(trap.to_string())
        } else {
            FaultKind::Trap(format!("{err:#}"))
        };
        Fault {
            component: component.clone(),
            kind,
        }
    }
}

/// A failed call from a function-level medium: either the request did not fit
/// the function's types (the caller's fault) or the call itself failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The arguments did not decode; nothing was called.
    #[error("bad request: {0}")]
    BadRequest(#[from] crate::codec::json::JsonError),
    /// The call failed.
    #[error(transparent)]
    Fault(#[from] Fault),
}
