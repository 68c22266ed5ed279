//! Adaptive placement, as a user of `examples/insurance/adaptive.toml` sees
//! it: the gateway on host a calls the rater on b, which calls pricing on
//! c. Under load the hot links pull the rater, then pricing, next to their
//! callers on a (`placement.adapted`, with why, in `ctl watch`); when the
//! load falls away the extra replicas stop (`placement.reverted`). Every
//! call answers correctly throughout, and nothing moves twice under a
//! steady load.

use crate::support::nats::NatsServer;
use crate::support::{Host, example_policy, with_paths, workspace};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `examples/insurance/adaptive.toml` with test paths, a free port and
/// thresholds a test reaches in a second.
pub(crate) fn manifest() -> String {
    let text = std::fs::read_to_string(workspace().join("examples/insurance/adaptive.toml")).expect("example");
    let text = text
        .replace("../../target/wasm32-wasip2/release/gateway.wasm", "{wasm:gateway}")
        .replace("../../target/wasm32-wasip2/release/rater.wasm", "{wasm:rater}")
        .replace("../../target/wasm32-wasip2/release/pricing.wasm", "{wasm:pricing}")
        .replace("127.0.0.1:8080", "127.0.0.1:0");
    let thresholds = "[adaptive]\nhot = 20\ncold = 5\nhold_ms = 1000\n";
    let start = text.find("[adaptive]").expect("an [adaptive] table");
    let end = text[start..].find("\n\n").map_or(text.len(), |e| start + e + 1);
    with_paths(&format!("{}{thresholds}{}", &text[..start], &text[end..]))
}

fn node(manifest: &str, server: &NatsServer, label: &str) -> Host {
    Host::start_logged(
        manifest,
        &["--nats", &server.url(), "--lattice", "test", "--label", label],
        "membrane::lattice::adapt=debug,membrane=info,warn",
    )
}

