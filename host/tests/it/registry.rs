//! Components from OCI registries, against a real registry process
//! (`support::registry`: CNCF distribution 2.8): `membrane push`, pulls by
//! tag and digest, credentials, the cache when the registry is down,
//! artifacts that are not what they claim, tags pinned by `ctl apply`, and
//! the layout `oci-wasm` (wasmCloud's and wkg's library) reads and writes.

use crate::support::nats::NatsServer;
use crate::support::registry::Registry;
use crate::support::{Host, version_over_http, wait_until, wasm};
use std::process::Output;

/// Runs `membrane <args>` with `env`.
fn membrane(args: &[&str], env: &[(&str, &str)]) -> Output {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_membrane"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run membrane");
    eprintln!(
        "$ membrane {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `membrane push` of component `name` to `reference`; the digest it prints.
fn push(registry: &Registry, name: &str, reference: &str, env: &[(&str, &str)]) -> String {
    let file = wasm(name).display().to_string();
    let out = membrane(
        &["push", &file, reference, "--insecure-registry", &registry.host()],
        env,
    );
    assert!(
        out.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    digest
}

fn app(source: &str) -> String {
    format!(
        r#"
[app]
name = "oci"

[components.versioned]
source = "{source}"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "versioned"
"#
    )
}

fn dir_arg(dir: &tempfile::TempDir) -> String {
    dir.path().display().to_string()
}

/// Push, then pull by tag; plain HTTP only when named; with the registry
/// gone, a cached tag and a pinned digest still start, a fresh cache does not.
#[test]
fn a_pushed_component_runs_from_the_registry_and_from_its_cache_when_the_registry_is_down() {
    let mut registry = Registry::start();
    let tag = registry.reference("membrane/versioned:1");
    let digest = push(&registry, "versioned_v1", &tag, &[]);
    let cache = tempfile::tempdir().unwrap();
    let insecure = registry.host();
    let args = ["--insecure-registry", &insecure, "--cache-dir", &dir_arg(&cache)];

    let host = Host::start_with(&app(&tag), &args);
    assert_eq!(version_over_http(host.http[0].0), Ok(1));
    drop(host);

    // TLS is the default, loopback included.
    let fresh = tempfile::tempdir().unwrap();
    let err = Host::fail_with(&app(&tag), &["--cache-dir", &dir_arg(&fresh)]);
    assert!(err.contains("components.versioned.source"), "{err}");
    assert!(
        err.contains("TLS failed") && err.contains("--insecure-registry"),
        "{err}"
    );

    registry.kill();
    // The tag runs what it named last time, and says so.
    let host = Host::start_with(&app(&tag), &args);
    assert!(host.log().contains("as cached: the tag named"), "{}", host.log());
    assert_eq!(version_over_http(host.http[0].0), Ok(1));
    drop(host);
    // A pinned digest needs no registry at all.
    let pinned = format!("{tag}@{digest}");
    let host = Host::start_with(&app(&pinned), &args);
    assert!(!host.log().contains("refused"), "{}", host.log());
    assert_eq!(version_over_http(host.http[0].0), Ok(1));
    drop(host);
    // Nothing cached: a clear refusal that names the registry.
    let err = Host::fail_with(
        &app(&tag),
        &["--insecure-registry", &insecure, "--cache-dir", &dir_arg(&fresh)],
    );
    assert!(
        err.contains(&format!("registry {insecure}")) && err.contains("no cached copy"),
        "{err}"
    );
}

/// Basic auth (htpasswd): Docker's config.json and MEMBRANE_REGISTRY_AUTH
/// work; a missing or wrong password is named, and never printed.
#[test]
fn basic_auth_takes_docker_credentials_and_names_a_refusal() {
    let registry = Registry::with_users(&[("alice", "s3cret-pw")]);
    let host = registry.host();
    let docker = |password: &str| {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}"));
        let config = serde_json::json!({ "auths": { host.clone(): { "auth": auth } } });
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        dir
    };
    let good = docker("s3cret-pw");
    let wrong = docker("not-the-pw");
    let none = tempfile::tempdir().unwrap();
    let tag = registry.reference("private/versioned:1");

    let out = membrane(
        &[
            "push",
            &wasm("versioned_v1").display().to_string(),
            &tag,
            "--insecure-registry",
            &host,
        ],
        &[("DOCKER_CONFIG", &dir_arg(&none))],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("needs credentials"),
        "{stderr}"
    );
    push(&registry, "versioned_v1", &tag, &[("DOCKER_CONFIG", &dir_arg(&good))]);

    let cache = || tempfile::tempdir().unwrap();
    let (c1, c2, c3) = (cache(), cache(), cache());
    let up = |c: &tempfile::TempDir| {
        vec![
            "--insecure-registry".to_string(),
            host.clone(),
            "--cache-dir".into(),
            dir_arg(c),
        ]
    };
    let args1 = up(&c1);
    let args1: Vec<&str> = args1.iter().map(String::as_str).collect();
    let served = Host::start_env(&app(&tag), &args1, &[("DOCKER_CONFIG", &dir_arg(&good))]);
    assert_eq!(version_over_http(served.http[0].0), Ok(1));
    drop(served);

    let args2 = up(&c2);
    let args2: Vec<&str> = args2.iter().map(String::as_str).collect();
    let err = Host::fail_env(&app(&tag), &args2, &[("DOCKER_CONFIG", &dir_arg(&wrong))]);
    assert!(
        err.contains(&format!("registry {host} refused the credentials of user \"alice\"")) && err.contains("401"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-pw") && !err.contains("s3cret"),
        "a password was printed:\n{err}"
    );

    let args3 = up(&c3);
    let args3: Vec<&str> = args3.iter().map(String::as_str).collect();
    let env_auth = format!("{host}=alice:s3cret-pw");
    let served = Host::start_env(
        &app(&tag),
        &args3,
        &[
            ("DOCKER_CONFIG", &dir_arg(&none)),
            ("MEMBRANE_REGISTRY_AUTH", &env_auth),
        ],
    );
    assert_eq!(version_over_http(served.http[0].0), Ok(1));
    assert!(!served.log().contains("s3cret"), "a password was logged");
}

/// A registry that serves something other than a Wasm component, or other
/// bytes than its manifest names, or more of them, is refused by name.
#[test]
fn artifacts_that_are_not_what_they_claim_are_refused_by_name() {
    use membrane::registry::{Reference, Registry as Client, artifact};
    let registry = Registry::start();
    let client = Client::new([registry.host()], membrane::registry::MAX_COMPONENT_BYTES);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let component = std::fs::read(wasm("versioned_v1")).unwrap();
    let digest = |b: &[u8]| membrane::registry::blobs::digest(b);
    let config = br#"{"architecture":"wasm","os":"wasip2"}"#.to_vec();
    let manifest = |layer_type: &str, layer: &[u8], size: usize| {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": artifact::MANIFEST,
            "config": {"mediaType": artifact::CONFIG, "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": digest(layer), "size": size}],
        })
        .to_string()
    };
    let push_raw = |path: &str, text: String, layer: &[u8]| {
        let reference = Reference::parse(&registry.reference(path)).unwrap();
        rt.block_on(client.push_raw(&reference, &[&config, layer], artifact::MANIFEST, text.as_bytes()))
            .unwrap_or_else(|e| panic!("push_raw {path}: {e}"));
    };
    let fails = |path: &str| {
        let cache = tempfile::tempdir().unwrap();
        Host::fail_with(
            &app(&registry.reference(path)),
            &["--insecure-registry", &registry.host(), "--cache-dir", &dir_arg(&cache)],
        )
    };

    let tar = b"not a component, a tarball".to_vec();
    push_raw(
        "bad/image:1",
        manifest("application/vnd.oci.image.layer.v1.tar+gzip", &tar, tar.len()),
        &tar,
    );
    let err = fails("bad/image:1");
    assert!(
        err.contains(
            "its layer has media type \"application/vnd.oci.image.layer.v1.tar+gzip\", not \"application/wasm\""
        ),
        "{err}"
    );

    // The manifest declares more than the cap: refused before any byte of it.
    push_raw(
        "bad/huge:1",
        manifest(artifact::LAYER, &component, 300 << 20),
        &component,
    );
    let err = fails("bad/huge:1");
    assert!(
        err.contains("314572800 bytes, more than a component may have (256 MiB)"),
        "{err}"
    );

    // The registry's storage is changed under it: other bytes of the same
    // length, then more bytes than the manifest says.
    let reference = Reference::parse(&registry.reference("bad/swapped:1")).unwrap();
    rt.block_on(client.push(&reference, &component)).unwrap();
    let file = registry.blob_file(&digest(&component));
    let mut other = component.clone();
    let middle = other.len() / 2;
    other[middle] ^= 0xff;
    std::fs::write(&file, &other).unwrap();
    let err = fails("bad/swapped:1");
    assert!(
        err.contains("digest mismatch: the registry sent bytes that hash to") && err.contains(&digest(&component)),
        "{err}"
    );
    let mut longer = component.clone();
    longer.extend_from_slice(&[0; 4096]);
    std::fs::write(&file, &longer).unwrap();
    let err = fails("bad/swapped:1");
    assert!(
        err.contains("more than the") && err.contains(&digest(&component)),
        "{err}"
    );
}

