//! `membrane new` and `membrane dev`, as a user runs them: a new component
//! from each template is built and served at once; an edit under load is
//! rebuilt and hot-swapped with no failed request; a compile error, a
//! version whose types no longer fit its binding, a hanging build and a
//! build that writes nothing each leave the previous version serving and
//! say why.
//!
//! The template crates build with `CARGO_TARGET_DIR` set to
//! `target/dev-templates` and the workspace's `Cargo.lock` (the same
//! wit-bindgen the repository's components use, compiled once for all of
//! them, offline). The first run compiles wit-bindgen's macro (about a
//! minute on two cores); later runs take seconds.

use crate::support;
use crate::support::{http, shared_cache, wasm, workspace};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A first build compiles wit-bindgen's macro, maybe while other tests build.
const FIRST_BUILD: Duration = Duration::from_secs(420);
/// A rebuild of a template crate, or anything else dev prints.
const STEP: Duration = Duration::from_secs(120);

/// Where the template crates build: one target dir for all of them.
fn templates_target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from)
        .join("dev-templates")
}

/// `membrane new NAME --template TEMPLATE --dir DIR`; its stdout.
fn membrane_new(dir: &Path, name: &str, template: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["new", name, "--template", template, "--dir"])
        .arg(dir)
        .output()
        .expect("run membrane new");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "membrane new failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A new component from `template`, made ready to build in the shared
