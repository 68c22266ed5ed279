//! Layouts: the insurance example co-located (one host) and distributed
//! (three hosts), driven over HTTP and NATS at concurrency 1 and 64, beside
//! the physical baselines measured in the same run: a native hyper server, a
//! raw NATS request/reply echo, and direct native calls.
//!
//! ```sh
//! cargo build --release -p membrane && scripts/build-components.sh
//! cargo bench -p membrane-benches --bench layouts             # ~2 min; writes BENCHMARKS.md, benchmarks.svg
//! cargo bench -p membrane-benches --bench layouts -- --quick  # ~30 s; writes under target/ (CI runs this)
//! cargo bench -p membrane-benches --bench layouts -- --quick --only colocated-reuse  # one layout, to profile
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
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Val;

const POLICY: &[u8] = include_bytes!("../examples/insurance/policy.json");
const ECHO: &str = "example:testkit/echo@0.1.0";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only <slug>`: one layout (e.g. `colocated-reuse`), for profiling.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let (warm, run) = if quick {
        (Duration::from_millis(200), Duration::from_millis(800))
    } else {
        (Duration::from_secs(1), Duration::from_secs(5))
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("release/membrane");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --release -p membrane` first",
        binary.display()
    );
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let rate_body: &'static [u8] = Box::leak(
        format!("{{\"policy\": {}}}", String::from_utf8_lossy(POLICY))
            .into_bytes()
            .into_boxed_slice(),
    );
    let mut rows = Vec::new();

    // Baselines first, on a quiet machine.
    let hyper_addr = rt.block_on(native_quote_server(&root));
    let native_quote = rt.block_on(post(&hyper_addr, "/quote", POLICY));
    assert_eq!(native_quote.0, 200, "native quote: {:?}", native_quote.1);
    let raw = rt.block_on(async_nats::connect(&server.url)).expect("nats");
    let responder = rt.block_on(async_nats::connect(&server.url)).expect("nats");
    rt.block_on(raw_echo(&responder, "bench.raw"));
    for c in [1, 64] {
        let s = rt.block_on(measure_http(c, warm, run, &hyper_addr, "/quote", POLICY));
        rows.push(Row::new("baseline", "native hyper", c, s));
        let client = raw.clone();
        let s = rt.block_on(measure(c, warm, run, move || {
            let client = client.clone();
            async move { client.request("bench.raw", Bytes::from_static(rate_body)).await.is_ok() }
        }));
        rows.push(Row::new("baseline", "raw NATS echo", c, s));
    }

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
        if only.as_ref().is_some_and(|only| only != slug) {
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
            let s = rt.block_on(measure_http(c, warm, run, &gateway, "/quote", POLICY));
            rows.push(Row::new(layout, "http", c, s));
            let (client, subject) = (raw.clone(), subject.clone());
            let s = rt.block_on(measure(c, warm, run, move || {
                let (client, subject) = (client.clone(), subject.clone());
                async move {
                    match client.request(subject, Bytes::from_static(rate_body)).await {
                        Ok(reply) => reply.headers.is_none(),
                        Err(_) => false,
                    }
                }
            }));
            rows.push(Row::new(layout, "nats", c, s));
        }
        for host in &running {
            memory.push((format!("{layout} after load: {}", host.describe), host.rss_kib()));
        }
    }

    // The peer of DESIGN.md's table: one wasi:http component (`echo`, which
    // answers the request body) against a native hyper echo, fresh and
    // reused: the cost of the wasi:http path alone, without links or JSON.
    let echo_addr = rt.block_on(native_server(|body| (200, body)));
    for c in [1, 64] {
        let s = rt.block_on(measure_http(c, warm, run, &echo_addr, "/", POLICY));
        rows.push(Row::new("baseline", "native hyper echo", c, s));
    }
    for (layout, slug, strategy) in [
        ("echo, 1 component", "echo", ""),
        ("echo, 1 component, reused", "echo-reuse", "reuse = 1000\n"),
    ] {
        if only.as_ref().is_some_and(|only| only != slug) {
            continue;
        }
        let manifest = dir.path().join(format!("{slug}.toml"));
        std::fs::write(
            &manifest,
            format!(
                "[app]\nname = \"{slug}\"\n[components.echo]\nsource = \"{}\"\n{strategy}\
                 [[bindings]]\nmedium = \"http\"\naddress = \"127.0.0.1:0\"\ncomponent = \"echo\"\n",
                wasm("echo")
            ),
        )
        .expect("write manifest");
        let host = Host::start(&binary, Some(&manifest), &server.url, slug, &[]);
        let addr = host.http.clone().expect("echo address");
        assert_eq!(rt.block_on(post(&addr, "/", POLICY)).1, POLICY, "{layout}: echo");
        for c in [1, 64] {
            let s = rt.block_on(measure_http(c, warm, run, &addr, "/", POLICY));
            rows.push(Row::new(layout, "http echo", c, s));
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
            for (layout, slug, flags) in [
                ("wasmtime serve", "wasmtime", WASMTIME_SERVE),
                ("wasmtime serve, reused", "wasmtime-reuse", WASMTIME_SERVE_REUSED),
            ] {
                if only.as_ref().is_some_and(|only| only != slug) {
                    continue;
                }
                if let Some(flag) = flags.iter().find(|f| f.starts_with("--") && !help.contains(*f)) {
                    let why = format!("`{layout}` rows skipped: this `wasmtime serve` has no `{flag}`.");
                    eprintln!("{why}");
                    peer_notes.push(why);
                    continue;
                }
                let peer = WasmtimeServe::start(dir.path(), slug, flags);
                assert_eq!(rt.block_on(post(&peer.addr, "/", POLICY)).1, POLICY, "{layout}: echo");
                for c in [1, 64] {
                    let s = rt.block_on(measure_http(c, warm, run, &peer.addr, "/", POLICY));
                    rows.push(Row::new(layout, "http echo", c, s));
                }
            }
        }
    }

    // In-process figures for the goals.
    let micro = rt.block_on(micro(if quick { 2_000 } else { 20_000 }));
    let hops = rt.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        let calls = if quick { 300 } else { 3_000 };
        let fresh = membrane_benches::remote_hop(&server.url, calls, false, &shutdown).await;
        let reused = membrane_benches::remote_hop(&server.url, calls, true, &shutdown).await;
        shutdown.cancel();
        [fresh, reused]
    });
    let report = report(&rows, &peer_notes, &memory, &micro, &hops, quick, warm, run);
    println!("{report}");
    let (md, svg) = if quick || only.is_some() {
        let target = binary.parent().expect("target dir").to_path_buf();
        (target.join("BENCHMARKS-quick.md"), target.join("benchmarks-quick.svg"))
    } else {
        (root.join("BENCHMARKS.md"), root.join("benchmarks.svg"))
    };
    std::fs::write(&md, report).expect("write report");
    std::fs::write(&svg, chart(&rows)).expect("write chart");
    eprintln!("wrote {} and {}", md.display(), svg.display());
}

