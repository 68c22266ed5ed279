//! Layouts: the insurance example co-located (one host) and distributed
//! (three hosts), driven over HTTP and NATS at concurrency 1 and 64, beside
//! the physical baselines measured in the same run: a native hyper server, a
//! raw NATS request/reply echo, and direct native calls.
//!
//! ```sh
//! cargo test --release --all-targets --no-run && scripts/build-components.sh
//! cargo bench -p membrane-benches --bench layouts             # ~2 min; writes BENCHMARKS.md, benchmarks.svg
//! cargo bench -p membrane-benches --bench layouts -- --quick  # ~30 s; writes under target/ (CI runs it as `cargo test --release --bench layouts -- --quick`)
//! cargo bench -p membrane-benches --bench layouts -- --quick --only colocated-reuse  # one layout, to profile
//! cargo bench -p membrane-benches --bench layouts -- --only echo-reuse,p3-echo-reuse,p3-echo-shared,wasmtime-reuse,wasmtime-p3  # p2 and p3 against `wasmtime serve`
//! ```
//!
//! Hosts are real `membrane up` processes (target/release/membrane), joined
//! through a private nats-server, so their memory is measured per process.
//!
//! With a `wasmtime` CLI of the host's wasmtime version on PATH
//! (`scripts/install-peers.sh` installs it), the echo component is also
//! served by `wasmtime serve`, the peer itself; without it those rows are
//! skipped and the report says so.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use membrane::runtime::context::CallContext;
use membrane::runtime::dispatch::FunctionRef;
use membrane_benches::{NatsServer, Stats, load, measure, measure_http, percentiles, post, raw_echo, wasm};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Val;

