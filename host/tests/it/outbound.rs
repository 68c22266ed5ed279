//! `allowed_outbound_hosts` and guest output. The `outbound` component
//! fetches URLs over `wasi:http/outgoing-handler` and opens raw TCP
//! sockets on request; two local servers stand by, and the manifest allows
//! exactly one of them. It also floods its stdout and tries to forge a host
//! log line, which the host must escape and rate-limit.

use crate::support::{Host, Server, http};
use std::net::SocketAddr;
use std::time::Duration;

const IFACE: &str = "example:testkit/outbound@0.1.0";

fn manifest(allowed: &str) -> String {
    let mut text = format!(
        r#"
[app]
name = "outbound"

[components.outbound]
source = "{{wasm:outbound}}"
allowed_outbound_hosts = {allowed}
"#
    );
    for function in ["fetch", "connect", "shout"] {
        text.push_str(&format!(
            "\n[[bindings]]\nmedium = \"http-rpc\"\naddress = \"127.0.0.1:0\"\ncomponent = \"outbound\"\nexport = \"{IFACE}#{function}\"\n"
        ));
    }
    text
}

/// Calls `function` with `args` over http-rpc; the JSON reply.
fn call(host: &Host, function: &str, args: &str) -> serde_json::Value {
    let reply = http(
        host.rpc[0],
        "POST",
        &format!("/rpc/outbound/{function}"),
        args.as_bytes(),
    );
    assert_eq!(reply.status, 200, "{function}: {}", reply.body);
    reply.json()
}

