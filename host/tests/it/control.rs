//! The control plane: apps applied to a lattice, hot swaps under load,
//! rejected versions, late hosts, scaling, and bad control input. Each test
//! has its own nats-server and hosts started with no manifest.

use crate::support::nats::NatsServer;
use crate::support::{Host, version_over_http, wait_until, wasm, with_paths};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A host of lattice `test` with `labels`, following the applied apps.
fn host(server: &NatsServer, labels: &[&str]) -> Host {
    host_with(server, labels, &[])
}

/// [`host`] with extra arguments.
fn host_with(server: &NatsServer, labels: &[&str], extra: &[&str]) -> Host {
    let mut args = vec!["--nats", &*server.url(), "--lattice", "test", "--heartbeat-ms", "500"]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    for label in labels {
        args.extend(["--label".to_string(), label.to_string()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Host::join(&args)
}

/// Runs `membrane ctl <args>` against `server`'s lattice `test`.
fn ctl(server: &NatsServer, args: &[&str]) -> Output {
    crate::support::lattice_ctl(&server.url(), args)
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// Writes an app manifest for `ctl apply`; the file lives as long as the dir.
fn manifest_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("app.toml");
    std::fs::write(&path, with_paths(text)).unwrap();
    path.display().to_string()
}

/// `versioned` (v1) over HTTP and NATS, on hosts labelled `role=web`, with
/// `extra` lines in its component entry.
fn versioned_app(extra: &str) -> String {
    format!(
        r#"
[app]
name = "swap"

[components.versioned]
source = "{{wasm:versioned_v1}}"
placement = {{ role = "web" }}
{extra}

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "versioned"

[[bindings]]
medium = "nats"
subject = "swap.version"
component = "versioned"
export = "example:testkit/version@0.1.0#get"
"#
    )
}

fn path(name: &str) -> String {
    wasm(name).display().to_string()
}

fn digest_of(name: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(std::fs::read(wasm(name)).unwrap()))
    )
}

#[test]
fn a_swap_under_load_fails_no_request_and_never_goes_back() {
    swap_under_load("");
}

#[test]
fn a_swap_under_load_with_reused_instances_fails_no_request_and_never_goes_back() {
    // Parked v1 instances are dropped at the commit: no call takes one after.
    swap_under_load("reuse = 1000");
}

fn swap_under_load(strategy: &str) {
    let server = NatsServer::start();
    // Caches of their own: the hosts really compile v2, so the reported
    // compile and swap times are honest.
    let caches = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let hosts = caches.each_ref().map(|cache| {
        host_with(
            &server,
            &["role=web"],
            &["--cache-dir", &cache.path().display().to_string()],
        )
    });
    let dir = tempfile::tempdir().unwrap();
    ok(ctl(&server, &["apply", &manifest_file(&dir, &versioned_app(strategy))]));
    let addrs: Vec<SocketAddr> = hosts.iter().map(|h| h.wait_for_http("versioned")).collect();
    for addr in &addrs {
        assert_eq!(version_over_http(*addr), Ok(1));
    }

    // 16 clients, 8 per host, each checking that its answers never go back.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let first_v2: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (addr, stop, done, first_v2, failures) = (
                addrs[i % 2],
                stop.clone(),
                done.clone(),
                first_v2.clone(),
                failures.clone(),
            );
            std::thread::spawn(move || {
                let mut last = 1;
                let mut seen = [0usize; 3];
                while !stop.load(Ordering::Relaxed) {
                    match version_over_http(addr) {
                        Ok(v) if v >= last && v <= 2 => {
                            if v == 2 {
                                first_v2.get_or_init(Instant::now);
                            }
                            last = v;
                            seen[v as usize] += 1;
                        }
                        Ok(v) => failures.lock().unwrap().push(format!("client {i}: {v} after {last}")),
                        Err(e) => failures.lock().unwrap().push(format!("client {i}: {e}")),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < 3_000 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let asked = Instant::now();
    let table = ok(ctl(&server, &["update", "versioned", &path("versioned_v2")]));
    let answered = asked.elapsed();
    let before = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < (before + 2_000).max(10_000) {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<[usize; 3]> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let total = done.load(Ordering::Relaxed);
    let (ones, twos) = seen.iter().fold((0, 0), |(a, b), s| (a + s[1], b + s[2]));
    let failures = failures.lock().unwrap();
    let swap = first_v2.get().map(|t| t.saturating_duration_since(asked));
    eprintln!(
        "{total} requests at concurrency 16: {ones} answered v1, {twos} v2, {} failed; \
         ctl update answered in {answered:?}; first v2 answer {swap:?} after the update was sent",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(total >= 10_000);
    assert!(seen.iter().all(|s| s[2] > 0), "every client saw v2: {seen:?}");
    // Both hosts swapped, and the table says so.
    assert_eq!(table.lines().filter(|l| l.contains(" updated ")).count(), 2, "{table}");
    assert!(table.contains("updated swap/versioned"), "{table}");
    for addr in &addrs {
        assert_eq!(version_over_http(*addr), Ok(2));
    }
}

/// The version `relay` answers over http-rpc at `addr`.
fn relayed_version(addr: SocketAddr) -> Result<u32, String> {
    let reply = crate::support::http(addr, "POST", "/rpc/relay/get", b"{}");
    if reply.status != 200 {
        return Err(format!("{}: {}", reply.status, reply.body));
    }
    reply
        .body
        .trim()
        .parse()
        .map_err(|_| format!("not a version: {}", reply.body))
}

#[test]
fn a_swap_of_a_composed_callee_under_load_recomposes_and_fails_no_request() {
    let server = NatsServer::start();
    let cache = tempfile::tempdir().unwrap();
    let host = host_with(
        &server,
        &["role=web"],
        &["--cache-dir", &cache.path().display().to_string()],
    );
    let dir = tempfile::tempdir().unwrap();
    let app = r#"
[app]
name = "chain"

[components.relay]
source = "{wasm:version_relay}"
placement = { role = "web" }

[components.versioned]
source = "{wasm:versioned_v1}"
placement = { role = "web" }

[[links]]
from = "relay"
import = "example:testkit/version@0.1.0"
to = "versioned"

[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "relay"
export = "example:testkit/version@0.1.0#get"
"#;
    ok(ctl(&server, &["apply", &manifest_file(&dir, app)]));
    host.wait_for_log("composed links relay -> versioned");
    let addr = host.listening("http-rpc http");
    assert_eq!(relayed_version(addr), Ok(1));

    // 8 clients, each checking that its answers never go back.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
            std::thread::spawn(move || {
                let (mut last, mut twos) = (1, 0);
                while !stop.load(Ordering::Relaxed) {
                    match relayed_version(addr) {
                        Ok(v) if v >= last && v <= 2 => {
                            twos += usize::from(v == 2);
                            last = v;
                        }
                        Ok(v) => failures.lock().unwrap().push(format!("client {i}: {v} after {last}")),
                        Err(e) => failures.lock().unwrap().push(format!("client {i}: {e}")),
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                twos
            })
        })
        .collect();
    wait_until(|| done.load(Ordering::Relaxed) >= 1_000);
    // The callee alone changes: the group is composed again around v2.
    ok(ctl(
        &server,
        &["update", "versioned", &path("versioned_v2"), "--app", "chain"],
    ));
    let before = done.load(Ordering::Relaxed);
    wait_until(|| done.load(Ordering::Relaxed) >= before + 2_000);
    stop.store(true, Ordering::Relaxed);
    let twos: Vec<usize> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let failures = failures.lock().unwrap();
    eprintln!(
        "{} calls through the composed link at concurrency 8, {} failed",
        done.load(Ordering::Relaxed),
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(twos.iter().all(|&n| n > 0), "every client saw v2: {twos:?}");
    host.wait_for_log_count("composed links relay -> versioned", 2);
    let apps = ok(ctl(&server, &["apps"]));
    assert!(apps.contains("-> versioned composed on"), "{apps}");
}

#[test]
fn an_incompatible_version_is_rejected_everywhere_and_the_old_one_keeps_serving() {
    let server = NatsServer::start();
    let hosts = [host(&server, &["role=web"]), host(&server, &["role=web"])];
    let dir = tempfile::tempdir().unwrap();
    ok(ctl(&server, &["apply", &manifest_file(&dir, &versioned_app(""))]));
    let addrs: Vec<SocketAddr> = hosts.iter().map(|h| h.wait_for_http("versioned")).collect();

    let output = ctl(&server, &["update", "versioned", &path("versioned_v3")]);
    assert!(!output.status.success(), "an incompatible update must fail the command");
    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(table.lines().filter(|l| l.contains(" rejected ")).count(), 2, "{table}");
    assert!(
        table.contains("changes `example:testkit/version@0.1.0#get`: result: expected u32, found string"),
        "{table}"
    );
    for addr in &addrs {
        assert_eq!(version_over_http(*addr), Ok(1));
    }
    // The desired state was restored: a host that joins now runs v1 too.
    let late = host(&server, &["role=web"]);
    assert_eq!(version_over_http(late.wait_for_http("versioned")), Ok(1));
    let inventory = ok(ctl(&server, &["inventory"]));
    let v1 = &digest_of("versioned_v1")[..19];
    assert_eq!(inventory.lines().filter(|l| l.contains(v1)).count(), 3, "{inventory}");
}

#[test]
fn a_host_started_after_apply_runs_its_share() {
    let server = NatsServer::start();
    let front = host(&server, &["role=front"]);
    #[allow(clippy::zombie_processes)] // reaped by `wait_with_output` below
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["ctl", "--nats", &server.url(), "--lattice", "test", "watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // `watch` says so on stderr once it is subscribed.
    let mut stderr = std::io::BufReader::new(watch.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.contains("watching lattice `test`"), "{line}");
    let text = versioned_app("").replacen(
        "[[bindings]]",
        "[components.echo]\nsource = \"{wasm:echo}\"\nplacement = { role = \"front\" }\n\n[[bindings]]",
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let applied = ok(ctl(&server, &["apply", &manifest_file(&dir, &text)]));
    assert!(applied.contains("applied app `swap`"), "{applied}");
    front.wait_for_log("started echo");

    // Nothing runs `versioned` until a host labelled role=web joins.
    let late = host(&server, &["role=web"]);
    let addr = late.wait_for_http("versioned");
    assert_eq!(version_over_http(addr), Ok(1));
    assert!(!late.log().contains("started echo"), "{}", late.log());
    assert!(!front.log().contains("started versioned"), "{}", front.log());

    // Delete: every host stops its share.
    ok(ctl(&server, &["delete", "swap"]));
    late.wait_for_log("stopped versioned");
    front.wait_for_log("stopped echo");
    let inventory = ok(ctl(&server, &["inventory"]));
    assert!(
        !inventory.contains("versioned") && !inventory.contains("echo"),
        "{inventory}"
    );

    // Everything above was announced as events.
    let _ = watch.kill();
    let output = watch.wait_with_output().unwrap();
    let events = String::from_utf8_lossy(&output.stdout);
    eprintln!("{events}");
    for needle in [
        "host.started",
        "component.started   ",
        "swap/versioned",
        "swap/echo",
        "component.stopped",
    ] {
        assert!(events.contains(needle), "no {needle:?} in:\n{events}");
    }
}

#[test]
fn a_component_larger_than_max_payload_travels_through_the_object_store() {
    let server = NatsServer::start();
    let web = host(&server, &["role=web"]);
    // versioned v1 plus a 3 MiB custom section: still a valid component,
    // three times the server's max_payload.
    let mut bytes = std::fs::read(wasm("versioned_v1")).unwrap();
    let name = b"membrane-test-padding";
    let mut size = (name.len() + 1 + (3 << 20)) as u64;
    bytes.push(0); // custom section id
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        bytes.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend(std::iter::repeat_n(0x5a, 3 << 20));
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, &bytes).unwrap();
    let text = versioned_app("").replace("{wasm:versioned_v1}", &big.display().to_string());
    ok(ctl(&server, &["apply", &manifest_file(&dir, &text)]));
    let addr = web.wait_for_http("versioned");
    assert_eq!(version_over_http(addr), Ok(1));
    use sha2::Digest as _;
    let digest = format!("sha256:{}", &hex::encode(sha2::Sha256::digest(&bytes))[..12]);
    let inventory = ok(ctl(&server, &["inventory"]));
    assert!(inventory.contains(&digest), "{inventory}");
}

#[test]
fn scaling_from_one_to_three_and_back_under_load_fails_no_call() {
    let server = NatsServer::start();
    let hosts: Vec<Host> = (0..3).map(|_| host(&server, &["role=web"])).collect();
    let dir = tempfile::tempdir().unwrap();
    ok(ctl(
        &server,
        &["apply", &manifest_file(&dir, &versioned_app("instances = 1"))],
    ));
    let replicas = || {
        let inventory = ok(ctl(&server, &["inventory", "--settle-ms", "200"]));
        inventory.lines().filter(|l| l.contains("versioned")).count()
    };
    wait_until(|| replicas() == 1);

    let url = server.url();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, calls) = (stop.clone(), calls.clone());
        std::thread::spawn(move || nats_load(&url, 16, stop, calls))
    };
    // Each phase runs under load: 300 more calls before, and after, each change.
    let after_more_calls = |n: usize| {
        let target = calls.load(Ordering::Relaxed) + n;
        wait_until(|| calls.load(Ordering::Relaxed) >= target);
    };
    let phases = [("3", 3), ("1", 1)];
    for (n, want) in phases {
        after_more_calls(300);
        let out = ok(ctl(&server, &["scale", "versioned", n]));
        assert!(out.contains(&format!("{want} replica(s) on")), "{out}");
    }
    after_more_calls(300);
    stop.store(true, Ordering::Relaxed);
    let (calls, failures) = load.join().unwrap();
    eprintln!(
        "{calls} calls over nats while scaling 1 -> 3 -> 1: {} failed",
        failures.len()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(calls > 1_000, "only {calls} calls");
    // Replicas really came and went: more than one host answered.
    let started = hosts.iter().filter(|h| h.log().contains("started versioned")).count();
    assert_eq!(started, 3, "each host ran a replica at 3");
    // `ctl scale` returns when the placement is reported; a replica logs its
    // stop once its media have drained.
    let stopped = || hosts.iter().filter(|h| h.log().contains("stopped versioned")).count();
    wait_until(|| stopped() == 2);
    assert_eq!(stopped(), 2, "two replicas drained at 1");
    assert_eq!(replicas(), 1);
}

/// Answers lattice `test`'s inventory requests as a host that runs nothing
/// and says the lattice has 10 hosts, for as long as the guard lives.
fn claims_more_hosts(url: &str) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(async_nats::connect(url)).unwrap();
    let mut requests = runtime
        .block_on(client.subscribe("membrane.test.ctl.v1.inventory"))
        .unwrap();
    runtime.block_on(client.flush()).unwrap();
    runtime.spawn(async move {
        use futures::StreamExt as _;
        let answer = r#"{"host":"host-claims10","labels":{},"uptime_s":0,"components":[],"lattice_hosts":10}"#;
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = client.publish(reply, answer.into()).await;
            }
        }
    });
    runtime
}

/// Requests `swap.version` from `clients` concurrent clients until `stop`;
/// the number of calls and every failure.
fn nats_load(url: &str, clients: usize, stop: Arc<AtomicBool>, calls: Arc<AtomicUsize>) -> (usize, Vec<String>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (client, calls, failures, stop) = (client.clone(), calls.clone(), failures.clone(), stop.clone());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let request = async_nats::Request::new()
                            .payload("{}".into())
                            .timeout(Some(Duration::from_secs(5)));
                        match client.send_request("swap.version", request).await {
                            Ok(reply) if reply.payload.as_ref() == b"1" => {}
                            Ok(reply) => failures.lock().unwrap().push(format!(
                                "{}: {:?}",
                                String::from_utf8_lossy(&reply.payload),
                                reply.headers
                            )),
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let failures = failures.lock().unwrap().clone();
        (calls.load(Ordering::Relaxed), failures)
    })
}

#[test]
fn bad_control_input_is_named_and_changes_nothing() {
    let server = NatsServer::start();
    // A cache of its own, so the host has never seen the real v2.
    let cache = tempfile::tempdir().unwrap();
    let web = host_with(
        &server,
        &["role=web"],
        &["--cache-dir", &cache.path().display().to_string()],
    );
    let dir = tempfile::tempdir().unwrap();
    ok(ctl(&server, &["apply", &manifest_file(&dir, &versioned_app(""))]));
    let addr = web.wait_for_http("versioned");

    // Bad input is named, and changes nothing.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = server.url();
    for (args, words) in [
        (&["update", "versioned", "sha256:zz"][..], "64 lower-case hex"),
        (
            &["scale", "versioned", "0", "--no-wait"][..],
            "instances: must be at least 1",
        ),
    ] {
        let output = ctl(&server, args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }

    // An unknown component is an error, not a no-op.
    let output = ctl(&server, &["update", "nosuch", &format!("sha256:{}", "0".repeat(64))]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown component `nosuch`"), "{stderr}");
    assert!(stderr.contains("swap/versioned"), "the known ones are listed: {stderr}");

    // An artifact whose bytes do not hash to its name is refused.
    let v2 = digest_of("versioned_v2");
    runtime.block_on(async {
        let client = async_nats::connect(&url).await.unwrap();
        let store = async_nats::jetstream::new(client)
            .get_object_store("membrane-test-artifacts")
            .await
            .unwrap();
        let forged = std::fs::read(wasm("versioned_v4")).unwrap();
        store.put(v2.as_str(), &mut forged.as_slice()).await.unwrap();
    });
    let output = ctl(&server, &["update", "versioned", &v2]);
    assert!(!output.status.success());
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("rejected") && table.contains("is corrupt"), "{table}");
    assert_eq!(version_over_http(addr), Ok(1));
    drop(web);
}

#[test]
fn two_concurrent_updates_leave_one_version_everywhere() {
    let server = NatsServer::start();
    let hosts = [host(&server, &["role=web"]), host(&server, &["role=web"])];
    let dir = tempfile::tempdir().unwrap();
    ok(ctl(&server, &["apply", &manifest_file(&dir, &versioned_app(""))]));
    let addrs: Vec<SocketAddr> = hosts.iter().map(|h| h.wait_for_http("versioned")).collect();
    // Push both first, so the two updates race on the desired state only.
    let (v2, v4) = (
        ok(ctl(&server, &["push", &path("versioned_v2")])),
        ok(ctl(&server, &["push", &path("versioned_v4")])),
    );
    // A peer that claims a lattice of 10 hosts (there are 3 answers: the two
    // hosts and itself) keeps each update's inventory gathering open for its
    // full settle (250 ms), so both racers read the desired state before
    // either writes it.
    let _peer = claims_more_hosts(&server.url());
    let racers: Vec<_> = [v2.trim().to_string(), v4.trim().to_string()]
        .into_iter()
        .map(|digest| {
            let url = server.url();
            std::thread::spawn(move || {
                std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
                    .args([
                        "ctl",
                        "--nats",
                        &url,
                        "--lattice",
                        "test",
                        "update",
                        "versioned",
                        &digest,
                    ])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    let outputs: Vec<Output> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    for output in &outputs {
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Both read the desired state before either wrote it (an update
    // gathers the inventory in between, here for 250 ms), so
    // compare-and-set must refuse exactly one: without it, both would "win".
    let won = outputs.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "exactly one update wins");
    let lost: Vec<String> = outputs
        .iter()
        .filter(|o| !o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        .collect();
    assert_eq!(lost.len(), 1);
    assert!(lost.iter().all(|e| e.contains("changed while")), "{lost:?}");
    // Exactly one version, the same on every host.
    let versions: BTreeSet<u32> = addrs.iter().map(|a| version_over_http(*a).unwrap()).collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert!(versions.contains(&2) || versions.contains(&4), "{versions:?}");
}

#[test]
fn hosts_and_ctl_take_the_same_nats_auth() {
    let server = NatsServer::start_with(&["--auth", "s3cret-token"]);
    let web = host_with(&server, &["role=web"], &["--nats-token", "s3cret-token"]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = manifest_file(&dir, &versioned_app(""));

    // Without the token, ctl is refused by the server and says so.
    let refused = ctl(&server, &["apply", &manifest]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(stderr.contains("cannot connect to nats"), "{stderr}");

    // With it (flag or environment), everything works.
    ok(ctl(&server, &["--nats-token", "s3cret-token", "apply", &manifest]));
    assert_eq!(version_over_http(web.wait_for_http("versioned")), Ok(1));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["ctl", "--nats", &server.url(), "--lattice", "test", "inventory"])
        .env("MEMBRANE_NATS_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("versioned"));
}

#[test]
fn lattice_hosts_follow_the_desired_state_across_a_broker_restart() {
    let mut server = NatsServer::start();
    let web = host(&server, &["role=web"]);
    let dir = tempfile::tempdir().unwrap();
    ok(ctl(&server, &["apply", &manifest_file(&dir, &versioned_app(""))]));
    let addr = web.wait_for_http("versioned");

    server.restart();
    // HTTP never depended on the broker.
    assert_eq!(version_over_http(addr), Ok(1));
    // Once reconnected, the host follows new revisions again.
    web.wait_for_log_count("nats: connected", 2);
    wait_until(|| {
        ctl(&server, &["update", "versioned", &path("versioned_v2")])
            .status
            .success()
    });
    assert_eq!(version_over_http(addr), Ok(2));
}

/// The scriptable ctl: `--output json` documents, `app/component` names,
/// `apps` with status and last events, `history` and `rollback`.
#[test]
fn ctl_lists_apps_and_history_in_json_and_rolls_back() {
    let server = NatsServer::start();
    let web = host(&server, &["role=web"]);
    let dir = tempfile::tempdir().unwrap();
    let applied: serde_json::Value = serde_json::from_str(&ok(ctl(
        &server,
        &["apply", &manifest_file(&dir, &versioned_app("")), "-o", "json"],
    )))
    .unwrap();
    assert_eq!(applied["app"], "swap");
    let first = applied["revision"].as_u64().unwrap();
    let addr = web.wait_for_http("versioned");
    assert_eq!(version_over_http(addr), Ok(1));

    // `apps`: the component runs where wanted, and its start is among the
    // last events.
    let apps =
        || -> serde_json::Value { serde_json::from_str(&ok(ctl(&server, &["apps", "--output", "json"]))).unwrap() };
    wait_until(|| {
        let apps = apps();
        apps[0]["complete"] == true
            && apps[0]["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["kind"] == "component.started"))
    });
    let listed = apps();
    assert_eq!(listed[0]["app"], "swap");
    assert_eq!(listed[0]["components"][0]["name"], "versioned");
    assert_eq!(listed[0]["components"][0]["digest"], digest_of("versioned_v1"));
    assert_eq!(listed[0]["components"][0]["running"].as_array().unwrap().len(), 1);
    let text = ok(ctl(&server, &["apps"]));
    assert!(
        text.contains("swap/versioned") && text.contains("1/1 on host-"),
        "{text}"
    );

    // A component is named as ctl prints it.
    let updated: serde_json::Value = serde_json::from_str(&ok(ctl(
        &server,
        &["update", "swap/versioned", &path("versioned_v2"), "-o", "json"],
    )))
    .unwrap();
    assert_eq!(updated["outcome"], "updated", "{updated}");
    assert_eq!(version_over_http(addr), Ok(2));
    let contradiction = ctl(&server, &["scale", "other/versioned", "1", "--app", "swap"]);
    assert!(!contradiction.status.success());
    assert!(
        String::from_utf8_lossy(&contradiction.stderr)
            .contains("`other/versioned` names app `other`, but app `swap` was given")
    );

    // History lists both revisions; rollback restores the first manifest.
    let history: serde_json::Value =
        serde_json::from_str(&ok(ctl(&server, &["history", "swap", "-o", "json"]))).unwrap();
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["revision"].as_u64(), Some(first));
    assert_eq!(history[1]["components"][0][1], digest_of("versioned_v2"));
    let rolled: serde_json::Value =
        serde_json::from_str(&ok(ctl(&server, &["rollback", "swap", "-o", "json"]))).unwrap();
    assert_eq!(rolled["from"].as_u64(), Some(first));
    wait_until(|| version_over_http(addr) == Ok(1));
    let history = ok(ctl(&server, &["history", "swap"]));
    assert_eq!(history.lines().count(), 4, "a header and three revisions:\n{history}");
    let missing = ctl(&server, &["rollback", "swap", "999"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("999 is not among the revisions of `swap`"));
}

/// `membrane completions SHELL` prints a script that knows the commands.
#[test]
fn completions_know_the_commands() {
    for (shell, marker) in [
        ("bash", "_membrane()"),
        ("zsh", "#compdef membrane"),
        ("fish", "complete -c membrane"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
            .args(["completions", shell])
            .output()
            .expect("run membrane completions");
        let script = ok(output);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("rollback") && script.contains("history"), "{shell}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid value 'tcsh'"));
}
