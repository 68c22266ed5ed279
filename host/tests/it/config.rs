//! wasi:config in every version SDKs import (`runtime@0.2.0-draft`,
//! `store@0.2.0-draft`, `store@0.2.0-draft-2024-09-27`, `store@0.2.0-rc.1`):
//! one component imports all four and reads the same manifest table through
//! each.

use crate::support::{Host, http};
use serde_json::{Value, json};

const MANIFEST: &str = r#"
[app]
name = "config"

[components.reader]
source = "{wasm:config_versions}"
config = { greeting = "hello", port = 8080, "motor.base" = "420" }

[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "reader"
export = "example:config-versions/reader@0.1.0#read"

[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "reader"
export = "example:config-versions/reader@0.1.0#keys"
"#;

const VERSIONS: [&str; 4] = ["runtime-draft", "store-draft", "store-2024-09-27", "store-rc1"];

/// Calls `reader#function` with `params`; the JSON answer.
fn call(host: &Host, function: &str, params: Value) -> Value {
    let reply = http(
        host.rpc[0],
        "POST",
        &format!("/rpc/reader/{function}"),
        params.to_string().as_bytes(),
    );
    assert_eq!(reply.status, 200, "{function}: {}", reply.body);
    reply.json()
}

#[test]
fn every_wasi_config_version_reads_the_same_table() {
    let host = Host::start(MANIFEST);
    for version in VERSIONS {
        let read = |key: &str| call(&host, "read", json!({ "version": version, "key": key }));
        assert_eq!(read("greeting"), json!({ "ok": "hello" }), "{version}");
        assert_eq!(read("port"), json!({ "ok": "8080" }), "{version}");
        assert_eq!(read("motor.base"), json!({ "ok": "420" }), "{version}");
        assert_eq!(read("absent"), json!({ "ok": null }), "{version}");
        assert_eq!(
            call(&host, "keys", json!({ "version": version })),
            json!({ "ok": ["greeting", "motor.base", "port"] }),
            "{version}"
        );
    }
}
