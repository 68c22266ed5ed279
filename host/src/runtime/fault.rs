//! Typed call failures: what went wrong in which component.
//!
//! Every failed call ends as a [`Fault`] naming the component that failed and a
//! [`FaultKind`]. Both are serde types: a remote host sends the fault itself
//! (JSON), so the caller's side gets the same kind and component back, never a
//! string to match. The innermost fault wins: when `gateway` calls `rater`
//! over a link and `rater` traps, the fault names `rater`, local or remote.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Why a call failed. On the wire: `{"kind": "<kebab-case name>", ..fields}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// The guest trapped (panic, `unreachable`, bad memory access...).
    Trap {
        /// The trap as wasmtime reports it.
        message: String,
    },
    /// The call ran past its deadline.
    Deadline {
        /// The budget it had, in milliseconds.
        timeout_ms: u64,
    },
    /// An instance tried to grow its memory past the cap.
    Memory {
        /// The cap, in MiB.
        limit_mib: u64,
    },
    /// All `max_instances` instances of the component are busy; the call was shed at once.
    Capacity {
        /// The component's `max_instances`.
        max_instances: u32,
    },
    /// The host's instance budget (shared by all its apps) is spent; the call was shed at once.
    HostCapacity {
        /// The host's budget (`membrane up --max-instances`).
        max_instances: u32,
    },
    /// The host could not set up the call (instantiation failed, missing export...).
    Host {
        /// What failed.
        message: String,
    },
    /// The component does not run on the host that got the call.
    NotRunning,
    /// A remote link found no host serving the component.
    NoResponders,
    /// A remote link could not be tried: this host is disconnected from NATS.
    Unavailable,
    /// Bytes from the wire did not decode as the function's types.
    Decode {
        /// Where and why decoding failed.
        message: String,
    },
}

impl FaultKind {
    /// A deadline fault for a budget of `timeout`.
    pub fn deadline(timeout: Duration) -> FaultKind {
        FaultKind::Deadline {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Its wire name (`trap`, `deadline`, ...), as in error bodies and headers.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Trap { .. } => "trap",
            FaultKind::Deadline { .. } => "deadline",
            FaultKind::Memory { .. } => "memory",
            FaultKind::Capacity { .. } => "capacity",
            FaultKind::HostCapacity { .. } => "host-capacity",
            FaultKind::Host { .. } => "host",
            FaultKind::NotRunning => "not-running",
            FaultKind::NoResponders => "no-responders",
            FaultKind::Unavailable => "unavailable",
            FaultKind::Decode { .. } => "decode",
        }
    }
}

/// A failed call, naming the culprit component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("component `{component}` {kind}")]
pub struct Fault {
    /// The component in which the failure happened.
    #[serde(with = "arc_str")]
    pub component: Arc<str>,
    /// What happened.
    #[serde(flatten)]
    pub kind: FaultKind,
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultKind::Trap { message } => write!(f, "trapped: {message}"),
            FaultKind::Deadline { timeout_ms } => write!(f, "timed out after {timeout_ms} ms"),
            FaultKind::Memory { limit_mib } => write!(f, "exceeded its memory limit of {limit_mib} MiB"),
            FaultKind::Capacity { max_instances } => {
                write!(f, "is at capacity ({max_instances} instances busy); retry later")
            }
            FaultKind::HostCapacity { max_instances } => write!(
                f,
                "could not start: the host's {max_instances} instances are all in use; retry later"
            ),
            FaultKind::Host { message } => write!(f, "could not be called: {message}"),
            FaultKind::NotRunning => write!(f, "is not running on this host"),
            FaultKind::NoResponders => write!(f, "has no responders: no host in the lattice runs it"),
            FaultKind::Unavailable => write!(f, "is unreachable: this host is disconnected from NATS"),
            FaultKind::Decode { message } => write!(f, "sent bytes that do not decode: {message}"),
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
    /// Whether it is a refusal for capacity (the component's or the host's
    /// instance limit), which a retry may get past.
    pub fn is_capacity(&self) -> bool {
        matches!(self.kind, FaultKind::Capacity { .. } | FaultKind::HostCapacity { .. })
    }
}

impl Fault {
    /// A fault of `kind` in `component`.
    pub fn new(component: impl Into<Arc<str>>, kind: FaultKind) -> Fault {
        Fault {
            component: component.into(),
            kind,
        }
    }

    /// `component` does not run here.
    pub fn not_running(component: &str) -> Fault {
        Fault::new(component, FaultKind::NotRunning)
    }

    /// Classifies a wasmtime error from a call into `component`, whose
    /// deadline budget was `timeout`. A fault raised deeper (in a linked
    /// component, local or remote) is kept as it is.
    pub fn classify(component: &Arc<str>, timeout: Duration, err: wasmtime::Error) -> Fault {
        if let Some(inner) = err.downcast_ref::<Fault>() {
            return inner.clone();
        }
        let kind = if err.downcast_ref::<DeadlineExceeded>().is_some() {
            FaultKind::deadline(timeout)
        } else if let Some(m) = err.downcast_ref::<MemoryLimitExceeded>() {
            FaultKind::Memory { limit_mib: m.limit_mib }
        } else if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
            FaultKind::Trap {
                message: trap.to_string(),
            }
        } else {
            FaultKind::Trap {
                message: format!("{err:#}"),
            }
        };
        Fault {
            component: component.clone(),
            kind,
        }
    }

    /// The JSON error body every medium answers with: the fault's fields plus
    /// `error`, the whole sentence.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}));
        body["error"] = self.to_string().into();
        body
    }
}

/// `Arc<str>` as a plain string (serde's `rc` feature would do this for
/// every crate in the build).
mod arc_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(value: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Arc<str>, D::Error> {
        String::deserialize(deserializer).map(Arc::from)
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

impl CallError {
    /// Its kind's name: the fault's (`trap`, `deadline`, ...) or `bad-request`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            CallError::BadRequest(_) => "bad-request",
            CallError::Fault(fault) => fault.kind.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_crosses_the_wire_as_itself() {
        for kind in [
            FaultKind::Trap { message: "boom".into() },
            FaultKind::deadline(Duration::from_millis(1500)),
            FaultKind::Memory { limit_mib: 8 },
            FaultKind::Capacity { max_instances: 2 },
            FaultKind::HostCapacity { max_instances: 9 },
            FaultKind::Host { message: "x".into() },
            FaultKind::NotRunning,
            FaultKind::NoResponders,
            FaultKind::Unavailable,
            FaultKind::Decode { message: "y".into() },
        ] {
            let fault = Fault::new("rater", kind);
            let body = fault.to_json();
            assert_eq!(body["kind"], fault.kind.name());
            assert_eq!(body["component"], "rater");
            assert_eq!(body["error"], fault.to_string());
            let back: Fault = serde_json::from_value(body).expect("decodes");
            assert_eq!(back, fault);
        }
    }
}
