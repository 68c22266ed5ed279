//! Homeostasis: the insurance example under a steady load, in three layouts
//! measured alternately in one run: co-located (one host), distributed
//! (three hosts, static), and adaptive (the distributed layout with
//! `examples/insurance/adaptive.toml`, where hot links pull the rater and
//! pricing next to the gateway). The load starts the moment the hosts are
//! ready; requests per second and p50 are kept per half second, so the
//! chart shows how long the adaptive layout takes to reach the co-located
//! throughput, and what happens to latency on the way.
//!
//! ```sh
//! cargo test --release --all-targets --no-run && scripts/build-components.sh
//! cargo bench -p membrane-benches --bench homeostasis             # ~5 min; BENCHMARKS.md + homeostasis.svg
//! cargo bench -p membrane-benches --bench homeostasis -- --quick  # ~1 min; writes under target/
//! ```

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use membrane_benches::{Membrane, NatsServer, http1, membrane_binary, wasm, write_section};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POLICY: &[u8] = include_bytes!("../examples/insurance/policy.json");
/// Concurrent clients, each on its own kept-alive connection.
const CLIENTS: usize = 16;
/// The width of one point of the timeline.
const BUCKET: Duration = Duration::from_millis(500);

/// One layout of the example.
struct Layout {
    name: &'static str,
    file: &'static str,
    /// The labels of each host, callees first.
    hosts: &'static [&'static str],
}

const LAYOUTS: [Layout; 3] = [
    Layout {
        name: "co-located",
        file: "colocated.toml",
        hosts: &[""],
    },
    Layout {
        name: "distributed",
        file: "distributed.toml",
        hosts: &["node=c", "node=b", "node=a"],
    },
    Layout {
        name: "adaptive",
        file: "adaptive.toml",
        hosts: &["node=c", "node=b", "node=a"],
    },
];

/// What one half second of load saw.
#[derive(Default, Clone)]
struct Bucket {
    ok: usize,
    failed: usize,
    latencies: Vec<Duration>,
}

impl Bucket {
    fn rps(&self) -> f64 {
        self.ok as f64 / BUCKET.as_secs_f64()
    }

    fn p50(&self) -> Duration {
        let mut all = self.latencies.clone();
        all.sort();
        all.get(all.len() / 2).copied().unwrap_or_default()
    }
}

/// One layout under load: its timeline and the placement events, each at
/// its time since the load started.
struct Run {
    buckets: Vec<Bucket>,
    events: Vec<(Duration, String)>,
}

impl Run {
    fn failed(&self) -> usize {
        self.buckets.iter().map(|b| b.failed).sum()
    }

    /// Median requests per second over the buckets from `from` on.
    fn steady_rps(&self, from: Duration) -> f64 {
        let skip = (from.as_secs_f64() / BUCKET.as_secs_f64()) as usize;
        median(self.buckets.iter().skip(skip).map(Bucket::rps).collect())
    }

    /// Median p50 over the buckets from `from` on.
    fn steady_p50(&self, from: Duration) -> Duration {
        let skip = (from.as_secs_f64() / BUCKET.as_secs_f64()) as usize;
        let mut all: Vec<Duration> = self.buckets.iter().skip(skip).map(Bucket::p50).collect();
        all.sort();
        all.get(all.len() / 2).copied().unwrap_or_default()
    }

