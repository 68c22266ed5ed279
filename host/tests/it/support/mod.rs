//! Test support: the real `membrane` binary as a child process, the example
//! components built once per test run, and a small blocking HTTP client.
#![allow(dead_code)]

pub mod curl;
pub mod nats;
pub mod netns;
pub mod registry;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// How long a host may take to become ready (cold compiles on a busy 2-core box).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

/// Path of a built component, building all of them once per test binary
/// (a no-op when they are up to date).
pub fn wasm(name: &str) -> PathBuf {
    static BUILT: Once = Once::new();
    BUILT.call_once(|| {
        let status = Command::new("bash")
            .arg(workspace().join("scripts/build-components.sh"))
            .status()
            .expect("run scripts/build-components.sh");
        assert!(status.success(), "building the components failed");
    });
    target_dir().join("wasm32-wasip2/release").join(format!("{name}.wasm"))
}

/// Replaces `{wasm:NAME}` in a manifest with the component's absolute path.
pub fn with_paths(manifest: &str) -> String {
    let mut out = manifest.to_string();
    while let Some(start) = out.find("{wasm:") {
        let end = start + out[start..].find('}').expect("closing brace");
        let name = out[start + 6..end].to_string();
        out.replace_range(start..=end, &wasm(&name).display().to_string());
    }
    out
}

/// A running `membrane up`.
pub struct Host {
    child: Child,
    /// `(address, component)` of each http binding, in manifest order.
    pub http: Vec<(SocketAddr, String)>,
    /// Address of each http-rpc server.
    pub rpc: Vec<SocketAddr>,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// A host that exited before it was ready.
pub struct Failed {
    pub status: ExitStatus,
    pub stderr: String,
}

/// A pseudo environment variable for [`Host::join_env`]: the network
/// namespace to run the host in (see `support::netns`).
pub const NETNS: &str = "MEMBRANE_TEST_NETNS";

fn spawn(
    manifest: Option<&str>,
    cache: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log_filter: &str,
) -> (Child, Receiver<String>, Arc<Mutex<Vec<String>>>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    // `NETNS` in `env` runs the host in that network namespace.
    let mut command = match env.iter().find(|(k, _)| *k == NETNS) {
        Some((_, ns)) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_membrane")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_membrane")),
    };
    command.arg("up");
    if let Some(manifest) = manifest {
        let path = dir.path().join("app.toml");
        std::fs::write(&path, with_paths(manifest)).expect("write manifest");
        command.arg(&path);
    }
    let mut child = command
        .args(args)
        .env("MEMBRANE_CACHE_DIR", cache)
        .env("RUST_LOG", log_filter)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn membrane");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  [membrane] {line}");
            sink.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (child, rx, log, dir)
}

/// The test-run-wide compile cache, so each component compiles once.
pub fn shared_cache() -> PathBuf {
    target_dir().join("membrane-test-cache")
}

impl Host {
    /// Starts a host and waits until it reports ready; panics with its
    /// stderr if it exits instead.
    pub fn start(manifest: &str) -> Host {
        match Host::try_start(manifest, &shared_cache()) {
            Ok(host) => host,
            Err(f) => panic!("membrane exited with {}:\n{}", f.status, f.stderr),
        }
    }

    /// Starts a host with extra command-line arguments.
    pub fn start_with(manifest: &str, args: &[&str]) -> Host {
        Host::start_logged(manifest, args, "membrane=info,warn")
    }

    /// Starts a host with extra arguments and environment variables.
    pub fn start_env(manifest: &str, args: &[&str], env: &[(&str, &str)]) -> Host {
        match Host::launch_with(Some(manifest), &shared_cache(), args, env, "membrane=info,warn") {
            Ok(host) => host,
            Err(f) => panic!("membrane exited with {}:\n{}", f.status, f.stderr),
        }
    }

    /// Starts a host with extra arguments and a `RUST_LOG` filter.
    pub fn start_logged(manifest: &str, args: &[&str], log_filter: &str) -> Host {
        match Host::launch(manifest, &shared_cache(), args, log_filter) {
            Ok(host) => host,
            Err(f) => panic!("membrane exited with {}:\n{}", f.status, f.stderr),
        }
    }