fn ctl(server: &NatsServer, registry: &Registry, args: &[&str]) -> Output {
    let url = server.url();
    let mut all = vec!["ctl", "--nats", &url, "--lattice", "oci"];
    let host = registry.host();
    all.extend(["--insecure-registry", &host]);
    all.extend(args);
    membrane(&all, &[])
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn join(server: &NatsServer, cache: &tempfile::TempDir, extra: &[&str]) -> Host {
    let url = server.url();
    let mut args = vec!["--nats", &url, "--lattice", "oci", "--heartbeat-ms", "500"];
    let cache = dir_arg(cache);
    args.extend(["--cache-dir", &cache]);
    args.extend(extra);
    Host::join(&args)
}

/// `ctl apply` pins the tag: hosts keep the digest when the tag moves;
/// `ctl update` takes a reference (and is refused when the registry is
/// down, leaving the old version serving); rollback returns to a digest.
#[test]
fn a_tag_moved_after_apply_leaves_every_host_on_the_pinned_digest() {
    let server = NatsServer::start();
    let mut registry = Registry::start();
    let tag = registry.reference("team/versioned:stable");
    let first = push(&registry, "versioned_v1", &tag, &[]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("app.toml");
    std::fs::write(&manifest, app(&tag)).unwrap();
    let applied = ctl(&server, &registry, &["apply", &manifest.display().to_string()]);
    assert!(
        String::from_utf8_lossy(&applied.stderr).contains(&format!("{tag} is {first}")),
        "apply says what the tag resolved to"
    );
    ok(applied);
    let insecure = registry.host();
    let (cache_a, cache_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = join(&server, &cache_a, &["--insecure-registry", &insecure]);
    let addr_a = a.wait_for_http("versioned");
    assert_eq!(version_over_http(addr_a), Ok(1));

    // The tag moves; a host that starts now runs the pinned bytes.
    let second = push(&registry, "versioned_v2", &tag, &[]);
    assert_ne!(first, second);
    let b = join(&server, &cache_b, &["--insecure-registry", &insecure]);
    let addr_b = b.wait_for_http("versioned");
    assert_eq!(version_over_http(addr_b), Ok(1));
    let apps: serde_json::Value = serde_json::from_str(&ok(ctl(&server, &registry, &["apps", "-o", "json"]))).unwrap();
    assert_eq!(apps[0]["components"][0]["digest"], format!("{tag}@{first}"), "{apps}");

    // `ctl update` to the reference: resolved here, to the new digest.
    let updated = ok(ctl(
        &server,
        &registry,
        &["update", "oci/versioned", &tag, "-o", "json"],
    ));
    let updated: serde_json::Value = serde_json::from_str(&updated).unwrap();
    assert_eq!(updated["outcome"], "updated", "{updated}");
    assert_eq!(updated["digest"], format!("{tag}@{second}"));
    wait_until(|| version_over_http(addr_a) == Ok(2) && version_over_http(addr_b) == Ok(2));

    // The registry is down: an update is refused before anything changes.
    registry.kill();
    let refused = ctl(&server, &registry, &["update", "oci/versioned", &tag]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains(&format!("registry {insecure}")),
        "{stderr}"
    );
    assert_eq!((version_over_http(addr_a), version_over_http(addr_b)), (Ok(2), Ok(2)));

    // Rollback goes back to the first digest, not to what the tag says;
    // the hosts have its bytes cached, so the registry is not needed.
    ok(ctl(&server, &registry, &["rollback", "oci"]));
    wait_until(|| version_over_http(addr_a) == Ok(1) && version_over_http(addr_b) == Ok(1));
}

/// With `artifacts = "lattice"`, `ctl apply` copies the component into the
/// object store: hosts run it with no registry access at all.
#[test]
fn with_artifacts_in_the_lattice_hosts_never_reach_the_registry() {
    let server = NatsServer::start();
    let mut registry = Registry::start();
    let tag = registry.reference("team/versioned:1");
    push(&registry, "versioned_v1", &tag, &[]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("app.toml");
    std::fs::write(
        &manifest,
        app(&tag).replace("name = \"oci\"", "name = \"oci\"\nartifacts = \"lattice\""),
    )
    .unwrap();
    ok(ctl(&server, &registry, &["apply", &manifest.display().to_string()]));
    registry.kill();
    // No --insecure-registry: this host could not pull from it anyway.
    let cache = tempfile::tempdir().unwrap();
    let host = join(&server, &cache, &[]);
    assert_eq!(version_over_http(host.wait_for_http("versioned")), Ok(1));
}

/// The layout is the one `oci-wasm` (wasmCloud's and wkg's library) reads
/// and writes: it pulls what `membrane push` wrote, and Membrane runs what
/// it pushed.
#[test]
fn artifacts_interoperate_with_oci_wasm() {
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    // reqwest's rustls takes the process's crypto provider: ring.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let registry = Registry::start();
    let client = oci_wasm::WasmClient::new(oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    }));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let v1 = std::fs::read(wasm("versioned_v1")).unwrap();

    push(
        &registry,
        "versioned_v1",
        &registry.reference("interop/by-membrane:1"),
        &[],
    );
    let theirs: oci_client::Reference = format!("{}/interop/by-membrane:1", registry.host()).parse().unwrap();
    let (_, config, _) = rt
        .block_on(client.pull_manifest_and_config(&theirs, &RegistryAuth::Anonymous))
        .expect("oci-wasm reads the manifest and config membrane pushed");
    let component = config.component.expect("the config names the component's world");
    assert!(
        component
            .exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2")),
        "{:?}",
        component.exports
    );
    let image = rt.block_on(client.pull(&theirs, &RegistryAuth::Anonymous)).unwrap();
    assert_eq!(image.layers[0].data.as_ref(), &v1[..]);

    let v2 = std::fs::read(wasm("versioned_v2")).unwrap();
    let (config, layer) = oci_wasm::WasmConfig::from_raw_component(v2, None).unwrap();
    let theirs: oci_client::Reference = format!("{}/interop/by-oci-wasm:1", registry.host()).parse().unwrap();
    rt.block_on(client.push(&theirs, &RegistryAuth::Anonymous, layer, config, None))
        .expect("oci-wasm pushes");
    let cache = tempfile::tempdir().unwrap();
    let host = Host::start_with(
        &app(&registry.reference("interop/by-oci-wasm:1")),
        &["--insecure-registry", &registry.host(), "--cache-dir", &dir_arg(&cache)],
    );
    assert_eq!(version_over_http(host.http[0].0), Ok(2));
}
