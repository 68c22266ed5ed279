//! WASI 0.3 HTTP as a user meets it: components that export
//! `wasi:http/handler@0.3.0` (one written with the published `wasip3`
//! bindings, one with spin-sdk 7, both built for Spin-style hosts and served
//! unmodified) on the same port as a WASI 0.2 component, with the manifest
//! unchanged; and 50 MiB bodies streamed both ways through a 0.3 component
//! while the host's memory stays bounded.

use crate::support::{Host, http};
use std::io::Write as _;
use std::process::Command;

const MIXED: &str = r#"
[app]
name = "mixed"

[components.p3]
source = "{wasm:hello_p3}"

[components.spin7]
source = "{wasm:spin7_hello}"

[components.p2]
source = "{wasm:spin_hello}"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "p3"
route = "/p3/..."

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "spin7"
route = "/spin7/..."

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "p2"
route = "/spin/..."
"#;

#[test]
fn wasi_0_3_handlers_are_served_beside_0_2_on_one_port() {
    let host = Host::start(MIXED);
    let addr = host.listening("http");

    let hello = http(addr, "GET", "/p3/hello?x=1", b"");
    assert_eq!(hello.status, 200, "{}", hello.body);
    assert_eq!(hello.body, "hello from wasi:http 0.3: GET /p3/hello?x=1\n");

    let spin7 = http(addr, "GET", "/spin7/greet", b"");
    assert_eq!(spin7.status, 200, "{}", spin7.body);
    assert_eq!(spin7.body, "Hello from Spin 7: GET /spin7/greet\n");

    // The 0.2 component on the same port, unchanged.
    let p2 = http(addr, "GET", "/spin/hello/world", b"");
    assert_eq!((p2.status, p2.body.as_str()), (200, "hello, world"));

    let echo = http(addr, "POST", "/p3/echo", b"{\"round\":\"trip\"}");
    assert_eq!((echo.status, echo.body.as_str()), (200, "{\"round\":\"trip\"}"));
    let upload = http(addr, "POST", "/p3/upload", &[7u8; 100_000]);
    assert_eq!((upload.status, upload.body.as_str()), (200, "received 100000 bytes\n"));

    // Counted per component like any other call.
    let metrics = http(host.admin(), "GET", "/metrics", b"").body;
    assert!(
        metrics.contains("component=\"p3\"") && metrics.contains("component=\"spin7\""),
        "{metrics}"
    );
}

#[test]
fn fifty_mib_stream_both_ways_through_a_0_3_component_in_bounded_memory() {
    const MIB: usize = 50;
    let host = Host::start(MIXED);
    let addr = host.listening("http");
    // Warm: one instance compiled and run, so the baseline holds its code.
    assert_eq!(http(addr, "GET", "/p3/warm", b"").status, 200);
    let before = host.rss_kib();

    let dir = tempfile::tempdir().expect("temp dir");
    let download = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
        ])
        .arg(format!("http://{addr}/p3/download?mib={MIB}"))
        .output()
        .expect("curl");
    let line = String::from_utf8_lossy(&download.stdout).into_owned();
    assert_eq!(
        line,
        format!("200 {}", MIB * 1024 * 1024),
        "{}",
        String::from_utf8_lossy(&download.stderr)
    );
    let after_download = host.rss_kib();

    let file = dir.path().join("upload");
    let mut out = std::fs::File::create(&file).expect("file");
    let chunk = vec![b'u'; 1024 * 1024];
    for _ in 0..MIB {
        out.write_all(&chunk).expect("write");
    }
    drop(out);
    let upload = Command::new("curl")
        .args(["-sS", "--max-time", "120", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{addr}/p3/upload"))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&upload.stdout),
        format!("received {} bytes\n", MIB * 1024 * 1024),
        "{}",
        String::from_utf8_lossy(&upload.stderr)
    );
    let after_upload = host.rss_kib();
    eprintln!(
        "host RSS: {before} KiB before, {after_download} KiB after a {MIB} MiB download, {after_upload} KiB after a {MIB} MiB upload"
    );
    // Neither body was held whole: the host grew by well under one body.
    let grown = after_download.max(after_upload).saturating_sub(before);
    assert!(
        grown < (MIB as u64 * 1024) / 2,
        "the host grew by {grown} KiB for {MIB} MiB bodies"
    );
}

/// A Spin app as its `spin.toml` is written: `membrane up spin.toml` serves
/// its HTTP triggers (on `$SPIN_HTTP_LISTEN_ADDR`, as `spin up` does), with
/// the base path, and a component's variables through Spin's own interface.
pub(crate) const SPIN_APP: &str = r#"
spin_manifest_version = 2

[application]
name = "spin-app"

[application.trigger.http]
base = "/app"

[variables]
greeting = { default = "Hi" }
token = { required = true }

[[trigger.http]]
route = "/hello/..."
component = "hello"

[[trigger.http]]
route = "/p3/..."
component = "p3"

[component.hello]
source = "{wasm:spin7_hello}"
variables = { greeting = "{{ greeting }}, Spin", token = "{{ token }}" }

[component.p3]
source = "{wasm:hello_p3}"
"#;

