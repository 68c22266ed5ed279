//! The curl examples in README.md and examples/insurance/README.md, run
//! against a real host: each `curl` block's request is sent and the reply must
//! equal the `json` block that follows it.

mod support;

use support::{Host, http, insurance_manifest, workspace};

/// `(request body, expected reply)` for every curl example in `doc`.
fn examples(doc: &str) -> Vec<(Vec<u8>, String)> {
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
        if lang != "sh" || next != "json" || !command.contains("curl") || !command.contains("/quote") {
            continue;
        }
        let body = if command.contains("--data @examples/insurance/policy.json") {
            std::fs::read(workspace().join("examples/insurance/policy.json")).unwrap()
        } else {
            let start = command.find("-d '").expect("a -d '...' payload") + 4;
            let len = command[start..].find('\'').unwrap();
            command.as_bytes()[start..start + len].to_vec()
        };
        out.push((body, expected.trim().to_string()));
    }
    out
}

fn check(doc: &str, expected_examples: usize) {
    let cases = examples(doc);
    assert_eq!(cases.len(), expected_examples, "curl examples found in {doc}");
    let host = Host::start(&insurance_manifest());
    for (request, expected) in cases {
        let reply = http(host.addr(), "POST", "/quote", &request);
        let expected: serde_json::Value = serde_json::from_str(&expected).unwrap();
        assert_eq!(
            reply.json(),
            expected,
            "{doc}: reply to {}",
            String::from_utf8_lossy(&request)
        );
    }
}

#[test]
fn example_readme_replies_are_what_the_app_answers() {
    check("examples/insurance/README.md", 4);
}

#[test]
fn top_readme_reply_is_what_the_app_answers() {
    check("README.md", 1);
}
