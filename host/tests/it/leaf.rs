//! A host at the edge: on a leaf-node nats-server (no JetStream of its own;
//! it uses the hub's, in JetStream domain `hub`) whose uplink to the hub runs through a link the test cuts. Links cross
//! the leaf connection both ways; with the uplink cut, the edge host keeps
//! serving its own apps, and it catches up with the lattice when the link
//! returns.

use crate::support::nats::{NatsServer, free_port};
use crate::support::netns::Split;
use crate::support::{Host, NETNS, example_policy, http, lattice_ctl as ctl, wait_until, wasm, with_paths};
use std::time::{Duration, Instant};

/// gateway (hub) -> rater (edge) -> pricing (hub), and `versioned` on the
/// edge: every call of a quote crosses the leaf connection twice.
fn app() -> String {
    crate::support::with_insurance_chain(
        APP_REST,
        [
            "placement = { site = \"hub\" }",
            "placement = { site = \"edge\" }",
            "placement = { site = \"hub\" }",
        ],
    )
}

/// The app's own tables besides the example's chain.
const APP_REST: &str = r#"
[app]
name = "edge"

[components.versioned]
source = "{wasm:versioned_v1}"
placement = { site = "edge" }

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "gateway"

[[bindings]]
medium = "http"
address = "127.0.0.2:0"
component = "versioned"
"#;

/// A host labelled `site=<site>`; an edge host reaches the hub's
/// JetStream through its domain.
fn host(url: &str, site: &str, netns: Option<&str>) -> Host {
    let label = format!("site={site}");
    let mut args = vec![
        "--nats",
        url,
        "--lattice",
        "test",
        "--heartbeat-ms",
        "500",
        "--label",
        &label,
    ];
    match netns {
        Some(ns) => {
            args.extend(["--nats-jetstream-domain", "hub"]);
            Host::join_env(&args, &[(NETNS, ns)])
        }
        None => Host::join(&args),
    }
}

/// Waits until a message published on `leaf` reaches a subscriber on
/// `hub`: the leaf connection is up and carries interest.
fn wait_for_uplink(hub: &NatsServer, leaf: &NatsServer) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use futures::StreamExt as _;
        let (hub_server, leaf_server) = (hub, leaf);
        let hub = async_nats::connect(hub_server.url()).await.unwrap();
        let leaf = async_nats::connect(leaf_server.url()).await.unwrap();
        let mut probe = hub.subscribe("edge.probe").await.unwrap();
        hub.flush().await.unwrap();
        // A leaf remote that failed its first dial tries again every second;
        // one CI run under load did not see the link in 30 s.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            leaf.publish("edge.probe", "ping".into()).await.unwrap();
            leaf.flush().await.unwrap();
            if tokio::time::timeout(Duration::from_millis(200), probe.next())
                .await
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the leaf connection did not come up in 60 s\nhub:\n{}leaf:\n{}",
                hub_server.log_tail(),
                leaf_server.log_tail()
            );
        }
    });
}

#[test]
fn a_host_on_a_leaf_node_joins_the_lattice_and_keeps_serving_when_its_uplink_is_cut() {
    // The edge (the leaf server and its host) in a network namespace: the
    // uplink is cut by taking its link down, so nothing can go around it.
    let split = Split::new(2);
    let dir = tempfile::tempdir().unwrap();
    let leaf_port = free_port();
    let hub_conf = dir.path().join("hub.conf");
    std::fs::write(
        &hub_conf,
        format!(
            "ping_interval: \"1s\"\nping_max: 2\nleafnodes {{ listen: \"{}:{leaf_port}\" }}\njetstream {{ domain: hub }}\n",
            split.outside
        ),
    )
    .unwrap();
    let hub = NatsServer::start_at(&split.outside, None, &["-c", &hub_conf.display().to_string()]);
    let leaf_conf = dir.path().join("leaf.conf");
    std::fs::write(
        &leaf_conf,
        format!(
            "ping_interval: \"1s\"\nping_max: 2\nleafnodes {{ remotes: [ {{ url: \"nats-leaf://{}:{leaf_port}\" }} ] }}\n",
            split.outside
        ),
    )
    .unwrap();
    let leaf = NatsServer::start_leaf_in(&split.ns, &split.inside, &["-c", &leaf_conf.display().to_string()]);
    wait_for_uplink(&hub, &leaf);

    let center = host(&hub.url(), "hub", None);
    let edge = host(&leaf.url(), "edge", Some(&split.ns));
    let file = dir.path().join("edge.toml");
    std::fs::write(&file, with_paths(&app())).unwrap();
    assert!(
        ctl(&hub.url(), &["apply", &file.display().to_string()])
            .status
            .success()
    );
    let gateway = center.wait_for_http("gateway");
    let versioned = edge.wait_for_http("versioned");
    // Hub -> edge -> hub, on every quote.
    wait_until(|| http(gateway, "POST", "/quote", &example_policy()).status == 200);
    let quote = http(gateway, "POST", "/quote", &example_policy());
    assert_eq!(quote.json()["premium"], 936.92, "{}", quote.body);
    let inventory = String::from_utf8(ctl(&hub.url(), &["inventory"]).stdout).unwrap();
    assert!(
        inventory.contains("site=edge") && inventory.contains("site=hub"),
        "{inventory}"
    );

    // The uplink is cut: the edge serves its own app; a quote, which needs
    // the edge's rater, fails fast instead of hanging.
    split.cut();
    for _ in 0..20 {
        assert_eq!(split.version(versioned), Some(1));
    }
    let started = Instant::now();
    wait_until(|| http(gateway, "POST", "/quote", &example_policy()).status != 200);
    let refused = http(gateway, "POST", "/quote", &example_policy());
    eprintln!(
        "uplink cut: quotes fail after {:.1?}, with {} {}",
        started.elapsed(),
        refused.status,
        refused.body
    );
    assert!(
        matches!(refused.status, 503 | 504),
        "{} {}",
        refused.status,
        refused.body
    );
    // The hub side goes on: an update is stored while the edge cannot hear.
    let v2 = wasm("versioned_v2").display().to_string();
    assert!(ctl(&hub.url(), &["update", "versioned", &v2]).status.success());
    assert_eq!(split.version(versioned), Some(1));

    // The link returns: the edge catches up with the update, and quotes
    // cross it again.
    let healed = Instant::now();
    split.heal();
    wait_until(|| split.version(versioned) == Some(2));
    wait_until(|| http(gateway, "POST", "/quote", &example_policy()).status == 200);
    eprintln!(
        "uplink back: the edge caught up and quotes answer {:.1?} later",
        healed.elapsed()
    );
}
