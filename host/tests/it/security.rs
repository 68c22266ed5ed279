//! Lattice security, each rule against real processes: a nats-server that
//! enforces the roles `membrane ctl permissions` prints, hosts that run only
//! signed desired state, a host policy for what applied apps may be granted,
//! and secrets that never leave the host that uses them.

use crate::support;
use crate::support::nats::NatsServer;
use crate::support::{Host, http};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

pub(crate) const PASSWORDS: [(&str, &str); 4] = [
    ("MEMBRANE_HOST_PASSWORD", "host-pw-5c1e"),
    ("MEMBRANE_OPERATOR_PASSWORD", "operator-pw-77a0"),
    ("MEMBRANE_CALLER_PASSWORD", "caller-pw-90bd"),
    ("MEMBRANE_VIEWER_PASSWORD", "viewer-pw-3f12"),
];

/// `membrane ctl --lattice test ARGS` with `env`.
pub(crate) fn ctl(server: Option<&NatsServer>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"));
    command.args(["ctl", "--lattice", "test"]);
    if let Some(server) = server {
        command.args(["--nats", &server.url()]);
    }
    let output = command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run membrane ctl");
    eprintln!(
        "$ membrane ctl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub(crate) fn ok(output: Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A new operator key in `dir`: its seed file and public key.
pub(crate) fn keygen(dir: &Path, name: &str) -> (String, String) {
    let seed = dir.join(name).display().to_string();
    let public = ok(ctl(None, &["keygen", &seed], &[])).trim().to_string();
    assert!(public.starts_with('O'), "{public}");
    (seed, public)
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Writes `text` to `dir/name`; its path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The distributed example with `rater` also bound to NATS
/// `insurance.rate` and to a queue.
pub(crate) fn distributed_app(port: u16) -> String {
    support::distributed_manifest(port)
        + r#"
[[bindings]]
medium = "nats"
subject = "insurance.rate"
component = "rater"
export = "example:insurance/rater@0.1.0#rate"

[[bindings]]
medium = "queue"
stream = "RATES"
subject = "insurance.rate.queued"
component = "rater"
export = "example:insurance/rater@0.1.0#rate"
reply_prefix = "rates.reply"
"#
}

pub(crate) fn rate_args() -> Vec<u8> {
    serde_json::json!({ "policy": {
        "id": 1001, "holder": "Ada Lovelace", "region": "N",
        "subject": { "vehicle": { "kind": "car", "year": 2019, "value-cents": 2_500_000 } },
        "coverage": ["collision", "theft"], "deductible": 500,
        "drivers": [{ "name": "Ada", "age": 36, "claims": [[2021, 1200.5]], "bonus-malus": 2 }],
        "start-day": 20412, "discount-code": "WELCOME10"
    }})
    .to_string()
    .into_bytes()
}

/// Polls `POST /quote` at `addr` until it answers 200; its body.
pub(crate) fn quote(addr: SocketAddr) -> String {
    let policy = support::example_policy();
    for _ in 0..500 {
        if std::net::TcpStream::connect(addr).is_ok() {
            let response = http(addr, "POST", "/quote", &policy);
            if response.status == 200 {
                return response.body;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no quote from {addr} within 10 s");
}

/// A NATS client of `role` that reports what the server refuses.
pub(crate) struct Client {
    pub(crate) nats: async_nats::Client,
    refusals: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Client {
    pub(crate) async fn connect(server: &NatsServer, role: &str, inbox: &str) -> Client {
        let password = PASSWORDS
            .iter()
            .find(|(var, _)| var.contains(&role.to_uppercase()))
            .unwrap()
            .1;
        Client::connect_as(server, &format!("test-{role}"), password, inbox).await
    }

    /// A client of NATS user `user`.
    pub(crate) async fn connect_as(server: &NatsServer, user: &str, password: &str, inbox: &str) -> Client {
        let (tx, refusals) = tokio::sync::mpsc::unbounded_channel();
        let nats = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
            .custom_inbox_prefix(inbox)
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(server.url())
            .await
            .expect("connect with the role's credentials");
        Client { nats, refusals }
    }

    /// Waits for the server to refuse something on `subject`.
    pub(crate) async fn refused(&mut self, what: &str, subject: &str) {
        let _ = self.nats.flush().await;
        let wanted = format!("permissions violation for {what} to \"{subject}\"");
        let found = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(error) = self.refusals.recv().await {
                if error.to_lowercase().contains(&wanted.to_lowercase()) {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "the server did not refuse: {wanted}");
    }
}

/// The three roles with the permissions `membrane ctl permissions` prints,
/// enforced by a real nats-server: hosts serve the app across three
/// processes; each forbidden action is refused by the server, and the
/// lattice keeps answering as before.
/// A host labelled `label` on lattice `test` at `server`, under the host
/// user of `ctl permissions` (password from [`PASSWORDS`]), heartbeat
/// 500 ms, with `extra` arguments.
pub(crate) fn join_as_host(server: &NatsServer, label: &str, extra: &[&str]) -> Host {
    let url = server.url();
    let mut args = vec![
        "--nats",
        &url,
        "--lattice",
        "test",
        "--label",
        label,
        "--heartbeat-ms",
        "500",
        "--nats-user",
        "test-host",
    ];
    args.extend_from_slice(extra);
    Host::join_env(&args, &[("MEMBRANE_NATS_PASSWORD", PASSWORDS[0].1)])
}

#[test]
fn each_role_can_do_its_part_and_the_server_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let app = write(dir.path(), "app.toml", &support::with_paths(&distributed_app(port)));
    let config = ok(ctl(None, &["permissions", &app], &[]));
    assert!(
        config.contains("\"insurance.rate\""),
        "the caller may call the bound subject:\n{config}"
    );
    let conf = write(dir.path(), "nats.conf", &config);
    let server = NatsServer::start_with_env(&["-c", &conf], &PASSWORDS);
    let (seed, public) = keygen(dir.path(), "operator.nk");

    let host_env = [("MEMBRANE_NATS_PASSWORD", PASSWORDS[0].1)];
    let hosts: Vec<Host> = ["node=c", "node=b", "node=a"]
        .into_iter()
        .map(|label| join_as_host(&server, label, &["--trust", &public]))
        .collect();
    let operator = [("MEMBRANE_NATS_PASSWORD", PASSWORDS[1].1)];
    ok(ctl(
        Some(&server),
        &["--nats-user", "test-operator", "--key", &seed, "apply", &app],
        &operator,
    ));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let before = quote(addr);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // A caller calls the bound subject, and nothing else.
        let mut caller = Client::connect(&server, "caller", "_INBOX").await;
        let reply = caller.nats.request("insurance.rate", rate_args().into()).await.unwrap();
        let rated: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(rated["ok"]["premium"], 936.92, "{rated}");
        // And the queue: a host consumes it and publishes the result under
        // the caller's reply prefix.
        let mut replies = caller.nats.subscribe("rates.reply.>").await.unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Membrane-Reply-To", "rates.reply.7");
        caller
            .nats
            .publish_with_headers("insurance.rate.queued", headers, rate_args().into())
            .await
            .unwrap();
        let queued = tokio::time::timeout(Duration::from_secs(30), futures::StreamExt::next(&mut replies))
            .await
            .expect("a queued call's reply")
            .unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&queued.payload).unwrap(), rated);
        let forged_host = r#"{"kind":"host.started","host":"host-00000000","at_ms":1,"labels":{"node":"b"}}"#;
        caller.nats.publish("membrane.test.evt.v1.host.started", forged_host.into()).await.unwrap();
        caller.refused("publish", "membrane.test.evt.v1.host.started").await;
        let forged = r#"{"kind":"component.rejected","host":"host-1","at_ms":1,"app":"insurance","component":"rater","revision":1}"#;
        caller.nats.publish("membrane.test.evt.v1.component.rejected", forged.into()).await.unwrap();
        caller.refused("publish", "membrane.test.evt.v1.component.rejected").await;
        let rpc = "membrane.test.rpc.>";
        let _join = caller.nats.queue_subscribe(rpc, "membrane.test.rpc".into()).await.unwrap();
        caller.refused("subscription", rpc).await;
        caller.nats.publish("$KV.membrane-test-apps.app.insurance", "x".into()).await.unwrap();
        caller.refused("publish", "$KV.membrane-test-apps.app.insurance").await;

        // A host cannot change desired state, delete its stream, read replies
        // meant for callers or the operator, or see another lattice.
        let mut host = Client::connect(&server, "host", "_MEMBRANE.test.host").await;
        host.nats.publish("$KV.membrane-test-apps.app.insurance", "x".into()).await.unwrap();
        host.refused("publish", "$KV.membrane-test-apps.app.insurance").await;
        let delete = "$JS.API.STREAM.DELETE.KV_membrane-test-apps";
        host.nats.publish(delete, "".into()).await.unwrap();
        host.refused("publish", delete).await;
        for subject in ["_INBOX.>", "_MEMBRANE.test.ctl.>", "membrane.other.evt.>"] {
            let _sub = host.nats.subscribe(subject).await.unwrap();
            host.refused("subscription", subject).await;
        }

        // A viewer (`ctl console`) reads every host's inventory, the
        // desired state and the event log, and can change or call nothing.
        let mut viewer = Client::connect(&server, "viewer", "_MEMBRANE.test.view").await;
        let seen = membrane::lattice::inventory::gather(&viewer.nats, "test", Duration::from_millis(250))
            .await
            .unwrap();
        assert_eq!(seen.len(), 3, "the viewer sees the three hosts");
        let desired = membrane::lattice::desired::Desired::new(viewer.nats.clone(), "test");
        assert_eq!(desired.apps().await.unwrap().len(), 1, "the viewer reads the desired state");
        membrane::lattice::events::recent(&viewer.nats, "test", 10).await.unwrap();
        for subject in [
            "$KV.membrane-test-apps.app.insurance",
            "$O.membrane-test-artifacts.x",
            "membrane.test.rpc.insurance.rater.x",
            "membrane.test.evt.v1.host.started",
            "insurance.rate",
        ] {
            viewer.nats.publish(subject, "x".into()).await.unwrap();
            viewer.refused("publish", subject).await;
        }
        for subject in ["_INBOX.>", "_MEMBRANE.test.ctl.>", "_MEMBRANE.test.host.>"] {
            let _sub = viewer.nats.subscribe(subject).await.unwrap();
            viewer.refused("subscription", subject).await;
        }
    });

    // The operator's tools fail under a host's credentials.
    for args in [&["apply", &app][..], &["scale", "rater", "2", "--no-wait"][..]] {
        let mut all = vec!["--nats-user", "test-host", "--key", &seed];
        all.extend_from_slice(args);
        let output = ctl(Some(&server), &all, &host_env);
        assert!(!output.status.success(), "a host ran `ctl {args:?}`");
        assert!(stderr(&output).contains("Permissions Violation"), "{}", stderr(&output));
    }
    // And under a viewer's.
    let viewer_env = [("MEMBRANE_NATS_PASSWORD", PASSWORDS[3].1)];
    let output = ctl(
        Some(&server),
        &["--nats-user", "test-viewer", "--key", &seed, "apply", &app],
        &viewer_env,
    );
    assert!(!output.status.success(), "a viewer ran `ctl apply`");
    assert!(stderr(&output).contains("Permissions Violation"), "{}", stderr(&output));
    // Named as what it is, not as the timeout it shows up as.
    assert!(stderr(&output).contains("permission denied"), "{}", stderr(&output));
    assert!(!stderr(&output).contains("no quorum"), "{}", stderr(&output));

    // Nothing changed: the same three hosts, the same answer.
    let inventory = ok(ctl(
        Some(&server),
        &["--nats-user", "test-operator", "inventory"],
        &operator,
    ));
    assert!(
        inventory.contains("3 host(s)") && !inventory.contains("host-00000000"),
        "{inventory}"
    );
    assert_eq!(quote(addr), before);
    drop(hosts);
}

/// A host started with `--trust` runs only what the trusted operator signed;
/// unsigned, foreign, tampered entries and bare deletions are ignored and
/// reported, and what it ran keeps serving. A host without `--trust` says
/// that it trusts anyone.
#[test]
fn a_trusting_host_runs_only_signed_desired_state() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (seed, public) = keygen(dir.path(), "ours.nk");
    let (foreign, _) = keygen(dir.path(), "theirs.nk");
    let join = |extra: &[&str]| {
        let mut args = vec!["--nats", &*server.url(), "--lattice", "test", "--heartbeat-ms", "500"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        args.extend(extra.iter().map(|a| a.to_string()));
        Host::join(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let careful = join(&["--trust", &public]);
    let trusting = join(&[]);
    trusting.wait_for_log("this host runs any app anyone who can write");
    assert!(!careful.log().contains("anyone who can write"));

    let app = write(
        dir.path(),
        "app.toml",
        &support::with_paths(&support::insurance_manifest()),
    );
    ok(ctl(Some(&server), &["--key", &foreign, "apply", &app], &[]));
    careful.wait_for_log("ignored: signed by");
    let unsigned = ctl(Some(&server), &["apply", &app], &[]);
    assert!(
        stderr(&unsigned).contains("this change is unsigned"),
        "{}",
        stderr(&unsigned)
    );
    careful.wait_for_log("ignored: the entry is unsigned");
    assert!(!careful.log().contains("serving http://"), "ran an untrusted app");

    ok(ctl(Some(&server), &["--key", &seed, "apply", &app], &[]));
    let addr = careful.wait_for_http("gateway");
    let before = quote(addr);

    // Tampering with a signed entry, or deleting it bare, changes nothing.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        let kv = async_nats::jetstream::new(client)
            .get_key_value("membrane-test-apps")
            .await
            .unwrap();
        let entry = kv.get("app.insurance").await.unwrap().unwrap();
        let mut sealed: serde_json::Value = serde_json::from_slice(&entry).unwrap();
        let manifest = sealed["manifest"].as_str().unwrap().replace("EUR", "XXX");
        sealed["manifest"] = manifest.into();
        kv.put("app.insurance", serde_json::to_vec(&sealed).unwrap().into())
            .await
            .unwrap();
        careful.wait_for_log("ignored: the signature does not match");
        kv.delete("app.insurance").await.unwrap();
        let ignored = careful.wait_for_log("deletion");
        assert!(ignored.contains("ignored: the entry is unsigned"), "{ignored}");
    });
    assert_eq!(quote(addr), before, "the tampered version must not run");

    // The operator's signed deletion is followed.
    ok(ctl(Some(&server), &["--key", &seed, "delete", "insurance"], &[]));
    careful.wait_for_log("stopped gateway");
    drop(trusting);
}

/// An app from the lattice gets no directories or environment unless the
/// host's policy allows them; the refusal names the grant. A manifest run
/// locally keeps what it asks for.
#[test]
fn a_host_grants_applied_apps_only_what_its_policy_allows() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let grants = format!(
        "allowed_outbound_hosts = [\"http://10.9.8.7:8080\"]\n[components.gateway.wasi]\ndirs = {{ \"/data\" = {:?} }}\nenv = {{ GREETING = \"hello\" }}\n",
        data.display().to_string()
    );
    let manifest =
        support::insurance_manifest().replace("[components.rater]", &format!("{grants}\n[components.rater]"));
    let app = write(dir.path(), "app.toml", &support::with_paths(&manifest));
    let args = ["--nats", &*server.url(), "--lattice", "test", "--heartbeat-ms", "500"];
    let strict = Host::join(&args);
    let data_dir = data.display().to_string();
    let mut allowing = args.to_vec();
    allowing.extend([
        "--allow-dir",
        &data_dir,
        "--allow-env",
        "GREET*",
        "--allow-network",
        "10.9.0.0/16",
    ]);
    let lenient = Host::join(&allowing);
    ok(ctl(Some(&server), &["apply", &app], &[]));

    lenient.wait_for_http("gateway");
    let refusal = strict.wait_for_log("refused by this host's policy");
    assert!(
        refusal.contains("components.gateway.wasi.dirs./data: host directory")
            && refusal.contains("not under any --allow-dir")
            && refusal.contains("components.gateway.wasi.env.GREETING: not allowed by this host")
            && refusal.contains("components.gateway.allowed_outbound_hosts: http://10.9.8.7:8080 is not allowed"),
        "{refusal}"
    );
    assert!(!strict.log().contains("serving http://"));

    // The same grants in a manifest the user runs: granted.
    let local = Host::start(&manifest);
    local.wait_for_http("gateway");
}

/// A secret named in a manifest reaches the component and nothing else: not
/// the KV bucket, the object store, the inventory or the host's log; and
/// `ctl apply` leaves `[nats]` credentials out of the lattice.
#[test]
fn a_secret_reaches_the_component_and_nothing_else() {
    const SECRET: &str = "XQZ-secret-7731";
    const NATS_PASSWORD: &str = "nats-pw-never-stored-4410";
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let manifest = support::insurance_manifest().replace("currency = \"EUR\"", "currency = { secret = \"CURRENCY\" }")
        + &format!("\n[nats]\nuser = \"someone\"\npassword = \"{NATS_PASSWORD}\"\n");
    let app = write(dir.path(), "app.toml", &support::with_paths(&manifest));
    let args = ["--nats", &*server.url(), "--lattice", "test", "--heartbeat-ms", "500"];
    // Guest logging off: a component may print what it likes; the host may not.
    let quiet = "membrane=debug,async_nats=info,membrane::runtime::capabilities::logging=off";
    let host = Host::join_logged(&args, &[("MEMBRANE_SECRET_CURRENCY", SECRET)], quiet);
    let without = Host::join(&args);
    let applied = ctl(Some(&server), &["apply", &app], &[]);
    assert!(
        stderr(&applied).contains("[nats] is not applied"),
        "{}",
        stderr(&applied)
    );

    let body = quote(host.wait_for_http("gateway"));
    assert!(body.contains(SECRET), "the component got the secret: {body}");
    let missing = without.wait_for_log("secret `CURRENCY` is not on this host");
    assert!(missing.contains("components.pricing.config.currency"), "{missing}");
    let inventory = ok(ctl(Some(&server), &["inventory"], &[]));

    let mut stored = Vec::new();
    read_all(server.store_dir(), &mut stored);
    assert!(stored.len() > 1000, "the store holds the app and its artifacts");
    for needle in [SECRET, NATS_PASSWORD] {
        assert!(
            !contains(&stored, needle.as_bytes()),
            "{needle} is in the JetStream store"
        );
        assert!(!host.log().contains(needle), "{needle} is in the host's log");
        assert!(!inventory.contains(needle));
    }
    assert!(contains(&stored, b"CURRENCY"), "the store holds the secret's name");
}

/// Every file's bytes under `dir`, appended to `out`.
fn read_all(dir: &Path, out: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap().map_while(Result::ok) {
        let path: PathBuf = entry.path();
        if path.is_dir() {
            read_all(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.extend(bytes);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
