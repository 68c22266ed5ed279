//! The link-shortener example (`examples/links`) as its README tells it: each
//! `sh` block of curl commands is run with the real `curl` and must print
//! exactly the `text` block that follows it, in both layouts (one host, and
//! three hosts that differ only in placement).

use crate::support::nats::NatsServer;
use crate::support::{Host, with_paths, workspace};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// The example's manifest `file` with test paths and a free port.
fn manifest(file: &str) -> String {
    let text = std::fs::read_to_string(workspace().join("examples/links").join(file)).expect("example manifest");
    let mut text = text.replace("127.0.0.1:8090", "127.0.0.1:0");
    for name in ["links_api", "links_redirect", "links_clicks"] {
        text = text.replace(
            &format!("../../target/wasm32-wasip2/release/{name}.wasm"),
            &format!("{{wasm:{name}}}"),
        );
    }
    with_paths(&text)
}

/// The README's `(commands, output)` pairs: each `sh` block with `curl`
/// and the `text` block after it.
fn tour() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(workspace().join("examples/links/README.md")).expect("README");
    let mut blocks = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let (lang, body) = after.split_once('\n').expect("a fenced block");
        let end = body.find("```").expect("a closed block");
        blocks.push((lang.trim().to_string(), body[..end].to_string()));
        rest = &body[end + 3..];
    }
    blocks
        .windows(2)
        .filter(|pair| pair[0].0 == "sh" && pair[1].0 == "text" && pair[0].1.contains("curl"))
        .map(|pair| (pair[0].1.clone(), pair[1].1.trim_end().to_string()))
        .collect()
}

/// Runs `commands` against the app at `addr`; what they print.
fn run(commands: &str, addr: SocketAddr) -> String {
    let script = commands.replace("localhost:8090", &addr.to_string());
    let out = Command::new("sh")
        .args(["-c", &format!("set -e\n{script}")])
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Takes the README's tour against the app at `addr`.
fn take_the_tour(addr: SocketAddr, layout: &str) {
    let steps = tour();
    assert_eq!(steps.len(), 4, "curl steps in examples/links/README.md");
    for (commands, expected) in steps {
        // Clicks are counted from a queue: the count may lag the redirects,
        // so that one step is polled until it is what the README shows.
        let eventually = expected.contains("\"clicks\":");
        let started = Instant::now();
        loop {
            let printed = run(&commands, addr);
            if printed == expected {
                break;
            }
            assert!(
                eventually && started.elapsed() < Duration::from_secs(10),
                "{layout}: `{commands}` printed\n{printed}\nbut the README shows\n{expected}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn the_readme_tour_answers_as_written_on_one_host() {
    let server = NatsServer::start();
    let host = Host::start_with(
        &manifest("colocated.toml"),
        &["--nats", &server.url(), "--lattice", "links"],
    );
    take_the_tour(host.addr(), "colocated");
}

#[test]
fn the_readme_tour_answers_as_written_on_two_hosts() {
    let server = NatsServer::start();
    let manifest = manifest("distributed.toml");
    let node = |label: &str| {
        Host::start_with(
            &manifest,
            &["--nats", &server.url(), "--lattice", "links", "--label", label],
        )
    };
    let clicks = node("node=b");
    let web = node("node=a");
    take_the_tour(web.addr(), "distributed");
    // The clicks were counted on the other host.
    assert!(!web.log().contains("serving queue"), "{}", web.log());
    assert!(clicks.log().contains("serving queue links.clicks"), "{}", clicks.log());
}
