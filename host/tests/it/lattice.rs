//! The same .wasm files in two layouts: one host, or three hosts joined
//! through a private nats-server, chosen by `placement` and host labels only.

use crate::support;
use crate::support::nats::NatsServer;
use crate::support::{Host, http, insurance_manifest, with_paths};
use std::time::Instant;

/// `examples/insurance/distributed.toml` with test paths and a free port.
fn distributed_manifest() -> String {
    support::distributed_manifest(0)
}

fn node(manifest: &str, server: &NatsServer, label: &str) -> Host {
    Host::start_with(
        manifest,
        &["--nats", &server.url(), "--lattice", "test", "--label", label],
    )
}

fn policies() -> Vec<String> {
    let example = String::from_utf8(support::example_policy()).unwrap();
    vec![
        example.clone(),
        example.replace(r#""deductible": 500"#, r#""deductible": 2500"#),
        example.replace(r#"["collision", "theft"]"#, r#"["flood"]"#),
        r#"{"id": 8, "holder": "Bo", "region": "S", "subject": {"dwelling": {"square_meters": 84.5, "postcode": "8001", "floor": -1}}, "coverage": ["flood", "theft"], "start_day": 20500}"#.into(),
        r#"{"id": 7, "holder": "Old", "region": "S", "subject": {"person": {"age": 90}}, "start_day": -3}"#.into(),
        r#"{"id": 1, "holder": ""}"#.into(),
    ]
}

#[test]
fn both_layouts_answer_byte_identically() {
    let colocated = Host::start(&insurance_manifest());
    let server = NatsServer::start();
    let manifest = distributed_manifest();
    // Start the callees first so that "ready" on `a` means the chain is up.
    let c = node(&manifest, &server, "node=c");
    let b = node(&manifest, &server, "node=b");
    let a = node(&manifest, &server, "node=a");
    assert!(c.log().contains("ready: 1 of 3 component(s) here"), "{}", c.log());
    for policy in policies() {
        let here = http(colocated.addr(), "POST", "/quote", policy.as_bytes());
        let there = http(a.addr(), "POST", "/quote", policy.as_bytes());
        assert_eq!((here.status, &here.body), (there.status, &there.body), "{policy}");
    }
    // The calls really crossed hosts: rater ran on b, pricing's host served rpc.
    assert!(b.log().contains("policy 1001 rated at 936.92 EUR"), "{}", b.log());
    assert!(!a.log().contains("rated at"), "rater must not run on a");
    assert!(c.log().contains("serving lattice rpc for pricing"), "{}", c.log());
    // A host with remote links exports what Prometheus accepts too.
    let metrics = http(b.admin(), "GET", "/metrics", b"").body;
    assert!(
        metrics.contains(r#"membrane_link_remote_wait_seconds_total{app="insurance",from="rater",to="pricing"}"#),
        "{metrics}"
    );
    crate::admin::promtool_accepts(&metrics);
}

#[test]
fn losing_the_pricing_host_fails_fast_with_a_typed_error_and_recovers() {
    let server = NatsServer::start();
    let manifest = distributed_manifest();
    let c = node(&manifest, &server, "node=c");
    let _b = node(&manifest, &server, "node=b");
    let a = node(&manifest, &server, "node=a");
    let policy = support::example_policy();
    assert_eq!(http(a.addr(), "POST", "/quote", &policy).status, 200);

    c.kill();
    let started = Instant::now();
    let response = http(a.addr(), "POST", "/quote", &policy);
    let elapsed = started.elapsed();
    assert_eq!(response.status, 503, "{}", response.body);
    let body = response.json();
    assert_eq!(body["component"], "pricing");
    assert_eq!(body["kind"], "no-responders");
    assert!(body["error"].as_str().unwrap().contains("no responders"), "{body}");
    // Reported, not asserted: no responders is immediate, not a timeout.
    eprintln!("no-responders answer after {elapsed:?} (deadline is 5 s)");

    let _c = node(&manifest, &server, "node=c");
    assert_eq!(http(a.addr(), "POST", "/quote", &policy).status, 200);
}

#[test]
fn one_trace_id_crosses_all_three_hosts() {
    let server = NatsServer::start();
    let manifest = distributed_manifest();
    let args = |label: &'static str| {
        [
            "--nats".to_string(),
            server.url(),
            "--lattice".into(),
            "test".into(),
            "--label".into(),
            label.into(),
        ]
    };
    let start = |label: &'static str| {
        let args = args(label);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Host::start_logged(&manifest, &args, "membrane=debug,warn")
    };
    let (c, b, a) = (start("node=c"), start("node=b"), start("node=a"));
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let policy = support::example_policy();
    let mut request = format!(
        "POST /quote HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntraceparent: 00-{trace}-00f067aa0ba902b7-01\r\ncontent-length: {}\r\n\r\n",
        policy.len()
    )
    .into_bytes();
    request.extend_from_slice(&policy);
    let reply = String::from_utf8(support::raw(a.addr(), &request)).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    for (host, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let line = host.wait_for_log(trace);
        eprintln!("host {name}: {line}");
    }
    // On b the rater's own log line carries the trace. (Wait for it: the
    // first line with the trace may be logged before it.)
    let rated = b.wait_for_log("rated at 936.92");
    assert!(rated.contains(trace), "{}", b.log());
}

#[test]
fn garbage_on_an_rpc_subject_gets_a_decode_error_and_harms_nothing() {
    let server = NatsServer::start();
    let manifest = distributed_manifest();
    let _c = node(&manifest, &server, "node=c");
    let _b = node(&manifest, &server, "node=b");
    let a = node(&manifest, &server, "node=a");
    let subject = membrane::subjects::rpc(
        "test",
        "insurance",
        "pricing",
        "example:insurance/pricing@0.1.0",
        "table",
    );
    assert_eq!(
        subject,
        "membrane.test.rpc.v1.insurance.pricing.example:insurance/pricing@0%2E1%2E0.table"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        for garbage in [&b"\xff\xfe not wire"[..], b"", b"\x01\x07"] {
            let reply = client.request(subject.clone(), garbage.to_vec().into()).await.unwrap();
            let headers = reply.headers.expect("an error reply");
            assert_eq!(headers.get("Membrane-Error-Kind").unwrap().as_str(), "decode");
            assert!(
                headers
                    .get("Nats-Service-Error")
                    .unwrap()
                    .as_str()
                    .contains("wire decode error")
            );
        }
    });
    assert_eq!(http(a.addr(), "POST", "/quote", &support::example_policy()).status, 200);
}

