//! A network partition, made with a network namespace and a veth pair: one
//! host and its nats-server (one of a three-node JetStream cluster, every
//! stream R3) are cut from the other two, silently, and joined again.
//!
//! Each side keeps serving its own calls; only the majority can change the
//! desired state (no split brain); after the heal the minority follows the
//! majority's changes and the duplicate replica started on each side is
//! stopped again, with no failed call.

use crate::support::nats::{NatsServer, free_ports};
use crate::support::netns::Split;
use crate::support::{Host, NETNS, example_policy, http, version_over_http, wait_until, wasm, with_paths};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A gateway and `versioned` on every host; one rater (`instances = 1`)
/// among the hosts labelled role=web (b outside, c inside); pricing
/// everywhere.
fn app() -> String {
    crate::support::with_insurance_chain(APP_REST, ["", "placement = { role = \"web\" }\ninstances = 1", ""])
}

/// The app's own tables besides the example's chain.
const APP_REST: &str = r#"
[app]
name = "split"

[components.versioned]
source = "{wasm:versioned_v1}"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "gateway"

[[bindings]]
medium = "http"
address = "127.0.0.2:0"
component = "versioned"
"#;

fn join(url: &str, labels: &[&str], netns: Option<&str>) -> Host {
    let mut args = vec![
        "--nats",
        url,
        "--lattice",
        "test",
        "--heartbeat-ms",
        "500",
        "--nats-replicas",
        "3",
    ];
    for label in labels {
        args.extend(["--label", label]);
    }
    match netns {
        Some(ns) => Host::join_env(&args, &[(NETNS, ns)]),
        None => Host::join(&args),
    }
}

/// `membrane ctl` through `url`, inside `split`'s namespace when `inside`.
fn ctl(split: &Split, inside: bool, url: &str, args: &[&str]) -> (std::process::Output, Duration) {
    let mut all = vec!["ctl", "--nats", url, "--lattice", "test", "--nats-replicas", "3"];
    all.extend_from_slice(args);
    let started = Instant::now();
    let output = if inside {
        split.run(env!("CARGO_BIN_EXE_membrane"), &all)
    } else {
        std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
            .args(&all[..])
            .output()
            .unwrap()
    };
    let took = started.elapsed();
    eprintln!(
        "$ membrane {} ({took:.1?})\n{}{}",
        all.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, took)
}

