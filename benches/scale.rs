//! Scale: lattices of 1, 5, 10 and 20 `membrane up` processes on this
//! machine, joined through one private nats-server, each running 20 apps of
//! 5 components (100 components, 2 replicas each where there are 2 hosts).
//!
//! ```sh
//! cargo test --release --all-targets --no-run && scripts/build-components.sh
//! cargo bench -p membrane-benches --bench scale             # 1, 5, 10, 20 hosts; ~5 min; writes BENCHMARKS.md's scale section
//! cargo bench -p membrane-benches --bench scale -- --quick  # 1 and 3 hosts, 4 apps; writes under target/
//! cargo bench -p membrane-benches --bench scale -- --sizes 1,2,4
//! cargo bench -p membrane-benches --bench scale -- --sizes 20 --console  # also what `ctl console` costs
//! ```
//!
//! With `--console`, each lattice also runs `membrane ctl console` for 20 s
//! after the idle window: the bench reports its snapshot's size, the
//! console's CPU time per round, and how long the page (headless Chromium,
//! `console/test/inspect.mjs`) takes to apply a snapshot.
//!
//! For each size, on a lattice of its own: the hosts start and join; the
//! operator applies the 20 apps with `membrane ctl apply` (one process each,
//! as a user would), and the bench waits for every replica's
//! `component.started` event, then checks that every app answers over its
//! NATS binding; `ctl update` swaps one component of each app to another
//! version and the bench checks that every replica reported it; `ctl
//! inventory` and `ctl apps` are timed; an idle window counts the messages
//! the broker carries per second and host; and the messages of one
//! operation are counted by subscribing to every subject (`>`), so a cost
//! that grows with the number of hosts shows.

use futures::StreamExt as _;
use membrane_benches::{Membrane, NatsServer, wasm};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Replicas each component asks for (`instances`).
const REPLICAS: usize = 2;
/// Components per app.
const COMPONENTS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--sizes")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| if quick { vec![1, 3] } else { vec![1, 5, 10, 20] });
    let apps = if quick { 4 } else { 20 };
    // The idle window over which messages per second are counted: two
    // heartbeats at least.
    let idle = if quick {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(21)
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = membrane_benches::membrane_binary();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let env = Env {
        binary: binary.clone(),
        url: server.url.clone(),
        cache: dir.path().join("cache"),
        key: dir.path().join("cache.key"),
        home: dir.path().to_path_buf(),
    };
    let manifests: Vec<PathBuf> = (0..apps).map(|a| app_manifest(dir.path(), a)).collect();
    let mut results = Vec::new();
    for &n in &sizes {
        eprintln!("scale: {n} host(s), {apps} apps x {COMPONENTS} components...");
        let console = args.iter().any(|a| a == "--console");
        results.push(rt.block_on(size(&env, &server, n, &manifests, (idle, console))));
    }
    drop(server);
    let report = report(&results, apps, idle, quick);
    println!("{report}");
    let chart = chart(&results);
    if quick || args.iter().any(|a| a == "--sizes") {
        let target = binary.parent().expect("target dir");
        std::fs::write(target.join("SCALE-quick.md"), &report).expect("write report");
        std::fs::write(target.join("scale-quick.svg"), chart).expect("write chart");
        eprintln!("wrote {}", target.join("SCALE-quick.md").display());
    } else {
        membrane_benches::write_section(&root.join("BENCHMARKS.md"), "scale", &report);
        std::fs::write(root.join("scale.svg"), chart).expect("write chart");
        eprintln!("wrote BENCHMARKS.md (scale section) and scale.svg");
    }
}

/// What every process of the bench shares.
struct Env {
    binary: PathBuf,
    url: String,
    cache: PathBuf,
    key: PathBuf,
    /// HOME of `membrane ctl`, so it never touches the user's.
    home: PathBuf,
}

impl Env {
    fn host(&self, lattice: &str, slot: usize) -> Membrane {
        let slot = format!("slot={slot}");
        let args: Vec<&OsStr> = [
            "--nats",
            &self.url,
            "--lattice",
            lattice,
            "--label",
            &slot,
            "--admin",
            "off",
        ]
        .into_iter()
        .map(OsStr::new)
        .collect();
        Membrane::start(
            &self.binary,
            &args,
            &[
                ("MEMBRANE_CACHE_DIR", self.cache.as_os_str()),
                ("MEMBRANE_CACHE_KEY", self.key.as_os_str()),
            ],
            Duration::from_secs(120),
        )
    }

