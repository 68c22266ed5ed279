//! Composed links: a caller and its callee on one host fused into one
//! component. The callee keeps its own grants inside the composition (a
//! caller granted the network, a directory and a bucket; a callee granted
//! none of them), the example answers as it does with dynamic links, and
//! the host says which links it composed and why the others are not.

use crate::support::{Host, Server, example_policy, http, insurance_manifest};
use std::net::SocketAddr;

/// `caller` granted `server`, `dir` (as /data) and bucket `shared`;
/// `callee` granted `callee_grants` (a TOML fragment); each `reach`
/// function bound for both, at `/self/F` (the caller itself) and `/peer/F`
/// (the callee, through the link).
fn manifest(app: &str, server: SocketAddr, dir: &std::path::Path, callee_grants: &str) -> String {
    let mut text = format!(
        r#"
[app]
name = "{app}"

[components.caller]
source = "{{wasm:reach_caller}}"
allowed_outbound_hosts = ["{server}"]
keyvalue = {{ buckets = ["shared"] }}
[components.caller.wasi.dirs]
"/data" = "{}"

[components.callee]
source = "{{wasm:reach}}"
{callee_grants}

[[links]]
from = "caller"
import = "example:reach/reach@0.1.0"
to = "callee"
"#,
        dir.display()
    );
    for function in ["fetch", "read", "store", "fail"] {
        for (interface, path) in [("reach", "self"), ("peer", "peer")] {
            text.push_str(&format!(
                "\n[[bindings]]\nmedium = \"http-rpc\"\naddress = \"127.0.0.1:0\"\ncomponent = \"caller\"\n\
                 export = \"example:reach/{interface}@0.1.0#{function}\"\npath = \"/{path}/{function}\"\n"
            ));
        }
    }
    text
}

/// How the status page says `caller`'s link is made: (made, why).
fn link_made(host: &Host) -> (String, String) {
    let status = http(host.admin(), "GET", "/status.json", b"").json();
    let caller = status["components"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == "caller"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(caller["links"][0]["to"], "callee", "{caller}");
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    (text(&caller["links"][0]["made"]), text(&caller["links"][0]["why"]))
}

/// Calls `/who/function` with one string argument `name = value`.
fn call(host: &Host, who: &str, function: &str, arg: (&str, &str)) -> crate::support::Response {
    let body = serde_json::json!({ arg.0: arg.1 }).to_string();
    http(host.rpc[0], "POST", &format!("/{who}/{function}"), body.as_bytes())
}

fn result(host: &Host, who: &str, function: &str, arg: (&str, &str)) -> serde_json::Value {
    let reply = call(host, who, function, arg);
    assert_eq!(reply.status, 200, "{who}/{function}: {}", reply.body);
    reply.json()
}

#[test]
fn a_composed_callee_keeps_its_own_grants_while_its_caller_uses_its_own() {
    let granted = Server::start("hello from the granted server");
    let addr = granted.addr;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("secret.txt"), "the caller's file").expect("write");
    // The same network and bucket grants as the caller; no directory.
    let same = format!("allowed_outbound_hosts = [\"{addr}\"]\nkeyvalue = {{ buckets = [\"shared\"] }}");
    let host = Host::start(&manifest("reach-composed", addr, dir.path(), &same));
    let line = host.wait_for_log("composed links");
    assert!(line.contains("caller -> callee"), "{line}");
    assert_eq!(link_made(&host).0, "composed");

    // A directory: the caller reads its file; composed into it, the callee
    // still finds no /data.
    assert_eq!(
        result(&host, "self", "read", ("path", "/data/secret.txt"))["ok"],
        "the caller's file"
    );
    let denied = result(&host, "peer", "read", ("path", "/data/secret.txt"));
    assert!(
        denied["err"].is_string(),
        "the callee read the caller's directory: {denied}"
    );

    // What both were granted, both may use.
    let url = format!("http://{addr}/x");
    assert_eq!(
        result(&host, "self", "fetch", ("url", &url))["ok"],
        "hello from the granted server"
    );
    assert_eq!(
        result(&host, "peer", "fetch", ("url", &url))["ok"],
        "hello from the granted server"
    );
    assert_eq!(granted.connections(), 2);
    assert_eq!(result(&host, "peer", "store", ("bucket", "shared"))["ok"], "ok");

    // A trap is still its own component's fault, named.
    for (who, culprit) in [("peer", "callee"), ("self", "caller")] {
        let reply = call(&host, who, "fail", ("message", "on purpose"));
        assert_eq!(reply.status, 500, "{}", reply.body);
        let fault = reply.json();
        assert_eq!(fault["component"], culprit, "{fault}");
        assert_eq!(fault["kind"], "trap", "{fault}");
    }
    // The composed instance that trapped is gone; the next call gets a
    // fresh one.
    assert_eq!(result(&host, "peer", "store", ("bucket", "shared"))["ok"], "ok");
}