/// One measured row.
struct Row {
    layout: &'static str,
    medium: &'static str,
    concurrency: usize,
    stats: Stats,
}

impl Row {
    fn new(layout: &'static str, medium: &'static str, concurrency: usize, stats: Stats) -> Row {
        Row {
            layout,
            medium,
            concurrency,
            stats,
        }
    }

    /// The baseline this row is compared with.
    fn baseline<'a>(&self, rows: &'a [Row]) -> Option<&'a Row> {
        let medium = match self.medium {
            "http" => "native hyper",
            "nats" => "raw NATS echo",
            "http echo" => "native hyper echo",
            _ => return None,
        };
        rows.iter()
            .find(|r| r.layout == "baseline" && r.medium == medium && r.concurrency == self.concurrency)
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

/// A `membrane up` process.
struct Host {
    child: Child,
    http: Option<String>,
    describe: String,
}

impl Host {
    fn start(binary: &Path, manifest: Option<&Path>, url: &str, lattice: &str, labels: &[&str]) -> Host {
        let mut command = Command::new(binary);
        command.arg("up");
        if let Some(manifest) = manifest {
            command.arg(manifest);
        }
        command.args(["--nats", url, "--lattice", lattice]);
        for label in labels {
            command.args(["--label", label]);
        }
        let mut child = command
            .env("RUST_LOG", "membrane=info,warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn membrane");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (mut http, mut components) = (None, 0);
        let deadline = Instant::now() + Duration::from_secs(120);
        for line in lines.by_ref() {
            let line = line.expect("read stderr");
            if let Some(rest) = line.split("serving http://").nth(1) {
                http = rest.split(' ').next().map(str::to_string);
            }
            if line.contains(" started ") {
                components += 1;
            }
            if line.contains(" ready: ") {
                break;
            }
            assert!(Instant::now() < deadline, "host not ready");
        }
        // Keep draining the log so the host never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        let describe = if labels.is_empty() {
            format!("{components} component(s)")
        } else {
            format!("{} ({components} component(s))", labels.join(","))
        };
        Host { child, http, describe }
    }

    /// Resident memory, from /proc.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A `wasmtime serve` process serving `echo.wasm` on a free loopback port,
/// its output in `<dir>/<slug>.log`.
struct WasmtimeServe {
    child: Child,
    addr: String,
}