    /// Starts a host with the given compile cache.
    pub fn try_start(manifest: &str, cache: &Path) -> Result<Host, Failed> {
        Host::launch(manifest, cache, &[], "membrane=info,warn")
    }

    /// Starts a host with no manifest: it runs the apps applied to its
    /// lattice. `args` names the NATS server, lattice and labels.
    pub fn join(args: &[&str]) -> Host {
        Host::join_env(args, &[])
    }

    /// [`Host::join`] with extra environment variables (credentials, secrets).
    pub fn join_env(args: &[&str], env: &[(&str, &str)]) -> Host {
        Host::join_logged(args, env, "membrane=info,warn")
    }

    /// [`Host::join_env`] with a `RUST_LOG` filter.
    pub fn join_logged(args: &[&str], env: &[(&str, &str)], log_filter: &str) -> Host {
        match Host::launch_with(None, &shared_cache(), args, env, log_filter) {
            Ok(host) => host,
            Err(f) => panic!("membrane exited with {}:\n{}", f.status, f.stderr),
        }
    }

    fn launch(manifest: &str, cache: &Path, args: &[&str], log_filter: &str) -> Result<Host, Failed> {
        Host::launch_with(Some(manifest), cache, args, &[], log_filter)
    }

    fn launch_with(
        manifest: Option<&str>,
        cache: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log_filter: &str,
    ) -> Result<Host, Failed> {
        let (mut child, lines, log, dir) = spawn(manifest, cache, args, env, log_filter);
        let mut http = Vec::new();
        let mut rpc = Vec::new();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.split("serving http-rpc http://").nth(1) {
                        rpc.push(rest.split(' ').next().unwrap().parse().expect("rpc address"));
                    } else if let Some(rest) = line.split("serving http://").nth(1) {
                        let (addr, component) = rest.split_once(" -> ").expect("serving line format");
                        http.push((addr.parse().expect("address"), component.trim().to_string()));
                    } else if line.contains(" ready: ") {
                        return Ok(Host {
                            child,
                            http,
                            rpc,
                            lines,
                            log,
                            _dir: dir,
                        });
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait for membrane");
                    let stderr = log.lock().unwrap().join("\n");
                    return Err(Failed { status, stderr });
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    panic!(
                        "membrane not ready after {READY_TIMEOUT:?}:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            }
        }
    }

    /// Runs a manifest that must fail to start; returns its stderr.
    pub fn fail(manifest: &str) -> String {
        match Host::try_start(manifest, &shared_cache()) {
            Ok(_) => panic!("membrane started, but the manifest should have been rejected"),
            Err(f) => {
                assert!(!f.status.success(), "a rejected manifest must exit non-zero");
                assert!(!f.stderr.contains("panicked"), "the host panicked:\n{}", f.stderr);
                f.stderr
            }
        }
    }

    /// [`Host::fail`] with extra command-line arguments.
    pub fn fail_with(manifest: &str, args: &[&str]) -> String {
        Host::fail_env(manifest, args, &[])
    }

    /// [`Host::fail`] with extra arguments and environment variables.
    pub fn fail_env(manifest: &str, args: &[&str], env: &[(&str, &str)]) -> String {
        match Host::launch_with(Some(manifest), &shared_cache(), args, env, "membrane=info,warn") {
            Ok(_) => panic!("membrane started, but it should have refused to"),
            Err(f) => {
                assert!(!f.status.success(), "a refused start must exit non-zero");
                assert!(!f.stderr.contains("panicked"), "the host panicked:\n{}", f.stderr);
                f.stderr
            }
        }
    }

    /// Waits until the host serves an http binding of `component` (as a
    /// lattice host does after an apply); its address.
    pub fn wait_for_http(&self, component: &str) -> SocketAddr {
        let needle = format!(" -> {component}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.log.lock().unwrap().iter().find_map(|line| {
                let rest = line.split("serving http://").nth(1)?;
                let (addr, c) = rest.split_once(" -> ")?;
                (format!(" -> {}", c.trim()) == needle)
                    .then(|| addr.parse().ok())
                    .flatten()
            });
            if let Some(addr) = found {
                return addr;
            }
            if self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_err()
            {
                panic!("no http binding of {component} served:\n{}", self.log());
            }
        }
    }

    /// The address of the listener the host logged for `scheme` (`http` or
    /// `https`): its first.
    pub fn listening(&self, scheme: &str) -> SocketAddr {
        let line = self.wait_for_log(&format!("serving {scheme}://"));
        let rest = line
            .split(&format!("serving {scheme}://"))
            .nth(1)
            .expect("serving line");
        rest.split(' ')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("listener address")
    }

    /// The address of the host's admin endpoint, from its log.
    pub fn admin(&self) -> SocketAddr {
        let line = self.wait_for_log("admin http://");
        let rest = line.split("admin http://").nth(1).expect("admin line");
        rest.split('/')
            .next()
            .and_then(|a| a.parse().ok())
            .expect("admin address")
    }

    /// Address of the first http binding.
    pub fn addr(&self) -> SocketAddr {
        self.http[0].0
    }

    /// Waits for a log line containing `needle` (printed after this call or
    /// earlier) and returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line containing {needle:?}"),
            }
        }
    }

    /// Waits until `needle` has appeared in `count` log lines.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) {
        let seen = || self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).count();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen() < count {
            // Lines arrive on `lines` as the log grows; each wakes this loop.
            if self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_err()
            {
                panic!(
                    "{needle:?} logged {} time(s), expected {count}:\n{}",
                    seen(),
                    self.log()
                );
            }
        }
    }

    /// Kills the process at once (SIGKILL): no cleanup, no acks.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the host logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGINT (Ctrl-C) and waits for the process to exit.
    pub fn interrupt(self) -> ExitStatus {
        self.signal("INT")
    }

    /// Sends `signal` (`TERM`, `INT`...) and waits for the process to exit.
    pub fn signal(mut self, signal: &str) -> ExitStatus {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait for membrane")
    }

    /// Sends `signal`, waits for the process to exit, and returns its exit
    /// status with everything it logged, to its last line.
    pub fn stop(mut self, signal: &str) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let status = self.child.wait().expect("wait for membrane");
        // The reader ends at the end of stderr, which closes the channel.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(_) | Err(RecvTimeoutError::Timeout) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if Instant::now() >= deadline {
                break;
            }
        }
        (status, self.log())
    }

    /// Its resident memory right now, in KiB (`VmRSS` in `/proc`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A complete HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    parse(&raw(addr, &request))
}

