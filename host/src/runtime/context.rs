//! What a call carries along its whole path, across links and hosts: its
//! deadline and its W3C trace id.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The deadline of a chain whose caller set none: every component's own
/// `timeout_ms` is far shorter, so in effect the first callee's applies.
const UNBOUNDED: Duration = Duration::from_secs(24 * 3600);

/// The context of one call chain.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// When the whole chain must have finished.
    pub deadline: Instant,
    /// 32 lowercase hex digits, shared by every hop of the chain.
    pub trace_id: Arc<str>,
}

impl CallContext {
    /// A new chain with a fresh trace id.
    pub fn new(deadline: Instant) -> CallContext {
        CallContext {
            deadline,
            trace_id: Arc::from(random_hex(2).as_str()),
        }
    }

    /// The context of a call arriving from a medium with an optional W3C
    /// `traceparent`: its trace continues, and the callee's timeout bounds it.
    pub fn incoming(traceparent: Option<&str>) -> CallContext {
        CallContext::from_traceparent(Instant::now() + UNBOUNDED, traceparent)
    }

    /// Continues the trace of a W3C `traceparent` header
    /// (`00-<trace id>-<parent id>-<flags>`), or starts a new one when the
    /// header is absent or malformed.
    pub fn from_traceparent(deadline: Instant, traceparent: Option<&str>) -> CallContext {
        let trace_id = traceparent.and_then(|h| {
            let mut parts = h.trim().split('-');
            let (_version, id) = (parts.next()?, parts.next()?);
            (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'))
                .then(|| id.to_ascii_lowercase())
        });
        match trace_id {
            Some(id) => CallContext {
                deadline,
                trace_id: Arc::from(id.as_str()),
            },
            None => CallContext::new(deadline),
        }
    }

    /// A `traceparent` header for an outgoing hop: this trace, a new span id.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, random_hex(1))
    }

    /// The same trace with a sooner deadline, if `deadline` is sooner.
    pub fn until(&self, deadline: Instant) -> CallContext {
        CallContext {
            deadline: self.deadline.min(deadline),
            trace_id: self.trace_id.clone(),
        }
    }
}

/// `words` × 16 hex digits of randomness. Trace ids need uniqueness, not
/// secrecy: std's randomly keyed SipHash over a counter gives that without a
/// dependency.
pub(crate) fn random_hex(words: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    (0..words)
        .map(|_| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            format!("{:016x}", h.finish())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_continues_a_valid_trace_and_replaces_a_bad_one() {
        let now = Instant::now();
        let cx = CallContext::from_traceparent(now, Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"));
        assert_eq!(&*cx.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let next = cx.traceparent();
        assert!(
            next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && next.ends_with("-01"),
            "{next}"
        );
        for bad in [
            "",
            "00-xyz-1-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let fresh = CallContext::from_traceparent(now, Some(bad));
            assert_eq!(fresh.trace_id.len(), 32);
            assert_ne!(&*fresh.trace_id, "00000000000000000000000000000000");
        }
        assert_ne!(CallContext::new(now).trace_id, CallContext::new(now).trace_id);
    }
}