#[test]
fn membrane_up_serves_a_spin_toml_as_written() {
    let env = [
        ("SPIN_HTTP_LISTEN_ADDR", "127.0.0.1:0"),
        ("SPIN_VARIABLE_TOKEN", "s3cret"),
    ];
    let host = Host::start_env(SPIN_APP, &[], &env);
    let addr = host.listening("http");
    let hello = http(addr, "GET", "/app/hello/there", b"");
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "Hello from Spin 7: GET /app/hello/there\n")
    );
    let p3 = http(addr, "GET", "/app/p3/x", b"");
    assert_eq!(
        (p3.status, p3.body.as_str()),
        (200, "hello from wasi:http 0.3: GET /app/p3/x\n")
    );
    assert_eq!(http(addr, "GET", "/elsewhere", b"").status, 404);
    // Its variables, through Spin's own interface (spin:variables@3.0.0).
    let greeting = http(addr, "GET", "/app/hello/var/greeting", b"");
    assert_eq!(greeting.body, "greeting = Hi, Spin\n");
    // A required variable, set as `spin up` reads it (SPIN_VARIABLE_<NAME>).
    let token = http(addr, "GET", "/app/hello/var/token", b"");
    assert_eq!(token.body, "token = s3cret\n");
    let undefined = http(addr, "GET", "/app/hello/var/nope", b"").body;
    assert!(undefined.starts_with("nope: Error::Undefined("), "{undefined}");

    // Without it, the start is refused and the variable named.
    let unset = Host::fail(SPIN_APP);
    assert!(unset.contains("token"), "{unset}");

    // What Membrane does not serve is named by its spin.toml field.
    let files = SPIN_APP.replace("[component.p3]\n", "[component.p3]\nfiles = [\"static/**\"]\n");
    let err = Host::fail(&files);
    assert!(err.contains("component.p3.files: Spin mounts files read-only"), "{err}");
}

/// A 0.3 component with one instance and a short timeout.
const P3_LIMITED: &str = r#"
[app]
name = "p3-faults"

[components.p3]
source = "{wasm:hello_p3}"
limits = { timeout_ms = 700, max_instances = 1 }

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "p3"
"#;