/// target dir and to serve on a free port; its directory.
fn new_component(dir: &Path, name: &str, template: &str) -> PathBuf {
    let stdout = membrane_new(dir, name, template);
    assert!(
        stdout.contains(&format!("created component `{name}` ({template} template)")),
        "{stdout}"
    );
    assert!(stdout.contains("membrane dev"), "{stdout}");
    let crate_dir = dir.join(name);
    std::fs::copy(workspace().join("Cargo.lock"), crate_dir.join("Cargo.lock")).expect("copy Cargo.lock");
    let manifest = crate_dir.join("app.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(text.contains("127.0.0.1:8080"), "{text}");
    let text = text
        .replace(
            "source = \"target/",
            &format!("source = \"{}/", templates_target().display()),
        )
        .replace("127.0.0.1:8080", "127.0.0.1:0");
    std::fs::write(&manifest, text).unwrap();
    crate_dir
}

/// A running `membrane dev`.
struct Dev {
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    /// Starts `membrane dev` on `dir/app.toml` with `args`, and waits until
    /// it is ready (at most `ready`).
    fn start(dir: &Path, args: &[&str], ready: Duration) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_membrane"))
            .arg("dev")
            .args(args)
            .current_dir(dir)
            .env("MEMBRANE_CACHE_DIR", shared_cache())
            .env("CARGO_TARGET_DIR", templates_target())
            .env("CARGO_NET_OFFLINE", "true")
            .env("RUST_LOG", "membrane=info,warn")
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn membrane dev");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  [dev] {line}");
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let dev = Dev { child, lines, log };
        dev.wait_for(" ready: ", ready);
        dev
    }

    /// Waits (at most `timeout`) until a line containing `needle` has been
    /// logged since the start; the line.
    fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_nth(needle, 1, timeout)
    }

    /// Waits until `needle` has been logged `n` times; the `n`th line.
    fn wait_for_nth(&self, needle: &str, n: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .nth(n - 1)
                .cloned();
            if let Some(line) = found {
                return line;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.lines.recv_timeout(left).is_err() {
                panic!(
                    "membrane dev did not log {needle:?} ({n}) in {timeout:?}:\n{}",
                    self.log()
                );
            }
        }
    }

    /// How many lines contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    /// The address of the first `serving <scheme>` line.
    fn address(&self, scheme: &str) -> SocketAddr {
        let line = self.wait_for(&format!("serving {scheme}"), STEP);
        let rest = line.split(&format!("serving {scheme}")).nth(1).unwrap();
        let addr = rest.split([' ', '/']).find(|s| !s.is_empty()).unwrap();
        addr.parse().unwrap_or_else(|e| panic!("{addr:?}: {e}"))
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Ctrl-C; the exit status.
    fn interrupt(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait for membrane dev")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests on `threads` clients until stopped; each client's answers may
/// move from `old` to `new` once and never back, and nothing else counts as
/// an answer.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    clients: Vec<std::thread::JoinHandle<[usize; 2]>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Load {
    fn start(threads: usize, get: impl Fn() -> (u16, String) + Send + Sync + 'static, old: &str, new: &str) -> Load {
        let get = Arc::new(get);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..threads)
            .map(|i| {
                let (get, stop, done, failures) = (get.clone(), stop.clone(), done.clone(), failures.clone());
                let (old, new) = (old.to_string(), new.to_string());
                std::thread::spawn(move || {
                    let mut seen = [0usize; 2];
                    while !stop.load(Ordering::Relaxed) {
                        let (status, body) = get();
                        if status == 200 && body == old && seen[1] == 0 {
                            seen[0] += 1;
                        } else if status == 200 && body == new {
                            seen[1] += 1;
                        } else {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("client {i}: {status} {body:?} after {seen:?}"));
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    seen
                })
            })
            .collect();
        Load {
            stop,
            done,
            clients,
            failures,
        }
    }

    /// Waits until `more` requests have been answered (or failed) from now.
    fn run(&self, more: usize) {
        let target = self.done.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + STEP;
        while self.done.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load stalled");
            std::thread::yield_now();
        }
    }

    /// Stops the clients; what each saw (old, new), and the failures.
    fn stop(self) -> (Vec<[usize; 2]>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let seen = self.clients.into_iter().map(|c| c.join().unwrap()).collect();
        let failures = self.failures.lock().unwrap().clone();
        (seen, failures)
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// (a) `new --template http` then `dev`: it builds and serves. (b) An edit
/// under load is served with no failed request, the old answer until the
/// swap. (c) A compile error leaves the new version serving and prints the
/// compiler's error. Ctrl-C stops cleanly.
#[test]
fn an_http_component_is_built_served_and_hot_swapped_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = new_component(dir.path(), "dev_http", "http");
    let started = Instant::now();
    let dev = Dev::start(&crate_dir, &[], FIRST_BUILD);
    assert!(dev.count("building dev_http: cargo build --release --target wasm32-wasip2") == 1);
    let built = dev.wait_for("built dev_http in ", STEP);
    eprintln!("first build and start: {:.1?} ({built})", started.elapsed());
    let addr = dev.address("http://");
    let answer = http(addr, "GET", "/load", b"");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "Hello from dev_http! You asked for /load\n");

    let old = "Hello from dev_http! You asked for /load\n";
    let new = "Hello from dev_http, version 2! You asked for /load\n";
    let load = Load::start(
        4,
        move || {
            let r = http(addr, "GET", "/load", b"");
            (r.status, r.body)
        },
        old,
        new,
    );
    load.run(300);
    let lib = crate_dir.join("src/lib.rs");
    let edited = Instant::now();
    edit(&lib, "from dev_http!", "from dev_http, version 2!");
    let rebuilt = dev.wait_for("rebuilt dev_http in ", STEP);
    eprintln!("edit to swap: {:.1?} ({rebuilt})", edited.elapsed());
    assert!(rebuilt.contains(", swapped in "), "{rebuilt}");
    load.run(300);

    // (c) A compile error: the error is printed, version 2 keeps serving.
    edit(&lib, "let path = ", "let path: u32 = ");
    dev.wait_for("build of dev_http failed", STEP);
    load.run(300);
    let (seen, failures) = load.stop();
    let log = dev.log();
    assert!(log.contains("error[E0308]: mismatched types"), "{log}");
    assert!(log.contains("the previous version keeps serving"), "{log}");
    let total: usize = seen.iter().map(|s| s[0] + s[1]).sum();
    eprintln!(
        "{total} requests at concurrency 4: {seen:?} (old, new) per client; {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        seen.iter().all(|s| s[0] > 0 && s[1] > 0),
        "every client saw both versions: {seen:?}"
    );
    assert_eq!(http(addr, "GET", "/load", b"").body, new);

    let status = dev.interrupt();
    assert!(status.success(), "Ctrl-C: {status}");
}

/// `new --template http-p3`: a WASI 0.3 component builds, serves and is
/// swapped on an edit, like a 0.2 one.
#[test]
fn a_wasi_0_3_http_component_is_built_served_and_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = new_component(dir.path(), "dev_p3", "http-p3");
    assert!(
        !crate_dir.join("wit").exists(),
        "WASI 0.3's world comes from the wasip3 crate"
    );
    let dev = Dev::start(&crate_dir, &[], FIRST_BUILD);
    dev.wait_for("built dev_p3 in ", STEP);
    let addr = dev.address("http://");
    let answer = http(addr, "GET", "/p3", b"");
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "Hello from dev_p3! You asked for /p3\n")
    );

    edit(
        &crate_dir.join("src/lib.rs"),
        "Hello from dev_p3!",
        "Hello again from dev_p3!",
    );
    let rebuilt = dev.wait_for("rebuilt dev_p3 in ", STEP);
    assert!(rebuilt.contains(", swapped in "), "{rebuilt}");
    assert_eq!(
        http(addr, "GET", "/p3", b"").body,
        "Hello again from dev_p3! You asked for /p3\n"
    );
    assert!(dev.interrupt().success());
}

