//! Density: one host loads N distinct components, and a call to a random one
//! of them keeps the latency of a call on a host with only one.
//!
//! ```sh
//! cargo test --release --all-targets --no-run && scripts/build-components.sh
//! cargo bench -p membrane-benches --bench density             # N = 1000, about 3 min (cold compile included)
//! cargo bench -p membrane-benches --bench density -- --quick  # N = 50, seconds; asserts no timings
//! cargo bench -p membrane-benches --bench density -- --components 200
//! ```
//!
//! The N components are copies of one build of `marker` (`components/marker`,
//! the size and shape of `echo`) that differ only in a 32-byte string of
//! their data segment, overwritten with a counter (same length, so each copy
//! stays a valid component): each has its own digest, compiled code and
//! cache entry, and its `marker#get` answers its own string, which every
//! call checks. Each has an http-rpc binding on one shared address
//! (`/rpc/<component>/get`). Hosts are real `membrane up` processes without
//! NATS, with a private compile cache in a temp dir.
//!
//! Measured: the cold start (empty cache: every copy compiled) and warm
//! starts (from the cache) of N, N/2 and 1 components, from spawning the
//! process to its `ready` log line; resident memory (VmRSS, /proc) of each
//! and of an idle host (no app; NATS, as in BENCHMARKS.md), whence the
//! marginal memory and load time of one more component; then p50/p99 of
//! `POST /rpc/<random of N>/get` against the same call on the one-component
//! host, alternating call by call over one kept-alive connection each, in
//! several rounds (median ratio and spread). The report is printed and
//! written to `target/release/DENSITY.md` (`DENSITY-quick.md` with `--quick`).

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The string `marker` answers, as built: the bench overwrites the `#`s.
const MARKER: &[u8] = b"membrane-density-marker:########";
/// How many bytes at the end of [`MARKER`] each copy overwrites.
const COUNTER: usize = 8;
const EXPORT: &str = "example:testkit/marker@0.1.0#get";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let n: usize = args
        .iter()
        .position(|a| a == "--components")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 50 } else { 1000 })
        .max(2);
    // Starts of each size, latency rounds, calls per round and host.
    let (starts, rounds, calls) = if quick { (3, 3, 300) } else { (5, 5, 2000) };
    let binary = membrane_benches::membrane_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let env = Env {
        cache: dir.path().join("cache"),
        key: dir.path().join("cache.key"),
        data: dir.path().join("data"),
    };

    // N distinct copies of one build, and a manifest of the first k of them.
    let source = std::fs::read(membrane_benches::wasm("marker")).expect("marker.wasm");
    let names = copies(&source, n, &dir.path().join("wasm"));
    let manifest = |k: usize| {
        let path = dir.path().join(format!("density-{k}.toml"));
        write_manifest(&path, &dir.path().join("wasm"), &names[..k]);
        path
    };
    let (all, half, one) = (manifest(n), manifest(n / 2), manifest(1));

    // Cold: the cache is empty, every copy is compiled (and cached).
    eprintln!("density: cold start of {n} components (compiles each)...");
    let cold = Host::start(&binary, &[all.as_os_str()], &env);
    let cold_sample = cold.sample();
    drop(cold);
    let cache_bytes = dir_bytes(&env.cache);

    // Warm starts, sizes interleaved so that they share the machine's noise.
    // The last N and 1 hosts stay up for the latency runs.
    let nats = nats_server_available().then(membrane_benches::NatsServer::start);
    let (mut idle, mut singles, mut halves, mut fulls) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut many, mut single) = (None, None);
    for start in 0..starts {
        eprintln!("density: warm starts, round {}/{starts}...", start + 1);
        if let Some(nats) = &nats {
            let host = Host::start(
                &binary,
                &[
                    "--nats".as_ref(),
                    nats.url.as_ref(),
                    "--lattice".as_ref(),
                    "density-idle".as_ref(),
                ],
                &env,
            );
            idle.push(host.sample());
        }
        let host = Host::start(&binary, &[one.as_os_str()], &env);
        singles.push(host.sample());
        if start + 1 == starts {
            single = Some(host);
        }
        halves.push(Host::start(&binary, &[half.as_os_str()], &env).sample());
        let host = Host::start(&binary, &[all.as_os_str()], &env);
        fulls.push(host.sample());
        if start + 1 == starts {
            many = Some(host);
        }
    }
    let (many, single) = (many.expect("N host"), single.expect("1 host"));

    // Latency: a random one of N against the one component, call by call.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let faults = (many.minor_faults(), single.minor_faults());
    let latency = rt.block_on(latency(
        many.rpc.as_deref().expect("N address"),
        single.rpc.as_deref().expect("1 address"),
        &names,
        rounds,
        calls,
    ));
    let made = (names.len() + rounds * calls) as f64;
    let faults = (
        (many.minor_faults() - faults.0) as f64 / made,
        (single.minor_faults() - faults.1) as f64 / (made + (calls / 10) as f64),
    );
    let after_calls = many.sample();
    drop(many);
    drop(single);

    let (report, goal) = report(&Figures {
        n,
        quick,
        wasm_bytes: source.len(),
        cache_bytes,
        cold: cold_sample,
        idle,
        singles,
        halves,
        fulls,
        after_calls,
        latency,
        faults,
    });
    println!("{report}");
    let target = binary.parent().expect("target dir").to_path_buf();
    let path = target.join(if quick { "DENSITY-quick.md" } else { "DENSITY.md" });
    std::fs::write(&path, report).expect("write report");
    eprintln!("wrote {}", path.display());
    if !quick {
        // The goals table of the layouts bench shows this row.
        std::fs::write(target.join("density-goal.md"), goal).expect("write goal row");
    }
}

