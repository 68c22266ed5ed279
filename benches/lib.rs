//! Shared set-up for Membrane's benchmarks: locating the built components and
//! loading a runtime from inline manifests.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use membrane::app::HostContext;
use membrane::manifest::Manifest;
use membrane::runtime::Runtime;
use membrane::runtime::engine::EngineOptions;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Path of a built component; panics with the command to run when missing.
pub fn wasm(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let path = target.join("wasm32-wasip2/release").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-components.sh first",
        path.display()
    );
    path.display().to_string()
}

/// The built `membrane` binary (release), or `$MEMBRANE_BIN` (another
/// build, to compare two versions in one sitting); panics with the command
/// to run when it is missing.
pub fn membrane_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = match std::env::var_os("MEMBRANE_BIN") {
        Some(binary) => PathBuf::from(binary),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| root.join("target"), PathBuf::from)
            .join("release/membrane"),
    };
    assert!(
        binary.exists(),
        "{} is missing: run `cargo test --release --all-targets --no-run` first",
        binary.display()
    );
    binary
}

/// A kept-alive HTTP/1 connection to `addr` (no Nagle delay).
pub async fn http1(addr: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Loads `manifest` (TOML, with `{wasm:NAME}` placeholders) into a runtime.
pub async fn load(manifest: &str) -> Arc<Runtime> {
    let mut text = manifest.to_string();
    while let Some(start) = text.find("{wasm:") {
        let end = start + text[start..].find('}').expect("closing brace");
        let name = text[start + 6..end].to_string();
        text.replace_range(start..=end, &wasm(&name));
    }
    let manifest = Manifest::parse(&text, "bench.toml").expect("bench manifest");
    let host =
        HostContext::local(EngineOptions::default(), membrane::runtime::cache::default_cache_dir()).expect("engine");
    membrane::app::load(&manifest, &host, None)
        .await
        .expect("load bench app")
}

/// The CPU's model name and the cores available, for reports.
pub fn machine() -> (String, usize) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|s| s.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    (cpu, std::thread::available_parallelism().map_or(0, |n| n.get()))
}

/// A private nats-server (JetStream, temp store) for a benchmark run.
pub struct NatsServer {
    child: std::process::Child,
    /// Its client URL.
    pub url: String,
    /// Its monitoring port (`/varz`, `/connz`, ...).
    pub monitor: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one on a free port and waits until it accepts connections.
    pub fn start() -> NatsServer {
        let store = tempfile::tempdir().expect("temp dir");
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port")
        };
        let (port, monitor) = (free(), free());
        let binary = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server");
        let child = std::process::Command::new(binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-m",
                &monitor.to_string(),
                "-sd",
            ])
            .arg(store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (scripts/test.sh installs it)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            monitor,
            _store: store,
        }
    }

    /// A monitoring document (`varz`, `connz`, ...) as JSON.
    pub fn monitoring(&self, path: &str) -> serde_json::Value {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.monitor)).expect("nats monitor");
        write!(stream, "GET /{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("monitor request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("monitor response");
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).expect("monitor JSON")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Median and 99th percentile of `samples` (sorted in place).
pub fn percentiles(samples: &mut [std::time::Duration]) -> (std::time::Duration, std::time::Duration) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (pick(0.5), pick(0.99))
}

/// Throughput and latency of one measured run.
pub struct Stats {
    /// Calls per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Failed calls.
    pub errors: usize,
}

/// Runs `concurrency` workers calling `call` in a loop: `warm` unmeasured, then `run`.
pub async fn measure<F, Fut>(concurrency: usize, warm: Duration, run: Duration, call: F) -> Stats
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let (mut samples, mut errors) = (Vec::new(), 0);
            loop {
                let t = Instant::now();
                let ok = call().await;
                let done = Instant::now();
                if done - start > warm + run {
                    break;
                }
                if done - start > warm {
                    samples.push(done - t);
                    errors += usize::from(!ok);
                }
            }
            (samples, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (s, e) = w.await.expect("worker");
        all.extend(s);
        errors += e;
    }
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Stats {
        rps: all.len() as f64 / run.as_secs_f64(),
        p50: pick(0.5),
        p99: pick(0.99),
        errors,
    }
}

