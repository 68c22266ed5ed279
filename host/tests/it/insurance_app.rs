//! The example app over HTTP: gateway -> rater -> pricing, in one process.

use crate::support;
use crate::support::{Host, dynamic_links, example_policy, http, insurance_manifest, keep_alive, raw};

#[test]
fn quote_flows_from_gateway_through_rater_and_pricing() {
    let host = Host::start(&insurance_manifest());
    let response = http(host.addr(), "POST", "/quote", &example_policy());
    assert_eq!(response.status, 200, "{}", response.body);
    let quote = response.json();
    assert_eq!(quote["policy_id"], 1001);
    assert_eq!(quote["currency"], "EUR");
    assert_eq!(quote["risk"], "medium");
    // Base 420 from pricing's config, the two extras priced by pricing's loadings.
    let breakdown = &quote["breakdown"];
    assert_eq!(breakdown[0], serde_json::json!(["base", 420.0]));
    assert!(
        breakdown
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["collision", 105.0]))
    );
    assert!(
        breakdown
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["theft", 42.0]))
    );
    assert_eq!(quote["premium"], 936.92);
    // The rater logged through wasi:logging, tagged with its component name.
    assert!(host.wait_for_log("policy 1001 rated at 936.92 EUR").contains("rater"));
}

#[test]
fn pricing_reads_its_table_from_manifest_config() {
    let manifest = insurance_manifest()
        .replace("\"motor.base\" = \"420\"", "\"motor.base\" = 1000")
        .replace("currency = \"EUR\"", "currency = \"CHF\"");
    let host = Host::start(&manifest);
    let quote = http(host.addr(), "POST", "/quote", &example_policy()).json();
    assert_eq!(quote["breakdown"][0], serde_json::json!(["base", 1000.0]));
    assert_eq!(quote["currency"], "CHF");
}

#[test]
fn rating_errors_come_back_as_typed_json() {
    let host = Host::start(&insurance_manifest());
    let policy = String::from_utf8(example_policy()).unwrap();

    let flood_on_a_car = policy.replace(r#"["collision", "theft"]"#, r#"["collision", "flood"]"#);
    let response = http(host.addr(), "POST", "/quote", flood_on_a_car.as_bytes());
    assert_eq!(response.status, 422);
    assert_eq!(
        response.json(),
        serde_json::json!({"error": "unsupported_coverage", "coverage": ["flood"]})
    );

    let old_life = r#"{"id": 7, "holder": "Old", "region": "S", "subject": {"person": {"age": 90}}, "start_day": -3}"#;
    let response = http(host.addr(), "POST", "/quote", old_life.as_bytes());
    assert_eq!(response.status, 422);
    assert_eq!(
        response.json(),
        serde_json::json!({"error": "declined", "risk": "high", "reason": "age 90 is above 85"})
    );
}

#[test]
fn malformed_json_body_gets_400_naming_the_problem() {
    let host = Host::start(&insurance_manifest());
    let response = http(host.addr(), "POST", "/quote", b"{\"id\": 1, \"holder\": ");
    assert_eq!(response.status, 400);
    let error = response.json()["error"].as_str().unwrap().to_string();
    assert!(error.starts_with("invalid policy: EOF while parsing"), "{error}");
    assert!(error.contains("line 1 column 20"), "{error}");

    let response = http(host.addr(), "POST", "/quote", br#"{"id": 1, "holdr": "x"}"#);
    assert_eq!(response.status, 400);
    assert!(response.body.contains("unknown field `holdr`"), "{}", response.body);

    let response = http(host.addr(), "POST", "/quote", br#"{"id": -1}"#);
    assert_eq!(response.status, 400);
    assert!(
        response.body.contains("invalid value: integer `-1`, expected u64"),
        "{}",
        response.body
    );

    // And the app carries on.
    assert_eq!(http(host.addr(), "POST", "/quote", &example_policy()).status, 200);
}

#[test]
fn malformed_http_gets_400_and_the_host_keeps_serving() {
    let mut host = Host::start(&insurance_manifest());
    let reply = String::from_utf8_lossy(&raw(host.addr(), b"NOT HTTP AT ALL\r\n\r\n")).to_string();
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply:?}");
    assert!(host.is_running());
    assert_eq!(http(host.addr(), "GET", "/health", b"").body, r#"{"status":"ok"}"#);
    assert_eq!(http(host.addr(), "GET", "/nope", b"").status, 404);
    assert_eq!(http(host.addr(), "GET", "/quote", b"").status, 405);
}

#[test]
fn second_start_loads_compiled_code_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let manifest = insurance_manifest();
    let first = Host::try_start(&manifest, cache.path()).ok().expect("first start");
    assert!(first.log().contains("compiled gateway in"), "{}", first.log());
    drop(first);
    let second = Host::try_start(&manifest, cache.path()).ok().expect("second start");
    for component in ["gateway", "rater", "pricing"] {
        assert!(
            second.log().contains(&format!("loaded from cache {component} in")),
            "{}",
            second.log()
        );
    }
    assert_eq!(http(second.addr(), "POST", "/quote", &example_policy()).status, 200);
}

/// Compiled code is native code: an entry changed in the cache directory
/// (one byte flipped) is never loaded; the host compiles afresh and serves.
#[test]
fn a_tampered_cache_entry_is_compiled_afresh_never_loaded() {
    let cache = tempfile::tempdir().unwrap();
    let manifest = dynamic_links(&insurance_manifest());
    drop(Host::try_start(&manifest, cache.path()).ok().expect("first start"));
    let mut flipped = 0;
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
            flipped += 1;
        }
    }
    assert_eq!(flipped, 3, "one entry per component");
    let second = Host::try_start(&manifest, cache.path()).ok().expect("second start");
    for component in ["gateway", "rater", "pricing"] {
        assert!(
            second.log().contains(&format!("compiled {component} in")),
            "{}",
            second.log()
        );
    }
    assert!(!second.log().contains("loaded from cache"), "{}", second.log());
    assert!(second.log().contains("its tag does not match"), "{}", second.log());
    assert_eq!(http(second.addr(), "POST", "/quote", &example_policy()).status, 200);
}

#[test]
fn a_fault_deep_in_the_link_chain_names_the_component_that_failed() {
    // `pricing` fails when `rater` first calls it, two links away from the request.
    let manifest = support::starve_pricing(&insurance_manifest());
    let host = Host::start(&manifest);
    let response = http(host.addr(), "POST", "/quote", &example_policy());
    assert_eq!(response.status, 500);
    assert_eq!(response.json()["component"], "pricing");
    assert_eq!(
        response.json()["error"],
        "component `pricing` exceeded its memory limit of 1 MiB"
    );
    assert_eq!(http(host.addr(), "GET", "/health", b"").status, 200);
}

#[test]
fn one_connection_serves_many_requests_with_keep_alive() {
    let host = Host::start(&insurance_manifest());
    let bodies = keep_alive(host.addr(), "/health", 5);
    assert_eq!(bodies, vec![r#"{"status":"ok"}"#; 5]);
}
