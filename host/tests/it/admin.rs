//! The admin endpoint as an operator meets it: `/metrics` (checked by
//! promtool, counters that move with calls), `/healthz` and `/readyz`
//! (following the app and the NATS connection), and the status page in a
//! real browser (headless Chromium).

use crate::support;
use crate::support::nats::NatsServer;
use crate::support::{
    Host, distributed_manifest, dynamic_links, example_policy, http, insurance_manifest, starve_pricing,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// GET `path` from the admin endpoint.
fn get(admin: SocketAddr, path: &str) -> support::Response {
    http(admin, "GET", path, b"")
}

/// The value of the one series written `series` (name and labels as
/// exported), or 0 when it is not exported.
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// Polls `path` until it answers `status`; the last body.
fn wait_for_status(admin: SocketAddr, path: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = get(admin, path);
        if response.status == status {
            return response.body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still answers {} after 30 s: {}",
            response.status,
            response.body
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Debian tool the test scripts install; a missing one fails the test.
fn tool(names: &[&str]) -> PathBuf {
    for name in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
            let path = PathBuf::from(dir).join(name);
            if path.exists() {
                return path;
            }
        }
    }
    panic!("{names:?} not installed: scripts/test.sh installs it (Debian packages prometheus, chromium)");
}

#[test]
fn metrics_count_calls_links_and_faults_and_pass_promtool() {
    let host = Host::start(&dynamic_links(&insurance_manifest()));
    let admin = host.admin();
    assert_eq!(wait_for_status(admin, "/readyz", 200), "ready\n");
    assert_eq!(get(admin, "/healthz").body, "ok\n");

    let before = get(admin, "/metrics").body;
    for _ in 0..5 {
        let quote = http(host.addr(), "POST", "/quote", &example_policy());
        assert_eq!(quote.status, 200, "{}", quote.body);
    }
    let response = get(admin, "/metrics");
    assert_eq!(response.status, 200);
    assert!(
        response.headers.contains("text/plain; version=0.0.4"),
        "{}",
        response.headers
    );
    let after = response.body;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    let gateway = r#"{app="insurance",component="gateway",medium="http"}"#;
    assert_eq!(moved(&format!("membrane_calls_total{gateway}")), 5.0, "{after}");
    assert_eq!(moved(&format!("membrane_call_duration_seconds_count{gateway}")), 5.0);
    assert!(moved(&format!("membrane_call_duration_seconds_sum{gateway}")) > 0.0);
    assert_eq!(
        moved(r#"membrane_link_calls_total{app="insurance",from="gateway",to="rater",where="local"}"#),
        5.0,
        "{after}"
    );
    assert!(moved(r#"membrane_link_calls_total{app="insurance",from="rater",to="pricing",where="local"}"#) >= 5.0);
    assert_eq!(
        value(
            &after,
            r#"membrane_instances_busy{app="insurance",component="gateway"}"#
        ),
        0.0
    );
    assert_eq!(
        value(&after, r#"membrane_instances_max{app="insurance",component="gateway"}"#),
        256.0
    );
    assert_eq!(value(&after, r#"membrane_app_ready{app="insurance"}"#), 1.0);
    assert!(value(&after, "process_resident_memory_bytes") > 1e6);
    assert!(
        value(&after, r#"membrane_compile_duration_seconds_count{cached="false"}"#)
            + value(&after, r#"membrane_compile_duration_seconds_count{cached="true"}"#)
            >= 3.0
    );

    // The exposition is what Prometheus accepts.
    promtool_accepts(&after);
}

/// Asserts that `promtool check metrics` accepts the exposition `metrics`.
pub(crate) fn promtool_accepts(metrics: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), metrics).unwrap();
    let check = Command::new(tool(&["promtool"]))
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file.path()).unwrap())
        .output()
        .expect("promtool runs");
    assert!(
        check.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn faults_are_counted_by_kind() {
    let host = Host::start(&starve_pricing(&insurance_manifest()));
    let admin = host.admin();
    let quote = http(host.addr(), "POST", "/quote", &example_policy());
    assert_ne!(quote.status, 200, "{}", quote.body);
    let metrics = get(admin, "/metrics").body;
    let faults: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("membrane_call_faults_total{"))
        .collect();
    assert!(
        faults
            .iter()
            .any(|l| l.contains(r#"component="gateway""#) && l.contains(r#"kind="memory""#) && l.ends_with(" 1")),
        "{faults:?}"
    );
}

#[test]
fn readiness_follows_the_nats_connection() {
    let mut server = NatsServer::start();
    let host = Host::start_with(
        &distributed_manifest(0),
        &["--nats", &server.url(), "--label", "node=a"],
    );
    let admin = host.admin();
    wait_for_status(admin, "/readyz", 200);
    let metrics = get(admin, "/metrics").body;
    assert_eq!(value(&metrics, "membrane_nats_connected"), 1.0, "{metrics}");

    server.kill();
    let why = wait_for_status(admin, "/readyz", 503);
    assert!(why.contains("nats: disconnected"), "{why}");
    assert_eq!(get(admin, "/healthz").status, 200, "alive, only not ready");
    assert_eq!(value(&get(admin, "/metrics").body, "membrane_nats_connected"), 0.0);

    server.restart();
    wait_for_status(admin, "/readyz", 200);
}

#[test]
fn admin_off_opens_no_port_and_bad_paths_are_named() {
    let host = Host::start_with(&insurance_manifest(), &["--admin", "off"]);
    host.wait_for_log("ready");
    assert!(!host.log().contains("admin http://"), "{}", host.log());

    let host = Host::start(&insurance_manifest());
    let admin = host.admin();
    let missing = get(admin, "/nope");
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("no page /nope"), "{}", missing.body);
    assert_eq!(http(admin, "POST", "/metrics", b"{}").status, 405);
}

/// The status page in headless Chromium: the DOM after its scripts ran
/// shows this host, its app and components, and the calls made.
#[test]
fn the_status_page_shows_the_host_its_apps_and_calls_in_a_browser() {
    let host = Host::start(&insurance_manifest());
    let admin = host.admin();
    wait_for_status(admin, "/readyz", 200);
    for _ in 0..3 {
        assert_eq!(http(host.addr(), "POST", "/quote", &example_policy()).status, 200);
    }
    let status = get(admin, "/status.json").json();
    let id = status["host"].as_str().expect("a host id").to_string();

    let profile = tempfile::tempdir().unwrap();
    let chromium = || {
        let mut command = Command::new(tool(&["chromium", "chromium-browser", "google-chrome"]));
        command.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1100,720",
            "--virtual-time-budget=4000",
            &format!("--user-data-dir={}", profile.path().display()),
        ]);
        command
    };
    let url = format!("http://{admin}/");
    let dom = chromium().arg("--dump-dom").arg(&url).output().expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout).to_string();
    let cells = table_cells(&dom, "components");
    assert!(dom.contains(&format!("<span id=\"host\">{id}</span>")), "{dom}");
    assert!(
        dom.contains("<span id=\"ready\" class=\"badge ok\">ready</span>"),
        "{dom}"
    );
    assert!(
        table_cells(&dom, "apps").starts_with(&["insurance".to_string(), "local".to_string()]),
        "{dom}"
    );
    // app, component, version, busy, parked, max, calls, calls/s, faults
    let gateway: Vec<&[String]> = cells.chunks(9).filter(|row| row[1] == "gateway").collect();
    assert_eq!(gateway.len(), 1, "{cells:?}");
    assert!(gateway[0][2].starts_with("sha256:"), "{cells:?}");
    assert_eq!(gateway[0][6], "3", "calls: {cells:?}");
    assert_eq!(gateway[0][8], "0", "faults: {cells:?}");
    assert!(
        gateway[0][7].parse::<f64>().is_ok(),
        "a live rate once two samples are in: {cells:?}"
    );

    // A picture for people: target/admin-status-page.png (docs/ keeps one).
    let picture = support::workspace().join("target/admin-status-page.png");
    let shot = chromium()
        .arg(format!("--screenshot={}", picture.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    assert!(
        shot.status.success() && picture.exists(),
        "{}",
        String::from_utf8_lossy(&shot.stderr)
    );
}

/// The texts of the `<td>` cells in the body of table `id`, in order.
fn table_cells(dom: &str, id: &str) -> Vec<String> {
    let start = dom
        .find(&format!("<table id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no table {id}"));
    let table = &dom[start..];
    let table = &table[..table.find("</table>").unwrap_or(table.len())];
    let body = table.split("<tbody>").nth(1).unwrap_or_default();
    body.split("<td")
        .skip(1)
        .map(|cell| {
            let text = cell.split_once('>').map_or("", |(_, rest)| rest);
            text[..text.find("</td>").unwrap_or(text.len())].to_string()
        })
        .collect()
}
