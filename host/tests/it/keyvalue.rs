//! wasi:keyvalue as a user meets it: the `kv-counter` component (written
//! the way wasmCloud's key-value counter is) served unmodified, counting in
//! a bucket its manifest grants and nothing else; its counts surviving a
//! restart; and every one of 10,000 concurrent increments counted, on one
//! host's embedded store and on a NATS bucket that two hosts share.

use crate::support::curl::curl;
use crate::support::nats::NatsServer;
use crate::support::{Host, http, keep_alive};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Instant;

/// The counter, granted bucket `counts`; `BACKEND` is replaced.
const MANIFEST: &str = r#"
[app]
name = "kv"

[components.counter]
source = "{wasm:kv_counter}"
keyvalue = { buckets = ["counts"] }

[keyvalue.counts]
backend = "BACKEND"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "counter"
"#;

fn manifest(backend: &str) -> String {
    MANIFEST.replace("BACKEND", backend)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = http(addr, "GET", path, b"");
    (reply.status, reply.body)
}

/// `total` GETs of `path` from `clients` threads, each on one kept-alive
/// connection to one of `hosts` (in turn); every answer, as a number.
fn hammer(hosts: &[SocketAddr], path: &str, clients: usize, total: usize) -> Vec<u64> {
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let addr = hosts[i % hosts.len()];
            let share = total / clients + usize::from(i < total % clients);
            let path = path.to_string();
            std::thread::spawn(move || keep_alive(addr, &path, share))
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .map(|body| body.parse().unwrap_or_else(|_| panic!("not a count: {body:?}")))
        .collect()
}

/// Whether `answers` are exactly 1..=n, each once.
fn each_once(answers: &[u64], n: u64) {
    let distinct: BTreeSet<u64> = answers.iter().copied().collect();
    assert_eq!(answers.len() as u64, n, "answers");
    assert_eq!(distinct.len() as u64, n, "two increments answered the same count");
    assert_eq!((distinct.first(), distinct.last()), (Some(&1), Some(&n)));
}

#[test]
fn kv_counter_counts_in_its_granted_bucket_only_and_keeps_counting_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let host = Host::start_with(&manifest("embedded"), &["--data-dir", data_dir]);
    let addr = host.addr();
    for expected in ["1", "2", "3"] {
        assert_eq!(get(addr, "/counter/visits"), (200, expected.to_string()));
    }
    assert_eq!(get(addr, "/counter/other"), (200, "1".into()));
    // Compare-and-swap on the same counter, and the batch interface.
    assert_eq!(get(addr, "/cas/visits"), (200, "4".into()));
    assert_eq!(get(addr, "/batch/a,b,c"), (200, "a=a,b=b,c=c deleted=true".into()));
    // Deny by default: a bucket the manifest does not grant.
    assert_eq!(get(addr, "/open/secrets"), (500, "access-denied".into()));
    assert_eq!(get(addr, "/open/counts"), (200, "ok".into()));
    host.wait_for_log("open(\"secrets\") refused");

    // A redb file serves one host: a second one on the same directory is refused.
    let err = Host::fail_with(&manifest("embedded"), &["--data-dir", data_dir]);
    assert!(
        err.contains("keyvalue.counts:") && err.contains("in use by another process"),
        "{err}"
    );

    assert!(host.interrupt().success());
    let host = Host::start_with(&manifest("embedded"), &["--data-dir", data_dir]);
    assert_eq!(get(host.addr(), "/counter/visits"), (200, "5".into()));
}

#[test]
fn a_component_that_imports_keyvalue_without_a_grant_does_not_load() {
    let ungranted = manifest("embedded").replace("keyvalue = { buckets = [\"counts\"] }\n", "");
    let err = Host::fail(&ungranted);
    assert!(
        err.contains("components.counter.keyvalue") && err.contains("grants no bucket"),
        "{err}"
    );
}

#[test]
fn ten_thousand_concurrent_increments_on_the_embedded_store_are_all_counted() {
    let data = tempfile::tempdir().unwrap();
    let host = Host::start_with(&manifest("embedded"), &["--data-dir", data.path().to_str().unwrap()]);
    let started = Instant::now();
    let answers = hammer(&[host.addr()], "/counter/hot", 32, 10_000);
    eprintln!(
        "embedded: 10,000 increments from 32 clients in {:.2?}",
        started.elapsed()
    );
    each_once(&answers, 10_000);
}

#[test]
fn two_hosts_on_one_nats_bucket_count_every_one_of_ten_thousand_increments() {
    let server = NatsServer::start();
    let url = server.url();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let host = |dir: &tempfile::TempDir| {
        Host::start_with(
            &manifest("nats"),
            &["--nats", &url, "--data-dir", dir.path().to_str().unwrap()],
        )
    };
    let (a, b) = (host(&a_dir), host(&b_dir));
    let hosts = [a.addr(), b.addr()];
    // What one host writes, the other reads.
    assert_eq!(get(hosts[0], "/counter/shared"), (200, "1".into()));
    assert_eq!(get(hosts[1], "/counter/shared"), (200, "2".into()));

    let started = Instant::now();
    let answers = hammer(&hosts, "/counter/hot", 64, 10_000);
    eprintln!(
        "nats: 10,000 increments from 2 hosts x 32 clients in {:.2?}",
        started.elapsed()
    );
    each_once(&answers, 10_000);

    // Compare-and-swap loops racing on both hosts lose no update either.
    each_once(&hammer(&hosts, "/cas/raced", 16, 400), 400);

    // A key NATS cannot store is the guest's error, not a trap.
    let (status, body) = get(hosts[0], "/counter/no%20spaces");
    assert_eq!(status, 500);
    assert!(
        body.starts_with("other: key \"no%20spaces\" cannot be stored"),
        "{body}"
    );
}

