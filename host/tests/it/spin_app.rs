//! A Spin app beyond `spin up`: `--listen` as `spin up` takes it, and a
//! small Membrane overlay that names the `spin.toml` and adds `placement`,
//! so the same app runs split across hosts (each host answering every
//! route, forwarding what runs elsewhere), started with `up` or applied
//! with `ctl apply` (which never stores this machine's `SPIN_VARIABLE_*`).

use crate::support::nats::NatsServer;
use crate::support::{Host, http, with_paths};
use std::net::SocketAddr;

/// Two WASI 0.3 components (spin-sdk 7 and `wasip3`) on one listener,
/// under base `/app`, with a required variable `token`.
const SPIN_TOML: &str = crate::wasi_p3::SPIN_APP;

/// The overlay: the spin.toml in `dir`, each component on its own node.
fn overlay(dir: &std::path::Path, listen: &str) -> String {
    let spin = dir.join("spin.toml");
    std::fs::write(&spin, with_paths(SPIN_TOML)).expect("write spin.toml");
    format!(
        "# The Spin app split across two hosts.\nspin = \"{}\"\nlisten = \"{listen}\"\n\n\
         [components.hello]\nplacement = {{ node = \"a\" }}\n\n\
         [components.p3]\nplacement = {{ node = \"b\" }}\n",
        spin.display()
    )
}

/// The address of the host's (one) HTTP listener once it serves both routes.
fn listener(host: &Host) -> SocketAddr {
    let line = host.wait_for_log("-> hello /app/hello/..., p3 /app/p3/...");
    let rest = line.split("serving http://").nth(1).expect("serving line");
    rest.split(' ').next().unwrap().parse().expect("address")
}

/// Whether `host` ran `component` for requests another host's listener
/// forwarded to it, by its metrics.
fn calls(host: &Host, component: &str) -> bool {
    let metrics = http(host.admin(), "GET", "/metrics", b"").body;
    let series = format!("component=\"{component}\",medium=\"http-forward\"");
    metrics
        .lines()
        .any(|l| l.starts_with("membrane_calls_total") && l.contains(&series))
}

#[test]
fn spin_up_listen_flag_wins_over_the_environment() {
    let spin = with_paths(SPIN_TOML).replace("token = { required = true }", "token = { default = \"d\" }");
    // An address that cannot be bound: the flag must win over it.
    let env = [("SPIN_HTTP_LISTEN_ADDR", "256.0.0.1:3000")];
    let host = Host::start_env(&spin, &["--listen", "127.0.0.1:0"], &env);
    let addr = listener(&host);
    let hello = http(addr, "GET", "/app/hello/there", b"");
    assert_eq!(
        (hello.status, hello.body.as_str()),
        (200, "Hello from Spin 7: GET /app/hello/there\n")
    );
    // The flag's address is the one bound: a taken one is named.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let refused = Host::fail_with(&spin, &["--listen", &addr]);
    assert!(refused.contains(&format!("cannot listen on {addr}")), "{refused}");
}

#[test]
fn an_overlay_splits_a_spin_app_across_hosts_and_every_host_answers_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = overlay(dir.path(), "127.0.0.1:0");
    let server = NatsServer::start();
    let node = |label: &str| {
        Host::start_env(
            &overlay,
            &["--nats", &server.url(), "--lattice", "spin", "--label", label],
            &[("SPIN_VARIABLE_TOKEN", "t0k")],
        )
    };
    let b = node("node=b");
    let a = node("node=a");
    assert!(a.log().contains("ready: 1 of 2 component(s) here"), "{}", a.log());
    let (on_a, on_b) = (listener(&a), listener(&b));

    for addr in [on_a, on_b] {
        let p3 = http(addr, "GET", "/app/p3/x", b"");
        assert_eq!(
            (p3.status, p3.body.as_str()),
            (200, "hello from wasi:http 0.3: GET /app/p3/x\n")
        );
        let hello = http(addr, "GET", "/app/hello/var/greeting", b"");
        assert_eq!((hello.status, hello.body.as_str()), (200, "greeting = Hi, Spin\n"));
        let echo = http(addr, "POST", "/app/p3/echo", &[b'x'; 300_000]);
        assert_eq!((echo.status, echo.body.len()), (200, 300_000), "a body over one piece");
    }
    // Each component ran only where the overlay placed it: each host ran
    // its own for the other's listener.
    assert!(calls(&a, "hello") && !calls(&a, "p3"), "a runs hello only");
    assert!(calls(&b, "p3") && !calls(&b, "hello"), "b runs p3 only");

    // An overlay naming a component the Spin app lacks is refused by name.
    let bad = overlay.replace("[components.p3]", "[components.p4]");
    let err = Host::fail(&bad);
    assert!(
        err.contains("components.p4: ") && err.contains("has no component `p4`"),
        "{err}"
    );
}

#[test]
fn ctl_apply_of_an_overlay_runs_it_split_and_stores_no_spin_variable_of_the_applying_machine() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("membrane.toml");
    std::fs::write(&path, overlay(dir.path(), "127.0.0.1:0")).unwrap();
    let server = NatsServer::start();
    let node = |label: &str, token: &str| {
        Host::join_env(
            &["--nats", &server.url(), "--lattice", "spin", "--label", label],
            &[("MEMBRANE_SECRET_TOKEN", token)],
        )
    };
    let a = node("node=a", "token-of-a");
    let b = node("node=b", "token-of-b");
    let applied = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["ctl", "--nats", &server.url(), "--lattice", "spin", "apply"])
        .arg(&path)
        .env("SPIN_VARIABLE_TOKEN", "applier-secret")
        .env("SPIN_VARIABLE_GREETING", "Applier")
        .output()
        .expect("run membrane ctl apply");
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert!(applied.status.success(), "{stderr}");
    assert!(stderr.contains("SPIN_VARIABLE_* are not applied"), "{stderr}");

    let (on_a, on_b) = (listener(&a), listener(&b));
    for addr in [on_a, on_b] {
        // The variable keeps its default, the token is host a's secret.
        let greeting = http(addr, "GET", "/app/hello/var/greeting", b"");
        assert_eq!(greeting.body, "greeting = Hi, Spin\n");
        let token = http(addr, "GET", "/app/hello/var/token", b"");
        assert_eq!(token.body, "token = token-of-a\n");
        let p3 = http(addr, "GET", "/app/p3/x", b"");
        assert_eq!(p3.status, 200, "{}", p3.body);
    }
    assert!(calls(&a, "hello") && !calls(&b, "hello"));

    // What the lattice stores (the JetStream files of its desired state)
    // holds the defaults, and neither value set on the applying machine.
    let stored = stored_bytes(server.store_dir());
    assert!(contains(&stored, b"Hi, Spin"), "the desired state is in the store");
    for leaked in [&b"applier-secret"[..], b"Applier"] {
        assert!(
            !contains(&stored, leaked),
            "{} was stored",
            String::from_utf8_lossy(leaked)
        );
    }
}

/// Every file under `dir`, concatenated.
fn stored_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                all.extend(bytes);
            }
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