    /// Runs `membrane ctl <args> -o json` on `lattice`; its stdout, and how
    /// long the process took.
    fn ctl(&self, lattice: &str, args: &[&str]) -> (serde_json::Value, Duration) {
        let started = Instant::now();
        let out = Command::new(&self.binary)
            .args(["ctl", "--nats", &self.url, "--lattice", lattice, "-o", "json"])
            .args(args)
            .env("HOME", &self.home)
            .env_remove("MEMBRANE_OPERATOR_KEY")
            .output()
            .expect("run membrane ctl");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "membrane ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "membrane ctl {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (json, took)
    }
}

/// App `a`: five `versioned` components, `REPLICAS` of each, the first
/// answering on `scale.app<a>` over NATS.
fn app_manifest(dir: &Path, a: usize) -> PathBuf {
    let mut text = format!("[app]\nname = \"app{a}\"\n");
    for c in 0..COMPONENTS {
        text += &format!(
            "[components.c{c}]\nsource = \"{}\"\ninstances = {REPLICAS}\n",
            wasm("versioned_v1")
        );
    }
    text += &format!(
        "[[bindings]]\nmedium = \"nats\"\nsubject = \"scale.app{a}\"\ncomponent = \"c0\"\nexport = \"example:testkit/version@0.1.0#get\"\n"
    );
    let path = dir.join(format!("app{a}.toml"));
    std::fs::write(&path, text).expect("write manifest");
    path
}

/// Messages the broker carried, by kind, as seen by a subscriber to `>`.
#[derive(Default, Clone, Debug)]
struct Counts(BTreeMap<&'static str, u64>);

impl Counts {
    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    fn get(&self, kind: &str) -> u64 {
        self.0.get(kind).copied().unwrap_or(0)
    }

    fn since(&self, before: &Counts) -> Counts {
        Counts(self.0.iter().map(|(k, v)| (*k, v - before.get(k))).collect())
    }
}

/// The kind of a subject on lattice `lattice`, for counting.
fn kind(subject: &str, lattice: &str) -> &'static str {
    let ours = format!("membrane.{lattice}.");
    match subject.strip_prefix(&ours) {
        Some(rest) if rest.starts_with("evt.v1.heartbeat.") => "heartbeat",
        Some(rest) if rest.starts_with("evt.") => "event",
        Some(rest) if rest.starts_with("ctl.") => "inventory request",
        Some(_) => "other lattice",
        None if subject.starts_with("$KV.") || subject.starts_with("$O.") => "KV and object store",
        None if subject.starts_with("$JS.") => "JetStream API",
        // Inboxes: request replies, and the KV watchers' deliveries and
        // idle heartbeats (JetStream push consumers deliver to an inbox).
        None if subject.starts_with("_INBOX.") || subject.starts_with("_MEMBRANE.") => "replies",
        None => "other",
    }
}

/// Counts every message on the server, by kind, from a connection of its own.
async fn counter(url: &str, lattice: &str) -> Arc<Mutex<Counts>> {
    let client = async_nats::connect(url).await.expect("nats");
    let mut all = client.subscribe(">").await.expect("subscribe >");
    client.flush().await.expect("flush");
    let counts = Arc::new(Mutex::new(Counts::default()));
    let (shared, lattice) = (counts.clone(), lattice.to_string());
    tokio::spawn(async move {
        let _client = client;
        while let Some(message) = all.next().await {
            let kind = kind(&message.subject, &lattice);
            *shared.lock().expect("counts").0.entry(kind).or_default() += 1;
        }
    });
    counts
}

/// The figures of one lattice size.
struct Size {
    hosts: usize,
    /// From the first host spawned to the last one ready.
    start: Duration,
    /// The `ctl apply` processes, one per app, back to back.
    apply: Duration,
    /// From the first apply to the last replica's `component.started`.
    serving: Duration,
    replicas: usize,
    /// Each app's `ctl update`.
    updates: Vec<Duration>,
    /// Each app's `ctl inventory`.
    inventories: Vec<Duration>,
    /// `ctl apps`, a few times.
    apps: Vec<Duration>,
    /// Messages of one `ctl update`, one `ctl inventory`, and the idle window.
    update_msgs: Counts,
    inventory_msgs: Counts,
    idle_msgs: Counts,
    /// The server's counters over the idle window (the bench's own `>`
    /// subscriber included in `out`).
    idle_varz: Varz,
    /// Subscriptions each host holds on the server.
    subs_per_host: f64,
    idle: Duration,
    /// What the console costs (`--console`).
    console: Option<ConsoleCost>,
    /// Resident memory of each host, KiB.
    rss: Vec<u64>,
}

async fn size(
    env: &Env,
    server: &NatsServer,
    n: usize,
    manifests: &[PathBuf],
    (idle, console): (Duration, bool),
) -> Size {
    let lattice = format!("scale{n}");
    let subscriptions = || server.monitoring("varz")["subscriptions"].as_u64().unwrap_or(0);
    let subs_before = subscriptions();
    let counts = counter(&env.url, &lattice).await;
    let client = async_nats::connect(&env.url).await.expect("nats");
    let mut started = client
        .subscribe(format!("membrane.{lattice}.evt.v1.component.started.*"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");

    let t = Instant::now();
    let hosts: Vec<Membrane> = (0..n).map(|i| env.host(&lattice, i)).collect();
    let start = t.elapsed();

    // Apply every app; every replica starts.
    let replicas = manifests.len() * COMPONENTS * REPLICAS.min(n);
    let t = Instant::now();
    for manifest in manifests {
        env.ctl(&lattice, &["apply", &manifest.display().to_string()]);
    }
    let apply = t.elapsed();
    let mut seen = 0;
    while seen < replicas {
        match tokio::time::timeout(Duration::from_secs(120), started.next()).await {
            Ok(Some(_)) => seen += 1,
            _ => panic!("{n} hosts: {seen} of {replicas} replicas started in 120 s"),
        }
    }
    let serving = t.elapsed();
    for a in 0..manifests.len() {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            client.request(format!("scale.app{a}"), "{}".into()),
        )
        .await
        .unwrap_or_else(|_| panic!("{n} hosts: app{a} did not answer in 5 s"))
        .unwrap_or_else(|e| panic!("{n} hosts: app{a}: {e}"));
        assert!(
            reply.headers.is_none(),
            "{n} hosts: app{a} answered an error: {:?}",
            reply.headers
        );
    }

    // Update one component of each app; every replica reports it.
    let mut updates = Vec::new();
    let mut update_msgs = Counts::default();
    let v2 = wasm("versioned_v2");
    for a in 0..manifests.len() {
        let before = counts.lock().expect("counts").clone();
        let (json, took) = env.ctl(&lattice, &["update", &format!("app{a}/c1"), &v2]);
        if a == 0 {
            // Let the last replies arrive before counting.
            client.flush().await.expect("flush");
            update_msgs = counts.lock().expect("counts").since(&before);
        }
        let hosts = json["hosts"].as_array().map_or(0, Vec::len);
        assert_eq!(json["outcome"], "updated", "{n} hosts: app{a}: {json}");
        assert_eq!(
            hosts,
            REPLICAS.min(n),
            "{n} hosts: app{a}: every replica swapped: {json}"
        );
        updates.push(took);
    }

    // Inventory and apps round trips.
    let mut inventories = Vec::new();
    let mut inventory_msgs = Counts::default();
    for i in 0..manifests.len().max(5) {
        let before = counts.lock().expect("counts").clone();
        let (json, took) = env.ctl(&lattice, &["inventory"]);
        if i == 0 {
            client.flush().await.expect("flush");
            inventory_msgs = counts.lock().expect("counts").since(&before);
        }
        let answered = json.as_array().map_or(0, Vec::len);
        assert_eq!(answered, n, "{n} hosts: every host in the inventory");
        inventories.push(took);
    }
    let apps = (0..5).map(|_| env.ctl(&lattice, &["apps"]).1).collect();

    // Idle: what the lattice costs the broker when nothing happens.
    let before = counts.lock().expect("counts").clone();
    let varz = Varz::read(server);
    tokio::time::sleep(idle).await;
    let idle_msgs = counts.lock().expect("counts").since(&before);
    let idle_varz = Varz::read(server).since(&varz);
    let subs_per_host = (subscriptions().saturating_sub(subs_before)) as f64 / n as f64;

    let rss = hosts.iter().map(|h| h.status("VmRSS")).collect();
    let console = console.then(|| console_cost(env, &lattice));
    drop(hosts);
    Size {
        hosts: n,
        start,
        apply,
        serving,
        replicas,
        updates,
        inventories,
        apps,
        update_msgs,
        inventory_msgs,
        idle_msgs,
        idle_varz,
        subs_per_host,
        idle,
        rss,
        console,
    }
}

/// What `membrane ctl console` costs on one lattice.
struct ConsoleCost {
    /// The snapshot a page gets every round (`/snapshot.json`).
    snapshot_bytes: usize,
    /// Hosts, components and links in it.
    shown: (usize, usize, usize),
    /// The console's CPU time (user and system) per round, over 10 rounds.
    cpu_per_round: Duration,
    /// How long the page took to apply the last snapshot, layout included.
    render_ms: f64,
}

/// Runs `membrane ctl console` on `lattice` for 26 s and measures it.
fn console_cost(env: &Env, lattice: &str) -> ConsoleCost {
    use std::io::{BufRead as _, Read as _, Write as _};
    let mut child = Command::new(&env.binary)
        .args([
            "ctl",
            "--nats",
            &env.url,
            "--lattice",
            lattice,
            "console",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("HOME", &env.home)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run membrane ctl console");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("the console's address");
    std::thread::spawn(move || for _ in stderr.lines() {});
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("an address")
        .to_string();
    let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        // After the command's `)`: utime and stime are the 12th and 13th fields.
        let fields: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        // Clock ticks of 10 ms.
        Duration::from_millis(10 * (fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0)))
    };
    // Two rounds for rates, then ten measured.
    std::thread::sleep(Duration::from_secs(6));
    let before = cpu();
    std::thread::sleep(Duration::from_secs(20));
    let cpu_per_round = (cpu() - before) / 10;
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect to the console");
    write!(
        stream,
        "GET /snapshot.json HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .expect("ask");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let text = String::from_utf8_lossy(&answer);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let snapshot: serde_json::Value = serde_json::from_str(body).expect("a snapshot");
    let count = |k: &str| snapshot[k].as_array().map_or(0, Vec::len);
    let components = snapshot["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["components"].as_array().map_or(0, Vec::len))
        .sum();
    let inspect = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../console/test/inspect.mjs");
    let page = Command::new("node")
        .args([
            inspect.as_os_str(),
            OsStr::new(&url),
            OsStr::new("window.__snapshots >= 2"),
            OsStr::new("60000"),
        ])
        .output()
        .expect("node console/test/inspect.mjs (scripts/build-console.sh)");
    let page: serde_json::Value = serde_json::from_slice(&page.stdout).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    ConsoleCost {
        snapshot_bytes: body.len(),
        shown: (count("hosts"), components, count("links")),
        cpu_per_round,
        render_ms: page["render_ms"].as_f64().unwrap_or(f64::NAN),
    }
}

/// The server's own message counters (`/varz`): messages and bytes in
/// (published) and out (delivered, once per subscriber).
#[derive(Clone, Copy, Default)]
struct Varz {
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
}

impl Varz {
    fn read(server: &NatsServer) -> Varz {
        let v = server.monitoring("varz");
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Varz {
            in_msgs: n("in_msgs"),
            out_msgs: n("out_msgs"),
            in_bytes: n("in_bytes"),
            out_bytes: n("out_bytes"),
        }
    }

    fn since(&self, before: &Varz) -> Varz {
        Varz {
            in_msgs: self.in_msgs - before.in_msgs,
            out_msgs: self.out_msgs - before.out_msgs,
            in_bytes: self.in_bytes - before.in_bytes,
            out_bytes: self.out_bytes - before.out_bytes,
        }
    }
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn spread(v: &[Duration]) -> String {
    let (min, max) = (v.iter().min().copied(), v.iter().max().copied());
    format!(
        "{} ({}–{})",
        ms(median(v)),
        ms(min.unwrap_or_default()),
        ms(max.unwrap_or_default())
    )
}

fn report(sizes: &[Size], apps: usize, idle: Duration, quick: bool) -> String {
    let (cpu, cores) = membrane_benches::machine();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line("## Scale: 1 to 20 hosts".into());
    line(String::new());
    line(format!(
        "Generated by `cargo bench -p membrane-benches --bench scale{}`. Machine: {cores} cores, {cpu}; every host is a \
         `membrane up` process on it, joined through one nats-server. Each lattice runs {apps} apps of {COMPONENTS} \
         components, `instances = {REPLICAS}` each (one replica on a 1-host lattice). Times are of the whole `membrane \
         ctl` process, as a user waits for it (its NATS connection included); medians, with min–max.",
        if quick { " -- --quick" } else { "" }
    ));
    line(String::new());
    line("![ctl times by lattice size](scale.svg)".into());
    line(String::new());
    line("| hosts | all ready | apply all apps | every replica started | `ctl update` | `ctl inventory` | `ctl apps` | RSS per host (median, max) |".into());
    line("|---|---|---|---|---|---|---|---|".into());
    for s in sizes {
        let mut rss = s.rss.clone();
        rss.sort_unstable();
        line(format!(
            "| {} | {} | {} | {} ({} replicas) | {} | {} | {} | {:.1} MiB, {:.1} MiB |",
            s.hosts,
            ms(s.start),
            ms(s.apply),
            ms(s.serving),
            s.replicas,
            spread(&s.updates),
            spread(&s.inventories),
            spread(&s.apps),
            rss.get(rss.len() / 2).copied().unwrap_or(0) as f64 / 1024.0,
            rss.last().copied().unwrap_or(0) as f64 / 1024.0,
        ));
    }
    line(String::new());
    line(format!(
        "Messages the broker carried (a subscriber to `>`): for one `ctl update` (one component, {REPLICAS} replicas), \
         one `ctl inventory`, and per host and second over {:.0} s of idle lattice.",
        idle.as_secs_f64()
    ));
    line(String::new());
    line("| hosts | update: all | of which events | of which replies and KV deliveries | inventory: all | idle: heartbeats /s/host | idle: other /s/host | idle: broker deliveries /s (all hosts) | idle: bytes out /s | subscriptions per host |".into());
    line("|---|---|---|---|---|---|---|---|---|---|".into());
    for s in sizes {
        let secs = s.idle.as_secs_f64();
        let per = |v: u64| v as f64 / secs / s.hosts as f64;
        // The bench's own `>` subscriber receives each published message once.
        let deliveries = s.idle_varz.out_msgs.saturating_sub(s.idle_varz.in_msgs);
        let bytes = s.idle_varz.out_bytes.saturating_sub(s.idle_varz.in_bytes);
        line(format!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.0} B | {:.0} |",
            s.hosts,
            s.update_msgs.total(),
            s.update_msgs.get("event"),
            s.update_msgs.get("replies"),
            s.inventory_msgs.total(),
            per(s.idle_msgs.get("heartbeat")),
            per(s.idle_msgs.total() - s.idle_msgs.get("heartbeat")),
            deliveries as f64 / secs,
            bytes as f64 / secs,
            s.subs_per_host,
        ));
    }
    for s in sizes {
        if let Some(c) = &s.console {
            line(String::new());
            line(format!(
                "`membrane ctl console` on the {}-host lattice: a snapshot of {:.1} KB ({} hosts, {} components, {} \
                 links), sent every 2 s; the console's CPU {:.0} ms per round; the page applies one in {:.0} ms \
                 (headless Chromium, layout included).",
                s.hosts,
                c.snapshot_bytes as f64 / 1000.0,
                c.shown.0,
                c.shown.1,
                c.shown.2,
                c.cpu_per_round.as_secs_f64() * 1000.0,
                c.render_ms,
            ));
        }
    }
    line(String::new());
    line("Messages of one `ctl update`, by kind, per lattice size:".into());
    line(String::new());
    for s in sizes {
        let kinds: Vec<String> = s.update_msgs.0.iter().map(|(k, v)| format!("{k} {v}")).collect();
        line(format!("- {} host(s): {}", s.hosts, kinds.join(", ")));
    }
    out
}

/// One line of the chart: its name, colour and figure.
type Series = (&'static str, &'static str, fn(&Size) -> Duration);

/// Lines of the median `ctl` times against the number of hosts, as SVG.
fn chart(sizes: &[Size]) -> String {
    let series: [Series; 4] = [
        ("ctl update", "#1f77b4", |s| median(&s.updates)),
        ("ctl inventory", "#ff7f0e", |s| median(&s.inventories)),
        ("ctl apps", "#2ca02c", |s| median(&s.apps)),
        ("apply → every replica started", "#d62728", |s| s.serving),
    ];
    let (left, top, width, height) = (70.0, 40.0, 520.0, 260.0);
    let max_hosts = sizes.iter().map(|s| s.hosts).max().unwrap_or(1).max(1) as f64;
    let max_ms = sizes
        .iter()
        .flat_map(|s| series.iter().map(move |(_, _, f)| f(s).as_secs_f64() * 1e3))
        .fold(1.0, f64::max);
    let x = |h: usize| left + h as f64 / max_hosts * width;
    let y = |ms: f64| top + height - ms / max_ms * height;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">Time (ms) against lattice size (hosts)</text>\n\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max_ms:.0}</text>\n",
        left + width + 260.0,
        top + height + 40.0,
        top + height,
        left + width,
        top + height,
        top + height,
        left - 6.0,
        top + 4.0,
    );
    for s in sizes {
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            x(s.hosts),
            top + height + 16.0,
            s.hosts
        );
    }
    for (i, (name, color, f)) in series.iter().enumerate() {
        let points: Vec<String> = sizes
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.hosts), y(f(s).as_secs_f64() * 1e3)))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/>\n\
             <text x=\"{}\" y=\"{}\">{name}</text>\n",
            points.join(" "),
            left + width + 20.0,
            top + i as f64 * 20.0,
            left + width + 38.0,
            top + 10.0 + i as f64 * 20.0,
        );
    }
    svg + "</svg>\n"
}