/// Component `i`'s name and the string its `marker#get` answers.
fn name(i: usize) -> String {
    format!("c{i:05}")
}

fn marker(i: usize) -> String {
    let prefix = std::str::from_utf8(&MARKER[..MARKER.len() - COUNTER]).expect("ascii");
    format!("{prefix}{i:0width$}", width = COUNTER)
}

/// Writes `n` copies of `source` into `dir`, each with its own marker; their names.
fn copies(source: &[u8], n: usize, dir: &Path) -> Vec<String> {
    let at: Vec<usize> = source
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "marker.wasm must hold its marker exactly once (found {}): rebuild it with scripts/build-components.sh",
        at.len()
    );
    assert!(n < 10usize.pow(COUNTER as u32), "at most 10^{COUNTER} copies");
    std::fs::create_dir_all(dir).expect("wasm dir");
    let mut bytes = source.to_vec();
    let names: Vec<String> = (0..n)
        .map(|i| {
            bytes[at[0]..at[0] + MARKER.len()].copy_from_slice(marker(i).as_bytes());
            std::fs::write(dir.join(format!("{}.wasm", name(i))), &bytes).expect("write copy");
            name(i)
        })
        .collect();
    let digest = |i: usize| {
        membrane::runtime::cache::digest(&std::fs::read(dir.join(format!("{}.wasm", name(i)))).expect("copy"))
    };
    assert_ne!(digest(0), digest(1), "copies must differ");
    names
}

/// A manifest of `names` (sources in `dir`), each bound over http-rpc on one
/// shared ephemeral address.
fn write_manifest(path: &Path, dir: &Path, names: &[String]) {
    let mut text = String::from("[app]\nname = \"density\"\n");
    for name in names {
        text += &format!(
            "[components.{name}]\nsource = \"{}\"\n",
            dir.join(format!("{name}.wasm")).display()
        );
    }
    for name in names {
        text += &format!(
            "[[bindings]]\nmedium = \"http-rpc\"\naddress = \"127.0.0.1:0\"\ncomponent = \"{name}\"\nexport = \"{EXPORT}\"\n"
        );
    }
    std::fs::write(path, text).expect("write manifest");
}

/// Where every host of the run keeps its compiled code and data.
struct Env {
    cache: PathBuf,
    key: PathBuf,
    data: PathBuf,
}

/// What one start measured.
#[derive(Clone, Copy, Default)]
struct Sample {
    /// From spawning the process to its `ready` log line.
    ready: Duration,
    /// Resident memory then (or when sampled again), KiB.
    rss_kib: u64,
    /// Threads then.
    threads: u64,
}

/// A `membrane up` process, started and ready, with its http-rpc address.
struct Host {
    process: membrane_benches::Membrane,
    /// The http-rpc address, from the log.
    rpc: Option<String>,
}

impl Host {
    fn start(binary: &Path, args: &[&std::ffi::OsStr], env: &Env) -> Host {
        let process = membrane_benches::Membrane::start(
            binary,
            args,
            &[
                ("MEMBRANE_CACHE_DIR", env.cache.as_os_str()),
                ("MEMBRANE_CACHE_KEY", env.key.as_os_str()),
                ("MEMBRANE_DATA_DIR", env.data.as_os_str()),
            ],
            Duration::from_secs(600),
        );
        for line in process.log.iter().filter(|l| l.contains("WARN") || l.contains("ERROR")) {
            eprintln!("density: host says: {}", line.chars().take(300).collect::<String>());
        }
        let rpc = process.log.iter().find_map(|l| {
            l.split("http-rpc http://")
                .nth(1)?
                .split(' ')
                .next()
                .map(str::to_string)
        });
        Host { process, rpc }
    }

