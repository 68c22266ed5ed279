//! Shared set-up for Membrane's benchmarks: locating the built components and
//! loading a runtime from inline manifests.

use membrane::manifest::Manifest;
use membrane::runtime::{LoadOptions, Runtime};
use std::path::PathBuf;
use std::sync::Arc;

/// Path of a built component; panics with the command to run when missing.
pub fn wasm(name: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let path = target.join("wasm32-wasip2/release").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-components.sh first",
        path.display()
    );
    path.display().to_string()
}

/// Loads `manifest` (TOML, with `{wasm:NAME}` placeholders) into a runtime.
pub async fn load(manifest: &str) -> Arc<Runtime> {
    let mut text = manifest.to_string();
    while let Some(start) = text.find("{wasm:") {
        let end = start + text[start..].find('}').expect("closing brace");
        let name = text[start + 6..end].to_string();
        text.replace_range(start..=end, &wasm(&name));
    }
    let manifest = Manifest::parse(&text, "bench.toml").expect("bench manifest");
    let options = LoadOptions {
        cache_dir: membrane::runtime::cache::default_cache_dir(),
        pooling: true,
        ..Default::default()
    };
    Runtime::load(&manifest, &options).await.expect("load bench app")
}

/// A private nats-server (JetStream, temp store) for a benchmark run.
pub struct NatsServer {
    child: std::process::Child,
    /// Its client URL.
    pub url: String,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts one on a free port and waits until it accepts connections.
    pub fn start() -> NatsServer {
        let store = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let binary = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server");
        let child = std::process::Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (scripts/test.sh installs it)");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _store: store,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Median and 99th percentile of `samples` (sorted in place).
pub fn percentiles(samples: &mut [std::time::Duration]) -> (std::time::Duration, std::time::Duration) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (pick(0.5), pick(0.99))
}