#[test]
fn a_fault_on_a_remote_host_keeps_its_component_and_kind() {
    let server = NatsServer::start();
    let manifest = support::starve_pricing(&distributed_manifest());
    let _c = node(&manifest, &server, "node=c");
    let _b = node(&manifest, &server, "node=b");
    let a = node(&manifest, &server, "node=a");
    let response = http(a.addr(), "POST", "/quote", &support::example_policy());
    assert_eq!(response.status, 500);
    assert_eq!(response.json()["component"], "pricing");
    assert_eq!(response.json()["kind"], "memory");
    assert_eq!(
        response.json()["error"],
        "component `pricing` exceeded its memory limit of 1 MiB"
    );
}

#[test]
fn two_rater_replicas_share_the_load_and_survive_losing_one() {
    let server = NatsServer::start();
    // A short gateway deadline bounds the window in which calls in flight to
    // the killed replica fail.
    let manifest = distributed_manifest().replace(
        "[components.gateway]\n",
        "[components.gateway]\nlimits = { timeout_ms = 1000 }\n",
    );
    let _c = node(&manifest, &server, "node=c");
    let b1 = node(&manifest, &server, "node=b");
    let b2 = node(&manifest, &server, "node=b");
    let a = node(&manifest, &server, "node=a");
    let addr = a.addr();
    let policy = support::example_policy();

    assert!(burst(addr, &policy, 80).iter().all(|s| *s == 200));
    let served = |h: &Host| h.log().matches("rated at").count();
    let (by_b1, by_b2) = (served(&b1), served(&b2));
    eprintln!("replica b1 served {by_b1}, b2 served {by_b2} of 80");
    assert!(by_b1 > 0 && by_b2 > 0, "both replicas take traffic: {by_b1} / {by_b2}");

    // Kill one replica while requests are in flight.
    let load = {
        let policy = policy.clone();
        std::thread::spawn(move || burst(addr, &policy, 200))
    };
    b1.wait_for_log_count("rated at", by_b1 + 5);
    b1.kill();
    let statuses = load.join().unwrap();
    let failed = statuses.iter().filter(|s| **s != 200).count();
    eprintln!("while killing a replica: {failed} of {} calls failed", statuses.len());
    // After the window every call succeeds, on the surviving replica.
    assert!(burst(addr, &policy, 40).iter().all(|s| *s == 200));
}

