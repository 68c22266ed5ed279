//! Soak: the insurance example and `versioned` on three lattice hosts and a
//! three-node JetStream cluster (every stream R3), under steady HTTP load,
//! for a long time, while the lattice is disturbed on a schedule:
//!
//! - a hot swap of `versioned` (v1 and v2 in turn) every `--swap` seconds;
//! - a host churn every `--churn` seconds: a new host labelled like the
//!   rater's joins, then the old one is stopped with SIGTERM;
//! - a NATS node restart every `--nats` seconds (SIGKILL, 5 s down).
//!
//! Every 10 s it samples, per host: RSS, open descriptors, tokio tasks
//! (`/metrics`) and NATS subscriptions (the servers' `/connz`). Each failed
//! request is charged to the last event before it (within 15 s), or to
//! none. It writes the `soak` section of BENCHMARKS.md and soak.svg.
//!
//! Not in CI. Run the binary that `cargo test --release --all-targets
//! --no-run` built (`cargo bench` would build the host again):
//!
//! ```sh
//! target/release/deps/soak-<hash> --minutes 30            # ~31 min; BENCHMARKS.md + soak.svg
//! target/release/deps/soak-<hash> --quick                 # 3 min; writes under target/
//! ```

use membrane_benches::{Membrane, machine, membrane_binary, wasm, write_section};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POLICY: &[u8] = include_bytes!("../examples/insurance/policy.json");
/// How often each host is sampled.
const SAMPLE: Duration = Duration::from_secs(10);
/// How long after an event a failure is charged to it.
const BLAME: Duration = Duration::from_secs(15);

/// The run's schedule, in seconds.
struct Plan {
    minutes: u64,
    swap: u64,
    churn: u64,
    nats: u64,
    quick: bool,
}

impl Plan {
    fn from_args() -> Plan {
        let args: Vec<String> = std::env::args().collect();
        let value = |flag: &str, default: u64| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        if args.iter().any(|a| a == "--quick") {
            return Plan {
                minutes: value("--minutes", 3),
                swap: value("--swap", 20),
                churn: value("--churn", 60),
                nats: value("--nats", 90),
                quick: true,
            };
        }
        Plan {
            minutes: value("--minutes", 30),
            swap: value("--swap", 60),
            churn: value("--churn", 300),
            nats: value("--nats", 600),
            quick: false,
        }
    }
}

/// One clustered nats-server, killable and restartable on its ports.
struct Node {
    name: String,
    child: Option<std::process::Child>,
    port: u16,
    monitor: u16,
    args: Vec<String>,
    _store: tempfile::TempDir,
}

/// `n` different free loopback ports (all bound at once, then let go).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("its address").port())
        .collect()
}

fn nats_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MEMBRANE_NATS_SERVER") {
        return path.into();
    }
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("nats-server (scripts/test.sh installs it)")
}

impl Node {
    fn cluster(n: usize) -> Vec<Node> {
        let routes = free_ports(n);
        let all = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        (0..n)
            .map(|i| {
                let store = tempfile::tempdir().expect("store");
                let ports = free_ports(2);
                let (port, monitor) = (ports[0], ports[1]);
                let args = [
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-n",
                    &format!("s{i}"),
                    "-p",
                    &port.to_string(),
                    "-m",
                    &monitor.to_string(),
                    "--cluster_name",
                    "membrane",
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes",
                    &all,
                    "-sd",
                    &store.path().display().to_string(),
                ]
                .map(String::from)
                .to_vec();
                let mut node = Node {
                    name: format!("s{i}"),
                    child: None,
                    port,
                    monitor,
                    args,
                    _store: store,
                };
                node.start();
                node
            })
            .collect()
    }

