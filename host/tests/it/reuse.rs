//! The instance strategy: a fresh instance per call by default, or, with
//! `reuse = N`, a healthy instance kept for up to N calls. `counter` counts
//! the calls its instance has served in a guest global, which makes the
//! strategy visible from outside.

use crate::support;
use crate::support::{Host, http, insurance_manifest};

/// `fresh` (the default strategy) and `kept` (`reuse = 3`), each on http-rpc;
/// `kept` also on http.
const MANIFEST: &str = r#"
[app]
name = "reuse"

[components.fresh]
source = "{wasm:counter}"

[components.kept]
source = "{wasm:counter}"
reuse = 3

[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "fresh"
export = "example:testkit/counter@0.1.0#next"

[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "kept"
export = "example:testkit/counter@0.1.0#next"

[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "kept"
export = "example:testkit/counter@0.1.0#fail"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "kept"
"#;

fn counts(host: &Host, path: &str, calls: usize) -> Vec<String> {
    (0..calls)
        .map(|_| {
            let reply = http(host.rpc[0], "POST", path, b"{}");
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body
        })
        .collect()
}

#[test]
fn every_call_gets_a_fresh_instance_by_default() {
    let host = Host::start(MANIFEST);
    assert_eq!(counts(&host, "/rpc/fresh/next", 4), ["1", "1", "1", "1"]);
}

#[test]
fn reuse_keeps_an_instance_for_n_calls_then_replaces_it() {
    let host = Host::start(MANIFEST);
    // Sequential calls: the instance is parked before each reply is sent.
    assert_eq!(counts(&host, "/rpc/kept/next", 7), ["1", "2", "3", "1", "2", "3", "1"]);
}

#[test]
fn a_trapping_call_discards_the_reused_instance() {
    let host = Host::start(MANIFEST);
    assert_eq!(counts(&host, "/rpc/kept/next", 2), ["1", "2"]);
    let failed = http(host.rpc[0], "POST", "/rpc/kept/fail", b"{}");
    assert_eq!(failed.status, 500, "{}", failed.body);
    assert_eq!(failed.json()["kind"], "trap");
    // The trapped instance (which had served 3 calls) is gone: a new one starts at 1.
    assert_eq!(counts(&host, "/rpc/kept/next", 2), ["1", "2"]);
}

#[test]
fn http_requests_reuse_instances_too() {
    let host = Host::start(MANIFEST);
    let addr = host.wait_for_http("kept");
    // A handler that writes a small body and returns is finished before its
    // response is sent, so its instance is parked before the next request.
    let seen: Vec<String> = (0..7)
        .map(|_| {
            let reply = http(addr, "GET", "/", b"");
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body
        })
        .collect();
    assert_eq!(seen, ["1", "2", "3", "1", "2", "3", "1"]);
}

#[test]
fn the_insurance_app_with_reused_instances_answers_the_same_quotes() {
    let fresh = Host::start(&insurance_manifest());
    let mut manifest = insurance_manifest();
    for name in ["gateway", "rater", "pricing"] {
        let source = format!("source = \"{{wasm:{name}}}\"");
        manifest = manifest.replace(&source, &format!("{source}\nreuse = 1000"));
    }
    assert_eq!(manifest.matches("reuse = 1000").count(), 3);
    let reused = Host::start(&manifest);
    let policy = support::example_policy();
    let expected = http(fresh.addr(), "POST", "/quote", &policy);
    assert_eq!(expected.status, 200, "{}", expected.body);
    let bad = br#"{"id":3,"holder":"C","region":"S","subject":{"person":{"age":90}},"start_day":0}"#;
    let declined = http(fresh.addr(), "POST", "/quote", bad);
    assert_eq!(declined.status, 422);
    // Interleave good and bad policies: a kept instance carries nothing over.
    for _ in 0..20 {
        assert_eq!(http(reused.addr(), "POST", "/quote", &policy).body, expected.body);
        assert_eq!(http(reused.addr(), "POST", "/quote", bad).body, declined.body);
    }
}

#[test]
fn a_body_larger_than_the_stream_buffer_streams_whole_after_the_response() {
    // `echo` answers the request body; 900 KiB cannot be written before the
    // client reads, so the guest finishes in a task of its own.
    let manifest = r#"
[app]
name = "stream"

[components.echo]
source = "{wasm:echo}"
reuse = 10

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "echo"
"#;
    let host = Host::start(manifest);
    let addr = host.wait_for_http("echo");
    let body: Vec<u8> = (0..900 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    for _ in 0..3 {
        let reply = http(addr, "POST", "/", &body);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), body.len());
        assert!(reply.body.as_bytes() == body.as_slice(), "the body came back changed");
    }
}
