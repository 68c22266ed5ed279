//! The curl examples in README.md and examples/insurance/README.md, run
//! against a real host: each `curl` block's request is sent and the reply must
//! equal the `json` block that follows it.

use crate::support::{Host, http, insurance_manifest, workspace};

/// One curl example: where it goes, what it sends, what it must answer.
struct Example {
    rpc: bool,
    path: String,
    body: Vec<u8>,
    expected: String,
}

/// Every curl example in `doc` that is followed by its `json` reply.
fn examples(doc: &str) -> Vec<Example> {
    let text = std::fs::read_to_string(workspace().join(doc)).unwrap();
    let mut blocks = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let (lang, body) = after.split_once('\n').unwrap();
        let end = body.find("```").unwrap();
        blocks.push((lang.trim().to_string(), body[..end].to_string()));
        rest = &body[end + 3..];
    }
    let mut out = Vec::new();
    for pair in blocks.windows(2) {
        let [(lang, command), (next, expected)] = pair else {
            continue;
        };
        if lang != "sh" || next != "json" || !command.contains("curl") {
            continue;
        }
        // `localhost:8080/quote` is the gateway; `localhost:8081/...` is http-rpc.
        let target = command.split("localhost:").nth(1).expect("a localhost URL");
        let (port, rest) = target.split_once('/').unwrap();
        let path = format!("/{}", rest.split_whitespace().next().unwrap());
        let body = if command.contains("--data @examples/insurance/policy.json") {
            std::fs::read(workspace().join("examples/insurance/policy.json")).unwrap()
        } else {
            let start = command.find("-d '").expect("a -d '...' payload") + 4;
            let len = command[start..].find('\'').unwrap();
            command.as_bytes()[start..start + len].to_vec()
        };
        out.push(Example {
            rpc: port == "8081",
            path,
            body,
            expected: expected.trim().to_string(),
        });
    }
    out
}

fn check(doc: &str, expected_examples: usize) {
    let cases = examples(doc);
    assert_eq!(cases.len(), expected_examples, "curl examples found in {doc}");
    let manifest = format!(
        "{}\n[[bindings]]\nmedium = \"http-rpc\"\naddress = \"127.0.0.1:0\"\ncomponent = \"rater\"\nexport = \"example:insurance/rater@0.1.0#rate\"\n",
        insurance_manifest()
    );
    let host = Host::start(&manifest);
    for case in cases {
        let addr = if case.rpc { host.rpc[0] } else { host.addr() };
        let reply = http(addr, "POST", &case.path, &case.body);
        // Byte for byte: the docs show exactly what a user sees.
        assert_eq!(
            reply.body,
            case.expected,
            "{doc}: reply to {}",
            String::from_utf8_lossy(&case.body)
        );
    }
}

#[test]
fn example_readme_replies_are_what_the_app_answers() {
    check("examples/insurance/README.md", 6);
}

#[test]
fn top_readme_reply_is_what_the_app_answers() {
    check("README.md", 1);
}