    fn start(&mut self) {
        let child = std::process::Command::new(nats_binary())
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} did not listen", self.name);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `/connz`: client port -> subscriptions, for every connection.
    fn subscriptions(&self) -> BTreeMap<u16, u64> {
        let Some(body) = get(("127.0.0.1", self.monitor), "/connz?limit=4096") else {
            return BTreeMap::new();
        };
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        doc["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((u16::try_from(c["port"].as_u64()?).ok()?, c["subscriptions"].as_u64()?)))
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.0 GET; the body, or `None` on any failure.
fn get(addr: impl std::net::ToSocketAddrs, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// One HTTP/1.1 request on a fresh connection; its status (0: no answer).
fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> u16 {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    if stream.write_all(&bytes).is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(out.get(9..12).unwrap_or_default())
        .parse()
        .unwrap_or(0)
}

/// A lattice host: the process, its role and where its admin and HTTP are.
struct Host {
    role: &'static str,
    process: Membrane,
    admin: std::net::SocketAddr,
}

fn join(binary: &Path, url: &str, role: &'static str) -> Host {
    let label = format!("node={role}");
    let words = [
        "--nats",
        url,
        "--lattice",
        "soak",
        "--nats-replicas",
        "3",
        "--heartbeat-ms",
        "1000",
        "--label",
        &label,
    ];
    let args: Vec<&OsStr> = words.iter().map(OsStr::new).collect();
    let process = Membrane::start(binary, &args, &[], Duration::from_secs(60));
    let admin = process
        .log
        .iter()
        .find_map(|l| l.split("admin http://").nth(1)?.split('/').next()?.parse().ok())
        .expect("the admin address in the log");
    Host { role, process, admin }
}

/// Runs `membrane ctl` on the soak lattice; whether it succeeded.
fn ctl(binary: &Path, urls: &str, args: &[&str]) -> bool {
    let output = std::process::Command::new(binary)
        .args(["ctl", "--nats", urls, "--lattice", "soak", "--nats-replicas", "3"])
        .args(args)
        .output()
        .expect("run membrane ctl");
    if !output.status.success() {
        eprintln!("ctl {args:?}: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    output.status.success()
}

/// One sample of one host.
#[derive(Clone, Default)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    tasks: u64,
    subscriptions: u64,
}

fn sample(host: &Host, nodes: &[Node]) -> Sample {
    let pid = host.process.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    let tasks = get(host.admin, "/metrics")
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("membrane_tokio_tasks ")?.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0) as u64;
    // The host's client ports, from its sockets to the servers.
    let ports = client_ports(pid, nodes);
    let subscriptions = nodes
        .iter()
        .flat_map(|n| n.subscriptions())
        .filter(|(port, _)| ports.contains(port))
        .map(|(_, subs)| subs)
        .sum();
    Sample {
        rss_kib: host.process.status("VmRSS"),
        fds,
        tasks,
        subscriptions,
    }
}

/// The local ports of `pid`'s TCP connections to any of `nodes`.
fn client_ports(pid: u32, nodes: &[Node]) -> Vec<u16> {
    let Ok(out) = std::process::Command::new("ss")
        .args(["-tnpH", "state", "established"])
        .output()
    else {
        return Vec::new();
    };
    let servers: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let (local, peer) = (cols.get(2)?, cols.get(3)?);
            servers
                .iter()
                .any(|s| s == peer)
                .then(|| local.rsplit(':').next()?.parse().ok())?
        })
        .collect()
}

fn main() {
    let plan = Plan::from_args();
    let binary = membrane_binary();
    let (cpu, cores) = machine();
    let length = Duration::from_secs(plan.minutes * 60);
    eprintln!(
        "soak: {} min, swap every {} s, churn every {} s, NATS restart every {} s",
        plan.minutes, plan.swap, plan.churn, plan.nats
    );
    let mut nodes = Node::cluster(3);
    let urls = nodes.iter().map(Node::url).collect::<Vec<_>>().join(",");
    // The cluster elects its JetStream leader first: retry the apply.
    let dir = tempfile::tempdir().expect("dir");
    let manifest = dir.path().join("soak.toml");
    // Host a never churns: its two listeners are on fixed ports.
    let ports = free_ports(2);
    let gateway: std::net::SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let versioned: std::net::SocketAddr = ([127, 0, 0, 1], ports[1]).into();
    let text = std::fs::read_to_string("examples/insurance/distributed.toml")
        .expect("run from the repository root")
        .replace("name = \"insurance\"", "name = \"soak\"")
        .replace("127.0.0.1:8080", &gateway.to_string());
    let text = format!(
        "{text}\n[components.versioned]\nsource = \"{}\"\nplacement = {{ node = \"a\" }}\n\n[[bindings]]\nmedium = \"http\"\naddress = \"{versioned}\"\ncomponent = \"versioned\"\n",
        wasm("versioned_v1")
    );
    let text = ["gateway", "rater", "pricing"].iter().fold(text, |t, c| {
        t.replace(&format!("../../target/wasm32-wasip2/release/{c}.wasm"), &wasm(c))
    });
    std::fs::write(&manifest, text).expect("write manifest");
    let mut hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, role)| join(&binary, &nodes[i].url(), role))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ctl(&binary, &urls, &["apply", &manifest.display().to_string()]) {
        assert!(Instant::now() < deadline, "cannot apply");
        std::thread::sleep(Duration::from_secs(1));
    }
    while request(gateway, "POST", "/quote", POLICY) != 200 || request(versioned, "GET", "/", b"") != 200 {
        assert!(Instant::now() < deadline, "the app did not start");
        std::thread::sleep(Duration::from_millis(200));
    }

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let load: Vec<_> = (0..4)
        .map(|k| {
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let status = if k < 3 {
                        request(gateway, "POST", "/quote", POLICY)
                    } else {
                        request(versioned, "GET", "/", b"")
                    };
                    let what = if k < 3 { "POST /quote" } else { "GET versioned" };
                    outcomes.lock().unwrap().push((start.elapsed(), status, what));
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();

    let mut events: Vec<(Duration, String)> = Vec::new();
    let mut samples: Vec<(Duration, Vec<(String, Sample)>)> = Vec::new();
    let (mut next_swap, mut next_churn, mut next_nats, mut next_sample) =
        (plan.swap, plan.churn, plan.nats, Duration::ZERO);
    let mut version = 1;
    let mut churns = 0;
    let mut restarts = 0;
    while start.elapsed() < length {
        let now = start.elapsed();
        if now >= next_sample {
            let row = hosts
                .iter()
                .map(|h| (format!("{}{}", h.role, h.process.id()), sample(h, &nodes)))
                .collect();
            samples.push((now, row));
            next_sample += SAMPLE;
            let last = &samples[samples.len() - 1].1;
            eprintln!(
                "{:>5.0} s  {}",
                now.as_secs_f64(),
                last.iter()
                    .map(|(h, s)| format!(
                        "{h}: {} KiB {} fds {} tasks {} subs",
                        s.rss_kib, s.fds, s.tasks, s.subscriptions
                    ))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        if now.as_secs() >= next_swap {
            version = 3 - version;
            let source = wasm(&format!("versioned_v{version}"));
            events.push((start.elapsed(), format!("swap to v{version}")));
            ctl(&binary, &urls, &["update", "versioned", &source]);
            next_swap += plan.swap;
        }
        if now.as_secs() >= next_churn {
            churns += 1;
            events.push((start.elapsed(), "host churn".into()));
            let url = nodes[1].url();
            let fresh = join(&binary, &url, "b");
            let old = std::mem::replace(&mut hosts[1], fresh);
            old.process.stop("TERM");
            next_churn += plan.churn;
        }
        if now.as_secs() >= next_nats {
            let k = restarts % nodes.len();
            restarts += 1;
            events.push((start.elapsed(), format!("kill -9 nats {}", nodes[k].name)));
            nodes[k].kill();
            std::thread::sleep(Duration::from_secs(5));
            nodes[k].start();
            next_nats += plan.nats;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        let _ = thread.join();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    report(&plan, &cpu, cores, &outcomes, &events, &samples, (churns, restarts));
}

/// When a request ended, its status (0: no answer) and what it was.
type Outcome = (Duration, u16, &'static str);

fn report(
    plan: &Plan,
    cpu: &str,
    cores: usize,
    outcomes: &[Outcome],
    events: &[(Duration, String)],
    samples: &[(Duration, Vec<(String, Sample)>)],
    (churns, restarts): (usize, usize),
) {
    // Each failure goes to the last event at most BLAME before it.
    let mut blamed: BTreeMap<String, usize> = BTreeMap::new();
    let mut each = String::new();
    for (at, status, what) in outcomes {
        if *status == 200 {
            continue;
        }
        let answer = match status {
            0 => "no answer".to_string(),
            s => s.to_string(),
        };
        each += &format!("| {:.1} s | {what} | {answer} |\n", at.as_secs_f64());
        let culprit = events
            .iter()
            .rev()
            .find(|(t, _)| t <= at && *at - *t <= BLAME)
            .map_or("none".to_string(), |(t, e)| format!("{e} at {:.0} s", t.as_secs_f64()));
        *blamed.entry(culprit).or_default() += 1;
    }
    let failed: usize = blamed.values().sum();
    let mut md = format!(
        "## Soak\n\n{} min on {cpu} ({cores} cores): three lattice hosts on a three-node JetStream cluster (R3), \
         the insurance example and `versioned` under 4 HTTP clients; a hot swap every {} s, a host churn every {} s \
         ({churns} in all), a NATS node killed with SIGKILL for 5 s every {} s ({restarts} in all). \
         `target/release/deps/soak-<hash> --minutes {}`.\n\n\
         {} requests, {failed} failed.\n\n| failures charged to (within {} s) | failed |\n|---|---|\n",
        plan.minutes,
        plan.swap,
        plan.churn,
        plan.nats,
        plan.minutes,
        outcomes.len(),
        BLAME.as_secs()
    );
    for (event, n) in &blamed {
        md += &format!("| {event} | {n} |\n");
    }
    if !each.is_empty() {
        md += &format!("\n| failed at | request | status |\n|---|---|---|\n{each}");
    }
    md += "\n| at | host | RSS (KiB) | fds | tokio tasks | NATS subs |\n|---|---|---|---|---|---|\n";
    let every = (samples.len() / 12).max(1);
    for (at, row) in samples.iter().step_by(every).chain(samples.last()) {
        for (host, s) in row {
            md += &format!(
                "| {:.0} s | {host} | {} | {} | {} | {} |\n",
                at.as_secs_f64(),
                s.rss_kib,
                s.fds,
                s.tasks,
                s.subscriptions
            );
        }
    }
    md += "\n![soak](soak.svg)\n";
    let svg = chart(samples, events, outcomes);
    let root = Path::new(".");
    let (file, image) = if plan.quick {
        let out = Path::new("target/release");
        (out.join("soak-quick.md"), out.join("soak-quick.svg"))
    } else {
        (root.join("BENCHMARKS.md"), root.join("soak.svg"))
    };
    write_section(&file, "soak", &md);
    std::fs::write(&image, svg).expect("write chart");
    eprintln!("{md}\nwrote {} and {}", file.display(), image.display());
}

/// Four panels over time (RSS, fds, tasks, subscriptions per host slot)
/// and failures per 10 s, with the events as vertical lines.
fn chart(samples: &[(Duration, Vec<(String, Sample)>)], events: &[(Duration, String)], outcomes: &[Outcome]) -> String {
    let (w, left, plot_w, plot_h) = (900.0, 70.0, 800.0, 90.0);
    type Panel = (&'static str, fn(&Sample) -> f64);
    let panels: [Panel; 4] = [
        ("RSS (MiB)", |s| s.rss_kib as f64 / 1024.0),
        ("open fds", |s| s.fds as f64),
        ("tokio tasks", |s| s.tasks as f64),
        ("NATS subscriptions", |s| s.subscriptions as f64),
    ];
    let h = 40.0 + 5.0 * (plot_h + 40.0);
    let end = samples.last().map_or(1.0, |(t, _)| t.as_secs_f64()).max(1.0);
    let x = |t: f64| left + plot_w * t / end;
    let colors = ["#1f77b4", "#d62728", "#2ca02c"];
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n"
    );
    let mut panel_top = 30.0;
    let frame = |svg: &mut String, title: &str, max: f64, top: f64| {
        *svg += &format!(
            "<text x=\"{left}\" y=\"{}\" font-weight=\"bold\">{title}</text>\n<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max:.0}</text>\n",
            top - 6.0,
            top + plot_h,
            left + plot_w,
            top + plot_h,
            left - 4.0,
            top + 10.0
        );
        for (t, _) in events {
            let px = x(t.as_secs_f64());
            *svg += &format!(
                "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
                top + plot_h
            );
        }
    };
    for (title, value) in panels {
        let max = samples
            .iter()
            .flat_map(|(_, row)| row.iter().map(|(_, s)| value(s)))
            .fold(1.0, f64::max)
            * 1.1;
        frame(&mut svg, title, max, panel_top);
        for (slot, color) in colors.iter().enumerate() {
            let points: Vec<String> = samples
                .iter()
                .filter_map(|(t, row)| {
                    let (_, s) = row.get(slot)?;
                    Some(format!(
                        "{:.1},{:.1}",
                        x(t.as_secs_f64()),
                        panel_top + plot_h - plot_h * value(s) / max
                    ))
                })
                .collect();
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
                color,
                points.join(" ")
            );
        }
        panel_top += plot_h + 40.0;
    }
    // Failures per 10 s.
    let bins = (end / 10.0).ceil() as usize + 1;
    let mut failed = vec![0usize; bins];
    for (t, status, _) in outcomes {
        if *status != 200 {
            failed[((t.as_secs_f64() / 10.0) as usize).min(bins - 1)] += 1;
        }
    }
    let max = failed.iter().copied().max().unwrap_or(0).max(1) as f64;
    frame(&mut svg, "failed requests per 10 s", max, panel_top);
    for (i, n) in failed.iter().enumerate().filter(|(_, n)| **n > 0) {
        let bar = plot_h * *n as f64 / max;
        svg += &format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"4\" height=\"{bar:.1}\" fill=\"#d62728\"/>\n",
            x(i as f64 * 10.0),
            panel_top + plot_h - bar
        );
    }
    let axis = panel_top + plot_h + 16.0;
    for (i, name) in [
        "host a (gateway, versioned)",
        "host b (rater; churned)",
        "host c (pricing)",
    ]
    .iter()
    .enumerate()
    {
        let lx = left + 250.0 * i as f64;
        svg += &format!(
            "<rect x=\"{lx}\" y=\"{:.1}\" width=\"12\" height=\"4\" fill=\"{}\"/><text x=\"{}\" y=\"{:.1}\">{name}</text>\n",
            axis + 8.0,
            colors[i],
            lx + 16.0,
            axis + 13.0
        );
    }
    svg += &format!(
        "<text x=\"{left}\" y=\"{axis:.1}\">0 s</text><text x=\"{}\" y=\"{axis:.1}\" text-anchor=\"end\">{end:.0} s; grey lines: swaps, churns, NATS kills</text>\n",
        left + plot_w
    );
    svg += "</svg>\n";
    svg
}