/// Sends `requests` GETs of `path` on one kept-alive connection and returns
/// the bodies, reading each response by its content-length.
pub fn keep_alive(addr: SocketAddr, path: &str, requests: usize) -> Vec<String> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // One write per request, sent at once: `write!` would send each piece
    // of the format on its own, and Nagle's algorithm would hold the last
    // one back for the server's delayed ACK (40 ms a request).
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut bodies = Vec::new();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    for _ in 0..requests {
        writer.write_all(request.as_bytes()).expect("write");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read header");
            let lower = line.to_ascii_lowercase();
            assert!(
                !lower.starts_with("connection: close"),
                "server closed a keep-alive connection"
            );
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().expect("content-length");
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("read body");
        bodies.push(String::from_utf8(body).expect("utf-8 body"));
    }
    bodies
}

/// Writes raw bytes to `addr` and reads until the server closes.
pub fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.write_all(bytes).expect("write request");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

fn parse(bytes: &[u8]) -> Response {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).expect("status code");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Response {
        status,
        headers: head.to_string(),
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The insurance app, co-located, on an ephemeral port.
/// `examples/insurance/distributed.toml` with test paths, the gateway on
/// `port` (0: a free one).
pub fn distributed_manifest(port: u16) -> String {
    let text = std::fs::read_to_string(workspace().join("examples/insurance/distributed.toml")).expect("example");
    with_paths(
        &text
            .replace("../../target/wasm32-wasip2/release/gateway.wasm", "{wasm:gateway}")
            .replace("../../target/wasm32-wasip2/release/rater.wasm", "{wasm:rater}")
            .replace("../../target/wasm32-wasip2/release/pricing.wasm", "{wasm:pricing}")
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")),
    )
}

/// `rest` (an app's own tables, which include `[components.versioned]`)
/// with the example's chain, placed by `placements`, before that table.
pub fn with_insurance_chain(rest: &str, placements: [&str; 3]) -> String {
    let chain = insurance_chain(placements);
    rest.replacen(
        "\n[components.versioned]",
        &format!("\n{chain}\n[components.versioned]"),
        1,
    )
}

/// `membrane ctl --nats url --lattice test args...`, its output echoed to
/// the test's log.
pub fn lattice_ctl(url: &str, args: &[&str]) -> std::process::Output {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["ctl", "--nats", url, "--lattice", "test"])
        .args(args)
        .output()
        .expect("run membrane ctl");
    eprintln!(
        "$ membrane ctl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The insurance example's three components and two links (the tables of
/// `examples/insurance/distributed.toml` before its binding), with test
/// paths and the placement lines of gateway, rater and pricing replaced by
/// `placements` ("" for every host).
pub fn insurance_chain(placements: [&str; 3]) -> String {
    let text = distributed_manifest(0);
    let start = text.find("[components.gateway]").expect("the example's gateway");
    let end = text.find("[[bindings]]").expect("the example's binding");
    let mut chain = text[start..end].to_string();
    for (node, line) in ["a", "b", "c"].into_iter().zip(placements) {
        let placement = format!("placement = {{ node = \"{node}\" }}");
        assert!(chain.contains(&placement), "the example places {node}");
        chain = chain.replace(&placement, line);
    }
    chain
}

pub fn insurance_manifest() -> String {
    let example = std::fs::read_to_string(workspace().join("examples/insurance/colocated.toml")).expect("example");
    example
        .replace("../../target/wasm32-wasip2/release/gateway.wasm", "{wasm:gateway}")
        .replace("../../target/wasm32-wasip2/release/rater.wasm", "{wasm:rater}")
        .replace("../../target/wasm32-wasip2/release/pricing.wasm", "{wasm:pricing}")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
}

/// `manifest` with its links on one host dynamic (`[app] links =
/// "dynamic"`): each component in its own store, each hop counted and
/// traced, as the tests of those hops need.
pub fn dynamic_links(manifest: &str) -> String {
    let linked = manifest.replacen("[app]\n", "[app]\nlinks = \"dynamic\"\n", 1);
    assert_ne!(linked, manifest, "the manifest has no [app] table");
    linked
}

/// `manifest` (the insurance app) with `pricing` capped at 1 MiB of memory
/// and a 1.5 MiB `currency`, which cannot be handed to it under that cap: it
/// fails with a memory fault when `rater` first calls it.
pub fn starve_pricing(manifest: &str) -> String {
    manifest
        .replace(
            "[components.pricing.config]",
            "limits = { memory_mib = 1 }\n[components.pricing.config]",
        )
        .replace("currency = \"EUR\"", &format!("currency = \"{}\"", "E".repeat(3 << 19)))
}

/// The example policy from `examples/insurance/policy.json`.
pub fn example_policy() -> Vec<u8> {
    std::fs::read(workspace().join("examples/insurance/policy.json")).expect("example policy")
}

/// Polls `condition` every 100 ms until it holds; fails after 30 s. For
/// states with no event to wait on (a swap seen from outside over HTTP).
pub fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a `versioned` component answers over HTTP at `addr`: its version,
/// or the status and body it answered instead.
pub fn version_over_http(addr: SocketAddr) -> Result<u32, String> {
    let response = http(addr, "GET", "/", b"");
    if response.status != 200 {
        return Err(format!("{} {}", response.status, response.body));
    }
    let body = response.json();
    body["version"].as_u64().map(|v| v as u32).ok_or(response.body)
}

/// A local HTTP server answering every connection with `body`; counts them.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Server {
    /// Starts a server answering `body` on a free loopback port.
    pub fn start(body: &'static str) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Server { addr, connections }
    }

    /// How many connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
