//! Media benchmark (a plain binary, not criterion): requests/s and p50/p99 of
//! the same tiny call over each medium, next to its physical baseline, in one
//! run on one machine.
//!
//! - `nats` binding (`echo#echo`, JSON) vs a raw async-nats request/reply echo
//!   of the same bytes;
//! - `http-rpc` binding (`echo#echo`, JSON) vs the plain `http` binding
//!   (`echo`'s wasi:http handler echoing the body).
//!
//! Starts its own nats-server. `cargo bench -p membrane-benches --bench media`
//! (after `scripts/build-components.sh`); `-- --quick` for a short run.

use bytes::Bytes;
use membrane::app::HostContext;
use membrane::manifest::Manifest;
use membrane::runtime::engine::EngineOptions;
use membrane::transports;
use membrane_benches::{Stats, measure, measure_http, raw_echo};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PAYLOAD: &[u8] = br#"{"message":"hello, membrane"}"#;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (warm, run) = if quick {
        (Duration::from_millis(200), Duration::from_millis(500))
    } else {
        (Duration::from_secs(1), Duration::from_secs(4))
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    rt.block_on(async move {
        let server = membrane_benches::NatsServer::start();
        let url = server.url.clone();
        let client = loop {
            match async_nats::connect(&url).await {
                Ok(client) => break client,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };

        let manifest = format!(
            r#"
[app]
name = "bench"
[components.echo]
source = "{}"
[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "echo"
[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "echo"
export = "example:testkit/echo@0.1.0#echo"
[[bindings]]
medium = "nats"
subject = "bench.echo"
component = "echo"
export = "example:testkit/echo@0.1.0#echo"
"#,
            membrane_benches::wasm("echo")
        );
        let manifest = Manifest::parse(&manifest, "bench.toml").expect("manifest");
        let host = HostContext::local(EngineOptions::default(), membrane::runtime::cache::default_cache_dir())
            .expect("engine");
        let runtime = membrane::app::load(&manifest, &host, None).await.expect("load");
        let media = transports::bind_all(&manifest, &runtime, Some(&client))
            .await
            .expect("bind");
        let addrs: Vec<String> = media.iter().map(|m| m.describe()).collect();
        let http_addr = addr_of(&addrs, "http://");
        let rpc_addr = addr_of(&addrs, "http-rpc http://");
        let shutdown = CancellationToken::new();
        for medium in media {
            tokio::spawn(medium.serve(shutdown.clone()));
        }
        // The raw baseline: a responder that echoes the bytes back.
        raw_echo(&client, "bench.raw").await;

        println!("| medium | concurrency | req/s | p50 | p99 | vs baseline (p50) |");
        println!("|---|---|---|---|---|---|");
        for concurrency in [1, 16] {
            let c0 = client.clone();
            let raw = measure(concurrency, warm, run, move || {
                let c = c0.clone();
                async move { c.request("bench.raw", Bytes::from_static(PAYLOAD)).await.is_ok() }
            })
            .await;
            let c0 = client.clone();
            let nats = measure(concurrency, warm, run, move || {
                let c = c0.clone();
                async move {
                    c.request("bench.echo", Bytes::from_static(PAYLOAD))
                        .await
                        .is_ok_and(|m| m.headers.is_none())
                }
            })
            .await;
            let http = measure_http(concurrency, warm, run, &http_addr, "/", b"hello, membrane").await;
            let rpc = measure_http(concurrency, warm, run, &rpc_addr, "/rpc/echo/echo", PAYLOAD).await;
            row("raw async-nats echo", concurrency, &raw, &raw);
            row("nats binding", concurrency, &nats, &raw);
            row("http binding (wasi:http)", concurrency, &http, &http);
            row("http-rpc binding", concurrency, &rpc, &http);
        }
        shutdown.cancel();
        drop(runtime);
        drop(server);
    });
}

fn addr_of(described: &[String], prefix: &str) -> String {
    described
        .iter()
        .find_map(|d| d.strip_prefix(prefix))
        .and_then(|rest| rest.split(' ').next())
        .expect("bound address")
        .to_string()
}

fn row(name: &str, concurrency: usize, s: &Stats, baseline: &Stats) {
    let ratio = s.p50.as_secs_f64() / baseline.p50.as_secs_f64();
    let errors = if s.errors > 0 {
        format!(" ({} errors)", s.errors)
    } else {
        String::new()
    };
    println!(
        "| {name} | {concurrency} | {:.0}{errors} | {:.0} µs | {:.0} µs | {ratio:.2}× |",
        s.rps,
        s.p50.as_secs_f64() * 1e6,
        s.p99.as_secs_f64() * 1e6
    );
}