    /// Minor page faults of the process so far (/proc/PID/stat).
    fn minor_faults(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.process.id())).unwrap_or_default();
        // After the command's `(name)`: state is field 3, minflt field 10.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(7)?.parse().ok())
            .unwrap_or(0)
    }

    fn sample(&self) -> Sample {
        Sample {
            ready: self.process.ready,
            rss_kib: self.process.status("VmRSS"),
            threads: self.process.status("Threads"),
        }
    }
}

/// Whether a nats-server can be started (for the idle host, which has no
/// manifest and so must follow a lattice).
fn nats_server_available() -> bool {
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
        || Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
}

/// Bytes of the files in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

/// One kept-alive HTTP/1.1 connection to an http-rpc address.
struct Rpc {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: String,
}

impl Rpc {
    async fn connect(addr: &str) -> Rpc {
        Rpc {
            sender: membrane_benches::http1(addr).await,
            addr: addr.to_string(),
        }
    }

    /// `marker#get` of component `i` (`names[i]`): how long it took; panics
    /// unless copy `i` answered.
    async fn get(&mut self, names: &[String], i: usize) -> Duration {
        let t = Instant::now();
        let request = hyper::Request::post(format!("/rpc/{}/get", names[i]))
            .header("host", &self.addr)
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request");
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        let elapsed = t.elapsed();
        let body = String::from_utf8_lossy(&body);
        assert!(status.is_success(), "{}: {status} {body}", names[i]);
        assert_eq!(
            body,
            format!("\"{}\"", marker(i)),
            "{} answered for another copy",
            names[i]
        );
        elapsed
    }
}

/// p50 and p99 of one set of calls.
#[derive(Clone, Copy, Default)]
struct Percentiles {
    p50: Duration,
    p99: Duration,
}

fn percentiles(samples: &mut [Duration]) -> Percentiles {
    let (p50, p99) = membrane_benches::percentiles(samples);
    Percentiles { p50, p99 }
}

/// The latency runs.
struct Latency {
    /// The first call of every one of the N components, in random order.
    first: Percentiles,
    /// The one-component host's calls alternating with those.
    first_single: Percentiles,
    /// Per round: calls to random components of N, and to the one component.
    rounds: Vec<(Percentiles, Percentiles)>,
    /// All rounds together.
    all: (Percentiles, Percentiles),
    calls: usize,
}

/// A small deterministic generator (xorshift64*): the same "random"
/// components every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

