//! Compiling components, with an on-disk cache of compiled code keyed by the
//! sha256 of the component's bytes and the engine's compatibility hash, so a
//! second `membrane up` of the same bits starts in milliseconds.
//!
//! Also the first gate on input: bytes that are not a component are rejected
//! here with a message that says what they are instead.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A compiled component and how it was obtained.
pub struct Compiled {
    /// The compiled component.
    pub component: Component,
    /// `sha256:<hex>` of the source bytes.
    pub digest: String,
    /// Whether the compiled code came from the disk cache.
    pub cached: bool,
    /// Time spent compiling or loading.
    pub elapsed: Duration,
}

/// The largest component a host reads or fetches: 256 MiB.
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

/// The `sha256:<hex>` digest that identifies component bytes.
impl Compiled {
    /// A version this process compiled before.
    pub fn reused(component: Component, digest: &str) -> Compiled {
        Compiled {
            component,
            digest: digest.to_string(),
            cached: true,
            elapsed: Duration::ZERO,
        }
    }
}

/// `sha256:<hex>` of `bytes`: the identity of a component version.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks the header: is this a component (not a core module, not garbage)?
pub fn check_component_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("is not a WebAssembly file (no `\\0asm` header)".into());
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err("is a core WebAssembly module, not a component: build it with \
             `--target wasm32-wasip2` or wrap it with `wasm-tools component new`"
            .into()),
        _ => Err(format!(
            "has an unsupported WebAssembly version/layer {:02x?}",
            &bytes[4..8]
        )),
    }
}

/// Where compiled code is cached by default: `$MEMBRANE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/membrane`, else `~/.cache/membrane`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MEMBRANE_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("membrane"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("membrane"))
}

/// Compiles `bytes`, or loads the compiled code from `cache_dir` when present.
/// Blocking and CPU-heavy: call it off the async runtime. `label` names the
/// component in progress output.
pub fn compile(engine: &Engine, label: &str, bytes: &[u8], cache_dir: Option<&Path>) -> wasmtime::Result<Compiled> {
    let start = Instant::now();
    let digest = digest(bytes);
    let cached_path = cache_dir.map(|dir| dir.join(cache_file_name(engine, &digest)));
    if let Some(path) = &cached_path
        && path.exists()
    {
        // SAFETY: the file was written by `Component::serialize` of this same
        // wasmtime build (the engine hash is in its name) into the user's own
        // cache directory; deserializing trusted precompiled code is the
        // documented use of this API. A corrupt file fails the checks inside
        // `deserialize_file` and we recompile.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(component) => {
                return Ok(Compiled {
                    component,
                    digest,
                    cached: true,
                    elapsed: start.elapsed(),
                });
            }
            Err(e) => tracing::warn!("ignoring unusable cache entry {}: {e}", path.display()),
        }
    }
    tracing::info!(
        "compiling {label} ({:.1} MiB)...",
        bytes.len() as f64 / f64::from(1 << 20)
    );
    let component = Component::new(engine, bytes)?;
    if let Some(path) = &cached_path
        && let Err(e) = store(&component, path)
    {
        tracing::warn!("could not cache compiled code at {}: {e}", path.display());
    }
    Ok(Compiled {
        component,
        digest,
        cached: false,
        elapsed: start.elapsed(),
    })
}

fn cache_file_name(engine: &Engine, digest: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let hex = digest.trim_start_matches("sha256:");
    format!("{hex}-{:016x}.cwasm", hasher.finish())
}

/// Writes atomically (temp file + rename) so concurrent hosts never read a
/// half-written entry.
fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_what_the_bytes_are() {
        assert!(check_component_header(b"\0asm\x0d\x00\x01\x00").is_ok());
        let core = check_component_header(b"\0asm\x01\x00\x00\x00").unwrap_err();
        assert!(core.contains("core WebAssembly module"), "{core}");
        let junk = check_component_header(b"#!/bin/sh\necho").unwrap_err();
        assert!(junk.contains("not a WebAssembly file"), "{junk}");
    }
}