/// `membrane ctl watch`, its lines as they come.
struct Watch {
    child: std::process::Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    fn start(server: &NatsServer) -> Watch {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
            .args(["ctl", "--nats", &server.url(), "--lattice", "test", "watch"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run membrane ctl watch");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        stderr.read_line(&mut line).expect("watch says it is subscribed");
        assert!(line.contains("watching lattice `test`"), "{line}");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                eprintln!("  [watch] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line that starts with `kind` and names `what`.
    fn wait(&mut self, kind: &str, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(kind) && line.contains(what) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("no `{kind}` event about {what} in 30 s; saw:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// Every line that arrived by now, kept with the earlier ones.
    fn drain(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Quotes the example policy over kept-alive connections from `workers`
/// threads, each pausing `pause` between calls, until stopped; every answer
/// that is not the expected quote is a failure, kept with its text.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(addr: SocketAddr, workers: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..workers)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || quote_until(addr, pause, &stop, &ok, &failures))
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    /// Waits until `more` quotes have been answered since now.
    pub(crate) fn answers(&self, more: usize) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ok.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the load stalled: {:?}",
                self.failures.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the load; the answers and the failures.
    pub(crate) fn stop(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            thread.join().expect("load thread");
        }
        (
            self.ok.load(Ordering::Relaxed),
            std::mem::take(&mut *self.failures.lock().unwrap()),
        )
    }
}

fn quote_until(addr: SocketAddr, pause: Duration, stop: &AtomicBool, ok: &AtomicUsize, failures: &Mutex<Vec<String>>) {
    let policy = example_policy();
    let mut request = format!(
        "POST /quote HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        policy.len()
    )
    .into_bytes();
    request.extend_from_slice(&policy);
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    while !stop.load(Ordering::Relaxed) {
        let answer = (|| -> std::io::Result<(String, String)> {
            writer.write_all(&request)?;
            let (mut status, mut length) = (String::new(), 0);
            reader.read_line(&mut status)?;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line)?;
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body)?;
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        })();
        match answer {
            Ok((status, body)) if status.starts_with("HTTP/1.1 200") && body.contains("\"premium\":936.92") => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, body)) => failures.lock().unwrap().push(format!("{} {body}", status.trim())),
            Err(e) => {
                failures.lock().unwrap().push(format!("connection: {e}"));
                return;
            }
        }
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}

#[test]
fn hot_links_pull_their_callees_next_to_the_caller_and_let_go_when_cold() {
    let server = NatsServer::start();
    let manifest = manifest();
    let mut watch = Watch::start(&server);
    // Callees first, so that `a` is ready with its links served.
    let c = node(&manifest, &server, "node=c");
    let b = node(&manifest, &server, "node=b");
    let a = node(&manifest, &server, "node=a");
    let addr = a.wait_for_http("gateway");

    // Load: two clients back to back, hundreds of quotes a second.
    let load = Load::start(addr, 2, Duration::ZERO);
    let rater = watch.wait("placement.adapted", "insurance/rater");
    assert!(rater.contains("gateway called it"), "{rater}");
    assert!(
        rater.contains("/s over the lattice at") && rater.contains("ms each"),
        "{rater}"
    );
    let pricing = watch.wait("placement.adapted", "insurance/pricing");
    assert!(pricing.contains("rater called it"), "{pricing}");
    // Both moved to a, the caller's host: the rater now logs there.
    let host_a = rater.split_whitespace().nth(1).expect("host id").to_string();
    assert_eq!(pricing.split_whitespace().nth(1), Some(host_a.as_str()), "{pricing}");
    a.wait_for_log("rated at 936.92 EUR");
    // The extras compose into their caller: the chain is one component on a.
    let composed = a.wait_for_log("composed links gateway -> rater, rater -> pricing");
    assert!(composed.contains("into `gateway`"), "{composed}");

    // Steady load for a while: nothing moves again.
    load.answers(500);
    std::thread::sleep(Duration::from_secs(3));
    let (answered, failures) = load.stop();
    let moves: Vec<&String> = watch.drain().iter().filter(|l| l.starts_with("placement.")).collect();
    assert_eq!(moves.len(), 2, "exactly two moves under a steady load: {moves:#?}");
    assert!(
        failures.is_empty(),
        "{} of {answered} quotes failed while placement changed: {failures:#?}",
        failures.len()
    );
    eprintln!("{answered} quotes, 0 failed, while the rater and pricing moved to a");

    // A trickle (under `cold`) keeps calling while the extra replicas go.
    let trickle = Load::start(addr, 1, Duration::from_millis(500));
    let reverted = watch.wait("placement.reverted", "insurance/");
    assert!(reverted.contains("fell to"), "{reverted}");
    let first = if reverted.contains("insurance/rater") {
        "rater"
    } else {
        "pricing"
    };
    if first == "pricing" {
        // pricing went first; the rater still runs on a for a while.
        watch.wait("placement.reverted", "insurance/rater");
    }
    a.wait_for_log("stopped rater");
    // The trickle goes over the lattice again: b rates it.
    let rated_on_b = b.log().matches("rated at 936.92 EUR").count();
    trickle.answers(3);
    let (answered, failures) = trickle.stop();
    assert!(
        failures.is_empty(),
        "{} of {answered} quotes failed while the extras stopped: {failures:#?}",
        failures.len()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.log().matches("rated at 936.92 EUR").count() <= rated_on_b {
        assert!(Instant::now() < deadline, "quotes no longer reach b:\n{}", b.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Placement split the group again: on a, gateway's link is remote.
    let status = crate::support::http(a.admin(), "GET", "/status.json", b"").json();
    let gateway = status["components"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == "gateway"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(gateway["links"][0]["to"], "rater", "{gateway}");
    assert_eq!(gateway["links"][0]["made"], "remote", "{gateway}");
    assert!(!c.log().contains("panicked") && !a.log().contains("panicked"));
}
