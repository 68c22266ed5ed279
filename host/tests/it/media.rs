//! One component, several media: http-rpc, NATS request/reply and a
//! JetStream queue, each against a private nats-server started by the test.

use crate::support::nats::NatsServer;
use crate::support::{Host, http, insurance_manifest};
use async_nats::HeaderMap;
use futures::StreamExt as _;
use std::collections::BTreeSet;
use std::time::Duration;

const RATE: &str = "example:insurance/rater@0.1.0#rate";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The example app with `rater` on http-rpc, nats and queue.
fn media_manifest(stream: &str) -> String {
    format!(
        r#"{}
[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "rater"
export = "{RATE}"

[[bindings]]
medium = "nats"
subject = "insurance.rate"
component = "rater"
export = "{RATE}"

[[bindings]]
medium = "queue"
stream = "{stream}"
subject = "insurance.rate.queued"
component = "rater"
export = "{RATE}"
reply_prefix = "test"
max_deliver = 2
backoff_ms = 20
"#,
        insurance_manifest()
    )
}

/// The example policy as a JSON object of `rate`'s parameters.
fn rate_args() -> serde_json::Value {
    serde_json::json!({ "policy": {
        "id": 1001, "holder": "Ada Lovelace", "region": "N",
        "subject": { "vehicle": { "kind": "car", "year": 2019, "value-cents": 2_500_000 } },
        "coverage": ["collision", "theft"], "deductible": 500,
        "drivers": [{ "name": "Ada", "age": 36, "claims": [[2021, 1200.5]], "bonus-malus": 2 }],
        "start-day": 20412, "discount-code": "WELCOME10"
    }})
}

async fn connect(server: &NatsServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .expect("connect to the test nats-server")
}

/// Publishes `payload` to the queue with a reply header, returns the reply.
async fn queued_call(client: &async_nats::Client, subject: &str, payload: &[u8], reply: &str) -> serde_json::Value {
    let mut replies = client.subscribe(reply.to_string()).await.unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Membrane-Reply-To", reply);
    let js = async_nats::jetstream::new(client.clone());
    js.publish_with_headers(subject.to_string(), headers, payload.to_vec().into())
        .await
        .unwrap()
        .await
        .expect("stream ack");
    let message = tokio::time::timeout(Duration::from_secs(30), replies.next())
        .await
        .expect("a queued call's reply")
        .unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

#[test]
fn the_same_request_gives_the_same_answer_over_http_rpc_nats_and_queue() {
    let server = NatsServer::start();
    let host = Host::start_with(&media_manifest("SAME"), &["--nats", &server.url()]);
    let args = rate_args().to_string();

    let over_http = http(host.rpc[0], "POST", "/rpc/rater/rate", args.as_bytes());
    assert_eq!(over_http.status, 200, "{}", over_http.body);
    let over_http = over_http.json();
    assert_eq!(over_http["ok"]["premium"], 936.92);
    // The JSON follows the WIT field order.
    assert!(
        over_http
            .to_string()
            .starts_with(r#"{"ok":{"policy-id":1001,"premium":936.92"#),
        "{over_http}"
    );

    rt().block_on(async {
        let client = connect(&server).await;
        let reply = client.request("insurance.rate", args.clone().into()).await.unwrap();
        assert!(reply.headers.is_none(), "a successful reply has no error headers");
        let over_nats: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(over_nats, over_http);

        let over_queue = queued_call(&client, "insurance.rate.queued", args.as_bytes(), "test.reply").await;
        assert_eq!(over_queue, over_http);
    });
}

#[test]
fn a_malformed_payload_gets_a_precise_error_on_every_medium() {
    let server = NatsServer::start();
    let host = Host::start_with(&media_manifest("MALFORMED"), &["--nats", &server.url()]);
    let mut bad = rate_args();
    bad["policy"]["drivers"][0]["age"] = 300.into();
    let bad = bad.to_string();
    let expected_error = "$.policy.drivers[0].age: expected u8 in range, found number 300";

    let over_http = http(host.rpc[0], "POST", "/rpc/rater/rate", bad.as_bytes());
    assert_eq!(over_http.status, 400);
    assert_eq!(over_http.json()["error"], expected_error);
    assert_eq!(over_http.json()["path"], "$.policy.drivers[0].age");

    let not_json = http(host.rpc[0], "POST", "/rpc/rater/rate", b"{not json");
    assert_eq!(not_json.status, 400);
    assert!(not_json.json()["error"].as_str().unwrap().contains("invalid JSON"));

    rt().block_on(async {
        let client = connect(&server).await;
        let reply = client.request("insurance.rate", bad.clone().into()).await.unwrap();
        let headers = reply.headers.expect("error headers");
        assert_eq!(headers.get("Nats-Service-Error-Code").unwrap().as_str(), "400");
        assert_eq!(headers.get("Nats-Service-Error").unwrap().as_str(), expected_error);
        assert_eq!(headers.get("Membrane-Error-Kind").unwrap().as_str(), "bad-request");
        let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(body["path"], "$.policy.drivers[0].age");

        // On the queue, no retry can fix it: dead-lettered after one attempt.
        let mut dead = client.subscribe("insurance.rate.queued.dead").await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        js.publish("insurance.rate.queued", bad.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let letter = tokio::time::timeout(Duration::from_secs(30), dead.next())
            .await
            .unwrap()
            .unwrap();
        let headers = letter.headers.expect("dead-letter headers");
        assert_eq!(headers.get("Membrane-Error").unwrap().as_str(), expected_error);
        assert_eq!(headers.get("Membrane-Deliveries").unwrap().as_str(), "1");
        assert_eq!(letter.payload, bad.as_bytes());
    });
}

fn faulty_queue(stream: &str, export: &str, extra: &str) -> String {
    format!(
        r#"
[app]
name = "faults"

[components.faulty]
source = "{{wasm:faulty}}"

[[bindings]]
medium = "queue"
stream = "{stream}"
subject = "jobs"
component = "faulty"
export = "example:testkit/faults@0.1.0#{export}"
{extra}
"#
    )
}

#[test]
fn a_trapping_queue_call_is_redelivered_then_dead_lettered_with_the_reason() {
    let server = NatsServer::start();
    let _host = Host::start_with(
        &faulty_queue("TRAPS", "trap", "max_deliver = 3\nbackoff_ms = 20"),
        &["--nats", &server.url()],
    );
    rt().block_on(async {
        let client = connect(&server).await;
        let mut dead = client.subscribe("jobs.dead").await.unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("X-Order", "A-17");
        let js = async_nats::jetstream::new(client.clone());
        js.publish_with_headers("jobs", headers, r#"{"message": "boom"}"#.into())
            .await
            .unwrap()
            .await
            .unwrap();
        let letter = tokio::time::timeout(Duration::from_secs(30), dead.next())
            .await
            .unwrap()
            .unwrap();
        let headers = letter.headers.expect("dead-letter headers");
        let header = |name: &str| headers.get(name).map(|v| v.as_str().to_string()).unwrap_or_default();
        assert_eq!(
            header("Membrane-Deliveries"),
            "3",
            "three attempts before dead-lettering"
        );
        assert_eq!(header("Membrane-Error-Kind"), "trap");
        assert!(
            header("Membrane-Error").starts_with("component `faulty` trapped"),
            "{}",
            header("Membrane-Error")
        );
        assert_eq!(header("Membrane-Original-Subject"), "jobs");
        assert_eq!(header("X-Order"), "A-17", "original headers are kept");
        assert_eq!(letter.payload, r#"{"message": "boom"}"#.as_bytes());

        // The dead letter is durable: it sits in the JOBS_DEAD-style stream.
        let mut stream = js.get_stream("TRAPS_DEAD").await.unwrap();
        assert_eq!(stream.info().await.unwrap().state.messages, 1);
    });
}

#[test]
fn queue_messages_survive_a_host_killed_mid_call() {
    let server = NatsServer::start();
    // The calls take 1.5 s of a 2 s budget; the server redelivers 2.5 s after
    // a delivery that nobody acked (ack_wait must outlast the call).
    let manifest = faulty_queue(
        "SURVIVE",
        "sleep",
        "concurrency = 4\nack_wait_ms = 2500\nreply_prefix = \"done\"",
    )
    .replace(
        "source = \"{wasm:faulty}\"",
        "source = \"{wasm:faulty}\"\nlimits = { timeout_ms = 2000 }",
    );
    let args = ["--nats", &server.url()];
    let first = Host::start_with(&manifest, &args);
    rt().block_on(async {
        let client = connect(&server).await;
        let mut replies = client.subscribe("done.*").await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        for i in 0..4 {
            let mut headers = HeaderMap::new();
            headers.insert("Membrane-Reply-To", format!("done.{i}").as_str());
            js.publish_with_headers("jobs", headers, r#"{"ms": 1500}"#.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        // All four are in flight on the first host: kill it without a goodbye.
        first.wait_for_log_count("faulty: sleeping", 4);
        first.kill();

        let second = Host::start_with(&manifest, &args);
        let mut done = BTreeSet::new();
        while done.len() < 4 {
            let reply = tokio::time::timeout(Duration::from_secs(30), replies.next())
                .await
                .expect("every message is processed by the second host")
                .unwrap();
            assert_eq!(&reply.payload[..], b"1500");
            assert!(
                done.insert(reply.subject.to_string()),
                "{} was processed twice",
                reply.subject
            );
        }
        assert_eq!(done.len(), 4);
        assert!(second.log().contains("faulty: sleeping"));
        // Nothing more comes: no call was delivered again while it ran. The
        // window is one ack_wait and a margin past the last answer.
        let again = tokio::time::timeout(Duration::from_millis(3500), replies.next()).await;
        assert!(again.is_err(), "a message was processed twice: {again:?}");
    });
}

#[test]
fn a_nats_restart_is_survived_and_http_never_stops() {
    let mut server = NatsServer::start();
    let host = Host::start_with(&media_manifest("RESTART"), &["--nats", &server.url()]);
    let args = rate_args().to_string();
    let rt = rt();
    let client = rt.block_on(connect(&server));
    let ask = |client: &async_nats::Client| {
        rt.block_on(async {
            let reply = tokio::time::timeout(
                Duration::from_secs(30),
                client.request("insurance.rate", args.clone().into()),
            )
            .await
            .expect("reply in time")
            .expect("reply");
            serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap()
        })
    };
    assert_eq!(ask(&client)["ok"]["premium"], 936.92);

    server.kill();
    host.wait_for_log("nats: disconnected");
    // HTTP does not depend on NATS.
    assert_eq!(http(host.addr(), "GET", "/health", b"").status, 200);
    assert_eq!(
        http(host.rpc[0], "POST", "/rpc/rater/rate", args.as_bytes()).status,
        200
    );

    server.restart();
    host.wait_for_log_count("nats: connected", 2);
    // Request/reply resumes, and so does the queue. "connected" can come
    // before the server has the host's subscriptions again: until then a
    // request has no responders, which is the probe waited on.
    let client = rt.block_on(connect(&server));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let reply = loop {
        let reply = rt.block_on(client.request("insurance.rate", args.clone().into()));
        match reply {
            Err(e)
                if e.kind() == async_nats::RequestErrorKind::NoResponders && std::time::Instant::now() < deadline =>
            {
                rt.block_on(tokio::time::sleep(Duration::from_millis(20)));
            }
            other => break other.expect("reply after the restart"),
        }
    };
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["ok"]["premium"], 936.92);
    let queued = rt.block_on(queued_call(
        &client,
        "insurance.rate.queued",
        args.as_bytes(),
        "test.after-restart",
    ));
    assert_eq!(queued["ok"]["premium"], 936.92);
}

/// A message whose call fails every time (here: it runs past its deadline),
/// taken by two hosts in turn, the first killed while it holds it: it ends in
/// the dead-letter stream after `max_deliver` attempts counted across hosts.
#[test]
fn a_poison_message_ends_dead_lettered_across_hosts_when_its_holder_is_killed() {
    let server = NatsServer::start();
    let manifest = faulty_queue(
        "POISON",
        "sleep",
        "max_deliver = 3\nbackoff_ms = 20\nack_wait_ms = 2000",
    )
    .replace(
        "source = \"{wasm:faulty}\"",
        "source = \"{wasm:faulty}\"\nlimits = { timeout_ms = 1000 }",
    );
    let args = ["--nats", &server.url()];
    let hosts = vec![Host::start_with(&manifest, &args), Host::start_with(&manifest, &args)];
    rt().block_on(async {
        let client = connect(&server).await;
        let mut dead = client.subscribe("jobs.dead").await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        js.publish("jobs", r#"{"ms": 60000}"#.into())
            .await
            .unwrap()
            .await
            .unwrap();
        // Kill whichever host took it, while its call runs.
        let mut hosts = hosts;
        kill_the_holder(&mut hosts).await;
        let letter = tokio::time::timeout(Duration::from_secs(30), dead.next())
            .await
            .expect("the message is dead-lettered")
            .unwrap();
        let headers = letter.headers.expect("dead-letter headers");
        assert_eq!(headers.get("Membrane-Deliveries").unwrap().as_str(), "3");
        assert_eq!(headers.get("Membrane-Error-Kind").unwrap().as_str(), "deadline");
        assert_eq!(&letter.payload[..], br#"{"ms": 60000}"#);
        // The survivor made the last two attempts.
        hosts[0].wait_for_log_count("faulty: sleeping", 2);
    });
}

/// A message that every host taking it dies on (`max_deliver = 1`: the
/// server stops at 2 deliveries): the server's advisory makes the last host
/// standing move it to the dead-letter stream, so it cannot sit in the
/// stream forever.
#[test]
fn a_message_that_kills_every_taker_is_dead_lettered_by_the_servers_backstop() {
    let server = NatsServer::start();
    let manifest = faulty_queue("KILLER", "sleep", "max_deliver = 1\nack_wait_ms = 1500").replace(
        "source = \"{wasm:faulty}\"",
        "source = \"{wasm:faulty}\"\nlimits = { timeout_ms = 1000 }",
    );
    let args = ["--nats", &server.url()];
    let mut hosts: Vec<Host> = (0..3).map(|_| Host::start_with(&manifest, &args)).collect();
    rt().block_on(async {
        let client = connect(&server).await;
        let mut dead = client.subscribe("jobs.dead").await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        js.publish("jobs", r#"{"ms": 60000}"#.into())
            .await
            .unwrap()
            .await
            .unwrap();
        // Two deliveries, each to a host that is killed while it holds it.
        for _ in 0..2 {
            kill_the_holder(&mut hosts).await;
        }
        let letter = tokio::time::timeout(Duration::from_secs(30), dead.next())
            .await
            .expect("the message is dead-lettered")
            .unwrap();
        let headers = letter.headers.expect("dead-letter headers");
        assert_eq!(headers.get("Membrane-Error-Kind").unwrap().as_str(), "undelivered");
        assert_eq!(headers.get("Membrane-Deliveries").unwrap().as_str(), "2");
        assert_eq!(&letter.payload[..], br#"{"ms": 60000}"#);
        assert!(
            !hosts[0].log().contains("faulty: sleeping"),
            "the survivor never ran it"
        );
    });
}

/// A producer cannot make the host publish a result anywhere it likes: a
/// `Membrane-Reply-To` outside the binding's `reply_prefix` (here a JetStream
/// API subject that would delete the stream) is refused, the message is
/// dead-lettered without a call, and the stream is intact.
#[test]
fn a_reply_subject_outside_reply_prefix_is_refused_and_nothing_is_published_there() {
    let server = NatsServer::start();
    let _host = Host::start_with(
        &faulty_queue("REPLYTO", "sleep", "reply_prefix = \"done\""),
        &["--nats", &server.url()],
    );
    rt().block_on(async {
        let client = connect(&server).await;
        let mut dead = client.subscribe("jobs.dead").await.unwrap();
        let mut api = client.subscribe("$JS.API.STREAM.DELETE.>").await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let mut headers = HeaderMap::new();
        headers.insert("Membrane-Reply-To", "$JS.API.STREAM.DELETE.REPLYTO");
        js.publish_with_headers("jobs", headers, r#"{"ms": 1}"#.into())
            .await
            .unwrap()
            .await
            .unwrap();
        let letter = tokio::time::timeout(Duration::from_secs(30), dead.next())
            .await
            .expect("the message is dead-lettered")
            .unwrap();
        let headers = letter.headers.expect("dead-letter headers");
        assert_eq!(headers.get("Membrane-Error-Kind").unwrap().as_str(), "bad-request");
        assert!(
            headers
                .get("Membrane-Error")
                .unwrap()
                .as_str()
                .contains("is not `done` or under it"),
            "{headers:?}"
        );
        // The stream still exists, and nothing was published to the API.
        js.get_stream("REPLYTO").await.expect("the stream is intact");
        client.flush().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(200), api.next())
                .await
                .is_err(),
            "something was published to the JetStream API"
        );
    });
}

/// Kills the host that runs the queued `sleep` call (the first to log
/// `faulty: sleeping`) while it holds the message, and removes it.
async fn kill_the_holder(hosts: &mut Vec<Host>) {
    let holder = loop {
        if let Some(i) = hosts.iter().position(|h| h.log().contains("faulty: sleeping")) {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    hosts.remove(holder).kill();
}
