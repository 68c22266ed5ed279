//! W3C trace context and how the spans of calls hang together.
//!
//! This module owns the `traceparent` header's parsing and formatting
//! ([`TraceParent`]) and the one step every span of a call takes: becoming
//! the child of the span that called it ([`TraceParent::under`]). The spans
//! themselves are `tracing` spans opened where the work happens (media,
//! dispatcher, links); with `membrane up --otlp URL` the command line
//! installs an OpenTelemetry layer (`cli/otlp.rs`) that turns them into
//! exported spans and calls [`set_exporting`]. Without it nothing here
//! touches OpenTelemetry: spans stay plain `tracing` spans, and the ids that
//! travel in headers are random.
//!
//! Parents are explicit: every span of a call is opened with `parent: None`
//! and given its parent from the [`TraceParent`] the call carries, never from
//! whatever `tracing` span happens to be current. That is what lets a parent
//! cross a NATS message or an instance's store unchanged.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header carrying a call's trace context, on HTTP requests and NATS
/// messages alike.
pub const TRACEPARENT: &str = "traceparent";

/// Whether spans are exported (an OpenTelemetry layer is installed).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Says that an OpenTelemetry layer is installed: spans get real ids from it,
/// and the spans only worth opening for export (bindings, links) are opened.
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, Ordering::Relaxed);
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A trace id: 16 bytes, shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceIdHex(pub [u8; 16]);

impl fmt::Display for TraceIdHex {
    /// 32 lowercase hex digits, written at once: every call's span formats
    /// it, so it stays off `write!`'s per-byte path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; 32];
        for (pair, byte) in hex.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

/// Where a call sits in its trace: the trace, the span it runs under, and the
/// W3C trace flags (bit 0: sampled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id, never all zeros.
    pub trace_id: TraceIdHex,
    /// The span the call runs under; all zeros at the root of a fresh trace.
    pub span_id: [u8; 8],
    /// The trace flags, kept as received.
    pub flags: u8,
}

impl TraceParent {
    /// The start of a fresh trace: a random trace id, no parent span, sampled.
    pub fn fresh() -> TraceParent {
        let (high, low) = (random_u64(), random_u64());
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&high.to_be_bytes());
        trace_id[8..].copy_from_slice(&low.to_be_bytes());
        TraceParent {
            trace_id: TraceIdHex(trace_id),
            span_id: [0; 8],
            flags: 1,
        }
    }

    /// Parses a `traceparent` header (`00-<32 hex trace id>-<16 hex parent
    /// id>-<2 hex flags>`), as the W3C Trace Context spec says a receiver
    /// must: lowercase hex only, ids not all zeros, version `ff` invalid, a
    /// version-00 header exactly 55 characters; a later version may append
    /// `-<more>`, which is ignored. Anything else is `None`: the header comes
    /// from outside and is never trusted further than that.
    pub fn parse(header: &str) -> Option<TraceParent> {
        let header = header.trim_matches([' ', '\t']).as_bytes();
        if header.len() < 55 {
            return None;
        }
        let version = hex_byte(header.get(0..2)?)?;
        let fits = match version {
            0xff => false,
            0 => header.len() == 55,
            _ => header.len() == 55 || header.get(55) == Some(&b'-'),
        };
        if !fits || header[2] != b'-' || header[35] != b'-' || header[52] != b'-' {
            return None;
        }
        let mut trace_id = [0; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&header[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0; 8];
        for (i, byte) in span_id.iter_mut().enumerate() {
            *byte = hex_byte(&header[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&header[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id: TraceIdHex(trace_id),
            span_id,
            flags,
        })
    }

    /// The trace a call continues: `header`'s, or a fresh one when the header
    /// is absent or malformed.
    pub fn continue_or_fresh(header: Option<&str>) -> TraceParent {
        header.and_then(TraceParent::parse).unwrap_or_else(TraceParent::fresh)
    }

    /// Whether there is a parent span (false at the root of a fresh trace).
    pub fn has_parent(&self) -> bool {
        self.span_id != [0; 8]
    }

    /// Makes `span` (opened with `parent: None`) a child of this position in
    /// the trace, and returns the position under `span`: the context its own
    /// children and outgoing headers carry.
    ///
    /// When spans are exported, the ids and flags are the exported span's
    /// own (its sampling follows the parent's sampled flag). Otherwise the
    /// span id is random and the flags are kept as they are.
    pub fn under(&self, span: &tracing::Span) -> TraceParent {
        if exporting() && !span.is_disabled() && span.set_parent(self.otel_context()).is_ok() {
            let cx = span.context();
            let own = cx.span().span_context().clone();
            if own.is_valid() {
                return TraceParent {
                    trace_id: TraceIdHex(own.trace_id().to_bytes()),
                    span_id: own.span_id().to_bytes(),
                    flags: own.trace_flags().to_u8(),
                };
            }
        }
        TraceParent {
            span_id: random_u64().max(1).to_be_bytes(),
            ..*self
        }
    }

    /// This position as an OpenTelemetry parent: a remote span context, or
    /// no parent at the root of a fresh trace (the exported root then gets a
    /// trace id of its own, which [`TraceParent::under`] adopts).
    fn otel_context(&self) -> opentelemetry::Context {
        if !self.has_parent() {
            return opentelemetry::Context::new();
        }
        let parent = SpanContext::new(
            TraceId::from_bytes(self.trace_id.0),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::NONE,
        );
        opentelemetry::Context::new().with_remote_span_context(parent)
    }
}

/// Adds OpenTelemetry attributes to `span` that `tracing` (and so the log)
/// does not show. `attributes` runs only when spans are exported, so what it
/// formats costs nothing otherwise.
pub fn set_attributes<const N: usize>(
    span: &tracing::Span,
    attributes: impl FnOnce() -> [(&'static str, opentelemetry::Value); N],
) {
    if exporting() && !span.is_disabled() {
        for (key, value) in attributes() {
            span.set_attribute(key, value);
        }
    }
}

/// Marks `span` failed, with `message` as its status description. Nothing
/// happens when spans are not exported.
pub fn set_failed(span: &tracing::Span, message: &dyn fmt::Display) {
    if exporting() && !span.is_disabled() {
        span.set_status(opentelemetry::trace::Status::error(message.to_string()));
    }
}

impl fmt::Display for TraceParent {
    /// The `traceparent` header of this position: `00-<trace>-<span>-<flags>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-", self.trace_id)?;
        self.span_id.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, "-{:02x}", self.flags)
    }
}

/// Two lowercase hex digits as a byte.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    let digit = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    match digits {
        [high, low] => Some((digit(*high)? << 4) | digit(*low)?),
        _ => None,
    }
}

