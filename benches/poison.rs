//! Poison: how many calls a lattice answers while a caller keeps killing a
//! host's NATS connection. async-nats 0.51 panics in its connection task on
//! a header with a lone carriage return (nats.rs#1612); the host notices at
//! once, connects afresh and binds its NATS media again, without touching
//! its apps or HTTP listeners.
//!
//! The insurance example on two hosts: `node=a` runs the gateway, `node=b`
//! the rater and pricing, reached over the lattice. A client starts a quote
//! every 20 ms for 20 s (open loop), while a raw NATS client sends a lone-CR
//! message to pricing's link subject at 0, 1, 2 and 10 a second (each rate
//! in its own run, the rates alternated, two rounds). Reports the share of
//! calls answered 200.
//!
//! ```sh
//! cargo build --release && scripts/build-components.sh
//! cargo bench --bench poison               # ~3 min; prints the table
//! cargo bench --bench poison -- --quick    # ~40 s
//! ```

use membrane_benches::{Membrane, NatsServer, membrane_binary, post, wasm};
use std::ffi::OsStr;
use std::io::Write as _;
use std::time::{Duration, Instant};

const POLICY: &[u8] = include_bytes!("../examples/insurance/policy.json");

/// The two-host example, the gateway on `port`.
fn manifest(port: u16) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/insurance/distributed.toml"
    ))
    .expect("example");
    text.replace("../../target/wasm32-wasip2/release/gateway.wasm", &wasm("gateway"))
        .replace("../../target/wasm32-wasip2/release/rater.wasm", &wasm("rater"))
        .replace("../../target/wasm32-wasip2/release/pricing.wasm", &wasm("pricing"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("node = \"c\"", "node = \"b\"")
}

/// Sends a lone-CR header message to `subject` every `every`, until `stop`.
fn poisoner(url: &str, subject: String, every: Duration, stop: Instant) -> std::thread::JoinHandle<u32> {
    let address = url.trim_start_matches("nats://").to_string();
    std::thread::spawn(move || {
        let mut stream = std::net::TcpStream::connect(address).expect("nats");
        stream
            .write_all(b"CONNECT {\"verbose\":false,\"headers\":true,\"protocol\":1}\r\n")
            .expect("connect");
        let headers = b"NATS/1.0\r\nX: a\rb\r\n\r\n";
        let mut sent = 0;
        // Each message at a random point of its 20 ms call slot: timers
        // at multiples of 20 ms would hit the same phase of the calls
        // every time.
        let mut seed = u64::from(std::process::id()) | 1;
        let mut jitter = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            Duration::from_micros(seed % 20_000)
        };
        let mut next = Instant::now() + every;
        while next < stop {
            std::thread::sleep((next + jitter()).saturating_duration_since(Instant::now()));
            let frame = format!("HPUB {subject} {} {}\r\n", headers.len(), headers.len() + 2);
            let mut bytes = frame.into_bytes();
            bytes.extend_from_slice(headers);
            bytes.extend_from_slice(b"{}\r\n");
            if stream.write_all(&bytes).is_err() {
                break;
            }
            sent += 1;
            next += every;
        }
        sent
    })
}

/// One run at `rate` lone-CR messages a second: (answered, calls, poisoned).
async fn run(rate: u32, seconds: u64) -> (usize, usize, u32) {
    let server = NatsServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("app.toml");
    std::fs::write(&path, manifest(port)).expect("manifest");
    let binary = membrane_binary();
    let host = |label: &str| {
        Membrane::start(
            &binary,
            &[
                path.as_os_str(),
                OsStr::new("--nats"),
                OsStr::new(&server.url),
                OsStr::new("--label"),
                OsStr::new(label),
                OsStr::new("--lattice"),
                OsStr::new("poison"),
            ],
            &[],
            Duration::from_secs(60),
        )
    };
    let _b = host("node=b");
    let _a = host("node=a");
    let addr = format!("127.0.0.1:{port}");
    // Warm: one quote end to end.
    let warm = Instant::now();
    while post(&addr, "/quote", POLICY).await.0 != 200 {
        assert!(warm.elapsed() < Duration::from_secs(10), "no quote");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subject = membrane::subjects::rpc(
        "poison",
        "insurance",
        "pricing",
        "example:insurance/pricing@0.1.0",
        "table",
    );
    let stop = Instant::now() + Duration::from_secs(seconds);
    let poison = (rate > 0).then(|| poisoner(&server.url, subject, Duration::from_secs(1) / rate, stop));
    // Open loop: a call starts every 20 ms whatever the earlier ones do (a
    // call lost with a dead connection waits out its 5 s deadline).
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut calls = tokio::task::JoinSet::new();
    while Instant::now() < stop {
        tick.tick().await;
        let addr = addr.clone();
        calls.spawn(async move {
            let call = tokio::time::timeout(Duration::from_secs(6), post(&addr, "/quote", POLICY)).await;
            matches!(call, Ok((200, _)))
        });
    }
    let (mut answered, mut total) = (0, 0);
    while let Some(ok) = calls.join_next().await {
        total += 1;
        answered += usize::from(ok.unwrap_or(false));
    }
    let calls = total;
    let poisoned = poison.map_or(0, |p| p.join().unwrap_or(0));
    (answered, calls, poisoned)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (seconds, rounds) = if quick { (5, 1) } else { (20, 2) };
    let rates = [0u32, 1, 2, 10];
    let mut results: Vec<(u32, Vec<f64>, u32)> = rates.iter().map(|r| (*r, Vec::new(), 0)).collect();
    for round in 0..rounds {
        for (rate, shares, poisoned) in &mut results {
            let (answered, calls, sent) = run(*rate, seconds).await;
            let share = answered as f64 / calls as f64;
            eprintln!(
                "round {round}: {rate}/s lone CR: {answered} of {calls} answered ({:.1} %), {sent} sent",
                share * 100.0
            );
            shares.push(share);
            *poisoned += sent;
        }
    }
    println!("| lone-CR messages a second | calls answered (each run) | messages sent |");
    println!("|---|---|---|");
    for (rate, shares, poisoned) in results {
        let each: Vec<String> = shares.iter().map(|s| format!("{:.1} %", s * 100.0)).collect();
        println!("| {rate} | {} | {poisoned} |", each.join(", "));
    }
}