#[test]
fn only_the_allowed_host_is_reachable_over_http_and_sockets() {
    let allowed = Server::start("hello from the allowed server");
    let refused = Server::start("you should not see this");
    // One entry, without a scheme: HTTP and raw sockets to that ip:port.
    let host = Host::start(&manifest(&format!("[\"{}\"]", allowed.addr)));

    let ok = call(&host, "fetch", &format!(r#"{{"url": "http://{}/x"}}"#, allowed.addr));
    assert_eq!(ok["ok"], "hello from the allowed server", "{ok}");

    let denied = call(&host, "fetch", &format!(r#"{{"url": "http://{}/x"}}"#, refused.addr));
    let error = denied["err"]
        .as_str()
        .unwrap_or_else(|| panic!("not refused: {denied}"));
    assert!(error.contains("HttpRequestDenied"), "{error}");
    let line = host.wait_for_log("outbound HTTP refused");
    assert!(line.contains("outbound"), "{line}");
    assert!(line.contains(&format!("http://{}", refused.addr)), "{line}");

    let ok = call(&host, "connect", &format!(r#"{{"addr": "{}"}}"#, allowed.addr));
    let text = ok["ok"].as_str().unwrap_or_else(|| panic!("connect failed: {ok}"));
    assert!(text.ends_with("hello from the allowed server"), "{text}");

    let denied = call(&host, "connect", &format!(r#"{{"addr": "{}"}}"#, refused.addr));
    let error = denied["err"]
        .as_str()
        .unwrap_or_else(|| panic!("not refused: {denied}"));
    assert!(error.to_lowercase().contains("denied"), "{error}");
    let line = host.wait_for_log("outbound socket refused");
    assert!(line.contains(&refused.addr.to_string()), "{line}");
    assert!(line.contains("outbound"), "{line}");

    assert_eq!(refused.connections(), 0, "the refused server was reached");
    assert_eq!(allowed.connections(), 2);
}

#[test]
fn an_http_entry_does_not_open_raw_sockets() {
    let server = Server::start("over http only");
    let host = Host::start(&manifest(&format!("[\"http://{}\"]", server.addr)));
    let ok = call(&host, "fetch", &format!(r#"{{"url": "http://{}/"}}"#, server.addr));
    assert_eq!(ok["ok"], "over http only", "{ok}");
    let denied = call(&host, "connect", &format!(r#"{{"addr": "{}"}}"#, server.addr));
    assert!(denied["err"].is_string(), "{denied}");
    assert_eq!(server.connections(), 1);
}

#[test]
fn outgoing_http_with_an_empty_list_is_refused_at_load() {
    let stderr = Host::fail(&manifest("[]"));
    assert!(
        stderr.contains("imports `wasi:http/outgoing-handler")
            && stderr.contains("`components.outbound.allowed_outbound_hosts` is empty"),
        "{stderr}"
    );
    let stderr = Host::fail(&manifest(r#"["https://api.example.com", "10.0.0.0/33:80"]"#));
    assert!(
        stderr.contains("components.outbound.allowed_outbound_hosts[1]: \"10.0.0.0/33:80\""),
        "{stderr}"
    );
}

#[test]
fn guest_output_is_tagged_escaped_and_rate_limited() {
    let server = Server::start("still here");
    let host = Host::start(&manifest(&format!("[\"{}\"]", server.addr)));
    assert_eq!(call(&host, "shout", r#"{"lines": 10000}"#), 10000);
    host.wait_for_log("lines of guest output");
    // Summaries come at most once a second: after one, the next line that
    // passes carries the rest of the count.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(call(&host, "shout", r#"{"lines": 0}"#), 0);
    let counted = |log: &str| {
        let dropped: usize = log
            .lines()
            .filter_map(|l| l.split("dropped ").nth(1)?.split(' ').next()?.parse::<usize>().ok())
            .sum();
        (dropped, log.lines().filter(|l| l.contains("shout line ")).count())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while counted(&host.log()).0 + counted(&host.log()).1 < 10_000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Both calls' forged pairs, which reach the log after the calls return.
    host.wait_for_log_count("FORGED host line", 2);
    let log = host.log();
    let (dropped, shown) = counted(&log);

    // The forged line arrives as a guest line of its own, tagged and escaped.
    let forged: Vec<&str> = log.lines().filter(|l| l.contains("FORGED host line")).collect();
    assert_eq!(forged.len(), 2, "{log}");
    for line in forged {
        assert!(!line.starts_with("2099"), "{line}");
        assert!(
            line.contains("component=\"outbound\"") && line.contains("stream=\"stderr\""),
            "{line}"
        );
        assert!(line.contains(r"\r\u{1b}[2K\u{1b}[31merased"), "{line}");
    }
    assert!(
        !log.contains('\x1b') && !log.contains('\r'),
        "raw control characters in the log"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("shout: forged") && l.contains("component=\"outbound\""))
    );

    // 10 000 lines: the burst (200, two of them the forged pair) passes, and
    // 100 a second refill while the flood lasts; the rest is counted.
    assert!((150..=500).contains(&shown), "{shown} lines shown");
    assert_eq!(dropped + shown, 10_000, "dropped {dropped}, shown {shown}");
    assert!(
        log.lines()
            .any(|l| l.contains("shout line 0") && l.contains("stream=\"stdout\""))
    );

    // The host kept answering.
    let ok = call(&host, "fetch", &format!(r#"{{"url": "http://{}/"}}"#, server.addr));
    assert_eq!(ok["ok"], "still here", "{ok}");
}

/// A WASI 0.3 component (`wasi:http/client`) under the same list: the
/// listed server answers it, the other is never connected to, and with an
/// empty list (its service world imports `client` all the same) every
/// request is denied.
#[test]
fn a_wasi_0_3_component_reaches_only_the_listed_hosts() {
    let (allowed, other) = (Server::start("allowed"), Server::start("other"));
    let p3 = |list: &str| {
        format!(
            "[app]\nname = \"outbound-p3\"\n[components.p3]\nsource = \"{{wasm:hello_p3}}\"\n\
             allowed_outbound_hosts = {list}\n[[bindings]]\nmedium = \"http\"\naddress = \"127.0.0.1:0\"\ncomponent = \"p3\"\n"
        )
    };
    let host = Host::start(&p3(&format!("[\"http://{}\"]", allowed.addr)));
    let addr = host.wait_for_http("p3");
    let fetch = |target: SocketAddr| http(addr, "GET", &format!("/fetch?authority={target}"), b"");

    let ok = fetch(allowed.addr);
    assert_eq!((ok.status, ok.body.as_str()), (200, "fetched 200\n"));
    let denied = fetch(other.addr);
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (502, "refused ErrorCode::HttpRequestDenied\n")
    );
    assert_eq!(other.connections(), 0, "a refused request must not connect");
    host.wait_for_log("outbound HTTP refused");

    let closed = Host::start(&p3("[]"));
    let addr = closed.wait_for_http("p3");
    let before = allowed.connections();
    let denied = http(addr, "GET", &format!("/fetch?authority={}", allowed.addr), b"");
    assert_eq!(
        (denied.status, denied.body.as_str()),
        (502, "refused ErrorCode::HttpRequestDenied\n")
    );
    assert_eq!(allowed.connections(), before);
}
