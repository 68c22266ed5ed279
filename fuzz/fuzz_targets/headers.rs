//! What a host reads from NATS headers and subjects that anyone can send:
//! the deadline, the trace context, the chunk size, and the reply subjects
//! it must refuse. Input: lines of `Name: value`; the last line is also
//! tried as a reply subject.
#![no_main]
use libfuzzer_sys::fuzz_target;
use membrane::manifest::subject::{ReplyRule, reserved};
use std::str::FromStr as _;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut headers = async_nats::HeaderMap::new();
    for line in text.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            async_nats::header::HeaderName::from_str(name),
            async_nats::header::HeaderValue::from_str(value.trim()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let _ = membrane::links::remote::deadline_from_header(Some(&headers));
    if let Some(value) = headers.get("traceparent") {
        let _ = membrane::runtime::trace::TraceParent::parse(value.as_str());
    }
    if let Some(value) = headers.get("Membrane-Chunked") {
        let _ = membrane::links::chunks::parse_total(value.as_str());
    }
    let subject = text.rsplit("\r\n").next().unwrap_or_default();
    for rule in [
        ReplyRule::lattice("test"),
        ReplyRule::internal(),
        ReplyRule::only("rates.reply"),
    ] {
        if rule.check(subject, true).is_ok() {
            assert!(!subject.starts_with('$') && !subject.contains(char::is_whitespace));
            assert!(subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">"));
        }
    }
    let _ = reserved(subject);
});