impl WasmtimeServe {
    /// Starts it and waits until it accepts connections (it compiles the
    /// component before it listens).
    fn start(dir: &Path, slug: &str, flags: &[&str]) -> WasmtimeServe {
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
            .arg(wasm("echo"))
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
    micro: &Micro,
    hops: &[membrane_benches::Hop; 2],
    quick: bool,
    warm: Duration,
    run: Duration,
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
        let (rps_ratio, p50_ratio) = match row.baseline(rows) {
            Some(b) => (
                format!("{:.2}×", row.stats.rps / b.stats.rps),
                format!("{:.2}×", row.stats.p50.as_secs_f64() / b.stats.p50.as_secs_f64()),
            ),
            None => ("1.00×".into(), "1.00×".into()),
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
    line(format!(
        "| direct native call (`echo`'s logic in Rust) | {:.3} µs |",
        micro.native.as_secs_f64() * 1e6
    ));
    line(format!(
        "| call on a kept instance (`echo`) | {:.2} µs |",
        micro.warm.as_secs_f64() * 1e6
    ));
    line(format!(
        "| the same through one in-process link (`relay → echo`) | {:.2} µs |",
        micro.linked.as_secs_f64() * 1e6
    ));
    line(format!(
        "| fresh instance + call (`echo`) | {:.2} µs |",
        micro.fresh.as_secs_f64() * 1e6
    ));
    line(format!(
        "| reused instance + call (`echo` with `reuse`; the whole `Runtime::call` path) | {:.2} µs |",
        micro.reused.as_secs_f64() * 1e6
    ));
    line(String::new());
    line("## One remote link call (same run)".into());
    line(String::new());
    line("A kept `relay` instance on one host calls `echo` on another (two runtimes in the bench process, each with its own NATS connection), against raw async-nats request/reply of the same bytes between two connections.".into());
    line(String::new());
    line("| `echo` strategy | remote link p50 | p99 | raw NATS p50 | p99 | ratio (p50) |".into());
    line("|---|---|---|---|---|---|".into());
    for (strategy, hop) in ["fresh instance per call", "`reuse`"].iter().zip(hops) {
        line(format!(
            "| {strategy} | {} | {} | {} | {} | {:.2}× |",
            us(hop.link.0),
            us(hop.link.1),
            us(hop.raw.0),
            us(hop.raw.1),
            hop.link.0.as_secs_f64() / hop.raw.0.as_secs_f64()
        ));
    }
    line(String::new());
    let find = |layout: &str, medium: &str, c: usize| {
        rows.iter()
            .find(|r| r.layout == layout && r.medium == medium && r.concurrency == c)
    };
    let hop = micro.linked.saturating_sub(micro.warm);
    let http_ratio = |layout: &str| match (find(layout, "http", 64), find("baseline", "native hyper", 64)) {
        (Some(a), Some(b)) => a.stats.rps / b.stats.rps,
        _ => 0.0,
    };
    let (http_reused, http_fresh) = (http_ratio("co-located, reused"), http_ratio("co-located"));
    let rss = |prefix: &str| memory.iter().find(|m| m.0.starts_with(prefix)).map_or(0, |m| m.1) as f64 / 1024.0;
    let (idle, one, colocated) = (rss("idle host"), rss("one component"), rss("co-located: "));
    let per_component = (colocated - one) / 2.0;
    let status = |ok: bool| if ok { "met" } else { "missed" };
    line("## Goals".into());
    line(String::new());
    line("| goal | measured | status |".into());
    line("|---|---|---|".into());
    line(format!(
        "| co-located link hop ≤ 2 µs | {:.2} µs (link call minus direct call) | {} |",
        hop.as_secs_f64() * 1e6,
        status(hop <= Duration::from_micros(2))
    ));
    line(format!(
        "| fresh instance ≤ 10 µs | {:.1} µs | {} |",
        micro.fresh.as_secs_f64() * 1e6,
        status(micro.fresh <= Duration::from_micros(10))
    ));
    let hop_ratio = |hop: &membrane_benches::Hop| hop.link.0.as_secs_f64() / hop.raw.0.as_secs_f64();
    line(format!(
        "| distributed hop ≤ 1.3× a raw NATS round trip | {:.2}× with a fresh instance per call; {:.2}× with `reuse` | {} |",
        hop_ratio(&hops[0]),
        hop_ratio(&hops[1]),
        status(hop_ratio(&hops[1]) <= 1.3)
    ));
    line(format!(
        "| http req/s ≥ 0.6× native hyper (c=64, co-located) | {http_reused:.2}× with reused instances; {http_fresh:.2}× with a fresh instance per call | {} |",
        status(http_reused >= 0.6)
    ));
    line(format!(
        "| host RSS idle ≤ 30 MiB | {idle:.1} MiB | {} |",
        status(idle <= 30.0)
    ));
    line(format!(
        "| ≤ 2 MiB per extra loaded component | {per_component:.2} MiB ((3-component host − 1-component host) / 2, before load; the first component costs {:.1} MiB, mostly the host's own loading code paged in) | {} |",
        one - idle,
        status(per_component <= 2.0)
    ));
    line(String::new());
    line("Profiles of the missed goals, and what would fix them: [docs/performance.md](docs/performance.md).".into());
    out
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
