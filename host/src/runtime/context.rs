//! What a call carries along its whole path, across links and hosts: its
//! deadline and its place in a W3C trace (see [`super::trace`]).

use super::trace::TraceParent;
use std::time::{Duration, Instant};

/// The deadline of a chain whose caller set none: every component's own
/// `timeout_ms` is far shorter, so in effect the first callee's applies.
const UNBOUNDED: Duration = Duration::from_secs(24 * 3600);

/// The context of one call chain.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// When the whole chain must have finished.
    pub deadline: Instant,
    /// The trace, and the span the next step of the chain runs under.
    pub trace: TraceParent,
}

impl CallContext {
    /// A new chain with a fresh trace.
    pub fn new(deadline: Instant) -> CallContext {
        CallContext {
            deadline,
            trace: TraceParent::fresh(),
        }
    }

    /// The context of a call arriving from a medium with an optional W3C
    /// `traceparent`: its trace continues, and the callee's timeout bounds it.
    pub fn incoming(traceparent: Option<&str>) -> CallContext {
        CallContext::from_traceparent(Instant::now() + UNBOUNDED, traceparent)
    }

    /// Continues the trace of a W3C `traceparent` header
    /// (`00-<trace id>-<parent id>-<flags>`) under its parent span, or starts
    /// a new trace when the header is absent or malformed.
    pub fn from_traceparent(deadline: Instant, traceparent: Option<&str>) -> CallContext {
        CallContext {
            deadline,
            trace: TraceParent::continue_or_fresh(traceparent),
        }
    }

    /// The `traceparent` header of the span this context runs under.
    pub fn traceparent(&self) -> String {
        self.trace.to_string()
    }

    /// The same chain one span deeper: `span` (opened with `parent: None`)
    /// becomes a child of this context's span, and the result runs under it.
    pub fn under(&self, span: &tracing::Span) -> CallContext {
        CallContext {
            deadline: self.deadline,
            trace: self.trace.under(span),
        }
    }

    /// The same trace with a sooner deadline, if `deadline` is sooner.
    pub fn until(&self, deadline: Instant) -> CallContext {
        CallContext {
            deadline: self.deadline.min(deadline),
            trace: self.trace,
        }
    }
}

/// Opens the span of one call into a component (`call`) as a child of
/// `parent`'s span; returns it with the context under it. Exported, it also
/// gets a readable name (`call rater.rate`) and says what is called
/// (`interface#function` of version `digest`).
pub(crate) fn open_call(
    parent: &CallContext,
    medium: &'static str,
    component: &str,
    (interface, function, digest): (&str, &str, &str),
) -> (tracing::Span, CallContext) {
    if !super::trace::exporting() {
        // The context does not depend on the span: the log gets the trace
        // id as the span opens.
        let cx = parent.under(&tracing::Span::none());
        let trace_id = cx.trace.trace_id;
        // Display, not Debug: a manifest name needs no escaping, and the log
        // formats these fields for every call.
        let span =
            tracing::info_span!(parent: None, "call", medium = %medium, component = %component, trace_id = %trace_id);
        return (span, cx);
    }
    let span = tracing::info_span!(
        parent: None,
        "call",
        medium,
        component,
        trace_id = tracing::field::Empty,
        otel.name = %format_args!("call {component}.{function}"),
    );
    let cx = parent.under(&span);
    span.record("trace_id", tracing::field::display(cx.trace.trace_id));
    super::trace::set_attributes(&span, || {
        [
            ("membrane.export", format!("{interface}#{function}").into()),
            ("membrane.digest", digest.to_string().into()),
        ]
    });
    (span, cx)
}

/// `words` × 16 hex digits of randomness (host ids).
pub(crate) fn random_hex(words: usize) -> String {
    (0..words)
        .map(|_| format!("{:016x}", super::trace::random_u64()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_continues_a_valid_trace_and_replaces_a_bad_one() {
        let now = Instant::now();
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = CallContext::from_traceparent(now, Some(header));
        assert_eq!(cx.trace.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(cx.traceparent(), header);
        let next = cx.under(&tracing::Span::none()).traceparent();
        assert!(
            next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && next.ends_with("-01") && next != header,
            "{next}"
        );
        for bad in [
            "",
            "00-xyz-1-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let fresh = CallContext::from_traceparent(now, Some(bad));
            assert_ne!(fresh.trace.trace_id.0, [0; 16]);
            assert!(!fresh.trace.has_parent());
        }
        assert_ne!(
            CallContext::new(now).trace.trace_id,
            CallContext::new(now).trace.trace_id
        );
    }
}