    /// The time of the last placement move, if any.
    fn settled_at(&self) -> Option<Duration> {
        self.events.iter().map(|(at, _)| *at).max()
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (length, rounds) = if quick {
        (Duration::from_secs(20), 1)
    } else {
        (Duration::from_secs(30), 3)
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = membrane_binary();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    // Fill the compile cache, so every host loads compiled code.
    let cache = dir.path().join("cache");
    drop(start_hosts(
        &binary,
        &root,
        dir.path(),
        &cache,
        &LAYOUTS[0],
        &server.url,
        "warm",
    ));

    // runs[layout][round]
    let mut runs: Vec<Vec<Run>> = LAYOUTS.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, layout) in LAYOUTS.iter().enumerate() {
            let lattice = format!("home{round}{i}");
            let (hosts, addr) = start_hosts(&binary, &root, dir.path(), &cache, layout, &server.url, &lattice);
            let run = rt.block_on(under_load(&server.url, &lattice, &addr, length));
            eprintln!(
                "round {round} {:<12} {:>6.0} req/s steady, p50 {:>6.2} ms, {} failed, {} move(s)",
                layout.name,
                run.steady_rps(length / 2),
                run.steady_p50(length / 2).as_secs_f64() * 1e3,
                run.failed(),
                run.events.len()
            );
            for (at, line) in &run.events {
                eprintln!("    {:>5.1} s  {line}", at.as_secs_f64());
            }
            drop(hosts);
            runs[i].push(run);
        }
    }
    let report = report(&runs, length, quick);
    print!("{report}");
    let chart = chart(&runs, length);
    if quick {
        let out = root.join("target/release");
        std::fs::write(out.join("HOMEOSTASIS-quick.md"), &report).expect("write report");
        std::fs::write(out.join("homeostasis-quick.svg"), chart).expect("write chart");
    } else {
        write_section(&root.join("BENCHMARKS.md"), "homeostasis", &report);
        std::fs::write(root.join("homeostasis.svg"), chart).expect("write chart");
    }
}

