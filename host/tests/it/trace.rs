//! W3C trace context: a `traceparent` sent over any medium reaches the log
//! line of the innermost component that logs (`rater`, which logs each quote
//! through `wasi:logging`). Across hosts over remote links:
//! `lattice.rs`, `one_trace_id_crosses_all_three_hosts`.

use crate::support;
use crate::support::nats::NatsServer;
use crate::support::{Host, insurance_manifest};
use async_nats::HeaderMap;
use futures::StreamExt as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const RATE: &str = "example:insurance/rater@0.1.0#rate";

/// A `traceparent` with trace id `trace` (32 hex digits).
fn traceparent(trace: &str) -> String {
    format!("00-{trace}-00f067aa0ba902b7-01")
}

/// POSTs `body` to `path` with a `traceparent` header; the status code.
fn post_traced(addr: SocketAddr, path: &str, body: &[u8], trace: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\n\
         traceparent: {}\r\ncontent-length: {}\r\n\r\n",
        traceparent(trace),
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"))
}

/// Waits for `host`'s log line of `rater` rating a policy in trace `trace`.
fn assert_rated_in_trace(host: &Host, trace: &str) {
    host.wait_for_log(trace);
    let log = host.log();
    assert!(
        log.lines().any(|l| l.contains(trace) && l.contains("rated at")),
        "no `rated at` line carries trace {trace}:\n{log}"
    );
}

fn rate_args() -> String {
    format!(
        "{{\"policy\": {}}}",
        String::from_utf8(support::example_policy()).expect("utf-8 policy")
    )
}

#[test]
fn a_traceparent_continues_over_http_http_rpc_nats_and_queue() {
    let server = NatsServer::start();
    let manifest = format!(
        r#"{}
[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "rater"
export = "{RATE}"

[[bindings]]
medium = "nats"
subject = "traced.rate"
component = "rater"
export = "{RATE}"

[[bindings]]
medium = "queue"
stream = "TRACED"
subject = "traced.queued"
component = "rater"
export = "{RATE}"
reply_prefix = "traced"
"#,
        insurance_manifest()
    );
    let host = Host::start_with(&manifest, &["--nats", &server.url()]);
    let args = rate_args();

    let over_http = "4bf92f3577b34da6a3ce929d0e0e4736";
    let policy = support::example_policy();
    assert_eq!(post_traced(host.addr(), "/quote", &policy, over_http), 200);
    assert_rated_in_trace(&host, over_http);

    let over_rpc = "11111111111111111111111111111111";
    assert_eq!(
        post_traced(host.rpc[0], "/rpc/rater/rate", args.as_bytes(), over_rpc),
        200
    );
    assert_rated_in_trace(&host, over_rpc);

    let (over_nats, over_queue) = ("22222222222222222222222222222222", "33333333333333333333333333333333");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(server.url()).await.expect("connect");
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", traceparent(over_nats).as_str());
        let reply = client
            .request_with_headers("traced.rate", headers, args.clone().into())
            .await
            .expect("reply");
        assert!(reply.headers.is_none(), "{:?}", reply.headers);

        let mut replies = client.subscribe("traced.reply").await.unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", traceparent(over_queue).as_str());
        headers.insert("Membrane-Reply-To", "traced.reply");
        let js = async_nats::jetstream::new(client.clone());
        js.publish_with_headers("traced.queued", headers, args.clone().into())
            .await
            .unwrap()
            .await
            .expect("stream ack");
        tokio::time::timeout(Duration::from_secs(30), replies.next())
            .await
            .expect("the queued call's reply")
            .unwrap();
    });
    assert_rated_in_trace(&host, over_nats);
    assert_rated_in_trace(&host, over_queue);
}