/// [`measure`] over HTTP/1.1, one kept-alive connection per worker.
pub async fn measure_http(
    concurrency: usize,
    warm: Duration,
    run: Duration,
    addr: &str,
    path: &'static str,
    body: &'static [u8],
) -> Stats {
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        senders.push(Arc::new(tokio::sync::Mutex::new(http1(addr).await)));
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = addr.to_string();
    measure(concurrency, warm, run, move || {
        // Each worker takes its own connection on first use (round-robin).
        let sender = senders[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % senders.len()].clone();
        let addr = addr.clone();
        async move {
            let mut sender = sender.lock().await;
            let request = hyper::Request::post(path)
                .header("host", addr)
                .body(Full::new(Bytes::from_static(body)))
                .expect("request");
            match sender.send_request(request).await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    ok && response.into_body().collect().await.is_ok()
                }
                Err(_) => false,
            }
        }
    })
    .await
}

/// One `POST path` with `body` on a fresh connection: the status and body.
pub async fn post(addr: &str, path: &str, body: &'static [u8]) -> (u16, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = hyper::Request::post(path)
        .header("host", addr)
        .body(Full::new(Bytes::from_static(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.expect("body").to_bytes())
}

/// A plain async-nats responder on `subject` that answers every request with
/// its own bytes: the raw NATS baseline.
pub async fn raw_echo(client: &async_nats::Client, subject: &str) {
    use futures::StreamExt as _;
    let mut subscription = client.subscribe(subject.to_string()).await.expect("subscribe");
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if let Some(reply) = message.reply {
                let _ = responder.publish(reply, message.payload).await;
            }
        }
    });
    client.flush().await.expect("flush");
}

