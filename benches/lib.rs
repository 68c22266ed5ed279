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
