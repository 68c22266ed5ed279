//! The JSON mapping of every WIT value type, both ways, through a real
//! component: `echo`'s `values#roundtrip` returns its argument, so what goes
//! in over http-rpc must come back byte for byte; and every kind of wrong
//! shape is refused with the path, the expectation and what was found.

use crate::support;
use crate::support::{Host, http};
use serde_json::{Value, json};

const MANIFEST: &str = r#"
[app]
name = "codec"

[components.echo]
source = "{wasm:echo}"

[[bindings]]
medium = "http-rpc"
address = "127.0.0.1:0"
component = "echo"
export = "example:testkit/values@0.1.0#roundtrip"
"#;

fn everything() -> Value {
    json!({
        "flag": true,
        "a": -128, "b": 255, "c": -32768, "d": 65535,
        "e": -2147483648i64, "f": 4294967295u64,
        "g": i64::MIN, "h": u64::MAX,
        "x": 1.5, "y": -0.000123,
        "ch": "ß", "text": "héllo \"world\"",
        "bytes": [0, 1, 255],
        "pair": ["left", 7],
        "color": "green",
        "perms": ["read", "exec"],
        "shape": { "circle": 2.5 },
        "maybe": null,
        "maybe-maybe": { "some": null },
        "outcome": { "err": "nope" },
        "unit-result": { "ok": null },
        "nested": [[{ "square": 3 }, "point"], []]
    })
}

fn call(host: &Host, v: &Value) -> support::Response {
    http(
        host.rpc[0],
        "POST",
        "/rpc/echo/roundtrip",
        json!({ "v": v }).to_string().as_bytes(),
    )
}

#[test]
fn every_wit_type_round_trips_through_json_exactly() {
    let host = Host::start(MANIFEST);
    let reply = call(&host, &everything());
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Byte for byte: key order follows the WIT record, 64-bit extremes are exact.
    assert_eq!(reply.body, everything().to_string());
    assert!(reply.body.contains("\"h\":18446744073709551615"));
    assert!(reply.body.contains("\"g\":-9223372036854775808"));

    // The other spellings the mapping accepts come back in canonical form.
    let mut variants = everything();
    variants["h"] = json!("18446744073709551615"); // u64 as a decimal string
    variants["maybe-maybe"] = json!(null); // none
    variants["shape"] = json!({ "point": null }); // payload-less case as an object
    variants["maybe"] = json!("there");
    variants["y"] = json!("-Infinity");
    let reply = call(&host, &variants).json();
    assert_eq!(reply["h"], json!(u64::MAX));
    assert_eq!(reply["maybe-maybe"], json!(null));
    assert_eq!(reply["shape"], json!("point"));
    assert_eq!(reply["maybe"], json!("there"));
    assert_eq!(reply["y"], json!("-Infinity"));
}

#[test]
fn wrong_shapes_are_refused_with_path_expected_and_found() {
    let host = Host::start(MANIFEST);
    let cases: &[(&str, Value, &str)] = &[
        ("b", json!(256), "$.v.b: expected u8 in range, found number 256"),
        ("a", json!(-129), "$.v.a: expected s8 in range, found number -129"),
        ("f", json!(-1), "$.v.f: expected u32 in range, found number -1"),
        (
            "h",
            json!("12x"),
            "$.v.h: expected u64 (a number or a decimal string), found string \"12x\"",
        ),
        ("e", json!(1.5), "$.v.e: expected s32 in range, found number 1.5"),
        ("flag", json!("yes"), "$.v.flag: expected bool, found string \"yes\""),
        (
            "ch",
            json!("ab"),
            "$.v.ch: expected char (a one-character string), found string \"ab\"",
        ),
        (
            "color",
            json!("purple"),
            "$.v.color: expected enum { red, green, blue }, found string \"purple\"",
        ),
        (
            "perms",
            json!(["read", "fly"]),
            "$.v.perms[1]: expected flags { read, write, exec }, found string \"fly\"",
        ),
        (
            "shape",
            json!({ "hexagon": 1 }),
            "$.v.shape: expected variant { circle, square, point }, found an object",
        ),
        (
            "shape",
            json!({ "circle": "big" }),
            "$.v.shape.circle: expected f64, found string \"big\"",
        ),
        (
            "pair",
            json!(["x"]),
            "$.v.pair: expected tuple<string, u32>, found an array of 1",
        ),
        (
            "outcome",
            json!({ "fine": 1 }),
            "$.v.outcome: expected {\"ok\": value} or {\"err\": value}, found an object",
        ),
        (
            "nested",
            json!([[{ "square": -3 }]]),
            "$.v.nested[0][0].square: expected u32 in range, found number -3",
        ),
        (
            "text",
            json!(null),
            "$.v.text: expected string, found nothing (missing field)",
        ),
    ];
    for (field, value, expected) in cases {
        let mut doc = everything();
        doc[*field] = value.clone();
        let reply = call(&host, &doc);
        assert_eq!(reply.status, 400, "{field}: {}", reply.body);
        assert_eq!(reply.json()["error"], *expected, "{field}");
    }

    let mut unknown = everything();
    unknown["extra"] = json!(1);
    assert_eq!(
        call(&host, &unknown).json()["error"],
        "$.v.extra: expected one of the fields of record { flag, a, b, c, .. }, found an unknown field"
    );
    let reply = http(host.rpc[0], "POST", "/rpc/echo/roundtrip", b"[1, 2]");
    assert_eq!(
        reply.json()["error"],
        "$: expected a JSON object of the parameters, found an array of 2"
    );
    let reply = http(host.rpc[0], "POST", "/rpc/echo/nothing", b"{}");
    assert_eq!(reply.status, 404);
    let reply = http(host.rpc[0], "GET", "/rpc/echo/roundtrip", b"");
    assert_eq!(reply.status, 405);
}
