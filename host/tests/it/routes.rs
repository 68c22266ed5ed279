//! HTTP routes as a user meets them with `curl`: several components on one
//! port by route and host (Spin's rules and headers, a Spin component built
//! with the published spin-sdk served unmodified), HTTP/2 with prior
//! knowledge, HTTPS with a self-signed certificate (HTTP/1.1 and h2 by
//! ALPN), and a route whose component runs on another host (a WASI 0.2
//! and a WASI 0.3 one).

use crate::support::Host;
use crate::support::curl::curl;
use crate::support::nats::NatsServer;
use std::path::Path;
use std::process::Command;

/// Four routes on one port: a Spin component under `/spin/...`, an exact
/// route inside it, an echo, and a catch-all for one host name only.
const ROUTED: &str = r#"
[app]
name = "routed"

[components.spin]
source = "{wasm:spin_hello}"

[components.exact]
source = "{wasm:versioned_v1}"

[components.echo]
source = "{wasm:echo}"

[components.other]
source = "{wasm:versioned_v2}"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "spin"
route = "/spin/..."

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "exact"
route = "/spin/hello/exact"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "echo"
route = "/echo/..."

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "other"
host = "other.example"
"#;

#[test]
fn one_port_serves_several_components_by_route_with_spin_headers_over_h1_and_h2c() {
    let host = Host::start(ROUTED);
    let addr = host.listening("http");
    let url = |path: &str| format!("http://{addr}{path}");

    // The Spin component, unmodified: its router matches on spin-path-info.
    let hello = curl(&[&url("/spin/hello/ann")]);
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello, ann"));
    // The exact route beats the wildcard that also matches.
    let exact = curl(&[&url("/spin/hello/exact")]);
    assert_eq!(exact.json()["version"], 1, "{}", exact.text());

    // Spin's headers, as Spin sets them; a forged one is replaced.
    let headers = curl(&["-H", "spin-path-info: /forged", &url("/spin/headers?x=1")]);
    let got = headers.json();
    assert_eq!(got["spin-full-url"], format!("http://{addr}/spin/headers?x=1"));
    assert_eq!(got["spin-path-info"], "/headers");
    assert_eq!(got["spin-matched-route"], "/spin/...");
    assert_eq!(got["spin-raw-component-route"], "/spin/...");
    assert_eq!(got["spin-component-route"], "/spin");
    assert_eq!(got["spin-base-path"], "/");
    assert!(
        got["spin-client-addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{got}"
    );

    // A body goes to the echo route and back.
    let echoed = curl(&["--data-binary", "routed body", &url("/echo/anything")]);
    assert_eq!((echoed.status, echoed.text().as_str()), (200, "routed body"));

    // A route limited to a host name; elsewhere nothing matches.
    let other = curl(&["-H", "Host: Other.Example:80", &url("/nothing")]);
    assert_eq!(other.json()["version"], 2, "{}", other.text());
    let missing = curl(&[&url("/nothing")]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["kind"], "not-found");
    assert!(missing.text().contains("/nothing"), "{}", missing.text());

    // HTTP/2 with prior knowledge (h2c) on the same port.
    let h2 = curl(&["--http2-prior-knowledge", &url("/spin/hello/h2")]);
    assert_eq!(
        (h2.status, h2.version.as_str(), h2.text().as_str()),
        (200, "2", "hello, h2")
    );
    let h2_echo = curl(&["--http2-prior-knowledge", "--data-binary", "over h2", &url("/echo/")]);
    assert_eq!((h2_echo.version.as_str(), h2_echo.text().as_str()), ("2", "over h2"));
}

/// A self-signed certificate for 127.0.0.1 and localhost in `dir`.
fn self_signed(dir: &Path) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(status.success(), "openssl could not make a certificate");
}