/// 64 random bits. Ids need uniqueness, not secrecy: std's randomly keyed
/// SipHash over a counter gives that without a dependency.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_header_parses_and_formats_back() {
        let parsed = TraceParent::parse(VALID).expect("valid");
        assert_eq!(parsed.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(parsed.flags, 1);
        assert_eq!(parsed.to_string(), VALID);
        // The sampled flag is kept as received, not forced.
        let unsampled = TraceParent::parse(&VALID.replace("-01", "-00")).expect("valid");
        assert_eq!(unsampled.flags, 0);
        assert!(unsampled.to_string().ends_with("-00"));
        // Surrounding blanks (HTTP optional whitespace) are not part of it.
        assert_eq!(TraceParent::parse(&format!(" {VALID}\t")), Some(parsed));
    }

    #[test]
    fn a_later_version_may_append_fields_but_version_ff_is_invalid() {
        let v1 = VALID.replacen("00", "01", 1);
        assert!(TraceParent::parse(&v1).is_some());
        assert!(TraceParent::parse(&format!("{v1}-what-comes-later")).is_some());
        assert!(TraceParent::parse(&format!("{v1}x")).is_none());
        // Version 00 is exactly 55 characters.
        assert!(TraceParent::parse(&format!("{VALID}-extra")).is_none());
        assert!(TraceParent::parse(&VALID.replacen("00", "ff", 1)).is_none());
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "00",
            "garbage",
            "00-xyz-1-01",
            // Uppercase hex is not W3C trace context.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Wrong lengths.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-001",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Wrong separators and non-hex.
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1",
            // Multi-byte characters where hex digits belong.
            "00-4bf92f3577b34da6a3ce929d0e0e47é-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_missing_or_bad_header_starts_a_fresh_trace() {
        let fresh = TraceParent::continue_or_fresh(Some("00-nonsense"));
        assert_ne!(fresh.trace_id.0, [0; 16]);
        assert!(!fresh.has_parent());
        assert_ne!(
            TraceParent::continue_or_fresh(None).trace_id,
            TraceParent::continue_or_fresh(None).trace_id
        );
        let kept = TraceParent::continue_or_fresh(Some(VALID));
        assert_eq!(kept.to_string(), VALID);
    }

    #[test]
    fn without_export_a_child_keeps_trace_and_flags_with_a_new_span_id() {
        let parent = TraceParent::parse(&VALID.replace("-01", "-00")).expect("valid");
        let child = parent.under(&tracing::Span::none());
        assert_eq!((child.trace_id, child.flags), (parent.trace_id, 0));
        assert!(child.has_parent());
        assert_ne!(child.span_id, parent.span_id);
        // A fresh trace's first span gets an id too.
        assert!(TraceParent::fresh().under(&tracing::Span::none()).has_parent());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 7u64;
        for len in 0..120 {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        b"0123456789abcdefABCDEF-ff \xc3\xa9"[(seed >> 33) as usize % 28]
                    })
                    .collect();
                let _ = TraceParent::parse(&String::from_utf8_lossy(&bytes));
            }
        }
    }
}
