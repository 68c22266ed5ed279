//! Hostile peers on the lattice's subjects: what a host's NATS connection
//! must survive. The messages are sent over a raw socket (`RawNats`), since
//! a client library refuses to send them.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use support::nats::{NatsServer, RawNats};
use support::{Host, http, with_paths, workspace};

/// `examples/insurance/distributed.toml` with test paths and the gateway on
/// `port`, which a restarted host binds again.
fn distributed_manifest(port: u16) -> String {
    let text = std::fs::read_to_string(workspace().join("examples/insurance/distributed.toml")).unwrap();
    with_paths(
        &text
            .replace("../../target/wasm32-wasip2/release/gateway.wasm", "{wasm:gateway}")
            .replace("../../target/wasm32-wasip2/release/rater.wasm", "{wasm:rater}")
            .replace("../../target/wasm32-wasip2/release/pricing.wasm", "{wasm:pricing}")
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `POST /quote` until it answers 200; how long that took from `since`.
fn quote_again(addr: SocketAddr, since: Instant) -> Duration {
    let policy = support::example_policy();
    while since.elapsed() < Duration::from_secs(10) {
        if std::net::TcpStream::connect(addr).is_ok() && http(addr, "POST", "/quote", &policy).status == 200 {
            return since.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no quote within 10 s");
}

/// A header value with a lone carriage return: nats-server forwards it as it
/// is, and async-nats 0.51 panics in its connection task on reading it
/// (nats-io/nats.rs#1612). Each host must notice its dead connection, start
/// afresh, and the chain must answer again within 2 s.
#[test]
fn a_lone_cr_header_on_any_subject_a_host_hears_costs_it_under_2_s() {
    let server = NatsServer::start();
    let port = free_port();
    let manifest = distributed_manifest(port);
    let node = |label: &str| {
        Host::start_with(
            &manifest,
            &["--nats", &server.url(), "--lattice", "test", "--label", label],
        )
    };
    let (mut c, mut b, mut a) = (node("node=c"), node("node=b"), node("node=a"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    quote_again(addr, Instant::now());

    let pricing = membrane::links::remote::subject("test", "pricing", "example:insurance/pricing@0.1.0", "table");
    let rater = membrane::links::remote::subject("test", "rater", "example:insurance/rater@0.1.0", "rate");
    let mut raw = RawNats::connect(&server);
    let dead = "nats: the connection is dead";
    let mut deaths = [0, 0, 0];
    // Each subject, and the hosts that hear it.
    let cases: [(&str, [bool; 3]); 5] = [
        (&pricing, [false, false, true]),
        (&rater, [false, true, false]),
        ("membrane.test.ctl.v1.inventory", [true, true, true]),
        ("membrane.test.evt.v1.heartbeat", [true, true, true]),
        ("membrane.test.evt.v1.host.started", [true, true, true]),
    ];
    for (subject, hears) in cases {
        let sent = Instant::now();
        raw.hpub(subject, b"NATS/1.0\r\nX: a\rb\r\n\r\n", b"{}");
        for (i, host) in [&a, &b, &c].into_iter().enumerate() {
            if hears[i] {
                deaths[i] += 1;
                host.wait_for_log_count(dead, deaths[i]);
            }
        }
        let took = quote_again(addr, sent);
        assert!(took < Duration::from_secs(2), "{subject}: answered again after {took:?}");
        eprintln!("{subject}: answered again after {took:?}");
    }
    for host in [&mut a, &mut b, &mut c] {
        assert!(host.is_running(), "a host exited:\n{}", host.log());
    }
}