/// The faults of a 0.3 component look as a 0.2 component's do (the same
/// status, kind and text as `faults.rs` checks for the 0.2 `faulty`), each is
/// counted, and its one instance is free again for the next request.
#[test]
fn a_0_3_component_fails_as_a_0_2_one_does_and_frees_its_instance() {
    let host = Host::start(P3_LIMITED);
    let addr = host.addr();
    let ok = || {
        let hello = http(addr, "GET", "/ok", b"");
        assert_eq!(
            (hello.status, hello.body.as_str()),
            (200, "hello from wasi:http 0.3: GET /ok\n")
        );
    };

    let trap = http(addr, "GET", "/trap", b"");
    assert_eq!(trap.status, 500, "{}", trap.body);
    let body = trap.json();
    assert_eq!(
        (body["component"].as_str(), body["kind"].as_str()),
        (Some("p3"), Some("trap"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("component `p3` trapped: wasm trap"),
        "{body}"
    );
    ok();

    // Spinning, and waiting without end before a response: both end at the
    // deadline with the 0.2 text.
    for path in ["/loop", "/hang"] {
        let late = http(addr, "GET", path, b"");
        assert_eq!(late.status, 504, "{path}: {}", late.body);
        assert_eq!(late.json()["error"], "component `p3` timed out after 700 ms", "{path}");
        ok();
    }

    // A body that stalls after its status was sent is cut at the deadline
    // (no final chunk), and counted.
    let request = format!("GET /stall HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    let started = std::time::Instant::now();
    let cut = crate::support::raw(addr, request.as_bytes());
    let cut = String::from_utf8_lossy(&cut);
    assert!(cut.starts_with("HTTP/1.1 200"), "{cut:.200}");
    assert!(cut.contains(&"s".repeat(64 * 1024)), "the first chunk arrived");
    assert!(!cut.ends_with("0\r\n\r\n"), "the body must not look complete");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    ok();

    // A request body that stalls: the upload waits for bytes that never
    // come, and the deadline frees the instance.
    let stalled = std::net::TcpStream::connect(addr).unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 1000\r\n\r\n0123456789");
    std::io::Write::write_all(&mut &stalled, head.as_bytes()).unwrap();
    let late = {
        let mut answer = Vec::new();
        stalled
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let _ = std::io::Read::read_to_end(&mut &stalled, &mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(late.starts_with("HTTP/1.1 504"), "{late}");
    ok();

    let metrics = http(host.admin(), "GET", "/metrics", b"").body;
    for series in [
        r#"membrane_call_faults_total{app="p3-faults",component="p3",medium="http",kind="trap"} 1"#,
        r#"membrane_call_faults_total{app="p3-faults",component="p3",medium="http",kind="deadline"} 3"#,
        r#"membrane_http_responses_cut_total{component="p3",why="deadline"} 1"#,
    ] {
        assert!(metrics.contains(series), "no `{series}` in:\n{metrics}");
    }
}

/// A component that exports both HTTP versions is refused at load, the
/// binding and both exports named: the host does not guess which to call.
#[test]
fn a_component_exporting_both_http_versions_is_refused_by_name() {
    let err = Host::fail(
        r#"
[app]
name = "both"

[components.both]
source = "{wasm:both_http}"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "both"
"#,
    );
    assert!(
        err.contains("bindings[0]: component `both` exports both `wasi:http/incoming-handler@0.2.x` and `wasi:http/handler@0.3.x`"),
        "{err}"
    );
}

/// A 0.3 component whose one instance takes up to 8 requests at once.
const P3_SHARED: &str = r#"
[app]
name = "p3-shared"

[components.p3]
source = "{wasm:hello_p3}"
concurrency = 8
reuse = 1000
limits = { max_instances = 1 }

[components.short]
source = "{wasm:hello_p3}"
concurrency = 4
reuse = 1000
limits = { timeout_ms = 700, max_instances = 1 }

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "p3"
route = "/p3/..."

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "short"
route = "/short/..."
"#;

/// Sends every `(method, path)` at once, from a thread each started
/// together; the responses in the same order.
fn at_once(addr: std::net::SocketAddr, paths: &[&str]) -> Vec<crate::support::Response> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(paths.len()));
    let threads: Vec<_> = paths
        .iter()
        .map(|path| {
            let (barrier, path) = (barrier.clone(), path.to_string());
            std::thread::spawn(move || {
                barrier.wait();
                http(addr, "GET", &path, b"")
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// "at once: K" of a `/wait` answer.
fn at_once_seen(body: &str) -> u32 {
    let after = body.split("at once: ").nth(1).unwrap_or_else(|| panic!("{body}"));
    after.split(';').next().unwrap().parse().unwrap()
}

/// `concurrency = 8` with `max_instances = 1`: eight requests run at once
/// in the one instance (its guest counts them), a ninth is refused for
/// capacity, and faults and deadlines stay per request and per instance.
#[test]
fn a_0_3_instance_serves_several_requests_at_once_with_concurrency() {
    let host = Host::start(P3_SHARED);
    let addr = host.addr();

    // Nine at once, each waiting 1.5 s: eight share the instance, one has
    // no place and no instance left.
    let answers = at_once(addr, &["/p3/wait?ms=1500"; 9]);
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 8, "{statuses:?}");
    let refused = answers.iter().find(|a| a.status != 200).unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["kind"], "capacity", "{}", refused.body);
    let peak = answers
        .iter()
        .filter(|a| a.status == 200)
        .map(|a| at_once_seen(&a.body))
        .max();
    assert_eq!(peak, Some(8), "one instance had all eight in flight");

    // The instance was kept (`reuse`): its guest remembers the eight.
    let next = http(addr, "GET", "/p3/wait?ms=0", b"");
    assert_eq!(next.status, 200, "{}", next.body);
    assert!(next.body.ends_with("served: 9\n"), "{}", next.body);

    // A request that misses its deadline gets its 504; the one beside it
    // on the same instance is answered in time.
    let ok = || {
        let hello = http(addr, "GET", "/short/ok", b"");
        assert_eq!(hello.status, 200, "{}", hello.body);
    };
    for late in ["/short/hang", "/short/loop"] {
        let answers = at_once(addr, &[late, "/short/wait?ms=100"]);
        assert_eq!(answers[0].status, 504, "{late}: {}", answers[0].body);
        assert_eq!(answers[0].json()["error"], "component `short` timed out after 700 ms");
        if late == "/short/hang" {
            assert_eq!(answers[1].status, 200, "{late}: {}", answers[1].body);
        }
        // The instance is retired, and its place free for the next.
        ok();
    }

    // A trap fails the instance: the trapping request is the component's
    // trap, and the instance is replaced.
    let answers = at_once(addr, &["/short/trap", "/short/wait?ms=300"]);
    assert_eq!(answers[0].status, 500, "{}", answers[0].body);
    assert_eq!(answers[0].json()["kind"], "trap");
    assert!(
        matches!(answers[1].status, 200 | 500),
        "{}: {}",
        answers[1].status,
        answers[1].body
    );
    ok();

    let metrics = http(host.admin(), "GET", "/metrics", b"").body;
    for series in [
        r#"membrane_call_faults_total{app="p3-shared",component="p3",medium="http",kind="capacity"} 1"#,
        r#"membrane_call_faults_total{app="p3-shared",component="short",medium="http",kind="trap"} "#,
    ] {
        assert!(metrics.contains(series), "no `{series}` in:\n{metrics}");
    }
}

/// `concurrency` on a WASI 0.2 handler is refused at load, by name: its
/// export serves one request at a time.
#[test]
fn concurrency_on_a_0_2_handler_is_refused_by_name() {
    let err = Host::fail(
        r#"
[app]
name = "p2-shared"

[components.p2]
source = "{wasm:spin_hello}"
concurrency = 4
reuse = 100

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "p2"
"#,
    );
    assert!(
        err.contains("components.p2.concurrency: 4 requests at once need a WASI 0.3 HTTP handler"),
        "{err}"
    );
}
