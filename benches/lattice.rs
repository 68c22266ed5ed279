//! Lattice benchmark (a plain binary): the cost of a link that crosses hosts.
//!
//! - one remote link call (`relay` on host X -> `echo` on host Y, a kept
//!   `relay` instance) against a raw async-nats request/reply of the same
//!   payload size, between the same two connections; with `echo` on a fresh
//!   instance per call, then with `reuse`;
//! - the insurance example end to end over HTTP (`POST /quote`), co-located
//!   on one host and distributed over three.
//!
//! Every host is a runtime in this process with its own NATS connection, on
//! one private nats-server. `cargo bench -p membrane-benches --bench lattice`
//! (`-- --quick` for a short run).

use bytes::Bytes;
use membrane::manifest::Manifest;
use membrane::runtime::Runtime;
use membrane::transports::{self, Medium, Service};
use membrane_benches::{NatsServer, lattice_host, percentiles, wasm};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let calls = if quick { 300 } else { 5000 };
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async move {
        let server = NatsServer::start();
        let shutdown = CancellationToken::new();
        println!("| measurement | p50 | p99 | ratio (p50) |");
        println!("|---|---|---|---|");
        remote_hop(&server.url, calls, &shutdown).await;
        end_to_end(&server.url, calls / 2, &shutdown).await;
        shutdown.cancel();
    });
}

async fn remote_hop(url: &str, calls: usize, shutdown: &CancellationToken) {
    for (reuse, strategy) in [(false, "fresh echo instance per call"), (true, "echo with `reuse`")] {
        let hop = membrane_benches::remote_hop(url, calls, reuse, shutdown).await;
        let (raw50, raw99) = hop.raw;
        row(
            &format!("raw async-nats request/reply, {} B (beside the next row)", hop.bytes),
            raw50,
            raw99,
            raw50,
        );
        let (link50, link99) = hop.link;
        row(
            &format!("remote link call relay -> echo ({strategy})"),
            link50,
            link99,
            raw50,
        );
    }
}

async fn end_to_end(url: &str, calls: usize, shutdown: &CancellationToken) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let read = |file: &str| {
        std::fs::read_to_string(root.join("examples/insurance").join(file))
            .expect("example manifest")
            .replace("../../target/wasm32-wasip2/release/gateway.wasm", &wasm("gateway"))
            .replace("../../target/wasm32-wasip2/release/rater.wasm", &wasm("rater"))
            .replace("../../target/wasm32-wasip2/release/pricing.wasm", &wasm("pricing"))
            .replace("127.0.0.1:8080", "127.0.0.1:0")
    };
    let policy = std::fs::read(root.join("examples/insurance/policy.json")).expect("policy");

    let colocated = read("colocated.toml");
    let one = lattice_host(&colocated, &["gateway", "rater", "pricing"], url, shutdown).await;
    let colocated_addr = http_addr(&colocated, &one).await;
    let (c50, c99) = measure_http(&colocated_addr, &policy, calls).await;

    let distributed = read("distributed.toml");
    let _c = lattice_host(&distributed, &["pricing"], url, shutdown).await;
    let _b = lattice_host(&distributed, &["rater"], url, shutdown).await;
    let a = lattice_host(&distributed, &["gateway"], url, shutdown).await;
    let distributed_addr = http_addr(&distributed, &a).await;
    let (d50, d99) = measure_http(&distributed_addr, &policy, calls).await;
    row("POST /quote, co-located (1 host)", c50, c99, c50);
    row("POST /quote, distributed (3 hosts, 2 NATS hops)", d50, d99, c50);
}

/// Binds a second http listener for the gateway and returns its address.
async fn http_addr(manifest: &str, runtime: &Arc<Runtime>) -> String {
    let manifest = Manifest::parse(manifest, "bench.toml").expect("manifest");
    let spec = transports::spec::<transports::http::HttpMedium>(&manifest.bindings[0])
        .expect("the example's first binding is http");
    let cx = transports::BindContext {
        app: "bench",
        manifest: &manifest,
        runtime,
        nats: None,
        lattice: None,
    };
    let medium = <transports::http::HttpMedium as Medium>::bind(&[(0, &spec)], &cx)
        .await
        .expect("bind");
    let addr = medium.local_addr().to_string();
    tokio::spawn(Box::new(medium).serve(CancellationToken::new()));
    addr
}

async fn measure_http(addr: &str, body: &[u8], calls: usize) -> (Duration, Duration) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut samples = Vec::with_capacity(calls);
    for i in 0..calls + calls / 10 {
        let request = hyper::Request::post("/quote")
            .header("host", addr)
            .body(http_body_util::Full::new(Bytes::copy_from_slice(body)))
            .expect("request");
        sender.ready().await.expect("connection ready");
        let t = Instant::now();
        let response = sender.send_request(request).await.expect("send");
        assert!(response.status().is_success(), "status {}", response.status());
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body");
        if i >= calls / 10 {
            samples.push(t.elapsed());
        }
    }
    percentiles(&mut samples)
}

fn row(name: &str, p50: Duration, p99: Duration, baseline: Duration) {
    println!(
        "| {name} | {:.0} µs | {:.0} µs | {:.2}× |",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        p50.as_secs_f64() / baseline.as_secs_f64()
    );
}
