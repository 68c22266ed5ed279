//! The role model as an attacker tests it: each role holds only the rights
//! `membrane ctl permissions` gives it, on a real nats-server that enforces
//! them, against real `membrane` hosts. The suite does not ask what a role
//! may do itself (`security.rs` does); it asks what a role can make
//! *another* party do for it: where a host's replies go, what a dead letter
//! becomes, what a claim in an inventory answer moves, which file a path
//! reaches. After each attack it reads the lattice's streams (desired
//! state, artifacts, event log) and checks that nothing outside the
//! attacker's rights changed, and that a host started afresh still runs the
//! signed app.

use crate::security::{
    Client, PASSWORDS, ctl, distributed_app, free_port, keygen, ok, quote, rate_args, stderr, write,
};
use crate::support;
use crate::support::Host;
use crate::support::nats::{NatsServer, RawNats};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The lattice's name in these tests.
const LATTICE: &str = "test";

/// The insurance app on one host, with `rater` also bound to the NATS
/// subject `insurance.rate` and the queue `insurance.rate.queued`.
fn app(port: u16) -> String {
    distributed_app(port)
        .lines()
        .filter(|l| !l.starts_with("placement"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A lattice whose nats-server enforces the roles, with an operator key and
/// one app applied by the operator.
struct Secured {
    dir: tempfile::TempDir,
    server: NatsServer,
    seed: String,
    public: String,
    app: String,
    port: u16,
}

impl Secured {
    /// Starts nats-server with the permissions of `manifest` (its gateway on
    /// `port`) and one trusting host, then applies it, signed.
    fn start(manifest: impl Fn(u16) -> String) -> (Secured, Host) {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let app = write(dir.path(), "app.toml", &support::with_paths(&manifest(port)));
        let config = ok(ctl(None, &["permissions", &app], &[]));
        let conf = write(dir.path(), "nats.conf", &config);
        let server = NatsServer::start_with_env(&["-c", &conf], &PASSWORDS);
        let (seed, public) = keygen(dir.path(), "operator.nk");
        let lattice = Secured {
            dir,
            server,
            seed,
            public,
            app,
            port,
        };
        let host = lattice.host(&[]);
        lattice.operator(&["apply", &lattice.app.clone()]);
        quote(lattice.addr());
        // The three components' `component.started` reach the event log
        // before any test reads it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while lattice.snapshot()[2].1 < 3 {
            assert!(
                Instant::now() < deadline,
                "no component.started events:\n{}",
                host.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (lattice, host)
    }

    /// A host with the host role's credentials that trusts the operator.
    fn host(&self, extra: &[&str]) -> Host {
        let url = self.server.url();
        let mut args = vec![
            "--nats",
            &url,
            "--lattice",
            LATTICE,
            "--heartbeat-ms",
            "500",
            "--trust",
            &self.public,
            "--nats-user",
            "test-host",
        ];
        args.extend_from_slice(extra);
        Host::join_logged(
            &args,
            &[("MEMBRANE_NATS_PASSWORD", PASSWORDS[0].1)],
            "membrane=debug,warn",
        )
    }

    /// `membrane ctl ARGS` as the operator, signed; its output.
    fn operator(&self, args: &[&str]) -> String {
        ok(self.try_operator(args))
    }

    fn try_operator(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--nats-user", "test-operator", "--key", &self.seed];
        all.extend_from_slice(args);
        ctl(Some(&self.server), &all, &[("MEMBRANE_NATS_PASSWORD", PASSWORDS[1].1)])
    }

    fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// What the lattice holds: each stream's message count and last
    /// sequence, read as the operator.
    fn snapshot(&self) -> Vec<(String, u64, u64)> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let operator = Client::connect(&self.server, "operator", "_MEMBRANE.test.ctl").await;
            let js = async_nats::jetstream::new(operator.nats.clone());
            let mut out = Vec::new();
            for stream in [
                format!("KV_{}", membrane::lattice::desired::bucket_name(LATTICE)),
                format!("OBJ_{}", membrane::lattice::artifacts::bucket_name(LATTICE)),
                membrane::lattice::events::log_stream(LATTICE),
            ] {
                let mut handle = js.get_stream(&stream).await.expect("the stream exists");
                let info = handle.info().await.expect("stream info");
                out.push((stream, info.state.messages, info.state.last_sequence));
            }
            out
        })
    }
}

/// `host`'s count of refused replies, from its admin endpoint.
fn refused_replies(host: &Host) -> u64 {
    let metrics = support::http(host.admin(), "GET", "/metrics", b"").body;
    metrics
        .lines()
        .find(|l| l.starts_with("membrane_replies_refused_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until `host` has refused at least `count` replies.
fn wait_refused(host: &Host, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused_replies(host) < count {
        assert!(
            Instant::now() < deadline,
            "{} replies refused, expected {count}:\n{}",
            refused_replies(host),
            host.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Subjects a reply must never reach, whoever names them: the JetStream
/// and KV API of the lattice's own streams, the lattice's protocol, the
/// server's system account, another lattice, another app's subject.
fn forbidden_targets() -> Vec<String> {
    let kv = format!("KV_{}", membrane::lattice::desired::bucket_name(LATTICE));
    let objects = format!("OBJ_{}", membrane::lattice::artifacts::bucket_name(LATTICE));
    let log = membrane::lattice::events::log_stream(LATTICE);
    vec![
        format!("$JS.API.STREAM.PURGE.{kv}"),
        format!("$JS.API.STREAM.DELETE.{kv}"),
        format!("$JS.API.STREAM.PURGE.{objects}"),
        format!("$JS.API.STREAM.DELETE.{objects}"),
        format!("$JS.API.STREAM.PURGE.{log}"),
        format!("$KV.{}.app.insurance", membrane::lattice::desired::bucket_name(LATTICE)),
        "membrane.test.evt.v1.heartbeat.host-00000001".into(),
        "membrane.test.evt.v1.host.started.host-00000001".into(),
        "membrane.test.evt.v1.component.started.host-00000001".into(),
        "membrane.test.ctl.v1.inventory".into(),
        "membrane.other.evt.v1.heartbeat".into(),
        "$SYS.REQ.SERVER.PING".into(),
        "links.clicks".into(),
    ]
}

/// Finding 1, and every reply a caller can name: requests to each subject a
/// caller may publish, good and bad, whose reply subject (or
/// `Membrane-Reply-To`) is each forbidden target. The host answers none of
/// them there, and the desired state, artifacts and event log are as they
/// were: a host started afterwards still runs the signed app.
#[test]
fn a_caller_cannot_make_a_host_reply_into_the_lattice() {
    let (lattice, host) = Secured::start(app);
    let before = lattice.snapshot();
    let quoted = quote(lattice.addr());
    let targets = forbidden_targets();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sent = rt.block_on(async {
        let caller = Client::connect(&lattice.server, "caller", "_INBOX").await;
        let mut sent = 0;
        for target in &targets {
            for body in [b"{not json".to_vec(), rate_args()] {
                caller
                    .nats
                    .publish_with_reply("insurance.rate", target.clone(), body.clone().into())
                    .await
                    .unwrap();
                sent += 1;
                // The queue: the message's own reply subject is JetStream's;
                // the result goes where `Membrane-Reply-To` says, if allowed.
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Membrane-Reply-To", target.as_str());
                caller
                    .nats
                    .publish_with_headers("insurance.rate.queued", headers, body.into())
                    .await
                    .unwrap();
            }
        }
        caller.nats.flush().await.unwrap();
        sent
    });
    // Until every reply is refused, or the lattice changed (as it did when a
    // host answered wherever it was told).
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused_replies(&host) < sent && lattice.snapshot() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lattice.snapshot(), before, "the lattice's streams changed");
    wait_refused(&host, sent);
    // The queued ones were refused too: each went to the dead letters with
    // its reason (the binding's own stream, within the caller's reach).
    host.wait_for_log("is not `rates.reply` or under it");
    assert_eq!(quote(lattice.addr()), quoted);

    // A host that starts now still finds the signed app and its artifacts.
    drop(host);
    let fresh = lattice.host(&[]);
    fresh.wait_for_log("serving http://");
    assert_eq!(quote(lattice.addr()), quoted);
}

/// The insurance app as [`app`], with `echo` on the same port under
/// `/echo/...`: one listener routes to two components, so the host also
/// answers forwarded HTTP for both.
fn routed_app(port: u16) -> String {
    format!(
        r#"{}
[components.echo]
source = "{{wasm:echo}}"

[[bindings]]
medium = "http"
address = "127.0.0.1:{port}"
component = "echo"
route = "/echo/..."
"#,
        app(port)
    )
}

/// The same deputies from the host role, the one that may publish link
/// calls and forwarded HTTP: a compromised (or forged) host sends calls to
/// every link subject and forwarded request to every component, naming as
/// reply subject, or as the inbox of a request body, each forbidden target.
/// The serving host publishes none of its answers (nor body pulls) there,
/// and the lattice's streams are as they were.
#[test]
fn a_host_role_cannot_make_another_host_reply_into_the_lattice() {
    let (lattice, host) = Secured::start(routed_app);
    host.wait_for_log("serving lattice http routes for");
    host.wait_for_log("serving lattice rpc for");
    let before = lattice.snapshot();
    let quoted = quote(lattice.addr());
    let targets = forbidden_targets();
    let app_name = "insurance";
    let links = [
        membrane::subjects::rpc(LATTICE, app_name, "rater", "example:insurance/rater@0.1.0", "rate"),
        membrane::subjects::rpc(LATTICE, app_name, "pricing", "example:insurance/pricing@0.1.0", "table"),
    ];
    let forwards = ["gateway", "echo"].map(|c| membrane::subjects::http(LATTICE, app_name, c));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sent = rt.block_on(async {
        let attacker = Client::connect(&lattice.server, "host", "_MEMBRANE.test.host").await;
        let mut sent = 0;
        for target in &targets {
            for subject in links.iter().chain(&forwards) {
                attacker
                    .nats
                    .publish_with_reply(subject.clone(), target.clone(), b"\x01garbage".to_vec().into())
                    .await
                    .unwrap();
                sent += 1;
            }
            // A well-formed reply subject, but a request body to be pulled
            // from the forbidden target.
            for subject in &forwards {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(membrane::transports::forward::BODY_HEADER, target.as_str());
                attacker
                    .nats
                    .publish_with_reply_and_headers(
                        subject.clone(),
                        "_MEMBRANE.test.host.attacker".to_string(),
                        headers,
                        b"\x01garbage".to_vec().into(),
                    )
                    .await
                    .unwrap();
                sent += 1;
            }
        }
        attacker.nats.flush().await.unwrap();
        sent
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused_replies(&host) < sent && lattice.snapshot() == before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(lattice.snapshot(), before, "the lattice's streams changed");
    wait_refused(&host, sent);
    assert_eq!(quote(lattice.addr()), quoted);
    let echoed = support::http(lattice.addr(), "POST", "/echo/x", b"still here");
    assert_eq!((echoed.status, echoed.body.as_str()), (200, "still here"));
}

/// Finding 2: a host-role client sends itself a message whose reply
/// subject is a desired-state key (or a stream's delete API) and answers
/// it. Without NATS's response permission the server refuses both
/// publishes, and the desired state does not change.
#[test]
fn a_host_role_cannot_write_desired_state_by_answering_itself() {
    let (lattice, _host) = Secured::start(app);
    let config = std::fs::read_to_string(lattice.dir.path().join("nats.conf")).unwrap();
    let before = lattice.snapshot();
    let kv = membrane::lattice::desired::bucket_name(LATTICE);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut host = Client::connect(&lattice.server, "host", "_MEMBRANE.test.host").await;
        let mut own = host.nats.subscribe("_MEMBRANE.test.host.self").await.unwrap();
        for target in [
            format!("$KV.{kv}.app.insurance"),
            format!("$JS.API.STREAM.DELETE.KV_{kv}"),
        ] {
            host.nats
                .publish_with_reply("_MEMBRANE.test.host.self", target.clone(), "x".into())
                .await
                .unwrap();
            let message = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut own))
                .await
                .expect("its own message")
                .unwrap();
            assert_eq!(message.reply.as_deref(), Some(target.as_str()));
            host.nats
                .publish(
                    message.reply.unwrap(),
                    r#"{"v":1,"app":"insurance","manifest":null}"#.into(),
                )
                .await
                .unwrap();
            host.refused("publish", &target).await;
        }
    });
    assert_eq!(lattice.snapshot(), before);
    assert!(!config.contains("allow_responses"), "{config}");
}

/// Item 2: an older signed entry stored again (by anyone who can write the
/// bucket, here the operator's credentials without the key) is a replay: a
/// trusting host refuses it and keeps serving the newer version; and a
/// rollback, a new entry naming the old manifest, is followed.
#[test]
fn an_older_signed_entry_stored_again_is_refused_as_a_replay() {
    let (lattice, host) = Secured::start(app);
    let v1 = quote(lattice.addr());
    let kv = membrane::lattice::desired::bucket_name(LATTICE);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let old = rt.block_on(async {
        let operator = Client::connect(&lattice.server, "operator", "_MEMBRANE.test.ctl").await;
        let store = async_nats::jetstream::new(operator.nats.clone())
            .get_key_value(&kv)
            .await
            .unwrap();
        store.get("app.insurance").await.unwrap().expect("the applied entry")
    });
    let text = std::fs::read_to_string(&lattice.app).unwrap().replace("EUR", "CHF");
    let v2_app = write(lattice.dir.path(), "app-v2.toml", &text);
    lattice.operator(&["apply", &v2_app]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut v2 = quote(lattice.addr());
    while v2 == v1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        v2 = quote(lattice.addr());
    }
    assert!(v2.contains("CHF"), "{v2}");

    rt.block_on(async {
        let operator = Client::connect(&lattice.server, "operator", "_MEMBRANE.test.ctl").await;
        let store = async_nats::jetstream::new(operator.nats.clone())
            .get_key_value(&kv)
            .await
            .unwrap();
        store.put("app.insurance", old).await.unwrap();
    });
    let refused = host.wait_for_log("older than entry");
    assert!(refused.contains("app `insurance`"), "{refused}");
    assert_eq!(quote(lattice.addr()), v2, "the replayed entry must not run");

    // A rollback to revision 1 is a new entry: it runs.
    lattice.operator(&["rollback", "insurance", "1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while quote(lattice.addr()) != v1 {
        assert!(Instant::now() < deadline, "the rollback did not run:\n{}", host.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Finding 3: a host-role client answers every inventory request at once,
/// claiming a lattice of one host that runs nothing. `ctl update` to a
/// version every real host rejects still reports `rejected`, and the
/// desired state goes back.
#[test]
fn a_false_lattice_size_claim_cannot_pass_a_rejected_update() {
    let (lattice, host) = Secured::start(app);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = answered.clone();
    let server = &lattice.server;
    let liar = rt.block_on(async move {
        let client = Client::connect(server, "host", "_MEMBRANE.test.host").await;
        let mut asks = client.nats.subscribe("membrane.test.ctl.v1.inventory").await.unwrap();
        client.nats.flush().await.unwrap();
        let nats = client.nats.clone();
        let task = tokio::spawn(async move {
            let _keep = client;
            while let Some(ask) = futures::StreamExt::next(&mut asks).await {
                if let Some(reply) = ask.reply {
                    let lie = r#"{"host":"host-00000001","labels":{},"uptime_s":1,"components":[],"lattice_hosts":1}"#;
                    let _ = nats.publish(reply, lie.into()).await;
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        task.abort_handle()
    });
    let bad = support::wasm("bad_rater");
    // The liar and the real host race to answer first: try several times.
    let mut table = String::new();
    for _ in 0..6 {
        let output = lattice.try_operator(&["update", "rater", bad.to_str().unwrap()]);
        table = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(!output.status.success(), "a rejected update passed:\n{table}");
        assert!(table.contains(" rejected "), "{table}\n{}", stderr(&output));
    }
    assert!(
        answered.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the liar was never asked"
    );
    // The desired state went back: the old rater runs.
    let running = table
        .split("(running sha256:")
        .nth(1)
        .and_then(|rest| rest.get(..12))
        .expect("the running digest")
        .to_string();
    let apps = lattice.operator(&["apps"]);
    let rater = apps
        .lines()
        .find(|l| l.contains("insurance/rater"))
        .expect("the rater's line");
    assert!(rater.contains(&running), "{apps}");
    drop(host);
    liar.abort();
}

/// Finding 4: an applied app's http binding names a TLS key outside every
/// `--allow-dir`. The host refuses it, naming the field, before reading the
/// file, and says the same whether the file exists or not.
#[test]
fn an_applied_app_cannot_read_host_files_through_tls() {
    let (lattice, host) = Secured::start(app);
    let allowed = lattice.dir.path().join("allowed");
    let secret = lattice.dir.path().join("secret");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("key.pem"), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    drop(host);
    let host = lattice.host(&["--allow-dir", allowed.to_str().unwrap()]);
    for (name, key) in [("tls1", "key.pem"), ("tls2", "missing.pem")] {
        let text = format!(
            "[app]\nname = \"{name}\"\n[components.echo]\nsource = {:?}\n\
             [[bindings]]\nmedium = \"http\"\naddress = \"127.0.0.1:0\"\ncomponent = \"echo\"\n\
             tls = {{ cert = {:?}, key = {:?} }}\n",
            support::wasm("echo"),
            secret.join("cert.pem"),
            secret.join(key),
        );
        let path = write(lattice.dir.path(), &format!("{name}.toml"), &text);
        lattice.operator(&["apply", &path]);
    }
    let one = host.wait_for_log("tls1");
    let refusal = |app: &str| {
        host.log()
            .lines()
            .find(|l| l.contains(app) && l.contains("bindings[0].tls.key"))
            .map(String::from)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while refusal("tls1").is_none() || refusal("tls2").is_none() {
        assert!(Instant::now() < deadline, "{one}\n{}", host.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (a, b) = (refusal("tls1").unwrap(), refusal("tls2").unwrap());
    assert!(a.contains("is not under any --allow-dir"), "{a}");
    assert!(b.contains("is not under any --allow-dir"), "{b}");
    assert!(!host.log().contains("serving https://"), "{}", host.log());
}

/// Finding 5: the admin endpoint answers only requests that name an IP
/// address, `localhost` or an `--admin-host`, so a page on another site
/// cannot read it through DNS rebinding.
#[test]
fn the_admin_endpoint_refuses_other_host_names() {
    let host = Host::start_with(&support::insurance_manifest(), &["--admin-host", "admin.internal"]);
    let get = |name: &str| {
        let mut stream = std::net::TcpStream::connect(host.admin()).unwrap();
        write!(
            stream,
            "GET /status.json HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    let port = host.admin().port();
    for name in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "admin.internal".into(),
    ] {
        let response = get(&name);
        assert!(response.starts_with("HTTP/1.1 200"), "{name}: {response}");
    }
    for name in [format!("rebind.example:{port}"), "127.0.0.1.nip.example".into()] {
        let response = get(&name);
        assert!(response.starts_with("HTTP/1.1 421"), "{name}: {response}");
        assert!(!response.contains("\"components\""), "{response}");
    }
}

/// Finding 6: no manifest may dead-letter, bind or take replies under the
/// lattice's own subjects or NATS's: `membrane up`, `ctl apply` and `ctl
/// permissions` all refuse it, naming the field.
#[test]
fn a_manifest_cannot_dead_letter_into_the_lattice_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let base = app(0).replace("reply_prefix = \"rates.reply\"", "");
    let cases = [
        ("dead_letter = \"membrane.test.evt.v1.heartbeat\"", "dead_letter"),
        (
            "dead_letter = \"$JS.API.STREAM.PURGE.KV_membrane-test-apps\"",
            "dead_letter",
        ),
        ("reply_prefix = \"_MEMBRANE.test.host\"", "reply_prefix"),
        ("reply_prefix = \"$KV\"", "reply_prefix"),
    ];
    for (line, field) in cases {
        let text = format!("{base}\n{line}\n");
        let path = write(dir.path(), "bad.toml", &support::with_paths(&text));
        let output = ctl(None, &["permissions", &path], &[]);
        assert!(!output.status.success(), "ctl permissions rendered {line}");
        assert!(stderr(&output).contains(field), "{}", stderr(&output));
        let failed = Host::fail(&support::with_paths(&text));
        assert!(failed.contains(&format!("].{field}: ")), "{line}: {failed}");
        assert!(failed.contains("reserved"), "{line}: {failed}");
    }
    let bound = base.replace(
        "subject = \"insurance.rate\"",
        "subject = \"membrane.test.evt.v1.heartbeat\"",
    );
    let failed = Host::fail(&support::with_paths(&bound));
    assert!(failed.contains(".subject: ") && failed.contains("reserved"), "{failed}");
}

/// Finding 7: a caller's message with a lone carriage return in a header
/// kills the library's connection task; a host that follows the lattice
/// notices, starts afresh in the same process, and serves again (it used
/// to panic on its desired-state watch and exit with 101).
#[test]
fn a_lone_cr_from_a_caller_does_not_end_a_lattice_host() {
    let (lattice, mut host) = Secured::start(app);
    let quoted = quote(lattice.addr());
    let mut raw = RawNats::connect_as(&lattice.server, "test-caller", PASSWORDS[2].1);
    for round in 1..=3 {
        raw.hpub("insurance.rate", b"NATS/1.0\r\nX: a\rb\r\n\r\n", b"{}");
        host.wait_for_log_count("nats: the connection is dead", round);
        host.wait_for_log_count("following the lattice's desired state", round + 1);
        assert_eq!(quote(lattice.addr()), quoted);
        assert!(host.is_running(), "the host exited:\n{}", host.log());
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let caller = Client::connect(&lattice.server, "caller", "_INBOX").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match caller.nats.request("insurance.rate", rate_args().into()).await {
                Ok(reply) => {
                    let rated: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
                    assert_eq!(rated["ok"]["premium"], 936.92, "{rated}");
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "no answer over NATS: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // The library's own tasks panicked (nats.rs#1612); the host did not.
    assert!(host.is_running(), "the host exited:\n{}", host.log());
}

/// Under the role permissions, the operator's `ctl apps` reads the event
/// log (it used to fail with a permissions violation).
#[test]
fn the_operator_role_reads_the_event_log() {
    let (lattice, _host) = Secured::start(app);
    let apps = lattice.operator(&["apps"]);
    assert!(apps.contains("last: component.started"), "{apps}");
}

/// Item 3: with a NATS user per host (`ctl permissions --host ID`, `up
/// --host-id ID`), a host can speak only for itself. Its user cannot
/// publish a heartbeat under another id (the server refuses), and a
/// heartbeat on its own subject that names another host is ignored by every
/// peer: a forged member that would win the `instances = 1` ranking never
/// takes the only replica away from the host that runs it.
#[test]
fn a_host_can_speak_only_for_itself() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[app]
name = "one"

[components.versioned]
source = "{wasm:versioned_v1}"
instances = 1

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "versioned"
"#;
    let app = write(dir.path(), "app.toml", &support::with_paths(text));
    let config = ok(ctl(None, &["permissions", &app, "--host", "h1", "--host", "h2"], &[]));
    assert!(
        config.contains("\"test-h1\"") && config.contains("membrane.test.evt.v1.*.h1"),
        "{config}"
    );
    let conf = write(dir.path(), "nats.conf", &config);
    let mut env: Vec<(&str, &str)> = PASSWORDS.to_vec();
    env.extend([
        ("MEMBRANE_HOST_H1_PASSWORD", "h1-pw"),
        ("MEMBRANE_HOST_H2_PASSWORD", "h2-pw"),
    ]);
    let server = NatsServer::start_with_env(&["-c", &conf], &env);
    let (seed, public) = keygen(dir.path(), "operator.nk");
    let url = server.url();
    let start = |id: &str, password: &str| {
        let user = format!("test-{id}");
        Host::join_logged(
            &[
                "--nats",
                &url,
                "--lattice",
                LATTICE,
                "--heartbeat-ms",
                "200",
                "--trust",
                &public,
                "--nats-user",
                &user,
                "--host-id",
                id,
            ],
            &[("MEMBRANE_NATS_PASSWORD", password)],
            "membrane=info,warn",
        )
    };
    let hosts = [start("h1", "h1-pw"), start("h2", "h2-pw")];
    hosts[0].wait_for_log("host h1 ready");
    hosts[1].wait_for_log("host h2 ready");
    ok(ctl(
        Some(&server),
        &["--nats-user", "test-operator", "--key", &seed, "apply", &app],
        &[("MEMBRANE_NATS_PASSWORD", PASSWORDS[1].1)],
    ));

    // Who runs it, and a made-up id that would outrank both.
    let manifest = membrane::manifest::Manifest::parse(&std::fs::read_to_string(&app).unwrap(), "app.toml").unwrap();
    let member = |id: &str| membrane::lattice::placement::Member {
        host: id.to_string(),
        labels: Default::default(),
    };
    let real = [member("h1"), member("h2")];
    let runner = if membrane::lattice::placement::placed_here(&manifest, &real[0], &real).is_empty() {
        1
    } else {
        0
    };
    hosts[runner].wait_for_log("serving http://");
    let fake = (0..)
        .map(|i| format!("host-{i:08}"))
        .find(|id| {
            let all = [member("h1"), member("h2"), member(id)];
            !membrane::lattice::placement::placed_here(&manifest, &member(id), &all).is_empty()
        })
        .unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut h1 = Client::connect_as(&server, "test-h1", "h1-pw", "_MEMBRANE.test.host").await;
        let beat = serde_json::json!({
            "host": fake, "labels": {}, "uptime_s": 1, "components": [], "component_count": 0, "lattice_hosts": 3
        })
        .to_string();
        // Under the forged id's own subject: the server refuses.
        let theirs = format!("membrane.test.evt.v1.heartbeat.{fake}");
        h1.nats.publish(theirs.clone(), beat.clone().into()).await.unwrap();
        h1.refused("publish", &theirs).await;
        // Under its own subject, naming the forged id: for 3 s, every
        // heartbeat period, the peers must ignore it.
        for _ in 0..30 {
            h1.nats
                .publish("membrane.test.evt.v1.heartbeat.h1", beat.clone().into())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        h1.nats.flush().await.unwrap();
    });
    assert!(
        !hosts[runner].log().contains("stopped versioned"),
        "a forged heartbeat moved the only replica:\n{}",
        hosts[runner].log()
    );
    let addr = hosts[runner].wait_for_http("versioned");
    assert_eq!(support::http(addr, "GET", "/", b"").status, 200);
    // Each host speaks under its own id without a refusal.
    for host in &hosts {
        assert!(
            !host.log().to_lowercase().contains("permissions violation"),
            "{}",
            host.log()
        );
    }
}

/// Apps are tenants of one lattice: two apps with the same component names
/// and interfaces, split across the same three hosts, each answer with their
/// own configuration every time. (Link subjects used to leave the app out,
/// so one app's rater could be answered by the other app's pricing.)
#[test]
fn two_apps_with_the_same_components_never_answer_each_other() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<Host> = ["node=a", "node=b", "node=c"]
        .into_iter()
        .map(|label| Host::join(&["--nats", &server.url(), "--lattice", LATTICE, "--label", label]))
        .collect();
    let mut addrs = Vec::new();
    for (name, currency) in [("alpha", "EUR"), ("beta", "CHF")] {
        let port = free_port();
        let text = distributed_app(port)
            .replace("name = \"insurance\"", &format!("name = \"{name}\""))
            .replace("currency = \"EUR\"", &format!("currency = \"{currency}\""))
            .replace("insurance.rate", &format!("{name}.rate"))
            .replace("stream = \"RATES\"", &format!("stream = \"RATES_{name}\""))
            .replace("rates.reply", &format!("{name}.reply"));
        let path = write(dir.path(), &format!("{name}.toml"), &text);
        ok(ctl(Some(&server), &["apply", &path], &[]));
        addrs.push((format!("127.0.0.1:{port}").parse::<SocketAddr>().unwrap(), currency));
    }
    for (addr, currency) in &addrs {
        quote(*addr);
        for _ in 0..20 {
            let body = quote(*addr);
            assert!(body.contains(&format!("\"currency\":\"{currency}\"")), "{addr}: {body}");
        }
    }
    // Over NATS too: each app's binding answers with its own pricing.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(server.url()).await.unwrap();
        for (name, currency) in [("alpha", "EUR"), ("beta", "CHF")] {
            for _ in 0..10 {
                let reply = client
                    .request(format!("{name}.rate"), rate_args().into())
                    .await
                    .unwrap();
                let rated: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
                assert_eq!(rated["ok"]["currency"], currency, "{name}: {rated}");
            }
        }
    });
    drop(hosts);
}

/// Apps are tenants of one key-value store too: three apps whose
/// `kv-counter` components each count in a bucket they call `counts`, on
/// the lattice's one NATS bucket, two on the same host and one on another,
/// each count only their own increments.
#[test]
fn apps_granted_the_same_bucket_name_never_read_each_others_keys() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<Host> = ["node=a", "node=b"]
        .into_iter()
        .map(|label| {
            Host::join(&[
                "--nats",
                &server.url(),
                "--lattice",
                LATTICE,
                "--label",
                label,
                "--allow-keyvalue",
                "nats",
            ])
        })
        .collect();
    let mut addrs = Vec::new();
    for (name, node) in [("alpha", "a"), ("beta", "a"), ("gamma", "b")] {
        let port = free_port();
        let text = format!(
            r#"
[app]
name = "{name}"

[components.counter]
source = "{{wasm:kv_counter}}"
keyvalue = {{ buckets = ["counts"] }}
placement = {{ node = "{node}" }}

[keyvalue.counts]
backend = "nats"

[[bindings]]
medium = "http"
address = "127.0.0.1:{port}"
component = "counter"
"#
        );
        let path = write(dir.path(), &format!("{name}.toml"), &support::with_paths(&text));
        ok(ctl(Some(&server), &["apply", &path], &[]));
        addrs.push(format!("127.0.0.1:{port}").parse::<SocketAddr>().unwrap());
    }
    let count = |addr: SocketAddr| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(addr).is_ok() {
                let response = support::http(addr, "GET", "/counter/visits", b"");
                assert_eq!(response.status, 200, "{addr}: {}", response.body);
                return response.body;
            }
            assert!(Instant::now() < deadline, "{addr} never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for expected in ["1", "2", "3"] {
        assert_eq!(count(addrs[0]), expected);
    }
    assert_eq!(count(addrs[1]), "1", "beta read alpha's key on the same host");
    assert_eq!(count(addrs[2]), "1", "gamma read alpha's key from another host");
    assert_eq!(count(addrs[1]), "2");
    assert_eq!(count(addrs[0]), "4");
    drop(hosts);
}