/// `new --template rpc` runs at once; a version whose function no longer
/// fits its binding is refused with the reason, and the old one serves on.
#[test]
fn an_rpc_component_serves_and_a_version_that_breaks_its_binding_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = new_component(dir.path(), "dev_rpc", "rpc");
    let dev = Dev::start(&crate_dir, &[], FIRST_BUILD);
    let addr = dev.address("http-rpc http://");
    let hello = || http(addr, "POST", "/rpc/dev_rpc/hello", br#"{"name": "world"}"#);
    let answer = hello();
    assert_eq!((answer.status, answer.body.as_str()), (200, "\"Hello, world!\""));

    edit(
        &crate_dir.join("wit/world.wit"),
        "hello: func(name: string) -> string;",
        "hello: func(name: string) -> u32;",
    );
    edit(
        &crate_dir.join("src/lib.rs"),
        "fn hello(name: String) -> String {\n        format!(\"Hello, {name}!\")",
        "fn hello(name: String) -> u32 {\n        name.len() as u32",
    );
    dev.wait_for("but the new version is refused", STEP);
    // The reason is logged on the lines after the refusal.
    dev.wait_for(
        "changes `local:dev-rpc/api@0.1.0#hello`: result: expected string, found u32",
        STEP,
    );
    let answer = hello();
    assert_eq!((answer.status, answer.body.as_str()), (200, "\"Hello, world!\""));
    assert!(dev.interrupt().success());
}

/// `new --template queue` runs without a broker: the queue binding is not
/// served (and dev says so), its export answers over http-rpc.
#[test]
fn a_queue_component_runs_without_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = new_component(dir.path(), "dev_queue", "queue");
    let dev = Dev::start(&crate_dir, &[], FIRST_BUILD);
    let warning = dev.wait_for("is not served: it needs NATS", STEP);
    assert!(warning.contains("bindings[0] (queue of `dev_queue`)"), "{warning}");
    let addr = dev.address("http-rpc http://");
    let answer = http(addr, "POST", "/rpc/dev_queue/handle", br#"{"job": "resize photo 7"}"#);
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, r#"{"ok":"done: resize photo 7"}"#)
    );
    assert!(dev.interrupt().success());
}