async fn latency(many: &str, single: &str, names: &[String], rounds: usize, calls: usize) -> Latency {
    let (mut a, mut b) = (Rpc::connect(many).await, Rpc::connect(single).await);
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    // Warm the one-component host (and both connections) a little first.
    for _ in 0..calls / 10 {
        b.get(names, 0).await;
    }
    // The first call of each of the N components, in random order: the
    // cost of touching a component's code and data for the first time.
    let mut order: Vec<usize> = (0..names.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let (mut first, mut first_single) = (Vec::new(), Vec::new());
    for (k, &i) in order.iter().enumerate() {
        // Alternate which host goes first, so neither always follows the other.
        if k % 2 == 0 {
            first.push(a.get(names, i).await);
            first_single.push(b.get(names, 0).await);
        } else {
            first_single.push(b.get(names, 0).await);
            first.push(a.get(names, i).await);
        }
    }
    let (mut all_a, mut all_b) = (Vec::new(), Vec::new());
    let mut per_round = Vec::new();
    for _ in 0..rounds {
        let (mut ra, mut rb) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
        for k in 0..calls {
            let i = rng.below(names.len());
            if k % 2 == 0 {
                ra.push(a.get(names, i).await);
                rb.push(b.get(names, 0).await);
            } else {
                rb.push(b.get(names, 0).await);
                ra.push(a.get(names, i).await);
            }
        }
        all_a.extend_from_slice(&ra);
        all_b.extend_from_slice(&rb);
        per_round.push((percentiles(&mut ra), percentiles(&mut rb)));
    }
    Latency {
        first: percentiles(&mut first),
        first_single: percentiles(&mut first_single),
        rounds: per_round,
        all: (percentiles(&mut all_a), percentiles(&mut all_b)),
        calls,
    }
}

/// Everything the report says.
struct Figures {
    n: usize,
    quick: bool,
    wasm_bytes: usize,
    cache_bytes: u64,
    cold: Sample,
    idle: Vec<Sample>,
    singles: Vec<Sample>,
    halves: Vec<Sample>,
    fulls: Vec<Sample>,
    after_calls: Sample,
    latency: Latency,
    /// Minor page faults per call during the latency runs: N-host, 1-host.
    faults: (f64, f64),
}

/// Median, minimum and maximum.
fn spread<T: Copy + PartialOrd>(values: &[T]) -> Option<(T, T, T)> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    Some((*v.get(v.len() / 2)?, *v.first()?, *v.last()?))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn report(f: &Figures) -> (String, String) {
    let n = f.n;
    let (cpu, cores) = membrane_benches::machine();
    let ready = |s: &[Sample]| spread(&s.iter().map(|s| s.ready).collect::<Vec<_>>());
    let rss = |s: &[Sample]| spread(&s.iter().map(|s| s.rss_kib as f64).collect::<Vec<_>>());
    let threads = |s: &[Sample]| spread(&s.iter().map(|s| s.threads).collect::<Vec<_>>());
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line("## Density".into());
    line(String::new());
    line(format!(
        "Generated by `cargo bench -p membrane-benches --bench density{}`. Machine: {cores} cores, {cpu}. \
         One host loads N = {n} distinct components: copies of one build of `marker` ({:.0} KiB, the size and \
         shape of `echo`) that differ only in a 32-byte string of their data segment, so each has its own digest, \
         compiled code and cache entry ({:.0} KiB of compiled code on disk each). Each has an http-rpc binding on \
         one shared address; every call checks that the copy it names answered. Hosts are `membrane up` \
         processes without NATS, fresh instances per call. Start times: from spawning the process to its \
         `ready` log line, median of {} starts (min–max).",
        if f.quick { " -- --quick" } else { "" },
        f.wasm_bytes as f64 / 1024.0,
        f.cache_bytes as f64 / 1024.0 / n as f64,
        f.fulls.len()
    ));
    line(String::new());
    line("| host | ready after | resident memory (VmRSS at ready) | threads |".into());
    line("|---|---|---|---|".into());
    let row = |what: String, samples: &[Sample]| {
        let (Some(t), Some(r), Some(th)) = (ready(samples), rss(samples), threads(samples)) else {
            return format!("| {what} | — | — | — |");
        };
        format!(
            "| {what} | {} ({}–{}) | {} ({}–{}) | {} |",
            ms(t.0),
            ms(t.1),
            ms(t.2),
            mib(r.0),
            mib(r.1),
            mib(r.2),
            th.0
        )
    };
    line(row("idle host (no app; NATS)".into(), &f.idle));
    line(row("1 component, warm cache".into(), &f.singles));
    line(row(format!("{} components, warm cache", n / 2), &f.halves));
    line(row(format!("{n} components, warm cache"), &f.fulls));
    line(format!(
        "| {n} components, cold (empty cache: compiles all), one start | {} | {} | {} |",
        ms(f.cold.ready),
        mib(f.cold.rss_kib as f64),
        f.cold.threads
    ));
    line(format!(
        "| {n} components, after the calls below ({} calls, every component at least once) | — | {} | {} |",
        n + f.latency.rounds.len() * f.latency.calls,
        mib(f.after_calls.rss_kib as f64),
        f.after_calls.threads
    ));
    line(String::new());
    let (rss_half, rss_full) = (rss(&f.halves).map_or(0.0, |r| r.0), rss(&f.fulls).map_or(0.0, |r| r.0));
    let rss_one = rss(&f.singles).map_or(0.0, |r| r.0);
    let extra = (n - n / 2) as f64;
    let marginal_kib = (rss_full - rss_half) / extra;
    let marginal_ms = ready(&f.fulls)
        .zip(ready(&f.halves))
        .map_or(0.0, |(a, b)| (a.0.as_secs_f64() - b.0.as_secs_f64()) * 1e3 / extra);
    let warm_full = ready(&f.fulls).map_or(Duration::ZERO, |t| t.0);
    line(format!(
        "Marginal cost of one more component (from {} to {n}, medians): **{:.0} KiB** resident \
         ({:.0} KiB on average from 1 to {n}) and **{:.2} ms** of start time.",
        n / 2,
        marginal_kib,
        (rss_full - rss_one) / (n - 1) as f64,
        marginal_ms
    ));
    line(String::new());
    let l = &f.latency;
    line(format!(
        "Latency: `POST /rpc/<component>/get` on one kept-alive connection per host, concurrency 1, the N-host's \
         calls alternating call by call with the same call to the one-component host (same client, same noise). \
         {} rounds of {} calls each, after one first call of each of the N components.",
        l.rounds.len(),
        l.calls
    ));
    line(String::new());
    line("| calls | p50 | p99 | one-component host, alternating: p50 | p99 | p50 ratio |".into());
    line("|---|---|---|---|---|---|".into());
    let ratio = |a: Percentiles, b: Percentiles| a.p50.as_secs_f64() / b.p50.as_secs_f64();
    line(format!(
        "| first call of each of the {n} components | {} | {} | {} | {} | {:.2}× |",
        us(l.first.p50),
        us(l.first.p99),
        us(l.first_single.p50),
        us(l.first_single.p99),
        ratio(l.first, l.first_single)
    ));
    for (i, (a, b)) in l.rounds.iter().enumerate() {
        line(format!(
            "| round {}: a random one of {n} | {} | {} | {} | {} | {:.2}× |",
            i + 1,
            us(a.p50),
            us(a.p99),
            us(b.p50),
            us(b.p99),
            ratio(*a, *b)
        ));
    }
    line(format!(
        "| all rounds | {} | {} | {} | {} | {:.2}× |",
        us(l.all.0.p50),
        us(l.all.0.p99),
        us(l.all.1.p50),
        us(l.all.1.p99),
        ratio(l.all.0, l.all.1)
    ));
    let ratios: Vec<f64> = l.rounds.iter().map(|(a, b)| ratio(*a, *b)).collect();
    let (r_med, r_min, r_max) = spread(&ratios).unwrap_or((0.0, 0.0, 0.0));
    let p99_ratios: Vec<f64> = l
        .rounds
        .iter()
        .map(|(a, b)| a.p99.as_secs_f64() / b.p99.as_secs_f64())
        .collect();
    let (p99_med, p99_min, p99_max) = spread(&p99_ratios).unwrap_or((0.0, 0.0, 0.0));
    line(String::new());
    line(format!(
        "Random of {n} against one: p50 ratio {r_med:.2}× (median of {} rounds; {r_min:.2}–{r_max:.2}×), \
         p99 ratio {p99_med:.2}× ({p99_min:.2}–{p99_max:.2}×).",
        ratios.len()
    ));
    line(format!(
        "Minor page faults per call during these runs (the hosts' /proc/PID/stat): {:.1} on the {n}-component \
         host, {:.1} on the one-component host.",
        f.faults.0, f.faults.1
    ));
    line(String::new());
    let status = |ok: bool| if ok { "met" } else { "missed" };
    let scale = if n == 1000 {
        String::new()
    } else {
        format!(" (this run: N = {n}, not 1000)")
    };
    line("| goal | measured | status |".into());
    line("|---|---|---|".into());
    line(format!(
        "| 1,000 distinct components on one host, all ready in ≤ 2 s from a warm cache{scale} | {} for {n} | {} |",
        ms(warm_full),
        status(n >= 1000 && warm_full <= Duration::from_secs(2))
    ));
    line(format!(
        "| ≤ 1 MiB marginal RSS per component | {marginal_kib:.0} KiB | {} |",
        status(marginal_kib <= 1024.0)
    ));
    line(format!(
        "| a call to a random one keeps its normal latency (p50 within 20 % of the one-component host's) | \
         {r_med:.2}× ({r_min:.2}–{r_max:.2}×) | {} |",
        status(r_med <= 1.2)
    ));
    let met = n >= 1000 && warm_full <= Duration::from_secs(2) && marginal_kib <= 1024.0;
    let goal = format!(
        "| {n} distinct components on one host (`--bench density`) | 1,000, ≤ 1 MiB marginal RSS each, all ready in ≤ 2 s \
         from a warm cache | ready in {}, {marginal_kib:.0} KiB each; a random call {r_med:.2}× ({r_min:.2}–{r_max:.2}) the \
         p50 of a one-component host | {} |\n",
        ms(warm_full),
        if met && r_med <= 1.2 {
            "met".to_string()
        } else if met {
            "met; the call latency is not: 1,000 copies of the code and memory slots do not stay in the CPU caches, and \
             the pooling allocator keeps warm slots for 100 ([density](docs/performance.md#density-1-000-components-on-one-host))"
                .to_string()
        } else {
            "missed ([density](docs/performance.md#density-1-000-components-on-one-host))".to_string()
        }
    );
    (out, goal)
}
