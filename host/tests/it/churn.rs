//! Churn under load: six hosts and more run 4 apps of 5 components, 2
//! replicas each, while a load generator calls every component over NATS.
//! Hosts join, leave gracefully and are killed; after each change every
//! component runs where rendezvous hashing over the live hosts says, with
//! its wanted count, and the calls fail only as promised: none on a join or
//! a graceful leave (drain), and on a kill only those in flight to the dead
//! host, within the request deadline.

use crate::support::nats::NatsServer;
use crate::support::{Host, with_paths};
use membrane::lattice::placement::{Member, placed_here};
use membrane::manifest::Manifest;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const APPS: usize = 4;
const COMPONENTS: usize = 5;
const WORKERS: usize = 4;
/// Each call's deadline.
const DEADLINE: Duration = Duration::from_secs(2);

fn app(a: usize) -> String {
    app_with(a, 2)
}

/// App `a` with `replicas` of each component.
fn app_with(a: usize, replicas: usize) -> String {
    let mut text = format!("[app]\nname = \"churn{a}\"\n");
    for c in 0..COMPONENTS {
        text += &format!("[components.c{c}]\nsource = \"{{wasm:versioned_v1}}\"\ninstances = {replicas}\n");
    }
    for c in 0..COMPONENTS {
        text += &format!(
            "[[bindings]]\nmedium = \"nats\"\nsubject = \"churn.a{a}.c{c}\"\ncomponent = \"c{c}\"\n\
             export = \"example:testkit/version@0.1.0#get\"\n"
        );
    }
    with_paths(&text)
}

fn join(server: &NatsServer, slot: usize) -> Host {
    join_with(server, slot, &[])
}

/// [`join`] with extra arguments.
fn join_with(server: &NatsServer, slot: usize, extra: &[&str]) -> Host {
    let label = format!("slot={slot}");
    let url = server.url();
    let mut args = vec![
        "--nats",
        &url,
        "--lattice",
        "churn",
        "--heartbeat-ms",
        "500",
        "--label",
        &label,
    ];
    args.extend_from_slice(extra);
    Host::join(&args)
}

fn ctl(server: &NatsServer, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(["ctl", "--nats", &server.url(), "--lattice", "churn", "-o", "json"])
        .args(args)
        .output()
        .expect("run membrane ctl");
    assert!(
        out.status.success(),
        "ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Where each `(app, component)` runs, by the lattice's inventory, and the
/// live hosts it lists.
type Placement = BTreeMap<(String, String), BTreeSet<String>>;

fn inventory(server: &NatsServer) -> (Placement, Vec<Member>) {
    let hosts: serde_json::Value =
        serde_json::from_str(&ctl(server, &["inventory", "--settle-ms", "300"])).expect("inventory JSON");
    let (mut placement, mut members) = (Placement::new(), Vec::new());
    for host in hosts.as_array().expect("array") {
        let id = host["host"].as_str().expect("host").to_string();
        let labels = host["labels"]
            .as_object()
            .expect("labels")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        for c in host["components"].as_array().expect("components") {
            let key = (
                c["app"].as_str().unwrap().to_string(),
                c["name"].as_str().unwrap().to_string(),
            );
            placement.entry(key).or_default().insert(id.clone());
        }
        members.push(Member { host: id, labels });
    }
    (placement, members)
}

/// Where rendezvous hashing puts every component over `members`.
fn expected(manifests: &[Manifest], members: &[Member]) -> Placement {
    let mut placement = Placement::new();
    for me in members {
        for manifest in manifests {
            for name in placed_here(manifest, me, members) {
                placement
                    .entry((manifest.app.name.clone(), name))
                    .or_default()
                    .insert(me.host.clone());
            }
        }
    }
    placement
}

/// Waits until the lattice runs every component, 2 replicas each, where
/// rendezvous hashing over `live` hosts says; that placement.
fn settled(server: &NatsServer, manifests: &[Manifest], live: usize) -> Placement {
    settled_with(server, manifests, live, 2)
}

/// [`settled`] with `replicas` of each component.
fn settled_with(server: &NatsServer, manifests: &[Manifest], live: usize, replicas: usize) -> Placement {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let (placement, members) = inventory(server);
        let want = expected(manifests, &members);
        if members.len() == live
            && placement == want
            && want.len() == APPS * COMPONENTS
            && want.values().all(|hosts| hosts.len() == replicas)
        {
            return placement;
        }
        assert!(
            Instant::now() < deadline,
            "not settled in 45 s on {live} hosts: {} listed\nrunning {placement:#?}\nwanted {want:#?}",
            members.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Calls every component in turn from `WORKERS` concurrent clients until
/// stopped; counts the answers and keeps every failure with its time.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<(Instant, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failures.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let client = async_nats::connect(&url).await.unwrap();
                let workers: Vec<_> = (0..WORKERS)
                    .map(|w| {
                        let (client, stop, ok, failures) = (client.clone(), s.clone(), o.clone(), f.clone());
                        tokio::spawn(async move {
                            let mut i = w;
                            while !stop.load(Ordering::Relaxed) {
                                let subject = format!("churn.a{}.c{}", i % APPS, (i / APPS) % COMPONENTS);
                                i += 1;
                                let request = async_nats::Request::new().payload("{}".into()).timeout(Some(DEADLINE));
                                match client.send_request(subject.clone(), request).await {
                                    Ok(reply) if reply.headers.is_none() => {
                                        ok.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Ok(reply) => failures
                                        .lock()
                                        .unwrap()
                                        .push((Instant::now(), format!("{subject}: {:?}", reply.headers))),
                                    Err(e) => failures
                                        .lock()
                                        .unwrap()
                                        .push((Instant::now(), format!("{subject}: {e}"))),
                                }
                            }
                        })
                    })
                    .collect();
                for worker in workers {
                    worker.await.unwrap();
                }
            });
        });
        Load {
            stop,
            ok,
            failures,
            thread: Some(thread),
        }
    }

    /// Waits until `more` calls have been answered since now.
    fn answers(&self, more: usize) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.ok.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the load stalled: {:?}", self.failures());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn failures(&self) -> Vec<(Instant, String)> {
        self.failures.lock().unwrap().clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A host's id, from its ready line (`host host-1a2b3c4d ready: ...`).