/// Starts `layout`'s hosts on `lattice`, callees first; them and the
/// gateway's address.
fn start_hosts(
    binary: &Path,
    root: &Path,
    dir: &Path,
    cache: &Path,
    layout: &Layout,
    url: &str,
    lattice: &str,
) -> (Vec<Membrane>, String) {
    let mut text = std::fs::read_to_string(root.join("examples/insurance").join(layout.file)).expect("example");
    for name in ["gateway", "rater", "pricing"] {
        text = text.replace(&format!("../../target/wasm32-wasip2/release/{name}.wasm"), &wasm(name));
    }
    let manifest = dir.join(format!("{lattice}.toml"));
    std::fs::write(&manifest, text.replace("127.0.0.1:8080", "127.0.0.1:0")).expect("write manifest");
    let mut hosts = Vec::new();
    let mut addr = None;
    for labels in layout.hosts {
        let mut args: Vec<std::ffi::OsString> = vec![manifest.clone().into()];
        args.extend(["--nats", url, "--lattice", lattice].map(Into::into));
        args.extend(["--cache-dir".into(), cache.as_os_str().to_owned()]);
        if !labels.is_empty() {
            args.extend(["--label", labels].map(Into::into));
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let host = Membrane::start(binary, &args, &[], Duration::from_secs(120));
        if let Some(found) = host
            .log
            .iter()
            .find_map(|l| l.split("serving http://").nth(1)?.split(' ').next().map(str::to_string))
        {
            addr = Some(found);
        }
        hosts.push(host);
    }
    (hosts, addr.expect("the gateway serves http"))
}

/// `CLIENTS` clients quote the example policy back to back for `length`,
/// from the moment the hosts are ready, while the lattice's placement events
/// are recorded.
async fn under_load(url: &str, lattice: &str, addr: &str, length: Duration) -> Run {
    let client = async_nats::connect(url).await.expect("nats");
    let mut events = client
        .subscribe(format!("membrane.{lattice}.evt.v1.placement.>"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");
    let slots = (length.as_secs_f64() / BUCKET.as_secs_f64()).ceil() as usize;
    let buckets = Arc::new(Mutex::new(vec![Bucket::default(); slots]));
    let start = Instant::now();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let follow = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(message) = events.next().await {
                let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap_or_default();
                let line = format!(
                    "{} {}: {}",
                    event["kind"].as_str().unwrap_or("?"),
                    event["component"].as_str().unwrap_or("?"),
                    event["reason"].as_str().unwrap_or("")
                );
                seen.lock().expect("events").push((start.elapsed(), line));
            }
        })
    };
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (addr, buckets) = (addr.to_string(), buckets.clone());
        workers.push(tokio::spawn(async move {
            let mut sender = http1(&addr).await;
            loop {
                let began = Instant::now();
                if began - start >= length {
                    break;
                }
                let request = hyper::Request::post("/quote")
                    .header("host", addr.as_str())
                    .body(Full::new(Bytes::from_static(POLICY)))
                    .expect("request");
                let ok = match sender.send_request(request).await {
                    Ok(response) => {
                        let good = response.status().is_success();
                        good && response.into_body().collect().await.is_ok()
                    }
                    Err(_) => {
                        sender = http1(&addr).await;
                        false
                    }
                };
                let done = Instant::now();
                let slot = ((done - start).as_secs_f64() / BUCKET.as_secs_f64()) as usize;
                let mut buckets = buckets.lock().expect("buckets");
                if let Some(bucket) = buckets.get_mut(slot) {
                    if ok {
                        bucket.ok += 1;
                        bucket.latencies.push(done - began);
                    } else {
                        bucket.failed += 1;
                    }
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("load worker");
    }
    follow.abort();
    let buckets = std::mem::take(&mut *buckets.lock().expect("buckets"));
    let events = std::mem::take(&mut *seen.lock().expect("events"));
    Run { buckets, events }
}

/// The report: per layout, the steady throughput and p50 (medians over the
/// second half of each run, then over the rounds, with their range), the
/// failures, and for the adaptive layout when it reached 90% of co-located.
fn report(runs: &[Vec<Run>], length: Duration, quick: bool) -> String {
    let half = length / 2;
    let range = |values: Vec<f64>| {
        let (lo, hi) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        (median(values), lo, hi)
    };
    let (cpus, model) = {
        let (model, cpus) = membrane_benches::machine();
        (cpus, model)
    };
    let mut out = String::new();
    out += "## Homeostasis: adaptive placement under load\n\n";
    out += &format!(
        "The insurance example under {CLIENTS} clients quoting back to back, from the moment its hosts are ready, for {} s; \
         the three layouts alternate, {} round(s), in one run (`cargo bench -p membrane-benches --bench homeostasis{}`; \
         {model}, {cpus} cores, the load generator on the same cores). Steady figures are medians over the second half \
         of each run, then over the rounds (min–max). The adaptive layout is `examples/insurance/adaptive.toml` \
         (hot 200/s, cold 20/s, hold 2 s).\n\n",
        length.as_secs(),
        runs[0].len(),
        if quick { " -- --quick" } else { "" }
    );
    out += "| layout | steady req/s | steady p50 | vs co-located | failed requests | placement moves |\n|---|---|---|---|---|---|\n";
    let colocated: Vec<f64> = runs[0].iter().map(|r| r.steady_rps(half)).collect();
    for (layout, rounds) in LAYOUTS.iter().zip(runs) {
        let rps = range(rounds.iter().map(|r| r.steady_rps(half)).collect());
        let p50 = range(rounds.iter().map(|r| r.steady_p50(half).as_secs_f64() * 1e3).collect());
        let ratio = range(
            rounds
                .iter()
                .zip(&colocated)
                .map(|(r, c)| r.steady_rps(half) / c)
                .collect(),
        );
        out += &format!(
            "| {} | {:.0} ({:.0}–{:.0}) | {:.2} ms ({:.2}–{:.2}) | {:.2}× ({:.2}–{:.2}) | {} | {} |\n",
            layout.name,
            rps.0,
            rps.1,
            rps.2,
            p50.0,
            p50.1,
            p50.2,
            ratio.0,
            ratio.1,
            ratio.2,
            rounds.iter().map(Run::failed).sum::<usize>(),
            rounds.iter().map(|r| r.events.len()).sum::<usize>(),
        );
    }
    out += "\n";
    // The goal: from 10 s on, the adaptive layout serves at least 90% of
    // what the co-located one serves over the same seconds of its run.
    let goal_from = Duration::from_secs(10);
    let adaptive = &runs[2];
    let after: Vec<f64> = adaptive
        .iter()
        .zip(&runs[0])
        .map(|(a, c)| a.steady_rps(goal_from) / c.steady_rps(goal_from))
        .collect();
    let after = range(after);
    let settled: Vec<String> = adaptive
        .iter()
        .map(|r| {
            r.settled_at()
                .map_or("no move".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        })
        .collect();
    let failed: usize = adaptive.iter().map(Run::failed).sum();
    let met = after.0 >= 0.9 && failed == 0;
    out += &format!(
        "**Goal: within 10 s, ≥ 90% of the co-located throughput, with 0 failed requests: {}.** From 10 s to the end, \
         the adaptive layout served {:.2}× (min–max {:.2}–{:.2}) the co-located requests per second of the same seconds, \
         with {failed} failed requests; its last move came at {} (each round).\n\n",
        if met { "met" } else { "missed" },
        after.0,
        after.1,
        after.2,
        settled.join(", ")
    );
    out += "Its moves, in the last round:\n\n";
    if let Some(last) = adaptive.last() {
        for (at, line) in &last.events {
            out += &format!("- {:.1} s: {line}\n", at.as_secs_f64());
        }
    }
    out += "\n![homeostasis](homeostasis.svg)\n";
    out
}

/// Requests per second and p50 over time, the three layouts of the last
/// round on one time axis.
fn chart(runs: &[Vec<Run>], length: Duration) -> String {
    let (w, h, left, top, plot_h) = (760.0, 460.0, 60.0, 30.0, 150.0);
    let plot_w = w - left - 20.0;
    let colors = ["#2b7a0b", "#b8431e", "#1f5fbf"];
    let last: Vec<&Run> = runs.iter().filter_map(|r| r.last()).collect();
    let max_rps = last
        .iter()
        .flat_map(|r| r.buckets.iter().map(Bucket::rps))
        .fold(1.0, f64::max);
    let max_p50 = last
        .iter()
        .flat_map(|r| r.buckets.iter().map(|b| b.p50().as_secs_f64() * 1e3))
        .fold(0.1, f64::max);
    let x = |i: usize| left + plot_w * (i as f64 + 0.5) * BUCKET.as_secs_f64() / length.as_secs_f64();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    );
    for (panel, (title, max, unit)) in [("requests per second", max_rps, ""), ("p50 latency", max_p50, " ms")]
        .into_iter()
        .enumerate()
    {
        let y0 = top + panel as f64 * (plot_h + 60.0);
        svg += &format!(
            "<text x=\"{left}\" y=\"{}\" font-weight=\"bold\">{title}</text>\n\
             <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max:.0}{unit}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n",
            y0 - 8.0,
            y0 + plot_h,
            left + plot_w,
            y0 + plot_h,
            left - 4.0,
            y0 + 10.0,
            left - 4.0,
            y0 + plot_h
        );
        for (k, run) in last.iter().enumerate() {
            let points: Vec<String> = run
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let v = if panel == 0 {
                        b.rps()
                    } else {
                        b.p50().as_secs_f64() * 1e3
                    };
                    format!("{:.1},{:.1}", x(i), y0 + plot_h - plot_h * v / max)
                })
                .collect();
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>\n",
                colors[k],
                points.join(" ")
            );
        }
    }
    let axis_y = top + 2.0 * (plot_h + 60.0) - 40.0;
    for s in (0..=length.as_secs()).step_by(5) {
        let px = left + plot_w * s as f64 / length.as_secs_f64();
        svg += &format!("<text x=\"{px:.1}\" y=\"{axis_y:.1}\" text-anchor=\"middle\">{s} s</text>\n");
    }
    for (k, layout) in LAYOUTS.iter().enumerate() {
        let lx = left + 160.0 * k as f64;
        svg += &format!(
            "<rect x=\"{lx}\" y=\"{:.1}\" width=\"12\" height=\"4\" fill=\"{}\"/><text x=\"{}\" y=\"{:.1}\">{}</text>\n",
            axis_y + 16.0,
            colors[k],
            lx + 16.0,
            axis_y + 21.0,
            layout.name
        );
    }
    svg += "</svg>\n";
    svg
}
