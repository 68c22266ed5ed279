//! Hostile peers on the lattice's subjects: what a host's NATS connection
//! must survive. The messages are sent over a raw socket (`RawNats`), since
//! a client library refuses to send them.

use crate::support;
use crate::support::nats::{NatsServer, RawNats};
use crate::support::{Host, http};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// The example's three hosts (`node=c`, `node=b`, `node=a`, in that
/// order, so that "ready" on `a` means the chain is up) on lattice `test`,
/// the gateway on `port`, which a restarted host binds again.
fn three_hosts(server: &NatsServer, port: u16) -> (Host, Host, Host) {
    let manifest = support::distributed_manifest(port);
    let node = |label: &str| {
        Host::start_with(
            &manifest,
            &["--nats", &server.url(), "--lattice", "test", "--label", label],
        )
    };
    (node("node=c"), node("node=b"), node("node=a"))
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

/// The link subject of the example's `pricing#table`.
fn pricing_subject() -> String {
    membrane::subjects::rpc(
        "test",
        "insurance",
        "pricing",
        "example:insurance/pricing@0.1.0",
        "table",
    )
}

/// A header value with a lone carriage return: nats-server forwards it as it
/// is, and async-nats 0.51 panics in its connection task on reading it
/// (nats-io/nats.rs#1612). Each host must notice its dead connection,
/// replace it, and the chain must answer again within 2 s (the figures are
/// in `benches/poison.rs`; this only bounds them).
#[test]
fn a_lone_cr_header_on_any_subject_a_host_hears_costs_it_under_2_s() {
    let server = NatsServer::start();
    let port = free_port();
    let (mut c, mut b, mut a) = three_hosts(&server, port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    quote_again(addr, Instant::now());

    let pricing = pricing_subject();
    let rater = membrane::subjects::rpc("test", "insurance", "rater", "example:insurance/rater@0.1.0", "rate");
    let mut raw = RawNats::connect(&server);
    let dead = "nats: the connection is dead";
    let mut deaths = [0, 0, 0];
    // Each subject, and the hosts that hear it.
    let cases: [(&str, [bool; 3]); 5] = [
        (&pricing, [false, false, true]),
        (&rater, [false, true, false]),
        ("membrane.test.ctl.v1.inventory", [true, true, true]),
        ("membrane.test.evt.v1.heartbeat.host-00000000", [true, true, true]),
        ("membrane.test.evt.v1.host.started.host-00000000", [true, true, true]),
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
        assert!(
            took < Duration::from_secs(2),
            "{subject}: answered again after {took:?}"
        );
        eprintln!("{subject}: answered again after {took:?}");
    }
    for host in [&mut a, &mut b, &mut c] {
        assert!(host.is_running(), "a host exited:\n{}", host.log());
    }
}

/// With its broker gone, a host fails a remote link call at once with a
/// typed `unavailable` (not after its 5 s deadline), and SIGTERM still ends
/// it promptly (it used to wait for NATS forever).
#[test]
fn a_host_cut_off_from_nats_fails_links_at_once_and_stops_on_sigterm() {
    let mut server = NatsServer::start();
    let port = free_port();
    let (_c, _b, a) = three_hosts(&server, port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    quote_again(addr, Instant::now());

    server.kill();
    a.wait_for_log("nats: disconnected");
    let asked = Instant::now();
    let response = http(addr, "POST", "/quote", &support::example_policy());
    let took = asked.elapsed();
    assert_eq!(response.status, 503, "{}", response.body);
    assert_eq!(response.json()["kind"], "unavailable");
    assert_eq!(response.json()["component"], "rater");
    // Far below the link's 5 s deadline.
    assert!(took < Duration::from_secs(2), "answered after {took:?}");
    eprintln!("unavailable answered after {took:?}");

    let stopping = Instant::now();
    let status = a.signal("TERM");
    let took = stopping.elapsed();
    assert!(status.success(), "membrane exited with {status}");
    assert!(took < Duration::from_secs(15), "SIGTERM took {took:?}");
    eprintln!("SIGTERM without NATS ended the host in {took:?}");
}

/// The example on one host, with `rater` also on http-rpc and an `echo`
/// component on a NATS subject, HTTP servers disconnecting silent clients
/// after 2 s.
fn single_host_manifest() -> String {
    format!(
        r#"{}

[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "rater"
export = "example:insurance/rater@0.1.0#rate"
header_timeout_ms = 2000

[components.echo]
source = "{{wasm:echo}}"
limits = {{ max_instances = 64 }}

[[bindings]]
medium = "nats"
subject = "flood.echo"
component = "echo"
export = "example:testkit/echo@0.1.0#echo"
"#,
        support::insurance_manifest().replace(
            "component = \"gateway\"",
            "component = \"gateway\"\nheader_timeout_ms = 2000"
        )
    )
}

/// Calls `POST /quote` `n` times; every one must answer 200. The latencies.
fn quotes(addr: SocketAddr, n: usize) -> Vec<Duration> {
    let policy = support::example_policy();
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let response = http(addr, "POST", "/quote", &policy);
            assert_eq!(response.status, 200, "{}", response.body);
            t.elapsed()
        })
        .collect()
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// Well-formed calls keep succeeding while 10 000 requests arrive at once on
/// one subject: the excess is answered at once with `capacity`, nothing is
/// queued without bound, and memory stays bounded.
#[test]
fn a_flood_on_one_subject_is_shed_with_capacity_and_others_carry_on() {
    let server = NatsServer::start();
    let host = Host::start_with(&single_host_manifest(), &["--nats", &server.url()]);
    let addr = host.addr();
    quotes(addr, 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(async { async_nats::connect(server.url()).await.unwrap() });
    let flood = runtime.spawn(async move {
        let calls = (0..10_000).map(|_| client.request("flood.echo", r#"{"message": "hi"}"#.into()));
        let replies = futures::future::join_all(calls).await;
        let (mut ok, mut shed, mut other) = (0, 0, Vec::new());
        for reply in replies {
            match reply {
                Ok(m) if m.headers.is_none() => ok += 1,
                Ok(m)
                    if m.headers
                        .as_ref()
                        .and_then(|h| h.get("Membrane-Error-Kind"))
                        .map(|v| v.as_str())
                        == Some("capacity") =>
                {
                    shed += 1
                }
                Ok(m) => other.push(format!("{:?}", m.headers)),
                Err(e) => other.push(e.to_string()),
            }
        }
        (ok, shed, other)
    });
    let mut latencies = Vec::new();
    let mut peak_rss = 0;
    while !flood.is_finished() {
        latencies.extend(quotes(addr, 1));
        peak_rss = peak_rss.max(host.rss_kib());
    }
    let (ok, shed, other) = runtime.block_on(flood).unwrap();
    eprintln!(
        "flood: {ok} answered, {shed} shed; {} quotes during it, p99 {:?}; peak RSS {} MiB",
        latencies.len(),
        p99(latencies.clone()),
        peak_rss / 1024
    );
    assert!(
        other.is_empty(),
        "{} calls failed otherwise: {:?}",
        other.len(),
        &other[..other.len().min(3)]
    );
    assert_eq!(ok + shed, 10_000);
    assert!(shed > 0, "10 000 calls at once never hit the limit of 64");
    assert!(!latencies.is_empty());
    assert!(peak_rss < 256 << 10, "peak RSS {} MiB", peak_rss / 1024);
    assert!(!host.log().contains("panicked"), "{}", host.log());
}

/// 1 000 silent connections on the http port and 1 000 on the http-rpc port
/// neither stop well-formed calls nor stay open past `header_timeout_ms`.
#[test]
fn a_slowloris_of_2000_idle_connections_is_cut_off_and_others_carry_on() {
    use std::io::{Read as _, Write as _};
    let server = NatsServer::start();
    let host = Host::start_with(&single_host_manifest(), &["--nats", &server.url()]);
    let (http_addr, rpc_addr) = (host.addr(), host.rpc[0]);
    let before = host.rss_kib();
    let idle: Vec<std::net::TcpStream> = (0..2000)
        .map(|i| {
            let mut stream = std::net::TcpStream::connect(if i % 2 == 0 { http_addr } else { rpc_addr }).unwrap();
            // Half a request line, then silence.
            stream.write_all(b"POST /quote HTTP/1.1\r\nhost: x\r\n").unwrap();
            stream
        })
        .collect();
    let latencies = quotes(http_addr, 50);
    let rss = host.rss_kib();
    eprintln!(
        "slowloris: 50 quotes beside 2000 idle connections, p99 {:?}; RSS {} MiB (before {} MiB)",
        p99(latencies),
        rss / 1024,
        before / 1024
    );
    assert!(rss < 256 << 10, "RSS {} MiB", rss / 1024);
    // Every idle connection is closed by the server after its header timeout.
    let started = Instant::now();
    for mut stream in idle {
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = [0u8; 512];
        let closed = matches!(stream.read(&mut buf), Ok(0)) || stream.read(&mut buf).is_ok_and(|n| n == 0);
        assert!(closed, "an idle connection stayed open");
    }
    eprintln!(
        "slowloris: all 2000 closed {:?} after the last quote",
        started.elapsed()
    );
    assert!(!host.log().contains("panicked"), "{}", host.log());
}

/// Malformed headers, garbage and truncated payloads, absurd deadlines and
/// abandoned chunk transfers on a remote-link subject: after each, the chain
/// answers again within 2 s, and memory stays bounded.
#[test]
fn malformed_link_messages_never_silence_or_swell_a_host() {
    let server = NatsServer::start();
    let port = free_port();
    let (c, b, a) = three_hosts(&server, port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    quote_again(addr, Instant::now());
    let pricing = pricing_subject();
    let header = |lines: &str| format!("NATS/1.0\r\n{lines}\r\n").into_bytes();
    let many: String = (0..3000).map(|i| format!("H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("lone LF", header("X: a\nb\r\n"), b"x".to_vec()),
        ("NUL", header("X: a\0b\r\n"), b"x".to_vec()),
        (
            "64 KiB value",
            header(&format!("X: {}\r\n", "a".repeat(64 << 10))),
            b"x".to_vec(),
        ),
        ("3000 headers", header(&many), b"x".to_vec()),
        ("garbage payload", header(""), vec![0xff; 300]),
        ("truncated payload", header(""), vec![1]),
        ("deadline 0", header("Membrane-Deadline: 0\r\n"), vec![1, 2, 3]),
        ("deadline -1", header("Membrane-Deadline: -1\r\n"), vec![1, 2, 3]),
        (
            "deadline 10^30",
            header(&format!("Membrane-Deadline: 1{}\r\n", "0".repeat(30))),
            vec![1, 2, 3],
        ),
        ("deadline text", header("Membrane-Deadline: soon\r\n"), vec![1, 2, 3]),
    ];
    let mut raw = RawNats::connect(&server);
    for (name, headers, payload) in cases {
        let sent = Instant::now();
        raw.hpub_reply(&pricing, Some("hostile.replies"), &headers, &payload);
        let took = quote_again(addr, sent);
        eprintln!("{name}: answered again after {took:?}");
        assert!(took < Duration::from_secs(2), "{name}: answered again after {took:?}");
    }
    // Abandoned chunk transfers: each announces 64 MiB and never sends the
    // rest. The host's reassembly budget (256 MiB) refuses the excess; the
    // chain keeps answering; memory does not grow by what was announced.
    let before = c.rss_kib();
    for _ in 0..10 {
        raw.hpub_reply(
            &pricing,
            Some("hostile.replies"),
            &header("Membrane-Chunked: 67108864\r\n"),
            &[7; 1000],
        );
    }
    let took = quote_again(addr, Instant::now());
    let after = c.rss_kib();
    eprintln!(
        "10 abandoned 64 MiB chunk transfers: answered after {took:?}; RSS {} -> {} MiB",
        before / 1024,
        after / 1024
    );
    assert!(after < before + (64 << 10), "RSS grew from {before} to {after} KiB");
    for host in [&a, &b, &c] {
        assert!(!host.log().contains("panicked"), "{}", host.log());
    }
}