#[test]
fn https_serves_http1_and_h2_by_alpn_and_bad_pem_is_named_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    let manifest = |cert: &str| {
        format!(
            r#"
[app]
name = "secure"

[components.spin]
source = "{{wasm:spin_hello}}"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "spin"
tls = {{ cert = "{}", key = "{}" }}
"#,
            dir.path().join(cert).display(),
            dir.path().join("key.pem").display()
        )
    };
    let host = Host::start(&manifest("cert.pem"));
    let addr = host.listening("https");
    let url = format!("https://{addr}/headers");
    let cacert = dir.path().join("cert.pem").display().to_string();

    let h2 = curl(&["--cacert", &cacert, "--http2", &url]);
    assert_eq!((h2.status, h2.version.as_str()), (200, "2"), "{}", h2.text());
    assert_eq!(h2.json()["spin-full-url"], format!("https://{addr}/headers"));
    let h1 = curl(&[
        "--cacert",
        &cacert,
        "--http1.1",
        &format!("https://localhost:{}/hello/tls", addr.port()),
    ]);
    assert_eq!(
        (h1.status, h1.version.as_str(), h1.text().as_str()),
        (200, "1.1", "hello, tls")
    );
    assert!(
        h1.headers.to_ascii_lowercase().contains("content-type: text/plain"),
        "{}",
        h1.headers
    );

    // TLS 1.3 only: a client that offers at most TLS 1.2 gets no session.
    let tls12 = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", &cacert, "--tls-max", "1.2", &url])
        .output()
        .unwrap();
    assert!(
        !tls12.status.success(),
        "a TLS 1.2 session was accepted: {}",
        String::from_utf8_lossy(&tls12.stdout)
    );

    // Plain HTTP to the TLS port is refused, not served.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "10", &format!("http://{addr}/hello/x")])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plain HTTP was served on a TLS port");

    // A key that is not PEM stops the host before it listens, naming the
    // field and the file.
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let stderr = Host::fail(&manifest("junk.pem"));
    assert!(
        stderr.contains("bindings[0].tls.cert") && stderr.contains("junk.pem"),
        "{stderr}"
    );
}

/// `echo` and `spin` on node b; the listener's own component on node a.
const SPLIT: &str = r#"
[app]
name = "split"

[components.front]
source = "{wasm:versioned_v1}"
placement = { node = "a" }

[components.echo]
source = "{wasm:echo}"
placement = { node = "b" }

[components.spin]
source = "{wasm:spin_hello}"
placement = { node = "b" }

[components.p3]
source = "{wasm:hello_p3}"
placement = { node = "b" }

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "front"
route = "/"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "p3"
route = "/p3/..."

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "echo"
route = "/echo/..."

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "spin"
route = "/spin/..."
"#;

#[test]
fn a_route_to_a_component_on_another_host_is_answered_byte_for_byte() {
    let server = NatsServer::start();
    let args = |label: &'static str| {
        [
            "--nats".to_string(),
            server.url(),
            "--lattice".into(),
            "routes".into(),
            "--label".into(),
            label.into(),
        ]
    };
    // The host of the routed components first, so that `a` finds it.
    let b_args = args("node=b");
    let b = Host::start_with(SPLIT, &b_args.iter().map(String::as_str).collect::<Vec<_>>());
    b.wait_for_log("serving lattice http routes for echo, p3, spin");
    let a_args = args("node=a");
    let a = Host::start_with(SPLIT, &a_args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = a.listening("http");
    let url = |path: &str| format!("http://{addr}{path}");

    let front = curl(&[&url("/")]);
    assert_eq!(front.json()["version"], 1, "{}", front.text());

    // 900 KiB each way (`echo` takes up to 1 MiB): four pieces per body.
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..900u32 << 10)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &big).unwrap();
    let data = format!("@{}", file.display());
    let echoed = curl(&[
        "--data-binary",
        &data,
        "-H",
        "content-type: application/octet-stream",
        &url("/echo/big"),
    ]);
    assert_eq!(echoed.status, 200, "{}", echoed.text());
    assert_eq!(echoed.body.len(), big.len());
    assert!(echoed.body == big, "the body came back changed");
    // A WASI 0.3 component on the other host: its bodies cross both ways.
    let download = curl(&[&url("/p3/download?mib=3")]);
    assert_eq!((download.status, download.body.len()), (200, 3 << 20));
    let p3_echo = curl(&["--data-binary", &data, &url("/p3/echo")]);
    assert_eq!(p3_echo.status, 200, "{}", p3_echo.text());
    assert!(
        p3_echo.body == big,
        "the body came back changed through the 0.3 component"
    );
    // Over h2 too, and the Spin headers are the listener's.
    let spin = curl(&["--http2-prior-knowledge", &url("/spin/headers")]);
    assert_eq!(spin.version, "2");
    assert_eq!(spin.json()["spin-path-info"], "/headers");
    assert_eq!(spin.json()["spin-full-url"], format!("http://{addr}/spin/headers"));
    assert!(
        !a.log().contains("started echo"),
        "echo must not run on a:\n{}",
        a.log()
    );

    // With the other host gone, the route fails fast with a typed 503.
    b.kill();
    let started = std::time::Instant::now();
    let gone = curl(&[&url("/echo/x")]);
    assert_eq!(gone.status, 503, "{}", gone.text());
    assert_eq!(gone.json()["kind"], "no-responders");
    assert_eq!(gone.json()["component"], "echo");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}
