//! The lattice console (`membrane ctl console`) in a real browser: three
//! hosts run the adaptive insurance example under load on a nats-server that
//! enforces the roles of `ctl permissions`, the console runs with only the
//! viewer role, and headless Chromium (`console/test/inspect.mjs`, through
//! playwright-core) reads what the page shows at each step: the topology
//! with remote links, an adaptive move on the timeline with its arrow turned
//! local, a `ctl update`, and a host killed with SIGKILL shown as missing.
//!
//! Screenshots of each step go to `target/console/`.

use crate::adaptive::{Load, manifest};
use crate::security::{PASSWORDS, ctl, free_port, ok, write};
use crate::support::nats::NatsServer;
use crate::support::{raw, wasm, with_paths, workspace};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A second app, to update while the console watches.
const VERSIONS: &str = r#"
[app]
name = "versions"

[components.versioned]
source = "{wasm:versioned_v1}"
placement = { node = "b" }

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "versioned"
"#;

/// `membrane ctl console` as the viewer; killed on drop.
struct Console {
    child: Child,
    url: String,
    addr: SocketAddr,
}

impl Console {
    fn start(server: &NatsServer) -> Console {
        let mut child = Command::new(env!("CARGO_BIN_EXE_membrane"))
            .args([
                "ctl",
                "--nats",
                &server.url(),
                "--lattice",
                "test",
                "--nats-user",
                "test-viewer",
            ])
            .args(["console", "--listen", "127.0.0.1:0"])
            .env("MEMBRANE_NATS_PASSWORD", PASSWORDS[3].1)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run membrane ctl console");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        stderr.read_line(&mut line).expect("the console says where it is");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("  [console] {line}");
            }
        });
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("an address");
        Console { child, url, addr }
    }

    /// Opens the page in headless Chromium until `predicate` holds; what it
    /// shows then. Saves a screenshot as `target/console/<shot>.png`.
    fn inspect(&self, predicate: &str, shot: &str) -> serde_json::Value {
        let console = workspace().join("console");
        assert!(
            console.join("node_modules/playwright-core").is_dir(),
            "console/node_modules lacks playwright-core: run scripts/build-console.sh"
        );
        let shots = workspace().join("target/console");
        std::fs::create_dir_all(&shots).unwrap();
        let shot: PathBuf = shots.join(format!("{shot}.png"));
        let output = Command::new("node")
            .arg(console.join("test/inspect.mjs"))
            .args([&self.url, predicate, "45000", &shot.display().to_string()])
            .output()
            .expect("run node (scripts/build-console.sh installs it)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the page did not show {predicate}:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The id of the host whose label holds `label`, as the page shows it.
fn host_id(page: &serde_json::Value, label: &str) -> String {
    page["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["label"].as_str().is_some_and(|l| l.contains(label)))
        .and_then(|h| h["id"].as_str())
        .unwrap_or_else(|| panic!("no host labelled {label}: {page}"))
        .to_string()
}

/// The page's components as (name, host).
fn placed(page: &serde_json::Value) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = page["components"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").into(),
                c["host"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    all.sort();
    all
}

/// The page's links as (from, from host, to, to host, local).
fn links(page: &serde_json::Value) -> Vec<(String, String, String, String, bool)> {
    page["links"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or("").to_string();
            (s("from"), s("from_host"), s("to"), s("to_host"), l["local"] == true)
        })
        .collect()
}

/// The status line of a raw request to the console.
fn status(addr: SocketAddr, head: &str) -> String {
    let answer = raw(addr, format!("GET {head}\r\nconnection: close\r\n\r\n").as_bytes());
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Whether some timeline row is of `kind` and mentions `what`.
fn on_timeline(kind: &str, what: &str) -> String {
    format!(
        "[...document.querySelectorAll('#timeline li')].some(li => li.dataset.kind === '{kind}' && li.textContent.includes('{what}'))"
    )
}

#[test]
fn the_console_shows_the_lattice_its_moves_updates_and_lost_hosts_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let app = write(
        dir.path(),
        "app.toml",
        &manifest().replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    );
    let versions = write(dir.path(), "versions.toml", &with_paths(VERSIONS));
    let config = ok(ctl(None, &["permissions", &app, &versions], &[]));
    let conf = write(dir.path(), "nats.conf", &config);
    let server = NatsServer::start_with_env(&["-c", &conf], &PASSWORDS);
    let join = |label: &str| crate::security::join_as_host(&server, label, &[]);
    let (c, b, a) = (join("node=c"), join("node=b"), join("node=a"));
    let operator = |args: &[&str]| {
        let mut all = vec!["--nats-user", "test-operator"];
        all.extend_from_slice(args);
        ok(ctl(Some(&server), &all, &[("MEMBRANE_NATS_PASSWORD", PASSWORDS[1].1)]))
    };
    operator(&["apply", &app]);
    operator(&["apply", &versions]);
    let gateway: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _ = a.wait_for_http("gateway");
    let _ = b.wait_for_http("versioned");
    let console = Console::start(&server);

    // Only its own page: another name in Host, or another site's Origin,
    // is refused.
    let at = console.addr;
    assert!(status(at, &format!("/snapshot.json HTTP/1.1\r\nhost: {at}")).contains("200"));
    assert!(status(at, &format!("/events HTTP/1.1\r\nhost: rebound.example:{}", at.port())).contains("421"));
    assert!(
        status(
            at,
            &format!("/events HTTP/1.1\r\nhost: {at}\r\norigin: http://evil.example")
        )
        .contains("403")
    );
    assert!(status(at, &format!("/ HTTP/1.1\r\nhost: {at}\r\norigin: http://{at}")).contains("200"));

    // The topology under a light load (below the adaptive threshold): each
    // component on its host, the links remote and carrying calls.
    let light = Load::start(gateway, 1, Duration::from_millis(100));
    light.answers(5);
    let page = console.inspect(
        "cy.edges('.remote').filter(e => /[1-9][0-9.]*\\/s/.test(e.data('label'))).length >= 2",
        "1-topology",
    );
    let (ha, hb, hc) = (
        host_id(&page, "node=a"),
        host_id(&page, "node=b"),
        host_id(&page, "node=c"),
    );
    let components = placed(&page);
    for (name, host) in [("gateway", &ha), ("rater", &hb), ("pricing", &hc), ("versioned", &hb)] {
        assert!(
            components.contains(&(name.to_string(), host.clone())),
            "{name} on {host}: {components:?}"
        );
    }
    let remote = links(&page);
    assert!(
        remote.contains(&("gateway".into(), ha.clone(), "rater".into(), hb.clone(), false)),
        "{remote:?}"
    );
    assert!(
        remote.contains(&("rater".into(), hb.clone(), "pricing".into(), hc.clone(), false)),
        "{remote:?}"
    );
    assert_eq!(page["overlapping"], false, "host boxes overlap: {page}");
    assert!(
        page["entries"].to_string().contains(&format!("127.0.0.1:{port}")),
        "{page}"
    );
    let (answered, failures) = light.stop();
    assert!(failures.is_empty(), "{failures:?} of {answered}");

    // Under load the rater moves next to the gateway: the move is on the
    // timeline, and the arrow from the gateway to a rater is now local.
    let heavy = Load::start(gateway, 2, Duration::ZERO);
    let page = console.inspect(
        &format!(
            "{} && cy.edges('.local').some(e => e.data('from') === 'gateway' && e.data('to') === 'rater')",
            on_timeline("placement.adapted", "insurance/rater")
        ),
        "2-adapted",
    );
    assert!(
        links(&page).contains(&("gateway".into(), ha.clone(), "rater".into(), ha.clone(), true)),
        "{:?}",
        links(&page)
    );
    let adapted = page["timeline"].to_string();
    assert!(adapted.contains("gateway called it"), "the reason is shown: {adapted}");
    eprintln!(
        "console: snapshot of {} bytes rendered in {} ms under load",
        page["snapshot_bytes"], page["render_ms"]
    );

    // An update is an event.
    let v2 = wasm("versioned_v2").display().to_string();
    operator(&["update", "versions/versioned", &v2]);
    console.inspect(&on_timeline("component.updated", "versions/versioned"), "3-updated");

    // A host killed with SIGKILL shows as missing within its heartbeat
    // expiry (3 × 500 ms) and a round or two of the console's (2 s each).
    let killed = Instant::now();
    c.kill();
    let page = console.inspect(
        "cy.nodes('.missing').length === 1 && [...document.querySelectorAll('#health li')].some(li => li.textContent.startsWith('missing'))",
        "4-missing",
    );
    let seen = killed.elapsed();
    let missing: Vec<&serde_json::Value> = page["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["missing"] == true)
        .collect();
    assert_eq!(missing.len(), 1, "{page}");
    assert_eq!(missing[0]["id"], hc.as_str(), "{page}");
    assert!(page["timeline"].to_string().contains("host.missing"), "{page}");
    eprintln!("console: the killed host showed as missing after {seen:.1?} (the page's start included)");
    assert!(seen < Duration::from_secs(20), "missing only after {seen:?}");
    let (answered, _) = heavy.stop();
    eprintln!("console: {answered} quotes under heavy load");
    drop(b);
    drop(a);
}