/// `new` refuses an existing directory and a bad name, writing nothing.
#[test]
fn new_refuses_an_existing_directory_and_a_bad_name() {
    let dir = tempfile::tempdir().unwrap();
    membrane_new(dir.path(), "taken", "rpc");
    let lib = std::fs::read_to_string(dir.path().join("taken/src/lib.rs")).unwrap();
    for (name, why) in [
        ("taken", "already exists; `membrane new` never overwrites"),
        ("Bad", "lower-case"),
        ("fn", "keyword"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_membrane"))
            .args(["new", name, "--template", "http", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: {stderr}");
        assert!(stderr.contains(why), "{name}: {stderr}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("taken/src/lib.rs")).unwrap(),
        lib
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A build script standing in for a compiler (no compile: it copies a
/// prebuilt component), to drive dev's build handling.
const BUILD_SH: &str = r#"echo started >> builds.log
if [ -f hang ]; then echo "hanging on purpose"; sleep 1000; fi
rm -f out.wasm
src=$(cat which)
if [ "$src" != none ]; then cp "$src" out.wasm; fi
"#;

/// A build that hangs is stopped at its deadline while the app serves on;
/// changes during a build queue one more build, not one each; a build that
/// writes no component is an error naming `source`.
#[test]
fn a_hanging_build_does_not_stop_serving_and_changes_during_a_build_coalesce() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(work.join("build.sh"), BUILD_SH).unwrap();
    std::fs::write(work.join("which"), wasm("versioned_v1").display().to_string()).unwrap();
    std::fs::write(
        work.join("app.toml"),
        r#"[app]
name = "hostile"

[components.v]
source = "out.wasm"
build = { command = "sh build.sh", watch = ["which", "hang"] }

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "v"
"#,
    )
    .unwrap();
    let dev = Dev::start(work, &["--build-timeout", "3"], STEP);
    let addr = dev.address("http://");
    let load = Load::start(
        2,
        move || {
            let r = http(addr, "GET", "/", b"");
            (r.status, r.body)
        },
        r#"{"version":1}"#,
        r#"{"version":2}"#,
    );
    load.run(100);

    // A build that hangs: the app serves v1 throughout.
    std::fs::write(work.join("hang"), "").unwrap();
    dev.wait_for("hang changed: rebuilding v", STEP);
    // Two more changes while it hangs: one more build, queued.
    std::fs::write(work.join("which"), wasm("versioned_v2").display().to_string()).unwrap();
    dev.wait_for_nth("rebuilds after the build that is running", 1, STEP);
    std::fs::remove_file(work.join("hang")).unwrap();
    dev.wait_for_nth("rebuilds after the build that is running", 2, STEP);
    load.run(100);
    dev.wait_for("`sh build.sh` did not finish in 3.0 s and was stopped", STEP);
    let log = dev.log();
    assert!(
        log.contains("build of v failed in 3.0 s; the previous version keeps serving"),
        "{log}"
    );
    assert!(log.contains("hanging on purpose"), "{log}");
    // The queued build runs after it, once, and swaps v2 in.
    dev.wait_for("rebuilt v in ", STEP);
    load.run(100);

    // A build that writes no component: the error names the field.
    std::fs::write(work.join("which"), "none").unwrap();
    let missing = dev.wait_for("does not exist after `sh build.sh` succeeded", STEP);
    assert!(missing.contains("components.v.source: "), "{missing}");
    load.run(100);
    let (seen, failures) = load.stop();
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(seen.iter().all(|s| s[0] > 0 && s[1] > 0), "{seen:?}");
    let builds = std::fs::read_to_string(work.join("builds.log")).unwrap();
    assert_eq!(
        builds.lines().count(),
        4,
        "first, hanging, one queued, missing: {builds}\n{}",
        dev.log()
    );
    assert_eq!(dev.count("rebuilt v in "), 1, "{}", dev.log());
    assert!(dev.interrupt().success());
}

/// `membrane up` serves a manifest with `build` tables as it is: it never
/// runs them (this one would fail).
#[test]
fn up_ignores_build_tables() {
    let host = support::Host::start(
        r#"[app]
name = "built-elsewhere"

[components.echo]
source = "{wasm:echo}"
build = { command = "echo never run; exit 1", watch = ["src/**/*.rs"] }

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "echo"
"#,
    );
    let answer = http(host.addr(), "POST", "/", b"still served");
    assert_eq!((answer.status, answer.body.as_str()), (200, "still served"));
    assert!(!host.log().contains("never run"), "{}", host.log());
}

/// `membrane dev spin.toml`: a Spin app's `[component.X.build]` runs, its
/// trigger is served on `--listen`, and a change to a `watch`ed file
/// rebuilds and swaps it, as `spin watch` would.
#[test]
fn dev_builds_serves_and_swaps_a_spin_toml() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    std::fs::write(work.join("build.sh"), BUILD_SH).unwrap();
    std::fs::write(work.join("which"), wasm("spin7_hello").display().to_string()).unwrap();
    std::fs::write(
        work.join("spin.toml"),
        r#"spin_manifest_version = 2

[application]
name = "spin-dev"

[[trigger.http]]
route = "/..."
component = "hello"

[component.hello]
source = "out.wasm"
[component.hello.build]
command = "sh build.sh"
watch = ["which"]
"#,
    )
    .unwrap();
    let dev = Dev::start(work, &["spin.toml", "--listen", "127.0.0.1:0"], STEP);
    let addr = dev.address("http://");
    let spin7 = http(addr, "GET", "/there", b"");
    assert_eq!(
        (spin7.status, spin7.body.as_str()),
        (200, "Hello from Spin 7: GET /there\n")
    );

    std::fs::write(work.join("which"), wasm("hello_p3").display().to_string()).unwrap();
    let rebuilt = dev.wait_for("rebuilt hello in ", STEP);
    assert!(rebuilt.contains(", swapped in "), "{rebuilt}");
    let p3 = http(addr, "GET", "/there", b"");
    assert_eq!(p3.body, "hello from wasi:http 0.3: GET /there\n");
    assert_eq!(
        std::fs::read_to_string(work.join("builds.log"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert!(dev.interrupt().success());
}
