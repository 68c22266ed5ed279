//! The `schedule` medium as a user meets it: an export called on an
//! interval with the manifest's arguments; a slow run's next ticks skipped
//! and counted, not queued; arguments that do not fit refused at load; and
//! on a lattice of two hosts that both run the component, one run per tick,
//! not one per host.

use crate::support::nats::NatsServer;
use crate::support::{self, Host};
use std::time::{Duration, Instant};

/// `series`'s value in `host`'s metrics (0 when absent).
fn metric(host: &Host, series: &str) -> f64 {
    support::http(host.admin(), "GET", "/metrics", b"")
        .body
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// Waits until `series` reaches `at_least` on `host`.
fn wait_metric(host: &Host, series: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = metric(host, series);
        if value >= at_least {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{series} = {value} < {at_least}:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn app(component: &str, schedule: &str) -> String {
    support::with_paths(&format!(
        r#"
[app]
name = "ticks"

[components.job]
source = "{{wasm:{component}}}"

[[bindings]]
medium = "schedule"
component = "job"
{schedule}
"#
    ))
}

const CALLS: &str = r#"membrane_calls_total{app="ticks",component="job",medium="schedule"}"#;
const SKIPPED: &str = r#"membrane_schedule_skipped_total{app="ticks",component="job",reason="running"}"#;

#[test]
fn an_export_runs_on_its_interval_with_the_manifests_arguments() {
    let host = Host::start(&app(
        "echo",
        "export = \"example:testkit/echo@0.1.0#add\"\nevery_ms = 100\nargs = { a = 40, b = 2 }",
    ));
    host.wait_for_log("serving schedule every 100 ms -> job#add");
    wait_metric(&host, CALLS, 5.0);
    let metrics = support::http(host.admin(), "GET", "/metrics", b"").body;
    assert!(
        !metrics.contains(r#"membrane_call_faults_total{app="ticks""#),
        "{metrics}"
    );
    assert_eq!(metric(&host, SKIPPED), 0.0);
}

#[test]
fn a_slow_run_makes_the_next_ticks_skip_instead_of_queueing() {
    let host = Host::start(&app(
        "faulty",
        "export = \"example:testkit/faults@0.1.0#sleep\"\nevery_ms = 100\nargs = { ms = 450 }",
    ));
    let skipped = wait_metric(&host, SKIPPED, 8.0);
    let calls = metric(&host, CALLS);
    // Each run takes ~4.5 ticks: at most one run in flight at any time, so
    // the finished runs are far fewer than the skipped ticks.
    assert!(
        calls >= 1.0 && calls * 2.0 < skipped,
        "calls {calls}, skipped {skipped}"
    );
}

#[test]
fn arguments_that_do_not_fit_the_function_are_refused_at_load() {
    let text = app(
        "echo",
        "export = \"example:testkit/echo@0.1.0#add\"\nevery_ms = 100\nargs = { a = \"forty\", b = 2 }",
    );
    let failed = Host::try_start(&text, &support::shared_cache())
        .err()
        .expect("the host refuses");
    assert!(failed.stderr.contains("bindings[0].args"), "{}", failed.stderr);
    let text = app("echo", "export = \"example:testkit/echo@0.1.0#add\"\nevery_ms = 5");
    let failed = Host::try_start(&text, &support::shared_cache())
        .err()
        .expect("the host refuses");
    assert!(
        failed.stderr.contains("bindings[0]: every_ms: must be at least 100"),
        "{}",
        failed.stderr
    );
}

#[test]
fn on_a_lattice_each_tick_runs_once_across_the_replicas() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<Host> = (0..2)
        .map(|_| Host::join(&["--nats", &server.url(), "--lattice", "test"]))
        .collect();
    let text = app(
        "echo",
        "export = \"example:testkit/echo@0.1.0#add\"\nevery_ms = 200\nargs = { a = 1, b = 2 }",
    )
    .replace("source =", "instances = 2\nsource =");
    let path = dir.path().join("ticks.toml");
    std::fs::write(&path, text).unwrap();
    crate::security::ok(crate::security::ctl(
        Some(&server),
        &["apply", path.to_str().unwrap()],
        &[],
    ));
    for host in &hosts {
        host.wait_for_log("serving schedule every 200 ms");
    }
    let total = || hosts.iter().map(|h| metric(h, CALLS)).sum::<f64>();
    let (start, first) = (Instant::now(), total());
    std::thread::sleep(Duration::from_secs(4));
    let (ticks, runs) = (start.elapsed().as_millis() as f64 / 200.0, total() - first);
    // One host per tick (a tick at each edge of the window may count or
    // not); two per tick if each host ran its own.
    assert!(
        runs <= ticks + 2.0 && runs >= ticks - 3.0,
        "{runs} runs in {ticks} ticks:\n{}\n{}",
        hosts[0].log(),
        hosts[1].log()
    );
}
