//! The shared logic answers the README's quote byte for byte, and names its
//! errors, with the example's own price tables.

use insurance::json::quote_response;
use insurance::model::Line;
use insurance::{price_table, rate};

const POLICY: &[u8] = include_bytes!("../../../examples/insurance/policy.json");

/// The pricing config of `examples/insurance/colocated.toml`.
fn config(key: &str) -> Result<Option<String>, String> {
    let value = match key {
        "currency" => "EUR",
        "motor.base" => "420",
        "motor.collision" => "0.25",
        "motor.theft" => "0.10",
        "motor.glass" => "0.05",
        "motor.roadside" => "0.03",
        "home.base" => "180",
        "life.base" => "95",
        _ => return Ok(None),
    };
    Ok(Some(value.to_string()))
}

fn answer(body: &[u8]) -> (u16, String) {
    quote_response(body, |policy| rate(&policy, |line| price_table(line, config)))
}

#[test]
fn the_example_policy_gets_the_readme_quote() {
    let (status, body) = answer(POLICY);
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"policy_id":1001,"premium":936.92,"currency":"EUR","breakdown":[["base",420.0],["subject",500.0],["drivers",28.81],["collision",105.0],["theft",42.0],["deductible",-54.79],["welcome",-104.1]],"risk":"medium","valid_days":30,"reference":1049644988,"warnings":[]}"#
    );
}

#[test]
fn errors_are_named() {
    let (status, body) = answer(b"{\"id\": 1}");
    assert_eq!(status, 400);
    assert!(body.contains("invalid policy: missing field `holder`"), "{body}");

    let flood = br#"{"id":2,"holder":"B","region":"S","subject":{"vehicle":{"kind":"van","year":2020,"value_cents":1}},"coverage":["flood"],"drivers":[{"name":"B","age":40}],"start_day":0}"#;
    assert_eq!(
        answer(flood),
        (
            422,
            r#"{"error":"unsupported_coverage","coverage":["flood"]}"#.to_string()
        )
    );

    let old = br#"{"id":3,"holder":"C","region":"S","subject":{"person":{"age":90}},"start_day":0}"#;
    assert_eq!(
        answer(old),
        (
            422,
            r#"{"error":"declined","risk":"high","reason":"age 90 is above 85"}"#.to_string()
        )
    );

    let missing = price_table(Line::Life, |_| Ok(None)).unwrap_err();
    assert_eq!(missing, "no `life.base` in the pricing config");
}