/// A wasmCloud component built with the published `wasmcloud-component`
/// 0.2 SDK, which imports the first draft, `wasi:keyvalue@0.2.0-draft`.
const WASMCLOUD: &str = r#"
[app]
name = "wasmcloud"

[components.hello]
source = "{wasm:wasmcloud_hello}"
keyvalue = { buckets = ["default"] }

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "hello"
"#;

#[test]
fn a_wasmcloud_sdk_component_counts_stores_and_lists_keys_over_the_first_draft() {
    let data = tempfile::tempdir().unwrap();
    let host = Host::start_with(WASMCLOUD, &["--data-dir", data.path().to_str().unwrap()]);
    let url = |path: &str| format!("http://{}{path}", host.addr());
    for n in 1..=3 {
        let count = curl(&[&url("/count/visits")]);
        assert_eq!((count.status, count.text()), (200, format!("visits = {n}\n")));
    }
    for (key, value) in [("b", "two"), ("a", "one")] {
        let put = curl(&["-X", "PUT", "--data-binary", value, &url(&format!("/kv/{key}"))]);
        assert_eq!((put.status, put.text()), (200, format!("{key} set\n")));
    }
    let get = curl(&[&url("/kv/a")]);
    assert_eq!((get.status, get.text().as_str()), (200, "one"));
    assert_eq!(curl(&[&url("/kv/nope")]).status, 404);
    // list-keys with draft 1's u64 cursor, and get-many's `none` for a missing key.
    assert_eq!(curl(&[&url("/keys")]).text(), "a\nb\nvisits\n");
    // Over three pages: each cursor resumes where the last page ended.
    let many = put_keys(&url(""), "/kv/", 2100);
    let listed = curl(&[&url("/keys")]).text();
    assert_eq!(listed, format!("a\nb\n{}visits\n", many.concat()));
    let many = curl(&[&url("/many/a,nope,b")]);
    assert_eq!(many.text(), "a = one\nnope missing\nb = two\n");
    // Deny by default, as for draft2.
    let denied = curl(&[&url("/denied")]);
    assert_eq!(
        (denied.status, denied.text()),
        (403, "Error::AccessDenied\n".to_string())
    );
    host.wait_for_log("open(\"not-granted\") refused");
}

/// A Spin app whose component uses spin-sdk 7's `key_value` module
/// (`spin:key-value@3.0.0`, async functions and a stream of keys).
const SPIN_KV: &str = r#"
spin_manifest_version = 2

[application]
name = "spin-kv"

[[trigger.http]]
route = "/..."
component = "kv"

[component.kv]
source = "{wasm:spin7_kv}"
key_value_stores = ["default"]
"#;

#[test]
fn a_spin_7_key_value_component_counts_stores_and_streams_its_keys() {
    let data = tempfile::tempdir().unwrap();
    let args = ["--data-dir", data.path().to_str().unwrap()];
    let host = Host::start_env(SPIN_KV, &args, &[("SPIN_HTTP_LISTEN_ADDR", "127.0.0.1:0")]);
    let addr = host.listening("http");
    let url = |path: &str| format!("http://{addr}{path}");
    for n in 1..=3 {
        let count = curl(&[&url("/count")]);
        assert_eq!((count.status, count.text()), (200, format!("count = {n}\n")));
    }
    let put = curl(&["-X", "PUT", "--data-binary", "one", &url("/kv/a")]);
    assert_eq!((put.status, put.text().as_str()), (200, "a set\n"));
    assert_eq!(curl(&[&url("/kv/a")]).text(), "one");
    assert_eq!(curl(&["-I", &url("/kv/a")]).status, 200);
    assert_eq!(curl(&["-I", &url("/kv/b")]).status, 404);
    assert_eq!(curl(&[&url("/keys")]).text(), "a\ncount\n");
    assert_eq!(curl(&["-X", "DELETE", &url("/kv/a")]).status, 200);
    assert_eq!(curl(&[&url("/kv/a")]).status, 404);
    assert_eq!(curl(&[&url("/keys")]).text(), "count\n");
    // A store the spin.toml does not list: access-denied, as Spin answers.
    let denied = curl(&[&url("/denied")]);
    assert_eq!(
        (denied.status, denied.text()),
        (403, "Error::AccessDenied\n".to_string())
    );
    host.wait_for_log("open(\"not-granted\") refused");

    // The same bucket after a restart.
    assert!(host.interrupt().success());
    let host = Host::start_env(SPIN_KV, &args, &[("SPIN_HTTP_LISTEN_ADDR", "127.0.0.1:0")]);
    let base = format!("http://{}", host.listening("http"));
    let again = curl(&[&format!("{base}/count")]);
    assert_eq!(again.text(), "count = 4\n");

    // More keys than one page: the stream reads the bucket page by page.
    let many = put_keys(&base, "/kv/", 2100);
    let keys = curl(&[&format!("{base}/keys")]).text();
    assert_eq!(keys, format!("count\n{}", many.concat()));
}

/// PUTs `n` keys (`k0000`, `k0001`, ...) under `prefix` in one run of the
/// real curl, on one connection; the keys, each with a newline, in order.
fn put_keys(base: &str, prefix: &str, n: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("urls");
    let keys: Vec<String> = (0..n).map(|i| format!("k{i:04}")).collect();
    let lines: String = keys
        .iter()
        .map(|k| format!("url = \"{base}{prefix}{k}\"\noutput = \"/dev/null\"\n"))
        .collect();
    std::fs::write(&config, lines).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "-X", "PUT", "--data-binary", "v", "-K"])
        .arg(&config)
        .output()
        .expect("curl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    keys.into_iter().map(|k| format!("{k}\n")).collect()
}