const POLICY: &[u8] = include_bytes!("../examples/insurance/policy.json");
const ECHO: &str = "example:testkit/echo@0.1.0";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only <slug>[,<slug>...]`: some layouts (e.g. `colocated-reuse`),
    // to profile or to compare a few in one sitting.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|list| list.split(',').map(str::to_string).collect());
    let skip = |slug: &str| only.as_ref().is_some_and(|only| !only.iter().any(|o| o == slug));
    // Each compared pair (a layout's cell and its baseline) is measured
    // alternately, `rounds` times, so both see the same machine noise; the
    // report gives the median ratio and its spread.
    let (warm, run, rounds) = if quick {
        (Duration::from_millis(200), Duration::from_millis(800), 1)
    } else {
        (Duration::from_millis(500), Duration::from_secs(3), 3)
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = membrane_benches::membrane_binary();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let rate_body: &'static [u8] = Box::leak(
        format!("{{\"policy\": {}}}", String::from_utf8_lossy(POLICY))
            .into_bytes()
            .into_boxed_slice(),
    );
    let mut rows = Vec::new();

    // Baselines first, on a quiet machine; they keep serving, so every
    // cell below is measured alternately with its own baseline.
    let hyper_addr = rt.block_on(native_quote_server(&root));
    let echo_addr = rt.block_on(native_server(|body| (200, body)));
    let native_quote = rt.block_on(post(&hyper_addr, "/quote", POLICY));
    assert_eq!(native_quote.0, 200, "native quote: {:?}", native_quote.1);
    let raw = rt.block_on(async_nats::connect(&server.url)).expect("nats");
    let responder = rt.block_on(async_nats::connect(&server.url)).expect("nats");
    rt.block_on(raw_echo(&responder, "bench.raw"));
    let baseline = |medium: &str, c: usize| match medium {
        "http" => rt.block_on(measure_http(c, warm, run, &hyper_addr, "/quote", POLICY)),
        "http echo" => rt.block_on(measure_http(c, warm, run, &echo_addr, "/", POLICY)),
        _ => {
            let client = raw.clone();
            rt.block_on(measure(c, warm, run, move || {
                let client = client.clone();
                async move { client.request("bench.raw", Bytes::from_static(rate_body)).await.is_ok() }
            }))
        }
    };
    for medium in ["http", "nats", "http echo"] {
        for c in [1, 64] {
            rows.push(Row::new("baseline", baseline_of(medium), c, baseline(medium, c)));
        }
    }
    // One layout's cell, alternated with its baseline `rounds` times.
    let paired = |layout: &'static str, medium: &'static str, c: usize, cell: &dyn Fn() -> Stats| {
        Row::paired(
            layout,
            medium,
            c,
            (0..rounds).map(|_| (cell(), baseline(medium, c))).collect(),
        )
    };

    // The example in two layouts, the same .wasm files.
    let mut memory = Vec::new();
    // Fill the compile cache first, so every host below loads compiled code
    // as a restarted host does; a host that has just compiled holds
    // Cranelift's memory too (about 15 MiB more for these three).
    let warm_up = manifest(&root, dir.path(), "colocated.toml", "cache", false);
    drop(Host::start(&binary, Some(&warm_up), &server.url, "cache", &[]));
    let idle = Host::start(&binary, None, &server.url, "bench-idle", &[]);
    memory.push(("idle host, no app".to_string(), idle.rss_kib()));
    drop(idle);
    // One component: the first one also pages in the host's own code for
    // loading and linking, a cost the next ones do not pay again.
    let single = dir.path().join("single.toml");
    std::fs::write(
        &single,
        format!(
            "[app]\nname = \"single\"\n[components.pricing]\nsource = \"{}\"\n",
            wasm("pricing")
        ),
    )
    .expect("write manifest");
    let one = Host::start(&binary, Some(&single), &server.url, "single", &[]);
    memory.push(("one component (`pricing`)".to_string(), one.rss_kib()));
    drop(one);
    // Each layout also runs with every component reusing its instances
    // (`reuse`), the other instance strategy of the performance model.
    let one = || vec![vec![]];
    let three = || vec![vec!["node=c"], vec!["node=b"], vec!["node=a"]];
    for (layout, slug, file, hosts, reuse) in [
        ("co-located", "colocated", "colocated.toml", one(), false),
        ("co-located, reused", "colocated-reuse", "colocated.toml", one(), true),
        ("distributed", "distributed", "distributed.toml", three(), false),
        (
            "distributed, reused",
            "distributed-reuse",
            "distributed.toml",
            three(),
            true,
        ),
    ] {
        if skip(slug) {
            continue;
        }
        let manifest = manifest(&root, dir.path(), file, slug, reuse);
        let running: Vec<Host> = hosts
            .iter()
            .map(|labels| Host::start(&binary, Some(&manifest), &server.url, slug, labels))
            .collect();
        for host in &running {
            memory.push((format!("{layout}: {}", host.describe), host.rss_kib()));
        }
        let gateway = running.iter().find_map(|h| h.http.clone()).expect("gateway address");
        // The baseline is only a baseline if it answers the same bytes.
        assert_eq!(
            rt.block_on(post(&gateway, "/quote", POLICY)),
            native_quote,
            "{layout}: the gateway and the native baseline quote differently"
        );
        let subject = format!("bench.{slug}.rate");
        for c in [1, 64] {
            let http = || rt.block_on(measure_http(c, warm, run, &gateway, "/quote", POLICY));
            rows.push(paired(layout, "http", c, &http));
            let nats = || {
                let (client, subject) = (raw.clone(), subject.clone());
                rt.block_on(measure(c, warm, run, move || {
                    let (client, subject) = (client.clone(), subject.clone());
                    async move {
                        match client.request(subject, Bytes::from_static(rate_body)).await {
                            Ok(reply) => reply.headers.is_none(),
                            Err(_) => false,
                        }
                    }
                }))
            };
            rows.push(paired(layout, "nats", c, &nats));
        }
        for host in &running {
            memory.push((format!("{layout} after load: {}", host.describe), host.rss_kib()));
        }
    }

    // The peer of DESIGN.md's table: one wasi:http component (`echo`, which
    // answers the request body) against a native hyper echo, fresh and
    // reused: the cost of the wasi:http path alone, without links or JSON.
    // The same echo as a WASI 0.3 component (`hello-p3`'s `POST /echo`,
    // which reads the whole body and writes it back), reused as the p2 row.
    for (layout, slug, component, path, strategy) in [
        ("echo, 1 component", "echo", "echo", "/", ""),
        ("echo, 1 component, reused", "echo-reuse", "echo", "/", "reuse = 1000\n"),
        (
            "p3 echo, 1 component, reused",
            "p3-echo-reuse",
            "hello_p3",
            "/echo",
            "reuse = 1000\n",
        ),
        (
            "p3 echo, 1 component, 16 requests per instance",
            "p3-echo-shared",
            "hello_p3",
            "/echo",
            "reuse = 100000\nconcurrency = 16\n",
        ),
    ] {
        if skip(slug) {
            continue;
        }
        let manifest = dir.path().join(format!("{slug}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "[app]\nname = \"{slug}\"\n[components.echo]\nsource = \"{}\"\n{strategy}\
                 [[bindings]]\nmedium = \"http\"\naddress = \"127.0.0.1:0\"\ncomponent = \"echo\"\n",
                wasm(component)
            ),
        )
        .expect("write manifest");
        let host = Host::start(&binary, Some(&manifest), &server.url, slug, &[]);
        let addr = host.http.clone().expect("echo address");
        assert_eq!(rt.block_on(post(&addr, path, POLICY)).1, POLICY, "{layout}: echo");
        for c in [1, 64] {
            let echo = || rt.block_on(measure_http(c, warm, run, &addr, path, POLICY));
            rows.push(paired(layout, "http echo", c, &echo));
        }
    }

    // The peer itself: `wasmtime serve` of the same wasmtime version serving
    // the same echo.wasm, measured the same way. Skipped, and the report says
    // why, when that CLI is not on PATH (CI does not install it).
    let mut peer_notes = Vec::new();
    match wasmtime_cli(&lock_version("wasmtime")) {
        Err(why) => {
            eprintln!("{why}");
            peer_notes.push(why);
        }
        Ok(help) => {
            for (layout, slug, component, path, flags) in [
                ("wasmtime serve", "wasmtime", "echo", "/", WASMTIME_SERVE),
                (
                    "wasmtime serve, reused",
                    "wasmtime-reuse",
                    "echo",
                    "/",
                    WASMTIME_SERVE_REUSED,
                ),
                (
                    "wasmtime serve, p3 echo",
                    "wasmtime-p3",
                    "hello_p3",
                    "/echo",
                    WASMTIME_SERVE_P3,
                ),
            ] {
                if skip(slug) {
                    continue;
                }
                if let Some(flag) = flags.iter().find(|f| f.starts_with("--") && !help.contains(*f)) {
                    let why = format!("`{layout}` rows skipped: this `wasmtime serve` has no `{flag}`.");
                    eprintln!("{why}");
                    peer_notes.push(why);
                    continue;
                }
                let peer = WasmtimeServe::start(dir.path(), slug, component, flags);
                assert_eq!(rt.block_on(post(&peer.addr, path, POLICY)).1, POLICY, "{layout}: echo");
                for c in [1, 64] {
                    let echo = || rt.block_on(measure_http(c, warm, run, &peer.addr, path, POLICY));
                    rows.push(paired(layout, "http echo", c, &echo));
                }
            }
        }
    }

    // In-process figures and the remote hop, in `rounds` rounds as well.
    let micros: Vec<Micro> = (0..rounds)
        .map(|_| rt.block_on(micro(if quick { 2_000 } else { 20_000 })))
        .collect();
    let hops: Vec<[membrane_benches::Hop; 2]> = rt.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let calls = if quick { 300 } else { 3_000 };
        let mut hops = Vec::new();
        for _ in 0..rounds {
            // Each round's hosts stop before the next round's start.
            let round = shutdown.child_token();
            let fresh = membrane_benches::remote_hop(&server.url, calls, false, &round).await;
            let reused = membrane_benches::remote_hop(&server.url, calls, true, &round).await;
            round.cancel();
            hops.push([fresh, reused]);
        }
        shutdown.cancel();
        hops
    });
    let density = density_goal(&binary);
    let report = report(
        &rows,
        &peer_notes,
        &memory,
        &micros,
        &hops,
        density.as_deref(),
        quick,
        (warm, run, rounds),
    );
    println!("{report}");
    let (md, svg) = if quick || only.is_some() {
        let target = binary.parent().expect("target dir").to_path_buf();
        let md = target.join("BENCHMARKS-quick.md");
        std::fs::write(&md, report).expect("write report");
        (md, target.join("benchmarks-quick.svg"))
    } else {
        // BENCHMARKS.md's first section; the scale bench writes another.
        let md = root.join("BENCHMARKS.md");
        membrane_benches::write_section(&md, "layouts", &report);
        (md, root.join("benchmarks.svg"))
    };
    std::fs::write(&svg, chart(&rows)).expect("write chart");
    eprintln!("wrote {} and {}", md.display(), svg.display());
}

/// One measured row.
struct Row {
    layout: &'static str,
    medium: &'static str,
    concurrency: usize,
    stats: Stats,
    /// Per round: req/s and p50 against the baseline measured right after it.
    /// Empty for a baseline row.
    ratios: Vec<(f64, f64)>,
}

impl Row {
    fn new(layout: &'static str, medium: &'static str, concurrency: usize, stats: Stats) -> Row {
        Row {
            layout,
            medium,
            concurrency,
            stats,
            ratios: Vec::new(),
        }
    }

    /// A row measured in rounds of (cell, baseline): its figures are those
    /// of the round with the median req/s ratio.
    fn paired(layout: &'static str, medium: &'static str, concurrency: usize, rounds: Vec<(Stats, Stats)>) -> Row {
        let mut rounds: Vec<(Stats, (f64, f64))> = rounds
            .into_iter()
            .map(|(cell, base)| {
                let ratio = (cell.rps / base.rps, cell.p50.as_secs_f64() / base.p50.as_secs_f64());
                (cell, ratio)
            })
            .collect();
        let ratios = rounds.iter().map(|r| r.1).collect();
        rounds.sort_by(|a, b| a.1.0.total_cmp(&b.1.0));
        let stats = rounds.swap_remove(rounds.len() / 2).0;
        Row {
            layout,
            medium,
            concurrency,
            stats,
            ratios,
        }
    }

    /// Median req/s ratio against the baseline, with its min and max.
    fn rps_ratio(&self) -> Option<Spread> {
        Spread::of(self.ratios.iter().map(|r| r.0))
    }

    /// Median p50 ratio against the baseline, with its min and max.
    fn p50_ratio(&self) -> Option<Spread> {
        Spread::of(self.ratios.iter().map(|r| r.1))
    }
}

/// The baseline row's medium for a layout's medium.
fn baseline_of(medium: &str) -> &'static str {
    match medium {
        "http" => "native hyper",
        "http echo" => "native hyper echo",
        _ => "raw NATS echo",
    }
}

/// A median of a few ratios, with the lowest and highest.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.collect();
        v.sort_by(f64::total_cmp);
        Some(Spread {
            median: *v.get(v.len() / 2)?,
            min: *v.first()?,
            max: *v.last()?,
        })
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{:.2}×", self.median)
        } else {
            write!(f, "{:.2}× ({:.2}–{:.2})", self.median, self.min, self.max)
        }
    }
}

/// `examples/insurance/<file>` with absolute component paths, an ephemeral
/// HTTP port and a NATS binding of `rater`, and with `reuse`, instances kept
/// for up to 1000 calls; written into `dir`.
fn manifest(root: &Path, dir: &Path, file: &str, layout: &str, reuse: bool) -> PathBuf {
    let mut text = std::fs::read_to_string(root.join("examples/insurance").join(file)).expect("example manifest");
    for name in ["gateway", "rater", "pricing"] {
        let source = format!("source = \"{}\"", wasm(name));
        let strategy = if reuse { "\nreuse = 1000" } else { "" };
        text = text.replace(
            &format!("source = \"../../target/wasm32-wasip2/release/{name}.wasm\""),
            &format!("{source}{strategy}"),
        );
    }
    assert_eq!(text.matches("reuse = 1000").count(), if reuse { 3 } else { 0 });
    text = text.replace("127.0.0.1:8080", "127.0.0.1:0");
    text.push_str(&format!(
        "\n[[bindings]]\nmedium = \"nats\"\nsubject = \"bench.{layout}.rate\"\ncomponent = \"rater\"\nexport = \"example:insurance/rater@0.1.0#rate\"\n"
    ));
    let path = dir.join(format!("{layout}.toml"));
    std::fs::write(&path, text).expect("write manifest");
    path
}

/// A `membrane up` process, with its HTTP address and what it runs.
struct Host {
    process: membrane_benches::Membrane,
    http: Option<String>,
    describe: String,
}

impl Host {
    fn start(binary: &Path, manifest: Option<&Path>, url: &str, lattice: &str, labels: &[&str]) -> Host {
        let mut args: Vec<std::ffi::OsString> = manifest.map(|m| m.as_os_str().to_owned()).into_iter().collect();
        args.extend(["--nats", url, "--lattice", lattice].map(Into::into));
        for label in labels {
            args.extend(["--label", label].map(Into::into));
        }
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let process = membrane_benches::Membrane::start(binary, &args, &[], Duration::from_secs(120));
        let http = process
            .log
            .iter()
            .find_map(|l| l.split("serving http://").nth(1)?.split(' ').next().map(str::to_string));
        let components = process.log.iter().filter(|l| l.contains(" started ")).count();
        let describe = if labels.is_empty() {
            format!("{components} component(s)")
        } else {
            format!("{} ({components} component(s))", labels.join(","))
        };
        Host {
            process,
            http,
            describe,
        }
    }

    /// Resident memory, from /proc.
    fn rss_kib(&self) -> u64 {
        self.process.status("VmRSS")
    }
}

/// `wasmtime serve` flags of the fresh row. The echo component is a WASIp2
/// component built with Rust's std, so it imports `wasi:cli/environment`,
/// `exit` and `terminal-*`, which the `wasi:http/proxy` world `serve` links by
/// default lacks: `-S cli=y` links every `wasi:cli` interface as well (serve
/// repurposes `-Scli` for that). Everything else is serve's default: for a
/// WASIp2 component, a fresh instance per request (`--max-instance-reuse-count`
/// defaults to 1 for WASIp2, 128 for WASIp3), and the pooling allocator where
/// the address space allows (as Membrane's engine).
const WASMTIME_SERVE: &[&str] = &["-S", "cli=y"];

/// The reused row: an instance serves up to 1000 requests, as `reuse = 1000`
/// in the echo rows. `--max-instance-reuse-count` came with instance reuse in
/// `wasmtime serve` (bytecodealliance/wasmtime#11807, "support WASIp3
/// instance reuse in `wasmtime serve`"); its sibling
/// `--max-instance-concurrent-reuse-count` has no effect on WASIp2
/// components, which cannot be called concurrently, so it is not set.
const WASMTIME_SERVE_REUSED: &[&str] = &["-S", "cli=y", "--max-instance-reuse-count", "1000"];

/// The p3 row: `hello_p3.wasm` (a WASIp3 component) with WASIp3 and the
/// component model's async ABI on, and serve's WASIp3 defaults: an instance
/// serves up to 128 requests, up to 16 of them at once.
const WASMTIME_SERVE_P3: &[&str] = &["-S", "cli=y", "-S", "p3=y", "-W", "component-model-async=y"];

/// `wasmtime serve --help` when the `wasmtime` on PATH is of `version` (the
/// host's wasmtime); otherwise the line the report shows instead of its rows.
fn wasmtime_cli(version: &str) -> Result<String, String> {
    let install = format!("`scripts/install-peers.sh` installs wasmtime-cli {version}");
    let found = match Command::new("wasmtime").arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(1)
            .unwrap_or("?")
            .to_string(),
        _ => {
            return Err(format!(
                "`wasmtime serve` rows skipped: no `wasmtime` on PATH ({install})."
            ));
        }
    };
    if found != version {
        return Err(format!(
            "`wasmtime serve` rows skipped: the `wasmtime` on PATH is {found}, not {version} ({install})."
        ));
    }
    let help = Command::new("wasmtime")
        .args(["serve", "--help"])
        .output()
        .expect("wasmtime serve --help");
    Ok(String::from_utf8_lossy(&help.stdout).into_owned())
}

/// A `wasmtime serve` process serving a component on a free loopback port,
/// its output in `<dir>/<slug>.log`.
struct WasmtimeServe {
    child: Child,
    addr: String,
}

impl WasmtimeServe {
    /// Starts it and waits until it accepts connections (it compiles the
    /// component before it listens).
    fn start(dir: &Path, slug: &str, component: &str, flags: &[&str]) -> WasmtimeServe {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let addr = format!("127.0.0.1:{port}");
        let log = dir.join(format!("{slug}.log"));
        let out = File::create(&log).expect("log file");
        let mut child = Command::new("wasmtime")
            .arg("serve")
            .args(flags)
            .args(["--addr", &addr])
            .arg(wasm(component))
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("spawn wasmtime serve");
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(&addr).is_err() {
            let exited = child.try_wait().expect("wasmtime serve status");
            let log = || std::fs::read_to_string(&log).unwrap_or_default();
            assert!(
                exited.is_none(),
                "wasmtime serve {flags:?} exited ({exited:?}):\n{}",
                log()
            );
            assert!(
                Instant::now() < deadline,
                "wasmtime serve {flags:?} not listening:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        WasmtimeServe { child, addr }
    }
}

impl Drop for WasmtimeServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The version of crate `name` in the workspace's Cargo.lock.
fn lock_version(name: &str) -> String {
    let lock =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock")).unwrap_or_default();
    let needle = format!("name = \"{name}\"\nversion = \"");
    lock.split(&needle)
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("?")
        .to_string()
}

/// A native hyper server that computes the same quote as the example: the
/// shared `insurance` crate's JSON forms and rules, with the pricing config of
/// `examples/insurance/colocated.toml`. Only Wasm, links and the host differ.
async fn native_quote_server(root: &Path) -> String {
    let manifest = membrane::manifest::Manifest::load(&root.join("examples/insurance/colocated.toml"))
        .expect("examples/insurance/colocated.toml");
    let config: std::collections::BTreeMap<String, String> = manifest.components["pricing"]
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.as_config_string()))
        .collect();
    native_server(move |body| {
        let (status, json) = insurance::json::quote_response(&body, |policy| {
            insurance::rate(&policy, |line| {
                insurance::price_table(line, |key| Ok(config.get(key).cloned()))
            })
        });
        (status, Bytes::from(json))
    })
    .await
}

/// A native hyper server on an ephemeral loopback port that answers each
/// request with `answer(body)`; its address.
async fn native_server(answer: impl Fn(Bytes) -> (u16, Bytes) + Send + Sync + 'static) -> String {
    let answer = Arc::new(answer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let (status, body) = answer(body);
                        let mut response = hyper::Response::new(Full::new(body));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                        Ok::<_, hyper::Error>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// In-process figures: fresh instance, reused instance, kept instance, link
/// hop, native call.
struct Micro {
    fresh: Duration,
    reused: Duration,
    warm: Duration,
    linked: Duration,
    native: Duration,
}

async fn micro(calls: usize) -> Micro {
    let app: Arc<membrane::runtime::Runtime> = load(
        "[app]\nname = \"micro\"\n[components.echo]\nsource = \"{wasm:echo}\"\n[components.relay]\nsource = \"{wasm:relay}\"\n\
         [[links]]\nfrom = \"relay\"\nimport = \"example:testkit/echo@0.1.0\"\nto = \"echo\"\n",
    )
    .await;
    let hello = [Val::String("hello".into())];
    let echo = FunctionRef::new("echo", ECHO, "echo");
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        app.call(&echo, &hello, CallContext::incoming(None))
            .await
            .expect("echo");
        samples.push(t.elapsed());
    }
    let fresh = percentiles(&mut samples).0;
    let pooled =
        load("[app]\nname = \"micro-reuse\"\n[components.echo]\nsource = \"{wasm:echo}\"\nreuse = 1000000\n").await;
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        pooled
            .call(&echo, &hello, CallContext::incoming(None))
            .await
            .expect("echo");
        samples.push(t.elapsed());
    }
    let reused = percentiles(&mut samples).0;
    let far = CallContext::new(Instant::now() + Duration::from_secs(3600));
    // Direct and linked calls alternate, so both see the same machine noise.
    let mut echo_instance = app.start_instance("echo", &far).await.expect("instance");
    let mut relay = app.start_instance("relay", &far).await.expect("instance");
    let (mut direct, mut linked) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for _ in 0..calls {
        let t = Instant::now();
        echo_instance.invoke(ECHO, "echo", &hello).await.expect("call");
        direct.push(t.elapsed());
        let t = Instant::now();
        relay.invoke(ECHO, "echo", &hello).await.expect("call");
        linked.push(t.elapsed());
    }
    let kept = [percentiles(&mut direct).0, percentiles(&mut linked).0];
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        std::hint::black_box(std::hint::black_box("hello").to_string());
        samples.push(t.elapsed());
    }
    Micro {
        fresh,
        reused,
        warm: kept[0],
        linked: kept[1],
        native: percentiles(&mut samples).0,
    }
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

#[allow(clippy::too_many_arguments)]
fn report(
    rows: &[Row],
    peer_notes: &[String],
    memory: &[(String, u64)],
    micros: &[Micro],
    hops: &[[membrane_benches::Hop; 2]],
    density: Option<&str>,
    quick: bool,
    (warm, run, rounds): (Duration, Duration, usize),
) -> String {
    let (cpu, cores) = membrane_benches::machine();
    let rustc = Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line("# Benchmarks".into());
    line(String::new());
    line(format!(
        "Generated by `cargo bench -p membrane-benches --bench layouts{}`. Machine: {cores} cores, {cpu}. \
         {rustc}; membrane {}, wasmtime {}, async-nats {}, hyper {}, nats-server from Debian. \
         Each cell: {:.1} s of load after {:.1} s of warm-up; the load generator shares the cores. \
         Every cell is measured {rounds} time(s), each time alternated with its baseline; a ratio is the median of the rounds, \
         with the lowest and highest in brackets, and a row's req/s and latencies are those of its median round. \
         One run: compare ratios, not absolutes.",
        if quick { " -- --quick" } else { "" },
        env!("CARGO_PKG_VERSION"),
        lock_version("wasmtime"),
        lock_version("async-nats"),
        lock_version("hyper"),
        run.as_secs_f64(),
        warm.as_secs_f64()
    ));
    line(String::new());
    line("![req/s by layout, medium and concurrency](benchmarks.svg)".into());
    line(String::new());
    line("## The example app, by layout".into());
    line(String::new());
    line("`POST /quote` over the http binding of `gateway` (gateway → rater → pricing), and `rater#rate` over a nats binding (rater → pricing), the same .wasm files in every layout. Co-located: 1 host, links in-process. Distributed: gateway, rater and pricing on 3 hosts, each link a NATS hop. By default every call gets a fresh instance of each component; \"reused\" rows set `reuse = 1000` on the three components, so a healthy instance serves up to 1000 calls.".into());
    line(String::new());
    line("| layout | medium | concurrency | req/s | p50 | p99 | req/s vs baseline | p50 vs baseline | errors |".into());
    line("|---|---|---|---|---|---|---|---|---|".into());
    for row in rows {
        let (rps_ratio, p50_ratio) = match (row.rps_ratio(), row.p50_ratio()) {
            (Some(rps), Some(p50)) => (rps.to_string(), p50.to_string()),
            _ => ("1.00×".into(), "1.00×".into()),
        };
        line(format!(
            "| {} | {} | {} | {:.0} | {} | {} | {rps_ratio} | {p50_ratio} | {} |",
            row.layout,
            row.medium,
            row.concurrency,
            row.stats.rps,
            us(row.stats.p50),
            us(row.stats.p99),
            row.stats.errors
        ));
    }
    for note in peer_notes {
        line(String::new());
        line(note.clone());
    }
    line(String::new());
    line("Baselines: `native hyper` computes the same quote from the same policy JSON with the same Rust code (the shared `insurance` crate, compiled natively; its answer is checked byte for byte against the co-located host's); `raw NATS echo` answers the same request bytes from a plain async-nats subscriber. The `echo` rows are the peer of DESIGN.md's table: one wasi:http component that answers the request body (the same policy bytes), beside `native hyper echo`, the same in plain hyper: the cost of the wasi:http path alone, without links or JSON.".into());
    line(String::new());
    line(format!(
        "The `wasmtime serve` rows are the peer itself: the same echo.wasm served by `wasmtime serve` of the same wasmtime version (`wasmtime serve {}`; the reused rows `wasmtime serve {}`, an instance serving up to 1000 requests as `reuse = 1000` does), measured with the same client and body; they are there when `scripts/install-peers.sh` has put that CLI on PATH.",
        WASMTIME_SERVE.join(" "),
        WASMTIME_SERVE_REUSED.join(" ")
    ));
    line(String::new());
    line("## Memory (resident, from /proc)".into());
    line(String::new());
    line("| host | RSS |".into());
    line("|---|---|".into());
    for (what, kib) in memory {
        line(format!("| {what} | {:.1} MiB |", *kib as f64 / 1024.0));
    }
    line(String::new());
    line("## In-process (same run)".into());
    line(String::new());
    line("| measurement | median |".into());
    line("|---|---|".into());
    let micro = |f: fn(&Micro) -> Duration| micro_spread(micros, f);
    line(format!(
        "| direct native call (`echo`'s logic in Rust) | {} |",
        micro(|m| m.native)
    ));
    line(format!("| call on a kept instance (`echo`) | {} |", micro(|m| m.warm)));
    line(format!(
        "| the same through one in-process link (`relay → echo`) | {} |",
        micro(|m| m.linked)
    ));
    line(format!(
        "| the link hop (linked call − direct call, per round) | {} |",
        micro(|m| m.linked.saturating_sub(m.warm))
    ));
    line(format!("| fresh instance + call (`echo`) | {} |", micro(|m| m.fresh)));
    line(format!(
        "| reused instance + call (`echo` with `reuse`; the whole `Runtime::call` path) | {} |",
        micro(|m| m.reused)
    ));
    line(String::new());
    line("## One remote link call (same run)".into());
    line(String::new());
    line("A kept `relay` instance on one host calls `echo` on another (two runtimes in the bench process, each with its own NATS connection), against raw async-nats request/reply of the same bytes between two connections.".into());
    line(String::new());
    line("| `echo` strategy | remote link p50 | p99 | raw NATS p50 | p99 | ratio (p50) |".into());
    line("|---|---|---|---|---|---|".into());
    let hop_ratio = |i: usize| {
        Spread::of(
            hops.iter()
                .map(|h| h[i].link.0.as_secs_f64() / h[i].raw.0.as_secs_f64()),
        )
    };
    for (i, strategy) in ["fresh instance per call", "`reuse`"].into_iter().enumerate() {
        // The round with the median ratio.
        let mut round: Vec<&membrane_benches::Hop> = hops.iter().map(|h| &h[i]).collect();
        round.sort_by(|a, b| {
            (a.link.0.as_secs_f64() / a.raw.0.as_secs_f64())
                .total_cmp(&(b.link.0.as_secs_f64() / b.raw.0.as_secs_f64()))
        });
        let Some(hop) = round.get(round.len() / 2) else {
            continue;
        };
        line(format!(
            "| {strategy} | {} | {} | {} | {} | {} |",
            us(hop.link.0),
            us(hop.link.1),
            us(hop.raw.0),
            us(hop.raw.1),
            hop_ratio(i).map_or("?".into(), |s| s.to_string())
        ));
    }
    line(String::new());
    let find = |layout: &str, medium: &str, c: usize| {
        rows.iter()
            .find(|r| r.layout == layout && r.medium == medium && r.concurrency == c)
            .and_then(Row::rps_ratio)
    };
    let rss = |prefix: &str| memory.iter().find(|m| m.0.starts_with(prefix)).map_or(0, |m| m.1) as f64 / 1024.0;
    let (idle, one, colocated) = (rss("idle host"), rss("one component"), rss("co-located: "));
    let per_component = (colocated - one) / 2.0;
    line("## Goals".into());
    line(String::new());
    line("The goals of issue 6/7, each from this run (a density figure from the density bench's last run on this checkout). Where one is missed, the last column says why; the profiles behind it are in [docs/performance.md](docs/performance.md).".into());
    line(String::new());
    line("| measure | goal | measured | status |".into());
    line("|---|---|---|---|".into());
    let shown = |s: Option<Spread>| s.map_or("not measured".to_string(), |s| s.to_string());
    let at_least = |s: Option<Spread>, goal: f64| s.is_some_and(|s| s.median >= goal);
    let (kept, fresh) = (find("co-located, reused", "http", 64), find("co-located", "http", 64));
    goal(
        &mut line,
        "co-located example, HTTP c=64, kept instances, vs native hyper computing the same quote",
        "≥ 0.6×",
        shown(kept),
        at_least(kept, 0.6),
        WHY_EXAMPLE,
    );
    goal(
        &mut line,
        "the same with a fresh instance per request",
        "≥ 0.3×",
        shown(fresh),
        at_least(fresh, 0.3),
        WHY_EXAMPLE,
    );
    let (kept, fresh) = (
        find("echo, 1 component, reused", "http echo", 64),
        find("echo, 1 component", "http echo", 64),
    );
    goal(
        &mut line,
        "one wasi:http component (echo) vs native hyper echo, c=64, kept / fresh",
        "≥ 0.8× / ≥ 0.5×",
        format!("{} / {}", shown(kept), shown(fresh)),
        at_least(kept, 0.8) && at_least(fresh, 0.5),
        WHY_ECHO,
    );
    let (peer_kept, peer_fresh) = (
        find("wasmtime serve, reused", "http echo", 64),
        find("wasmtime serve", "http echo", 64),
    );
    if peer_kept.is_some() || peer_fresh.is_some() {
        line(format!(
            "| the peer: `wasmtime serve` of the same echo.wasm vs native hyper echo, c=64, kept / fresh | for comparison | {} / {} | |",
            shown(peer_kept),
            shown(peer_fresh)
        ));
    }
    let hop = Spread::of(
        micros
            .iter()
            .map(|m| m.linked.saturating_sub(m.warm).as_secs_f64() * 1e6),
    );
    goal(
        &mut line,
        "in-process link hop (link call minus direct call)",
        "≤ 0.5 µs dynamic; ≤ 50 ns composed",
        hop.map_or("?".into(), |h| {
            format!("{:.2} µs ({:.2}–{:.2})", h.median, h.min, h.max)
        }),
        hop.is_some_and(|h| h.median <= 0.5),
        WHY_HOP,
    );
    let fresh = Spread::of(micros.iter().map(|m| m.fresh.as_secs_f64() * 1e6));
    goal(
        &mut line,
        "fresh instance + call",
        "≤ 5 µs",
        fresh.map_or("?".into(), |h| {
            format!("{:.1} µs ({:.1}–{:.1})", h.median, h.min, h.max)
        }),
        fresh.is_some_and(|h| h.median <= 5.0),
        WHY_FRESH,
    );
    let (kept, fresh) = (hop_ratio(1), hop_ratio(0));
    goal(
        &mut line,
        "remote link call vs raw NATS request/reply, p50, kept / fresh",
        "≤ 1.1× both",
        format!("{} / {}", shown(kept), shown(fresh)),
        kept.is_some_and(|s| s.median <= 1.1) && fresh.is_some_and(|s| s.median <= 1.1),
        WHY_REMOTE,
    );
    match density {
        Some(density) => line(density.trim_end().to_string()),
        None => line("| 1,000 distinct components on one host | ≤ 1 MiB marginal RSS each, all ready in ≤ 2 s from a warm cache, a random call at its normal latency | not measured: run `cargo bench -p membrane-benches --bench density` first | |".into()),
    }
    goal(
        &mut line,
        "host RSS idle",
        "≤ 30 MiB",
        format!("{idle:.1} MiB"),
        idle <= 30.0,
        "",
    );
    goal(
        &mut line,
        "per extra loaded component",
        "≤ 2 MiB",
        format!(
            "{per_component:.2} MiB ((3-component host − 1-component host) / 2, before load; the first component costs {:.1} MiB, mostly the host's own loading code paged in)",
            one - idle
        ),
        per_component <= 2.0,
        "",
    );
    out
}