/// Loads `manifest` as a host running `here`, joined to the lattice unless
/// it runs every component itself.
pub async fn lattice_host(
    manifest: &str,
    here: &[&str],
    url: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Arc<Runtime> {
    let manifest = membrane::manifest::Manifest::parse(manifest, "bench.toml").expect("manifest");
    let client = async_nats::connect(url).await.expect("nats");
    let lattice = membrane::links::remote::Lattice {
        bus: membrane::bus::Bus::new(client.clone()),
        name: "bench".into(),
    };
    let alone = manifest.components.keys().all(|c| here.contains(&c.as_str()));
    let mut host =
        HostContext::local(EngineOptions::default(), membrane::runtime::cache::default_cache_dir()).expect("engine");
    host.lattice = (!alone).then(|| lattice.clone());
    let placed = here.iter().map(|s| s.to_string()).collect();
    let runtime = membrane::app::load(&manifest, &host, Some(placed)).await.expect("load");
    let mut media = membrane::transports::bind_all(&manifest, &runtime, Some(&client))
        .await
        .expect("bind");
    let exports: Vec<(String, String)> = manifest
        .links
        .iter()
        .filter(|l| here.contains(&l.to.as_str()))
        .map(|l| (l.to.clone(), l.import.clone()))
        .collect();
    if !exports.is_empty() && !alone {
        media.push(Box::new(
            membrane::transports::rpc::LinkServer::bind(&lattice, &manifest.app.name, runtime.clone(), &exports)
                .await
                .expect("rpc"),
        ));
    }
    for medium in media {
        eprintln!("{}", medium.describe());
        tokio::spawn(medium.serve(shutdown.clone()));
    }
    client.flush().await.expect("flush");
    runtime
}

/// One remote link call against raw NATS: p50 and p99 of each.
pub struct Hop {
    /// The remote link call `relay -> echo`.
    pub link: (Duration, Duration),
    /// Raw async-nats request/reply of the same bytes.
    pub raw: (Duration, Duration),
    /// The request size on the wire.
    pub bytes: usize,
}

/// Times `calls` remote link calls (a kept `relay` instance on one host,
/// `echo` on another, `reuse` set on `echo` or not), alternating with raw
/// async-nats request/reply of the same bytes between two connections, after
/// a tenth as many warm-up rounds.
pub async fn remote_hop(url: &str, calls: usize, reuse: bool, shutdown: &tokio_util::sync::CancellationToken) -> Hop {
    use wasmtime::component::Val;
    const ECHO: &str = "example:testkit/echo@0.1.0";
    // Distinct names per strategy: the RPC subjects are per component.
    let (echo, relay, strategy) = if reuse {
        ("echo-reused", "relay-reused", "reuse = 1000000\n")
    } else {
        ("echo", "relay", "")
    };
    let manifest = format!(
        "[app]\nname = \"hop\"\n[components.{echo}]\nsource = \"{}\"\n{strategy}[components.{relay}]\nsource = \"{}\"\n\
         [[links]]\nfrom = \"{relay}\"\nimport = \"{ECHO}\"\nto = \"{echo}\"\n",
        wasm("echo"),
        wasm("relay")
    );
    let _y = lattice_host(&manifest, &[echo], url, shutdown).await;
    let x = lattice_host(&manifest, &[relay], url, shutdown).await;
    let far = membrane::runtime::context::CallContext::new(Instant::now() + Duration::from_secs(3600));
    let mut caller = x.start_instance(relay, &far).await.expect("relay");
    let hello = [Val::String("hello".into())];
    let bytes = 1 + 1 + "hello".len(); // version byte, length varint, bytes
    let subject = format!("bench.raw.{echo}");
    let responder = async_nats::connect(url).await.expect("nats");
    raw_echo(&responder, &subject).await;
    let requester = async_nats::connect(url).await.expect("nats");
    requester.flush().await.expect("flush");
    let payload = Bytes::from(vec![1u8; bytes]);
    // Link and raw calls alternate, so both see the same machine noise.
    let (mut link, mut raw) = (Vec::with_capacity(calls), Vec::with_capacity(calls));
    for i in 0..calls + calls / 10 {
        let t = Instant::now();
        caller.invoke(ECHO, "echo", &hello).await.expect("remote echo");
        let linked = t.elapsed();
        let t = Instant::now();
        requester.request(subject.clone(), payload.clone()).await.expect("raw");
        if i >= calls / 10 {
            link.push(linked);
            raw.push(t.elapsed());
        }
    }
    Hop {
        link: percentiles(&mut link),
        raw: percentiles(&mut raw),
        bytes,
    }
}

/// A `membrane up` process, started and ready: its ` ready: ` log line was
/// seen. Its log keeps being drained so it never blocks on stderr.
pub struct Membrane {
    child: std::process::Child,
    /// From spawning the process to its ` ready: ` line.
    pub ready: Duration,
    /// The log lines up to and including the ready line.
    pub log: Vec<String>,
}

impl Membrane {
    /// Spawns `binary up <args>` with `env` and waits (at most `timeout`) for
    /// it to be ready; panics with its last lines if it exits first.
    pub fn start(
        binary: &std::path::Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
        timeout: Duration,
    ) -> Membrane {
        use std::io::BufRead as _;
        let spawned = Instant::now();
        let mut command = std::process::Command::new(binary);
        command.arg("up").args(args).env("RUST_LOG", "membrane=info,warn");
        for var in [
            "MEMBRANE_NATS",
            "MEMBRANE_MAX_INSTANCES",
            "MEMBRANE_OTLP",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            command.env_remove(var);
        }
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn membrane");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // After ready nobody listens: the line is dropped.
                let _ = tx.send(line);
            }
        });
        let mut log = Vec::new();
        loop {
            let left = timeout.saturating_sub(spawned.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.contains(" ready: ");
                    log.push(line);
                    if ready {
                        break;
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("membrane {args:?} not ready ({e}):\n{}", log.join("\n"));
                }
            }
        }
        Membrane {
            child,
            ready: spawned.elapsed(),
            log,
        }
    }

    /// A number from a line of /proc/PID/status (`VmRSS`, `Threads`, ...).
    pub fn status(&self, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) and waits for the exit.
    pub fn stop(mut self, signal: &str) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for membrane")
    }
}

impl Drop for Membrane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `body` as section `name` of the report `file` (between
/// `<!-- name -->` and `<!-- /name -->` lines), keeping the other benches'
/// sections; a section not there yet is appended.
pub fn write_section(file: &std::path::Path, name: &str, body: &str) {
    let (open, close) = (format!("<!-- {name} -->\n"), format!("<!-- /{name} -->\n"));
    let old = std::fs::read_to_string(file).unwrap_or_default();
    let section = format!("{open}{}\n{close}", body.trim_end());
    let new = match (old.find(&open), old.find(&close)) {
        (Some(start), Some(end)) if start < end => {
            format!("{}{section}{}", &old[..start], &old[end + close.len()..])
        }
        _ if old.trim().is_empty() => section,
        _ => format!("{}\n{section}", old.trim_end_matches('\n').to_string() + "\n"),
    };
    std::fs::write(file, new).expect("write report");
}