/// A quote from the gateway at `addr` inside the namespace (with curl);
/// its status, 0 when none came in 10 s.
fn quote_inside(split: &Split, addr: std::net::SocketAddr, policy: &str) -> u16 {
    let out = split.run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data-binary",
            &format!("@{policy}"),
            &format!("http://{addr}/quote"),
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Polls `condition` until it holds; fails after 120 s.
fn wait_long(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met in 120 s");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Which hosts run `rater`, from `ctl apps --output json`.
fn raters(split: &Split, url: &str) -> Vec<String> {
    let (output, _) = ctl(split, false, url, &["apps", "--output", "json"]);
    let apps: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    apps.as_array()
        .into_iter()
        .flatten()
        .flat_map(|app| app["components"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["name"] == "rater")
        .flat_map(|c| c["running"].as_array().cloned().unwrap_or_default())
        .filter_map(|h| h["host"].as_str().map(String::from))
        .collect()
}

#[test]
fn a_partitioned_host_serves_its_own_calls_and_rejoins_without_split_brain() {
    // Debian's 2.9.10 never closes a route to a cut server as stale (no
    // "Stale Connection" in 30 s, with ping_interval 1 s), so the majority
    // keeps sending calls to the cut side's queue subscribers until their
    // deadline; 2.12 closes them in 3 s. scripts/test.sh runs this module
    // on the current server (docs/operations.md, Partitions).
    if crate::support::nats::server_version() < (2, 10) {
        eprintln!("partition: skipped on nats-server before 2.10 (cut routes never go stale); run on a current server");
        return;
    }
    let split = Split::new(1);
    let dir = tempfile::tempdir().unwrap();
    // Dead routes and clients are noticed in about 3 s, not 4 minutes.
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, "ping_interval: \"1s\"\nping_max: 2\n").unwrap();
    let conf = conf.display().to_string();
    let routes = free_ports(3);
    let addr = |i: usize| {
        if i == 2 {
            split.inside.clone()
        } else {
            split.outside.clone()
        }
    };
    let all = (0..3)
        .map(|i| format!("nats://{}:{}", addr(i), routes[i]))
        .collect::<Vec<_>>()
        .join(",");
    let servers: Vec<NatsServer> = (0..3)
        .map(|i| {
            let (name, cluster) = (format!("s{i}"), format!("nats://{}:{}", addr(i), routes[i]));
            let args = [
                "-c",
                &conf,
                "-n",
                &name,
                "--cluster_name",
                "membrane",
                "--cluster",
                &cluster,
                "--routes",
                &all,
            ];
            NatsServer::start_at(&addr(i), (i == 2).then_some(split.ns.as_str()), &args)
        })
        .collect();
    let outside = format!("{},{}", servers[0].url(), servers[1].url());
    crate::support::nats::wait_for_jetstream(&outside);

    let a = join(&servers[0].url(), &["node=a"], None);
    let b = join(&servers[1].url(), &["node=b", "role=web"], None);
    let c = join(&servers[2].url(), &["node=c", "role=web"], Some(&split.ns));
    let file = dir.path().join("split.toml");
    std::fs::write(&file, with_paths(&app())).unwrap();
    assert!(
        ctl(&split, false, &outside, &["apply", &file.display().to_string()])
            .0
            .status
            .success()
    );
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, example_policy()).unwrap();
    let policy = policy.display().to_string();
    let (gateway_a, gateway_c) = (a.wait_for_http("gateway"), c.wait_for_http("gateway"));
    let (versioned_a, versioned_c) = (a.wait_for_http("versioned"), c.wait_for_http("versioned"));
    let _ = b.wait_for_http("gateway");
    wait_until(|| http(gateway_a, "POST", "/quote", &example_policy()).status == 200);
    wait_until(|| quote_inside(&split, gateway_c, &policy) == 200);
    wait_until(|| raters(&split, &outside).len() == 1);

    // The split.
    eprintln!("split: raters before the cut: {:?}", raters(&split, &outside));
    let cut = Instant::now();
    split.cut();
    eprintln!("split: cut at {:?}", std::time::SystemTime::now());
    // Each side serves its own quotes: the rater runs on b outside, and c
    // starts its own inside.
    // Until each side sees the routes dead (ping_interval), a call can be
    // sent across the cut and fail at its deadline: wait for ten in a row.
    wait_until(|| (0..10).all(|_| http(gateway_a, "POST", "/quote", &example_policy()).status == 200));
    let outside_back = cut.elapsed();
    wait_until(|| (0..10).all(|_| quote_inside(&split, gateway_c, &policy) == 200));
    let inside_back = cut.elapsed();
    for _ in 0..10 {
        assert_eq!(http(gateway_a, "POST", "/quote", &example_policy()).status, 200);
        assert_eq!(quote_inside(&split, gateway_c, &policy), 200);
    }
    eprintln!("split: quotes answer again after {outside_back:.1?} outside and {inside_back:.1?} inside");

    // Only the majority changes the desired state.
    // The majority's change is stored once its side has leaders for what
    // the lost server led (an earlier try fails naming "no quorum"); `ctl`
    // lists the hosts that did not confirm it in time (exit status 1).
    let v2 = wasm("versioned_v2").display().to_string();
    let started = Instant::now();
    wait_long(|| {
        if version_over_http(versioned_a) == Ok(2) {
            return true;
        }
        let (update, _) = ctl(&split, false, &outside, &["update", "versioned", &v2]);
        let stderr = String::from_utf8_lossy(&update.stderr);
        assert!(
            String::from_utf8_lossy(&update.stdout).contains("updated") || stderr.contains("JetStream has no quorum"),
            "{stderr}"
        );
        false
    });
    eprintln!(
        "split: the majority's update ran on host a {:.1?} after it was first tried",
        started.elapsed()
    );
    let v4 = wasm("versioned_v4").display().to_string();
    let (refused, took) = ctl(&split, true, &servers[2].url(), &["update", "versioned", &v4]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "the minority changed the desired state");
    assert!(stderr.contains("JetStream has no quorum"), "{stderr}");
    eprintln!("split: the minority's update was refused in {took:.1?}");
    assert_eq!(split.version(versioned_c), Some(1));

    // The heal, under load from outside: the minority follows the
    // majority's change, the extra rater stops, and no quote fails.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                statuses.push((
                    Instant::now(),
                    http(gateway_a, "POST", "/quote", &example_policy()).status,
                ));
                std::thread::sleep(Duration::from_millis(10));
            }
            statuses
        })
    };
    let healed = Instant::now();
    split.heal();
    // The cluster elects its leaders again after a heal (20 s on 2.9.10),
    // and a watch left behind is made again within two checks.
    wait_long(|| split.version(versioned_c) == Some(2));
    let followed = healed.elapsed();
    wait_long(|| raters(&split, &outside).len() == 1);
    let converged = healed.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let statuses = load.join().unwrap();
    // Calls that cross the routes while they form again can be lost (core
    // NATS is at most once): they fail at their link deadline (5 s). After
    // that window, and through the stop of the extra rater, none fails.
    let window = Duration::from_secs(6);
    let failed = |late: bool| {
        statuses
            .iter()
            .filter(|(t, s)| *s != 200 && (t.saturating_duration_since(healed) > window) == late)
            .count()
    };
    eprintln!(
        "heal: the minority runs v2 after {followed:.1?}; one rater again after {converged:.1?}; {} of {} quotes failed in the first {window:?}, {} after",
        failed(false),
        statuses.len(),
        failed(true)
    );
    assert_eq!(failed(true), 0, "quotes failed after the routes formed again");
    assert_eq!(split.version(versioned_c), Some(2));
}