/// One row of the goals table: "met", or "missed" and why.
fn goal(line: &mut impl FnMut(String), measure: &str, goal: &str, measured: String, met: bool, why: &str) {
    let status = if met {
        "met".to_string()
    } else {
        format!("missed: {why}")
    };
    line(format!("| {measure} | {goal} | {measured} | {status} |"));
}

const WHY_EXAMPLE: &str = "a request runs three components and two dynamic links (`Val` lifting and lowering of the policy and the quote through a second store), where the baseline runs one function; composing co-located components, the lever for this, is not built ([profile](docs/performance.md#http-against-native-hyper))";
const WHY_ECHO: &str = "the wasi:http path: request and response are resources with streams, and with a fresh instance a new store and `WasiCtx` per request; `wasmtime serve`'s row above is the same engine's own figure ([profile](docs/performance.md#http-against-native-hyper))";
const WHY_HOP: &str = "a dynamic link is a call into a second store: about 8 800 instructions, almost all in wasmtime's async host call, fiber switch and `Val` lifting; composition is not built ([profile](docs/performance.md#in-process-link-hop-in-instructions))";
const WHY_FRESH: &str = "82 000 instructions, mostly wasmtime's instantiation of a component whose std imports 74 functions ([profile](docs/performance.md#in-process-link-hop-in-instructions))";
const WHY_REMOTE: &str = "the serving host's task, the async host call and the header encode and decode on top of NATS's own round trip, bound by wake-up latency on 2 shared cores ([profile](docs/performance.md#distributed-hop))";