/// `n` quote requests from 4 threads; their statuses.
fn burst(addr: std::net::SocketAddr, policy: &[u8], n: usize) -> Vec<u16> {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let policy = policy.to_vec();
            std::thread::spawn(move || {
                (0..n / 4)
                    .map(|_| http(addr, "POST", "/quote", &policy).status)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

#[test]
fn ctl_inventory_lists_every_host_with_labels_components_and_digests() {
    let server = NatsServer::start();
    let manifest = distributed_manifest();
    let _hosts = [
        node(&manifest, &server, "node=c"),
        node(&manifest, &server, "node=b"),
        node(&manifest, &server, "node=a"),
    ];
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["ctl", "inventory", "--nats", &server.url(), "--lattice", "test"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let table = String::from_utf8(output.stdout).unwrap();
    eprintln!("{table}");
    let digest = |name: &str| {
        use sha2::Digest as _;
        let bytes = std::fs::read(support::wasm(name)).unwrap();
        format!("sha256:{}", &hex::encode(sha2::Sha256::digest(bytes))[..12])
    };
    for (label, component) in [("node=a", "gateway"), ("node=b", "rater"), ("node=c", "pricing")] {
        let row = table
            .lines()
            .find(|l| l.contains(label))
            .unwrap_or_else(|| panic!("no row for {label}:\n{table}"));
        assert!(row.contains(component), "{row}");
        assert!(row.contains(&digest(component)), "{row}");
        assert!(row.trim_end().ends_with("0/256"), "{row}");
    }
    assert!(table.contains("3 host(s)"), "{table}");
}

/// `relay` on `node=a`, served over http-rpc, linked to `target` on `node=b`.
fn relay_to(target: &str, link: &str) -> String {
    with_paths(&format!(
        r#"
[app]
name = "relay"

[components.relay]
source = "{{wasm:relay}}"
placement = {{ node = "a" }}

[components.{target}]
source = "{{wasm:{target}}}"
placement = {{ node = "b" }}

[[links]]
from = "relay"
import = "example:testkit/echo@0.1.0"
to = "{target}"
{link}

[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "relay"
export = "example:testkit/echo@0.1.0#echo"
"#
    ))
}

#[test]
fn a_slow_remote_target_fails_at_the_link_deadline() {
    let server = NatsServer::start();
    let manifest = relay_to("faulty", "timeout_ms = 300");
    let _b = node(&manifest, &server, "node=b");
    let a = node(&manifest, &server, "node=a");
    let call = |message: &str| {
        let started = Instant::now();
        let body = serde_json::json!({ "message": message }).to_string();
        let response = http(a.rpc[0], "POST", "/rpc/relay/echo", body.as_bytes());
        (response, started.elapsed())
    };
    let (quick, _) = call("20 quick");
    assert_eq!((quick.status, quick.body.as_str()), (200, r#""20 quick""#));

    let (slow, elapsed) = call("5000 slow");
    eprintln!("a 5 s call over a 300 ms link failed after {elapsed:?}");
    assert_eq!(slow.status, 504, "{}", slow.body);
    let body = slow.json();
    assert_eq!(body["component"], "faulty");
    assert_eq!(body["kind"], "deadline");
    assert!(
        elapsed >= std::time::Duration::from_millis(300) && elapsed < std::time::Duration::from_millis(2000),
        "failed after {elapsed:?}"
    );
}

#[test]
fn values_larger_than_max_payload_cross_hosts_in_chunks() {
    let server = NatsServer::start();
    let manifest = relay_to("echo", "");
    let _b = node(&manifest, &server, "node=b");
    let a = node(&manifest, &server, "node=a");
    // 2.5 MiB each way, with the server's default max_payload of 1 MiB.
    let message: String = (0..(5 << 19)).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let body = serde_json::json!({ "message": message }).to_string();
    let response = http(a.rpc[0], "POST", "/rpc/relay/echo", body.as_bytes());
    assert_eq!(
        response.status,
        200,
        "{}",
        &response.body[..response.body.len().min(300)]
    );
    let echoed: String = serde_json::from_str(&response.body).unwrap();
    assert_eq!(echoed.len(), message.len());
    assert!(echoed == message, "the value came back changed");
    // A small call on the same link still takes the one-message path.
    let small = http(a.rpc[0], "POST", "/rpc/relay/echo", br#"{"message": "hi"}"#);
    assert_eq!(small.body, r#""hi""#);
}