#[test]
fn a_callee_with_other_grants_stays_dynamic_and_keeps_them() {
    let (their_server, my_server) = (
        Server::start("the caller's server"),
        Server::start("the callee's server"),
    );
    let (theirs, mine) = (their_server.addr, my_server.addr);
    let dir = tempfile::tempdir().expect("temp dir");
    let other = format!("allowed_outbound_hosts = [\"{mine}\"]\nkeyvalue = {{ buckets = [\"mine\"] }}");
    let host = Host::start(&manifest("reach-dynamic", theirs, dir.path(), &other));
    let line = host.wait_for_log("stays dynamic");
    assert!(line.contains("caller -> callee"), "{line}");
    let (made, why) = link_made(&host);
    assert_eq!(made, "dynamic");
    assert!(
        why.contains("allowed_outbound_hosts") || why.contains("keyvalue.buckets"),
        "{why}"
    );

    // The network: the callee reaches its own server only.
    let denied = result(&host, "peer", "fetch", ("url", &format!("http://{theirs}/x")));
    let error = denied["err"]
        .as_str()
        .unwrap_or_else(|| panic!("the callee used the caller's grant: {denied}"));
    assert!(error.contains("HttpRequestDenied"), "{error}");
    assert_eq!(
        their_server.connections(),
        0,
        "the callee's request reached the caller's server"
    );
    let url = format!("http://{mine}/x");
    assert_eq!(
        result(&host, "peer", "fetch", ("url", &url))["ok"],
        "the callee's server"
    );
    assert_eq!(my_server.connections(), 1);

    // A bucket: its own, not the caller's.
    let denied = result(&host, "peer", "store", ("bucket", "shared"));
    let error = denied["err"]
        .as_str()
        .unwrap_or_else(|| panic!("the callee opened the caller's bucket: {denied}"));
    assert!(error.contains("AccessDenied"), "{error}");
    assert_eq!(result(&host, "peer", "store", ("bucket", "mine"))["ok"], "ok");
    assert_eq!(result(&host, "self", "store", ("bucket", "shared"))["ok"], "ok");
}

#[test]
fn the_example_composed_answers_as_it_does_with_dynamic_links() {
    let body = example_policy();
    let mut answers = Vec::new();
    for links in ["composed", "dynamic"] {
        let manifest = insurance_manifest().replace(
            "name = \"insurance\"",
            &format!("name = \"insurance\"\nlinks = \"{links}\""),
        );
        let host = Host::start(&manifest);
        let reply = http(host.addr(), "POST", "/quote", &body);
        assert_eq!(reply.status, 200, "{links}: {}", reply.body);
        if links == "composed" {
            let line = host.wait_for_log("composed links");
            assert!(line.contains("gateway -> rater, rater -> pricing"), "{line}");
            assert!(line.contains("into `gateway`"), "{line}");
        }
        answers.push(reply.body);
    }
    assert_eq!(answers[0], answers[1]);
}