/// The median of `f` over the rounds, with its min and max, in µs.
fn micro_spread(micros: &[Micro], f: fn(&Micro) -> Duration) -> String {
    let digits = |v: f64| if v < 0.1 { 3 } else { 2 };
    match Spread::of(micros.iter().map(|m| f(m).as_secs_f64() * 1e6)) {
        Some(s) if s.min == s.max => format!("{:.*} µs", digits(s.median), s.median),
        Some(s) => format!(
            "{:.*} µs ({:.*}–{:.*})",
            digits(s.median),
            s.median,
            digits(s.min),
            s.min,
            digits(s.max),
            s.max
        ),
        None => "?".into(),
    }
}

/// The density bench's goal row, when its last run on this checkout left
/// one (`target/release/density-goal.md`, written by `--bench density`).
fn density_goal(binary: &Path) -> Option<String> {
    std::fs::read_to_string(binary.parent()?.join("density-goal.md")).ok()
}

/// A horizontal bar chart of req/s, one bar per row, as SVG.
fn chart(rows: &[Row]) -> String {
    let max = rows.iter().map(|r| r.stats.rps).fold(1.0, f64::max);
    let (left, width, bar, gap) = (300.0, 560.0, 18.0, 6.0);
    let height = 60.0 + rows.len() as f64 * (bar + gap);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"24\" font-size=\"15\" font-weight=\"bold\">Requests per second: the insurance example by layout, medium and concurrency</text>\n",
        left + width + 120.0
    );
    for (i, row) in rows.iter().enumerate() {
        let y = 44.0 + i as f64 * (bar + gap);
        let w = (row.stats.rps / max * width).max(1.0);
        let color = match (row.layout, row.medium) {
            ("baseline", _) => "#9e9e9e",
            (layout, _) if layout.starts_with("wasmtime serve") => "#2ca02c",
            (_, "http") => "#1f77b4",
            _ => "#ff7f0e",
        };
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} · {} · c={}</text>\n\
             <rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar}\" fill=\"{color}\"/>\n\
             <text x=\"{:.1}\" y=\"{}\">{:.0} req/s, p50 {}</text>\n",
            left - 8.0,
            y + 13.0,
            row.layout,
            row.medium,
            row.concurrency,
            left + w + 6.0,
            y + 13.0,
            row.stats.rps,
            us(row.stats.p50)
        );
    }
    svg + "</svg>\n"
}