fn id(host: &Host) -> String {
    let ready = host.wait_for_log(" ready: ");
    ready
        .split_whitespace()
        .find(|w| w.starts_with("host-"))
        .unwrap_or_default()
        .to_string()
}

/// The index of a host of `hosts` that runs at least one replica.
fn busy(hosts: &[Host], placement: &Placement) -> usize {
    let running: BTreeSet<&String> = placement.values().flatten().collect();
    hosts
        .iter()
        .position(|h| running.contains(&id(h)))
        .expect("some host runs a replica")
}

#[test]
fn replicas_follow_joins_leaves_and_kills_under_load() {
    let server = NatsServer::start();
    let mut hosts: Vec<Host> = (0..6).map(|slot| join(&server, slot)).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut manifests = Vec::new();
    for a in 0..APPS {
        let path = dir.path().join(format!("churn{a}.toml"));
        std::fs::write(&path, app(a)).unwrap();
        ctl(&server, &["apply", &path.display().to_string()]);
        manifests.push(Manifest::parse(&app(a), "churn.toml").unwrap());
    }
    let before = settled(&server, &manifests, 6);
    let load = Load::start(server.url());
    load.answers(200);

    // Joins: replicas move to the new hosts by rendezvous hashing, without
    // a failed call (a moved replica drains; the other one keeps serving).
    let mut moved = 0;
    let mut now = before.clone();
    for slot in 6..9 {
        hosts.push(join(&server, slot));
        let after = settled(&server, &manifests, hosts.len());
        moved += after.iter().filter(|(k, v)| now.get(*k) != Some(*v)).count();
        now = after;
        load.answers(200);
        if moved > 0 {
            break;
        }
    }
    assert!(moved > 0, "no replica moved to a joining host");
    assert_eq!(load.failures(), vec![], "no call fails while hosts join");
    eprintln!("churn: {moved} replica set(s) moved to joining hosts");

    // A graceful leave: its replicas drain and are started elsewhere.
    let leaving = busy(&hosts, &now);
    let status = hosts.remove(leaving).interrupt();
    assert!(status.success(), "a drained host exits cleanly: {status}");
    now = settled(&server, &manifests, hosts.len());
    load.answers(200);
    assert_eq!(load.failures(), vec![], "no call fails while a host leaves gracefully");

    // A kill: only calls in flight to the dead host fail, within their
    // deadline; its replicas are started elsewhere once it is missed.
    let victim = busy(&hosts, &now);
    let killed = Instant::now();
    hosts.remove(victim).kill();
    settled(&server, &manifests, hosts.len());
    load.answers(200);
    let failures = load.failures();
    eprintln!("churn: {} call(s) failed after the kill: {failures:?}", failures.len());
    assert!(
        failures.len() <= WORKERS,
        "at most the calls in flight to the killed host fail: {failures:?}"
    );
    for (at, what) in &failures {
        assert!(
            *at >= killed && *at <= killed + DEADLINE + Duration::from_secs(1),
            "a failure outside the kill's deadline window: {what}"
        );
    }
    drop(load);
}

#[test]
fn a_lone_replica_moves_without_a_gap_when_hosts_join_or_leave() {
    // One replica of each component: a move has no second replica to fall
    // back on, so a joining host's replicas must be running before the old
    // host lets go of them (make-before-break).
    let server = NatsServer::start();
    let mut hosts = vec![join(&server, 0)];
    let dir = tempfile::tempdir().unwrap();
    let mut manifests = Vec::new();
    for a in 0..APPS {
        let text = app_with(a, 1);
        let path = dir.path().join(format!("churn{a}.toml"));
        std::fs::write(&path, &text).unwrap();
        ctl(&server, &["apply", &path.display().to_string()]);
        manifests.push(Manifest::parse(&text, "churn.toml").unwrap());
    }
    let mut now = settled_with(&server, &manifests, 1, 1);
    let load = Load::start(server.url());
    load.answers(200);
    let mut moved = 0;
    for slot in 1..4 {
        // A joining host that compiles afresh takes a while to start its
        // replicas: long after it announced itself.
        hosts.push(join_with(&server, slot, &["--no-cache"]));
        let after = settled_with(&server, &manifests, hosts.len(), 1);
        moved += after.iter().filter(|(k, v)| now.get(*k) != Some(*v)).count();
        now = after;
        load.answers(200);
    }
    assert!(moved > 0, "no replica moved to a joining host");
    // A graceful leave: the leaving host announces it, and serves until the
    // hosts that take its replicas run them.
    let leaving = busy(&hosts, &now);
    let status = hosts.remove(leaving).interrupt();
    assert!(status.success(), "a drained host exits cleanly: {status}");
    settled_with(&server, &manifests, hosts.len(), 1);
    load.answers(200);
    let failures = load.failures();
    assert!(
        failures.is_empty(),
        "{} call(s) failed while lone replicas moved, the first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    eprintln!("churn: {moved} lone replica(s) moved to joining hosts and one host left, 0 calls failed");
    // The old hosts said why they kept serving.
    let kept = hosts
        .iter()
        .filter(|h| h.log().contains("serving it here until it runs there"))
        .count();
    assert!(kept > 0, "no host handed a replica over");
}
