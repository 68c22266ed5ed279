//! A guest that traps, loops or hogs memory fails its own request with a
//! clear error; the host and the other requests carry on.

use crate::support;
use crate::support::{Host, http};
use std::thread;

fn faulty(limits: &str) -> String {
    format!(
        r#"
[app]
name = "faults"

[components.faulty]
source = "{{wasm:faulty}}"
limits = {{ {limits} }}

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "faulty"
"#
    )
}

#[test]
fn trap_answers_500_naming_the_component() {
    let host = Host::start(&faulty("timeout_ms = 2000"));
    let response = http(host.addr(), "GET", "/trap", b"");
    assert_eq!(response.status, 500);
    let body = response.json();
    assert_eq!(body["component"], "faulty");
    assert_eq!(body["kind"], "trap");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("component `faulty` trapped: wasm trap"),
        "{body}"
    );
    assert_eq!(http(host.addr(), "GET", "/ok", b"").body, "ok");
}

#[test]
fn endless_loop_answers_504_at_the_deadline() {
    let host = Host::start(&faulty("timeout_ms = 300"));
    let response = http(host.addr(), "GET", "/loop", b"");
    assert_eq!(response.status, 504);
    assert_eq!(response.json()["error"], "component `faulty` timed out after 300 ms");
    assert_eq!(http(host.addr(), "GET", "/ok", b"").body, "ok");
}

#[test]
fn unbounded_allocation_answers_500_at_the_memory_cap() {
    let host = Host::start(&faulty("memory_mib = 16"));
    let response = http(host.addr(), "GET", "/hog", b"");
    assert_eq!(response.status, 500);
    assert_eq!(
        response.json()["error"],
        "component `faulty` exceeded its memory limit of 16 MiB"
    );
    assert_eq!(response.json()["kind"], "memory");
    assert_eq!(http(host.addr(), "GET", "/ok", b"").body, "ok");
}

#[test]
fn a_looping_request_does_not_block_the_others() {
    let host = Host::start(&faulty("timeout_ms = 3000"));
    let addr = host.addr();
    let looping = thread::spawn(move || http(addr, "GET", "/loop", b""));
    host.wait_for_log("faulty: spinning");
    // The spinning guest holds one worker; requests keep being answered.
    for _ in 0..20 {
        assert_eq!(http(addr, "GET", "/ok", b"").body, "ok");
    }
    assert!(!looping.is_finished(), "the loop should still be running");
    assert_eq!(looping.join().unwrap().status, 504);
}

#[test]
fn instance_cap_sheds_excess_calls_with_503() {
    let host = Host::start(&faulty("timeout_ms = 1500, max_instances = 1"));
    let addr = host.addr();
    let looping = thread::spawn(move || http(addr, "GET", "/loop", b""));
    host.wait_for_log("faulty: spinning");
    let response = http(addr, "GET", "/ok", b"");
    assert_eq!(response.status, 503);
    assert_eq!(response.json()["kind"], "capacity");
    assert!(
        response.json()["error"]
            .as_str()
            .unwrap()
            .contains("at capacity (1 instances busy)")
    );
    assert_eq!(looping.join().unwrap().status, 504);
    // The slot is free again.
    assert_eq!(http(addr, "GET", "/ok", b"").body, "ok");
}

#[test]
fn ctrl_c_lets_in_flight_requests_finish() {
    let host = Host::start(&faulty("timeout_ms = 5000"));
    let addr = host.addr();
    let sleeping = thread::spawn(move || http(addr, "GET", "/sleep", b""));
    host.wait_for_log("faulty: sleeping");
    let status = host.interrupt();
    let response = sleeping.join().unwrap();
    assert_eq!((response.status, response.body.as_str()), (200, "slept"));
    assert!(status.success(), "membrane exited with {status}");
}

#[test]
fn the_hosts_instance_budget_sheds_calls_past_it_with_503_and_warns_at_start() {
    // One host-wide budget of 2 instances: the example's chain needs 3
    // (gateway, rater, pricing), so the innermost one is shed.
    let host = Host::start_with(
        &support::dynamic_links(&support::insurance_manifest()),
        &["--max-instances", "2"],
    );
    host.wait_for_log("more than this host's budget of 2");
    let response = http(host.addr(), "POST", "/quote", &support::example_policy());
    assert_eq!(response.status, 503, "{}", response.body);
    let body = response.json();
    assert_eq!(body["kind"], "host-capacity");
    assert_eq!(body["component"], "pricing");
    assert_eq!(body["max_instances"], 2);
}
