//! Compiling components, with an on-disk cache of compiled code keyed by the
//! sha256 of the component's bytes and the engine's compatibility hash, so a
//! second `membrane up` of the same bits starts in milliseconds.
//!
//! Also the first gate on input: bytes that are not a component are rejected
//! here with a message that says what they are instead.
//!
//! Compiled code is native code, so a cache entry is loaded only if it
//! carries this host's tag: an HMAC-SHA256 of its bytes under a key kept
//! outside the cache directory (`MEMBRANE_CACHE_KEY`, else
//! `$XDG_CONFIG_HOME/membrane/cache.key`, else `~/.config/membrane/cache.key`,
//! created on first use). Someone who can write the cache directory but not
//! the key cannot make a host run code it did not compile: a tampered or
//! untagged entry is compiled afresh.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
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
pub const MAX_COMPONENT_BYTES: u64 = crate::registry::MAX_COMPONENT_BYTES;

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
    crate::registry::blobs::digest(bytes)
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

/// Reads a component file off the async runtime; only a regular file of at
/// most [`MAX_COMPONENT_BYTES`] (not `/dev/zero`, not a FIFO).
pub async fn read_source(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = tokio::fs::metadata(path).await?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_COMPONENT_BYTES {
        return Err(std::io::Error::other(format!(
            "{} bytes is more than a component may have ({} MiB)",
            meta.len(),
            MAX_COMPONENT_BYTES >> 20
        )));
    }
    tokio::fs::read(path).await
}

/// A component file: read as [`read_source`] does, and checked to be a
/// component; the error names the file.
pub async fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = read_source(path)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    check_component_header(&bytes).map_err(|why| anyhow::anyhow!("{} {why}", path.display()))?;
    Ok(bytes)
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
    // Without the host's key there is no way to trust an entry: no cache.
    let key = cache_dir.and(cache_key());
    let cached_path = key.and(cache_dir).map(|dir| dir.join(cache_file_name(engine, &digest)));
    if let (Some(path), Some(key)) = (&cached_path, key)
        && path.exists()
    {
        match load_tagged(engine, path, key) {
            Ok(component) => {
                return Ok(Compiled {
                    component,
                    digest,
                    cached: true,
                    elapsed: start.elapsed(),
                });
            }
            Err(e) => tracing::warn!("ignoring cache entry {}: {e}", path.display()),
        }
    }
    tracing::info!(
        "compiling {label} ({:.1} MiB)...",
        bytes.len() as f64 / f64::from(1 << 20)
    );
    let component = Component::new(engine, bytes)?;
    if let (Some(path), Some(key)) = (&cached_path, key)
        && let Err(e) = store(&component, path, key)
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

/// Writes an entry and its tag, each atomically (temp file + rename) so
/// concurrent hosts never read a half-written one; the tag goes last.
fn store(component: &Component, path: &Path, key: &[u8; 32]) -> anyhow::Result<()> {
    let bytes = component.serialize().map_err(anyhow::Error::from)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_atomically(path, &bytes)?;
    Ok(write_atomically(
        &tag_path(path),
        hex::encode(hmac(key, &bytes)).as_bytes(),
    )?)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn tag_path(path: &Path) -> PathBuf {
    path.with_extension("cwasm.tag")
}

/// Loads a cache entry whose tag proves this host wrote it.
fn load_tagged(engine: &Engine, path: &Path, key: &[u8; 32]) -> anyhow::Result<Component> {
    let tag = std::fs::read_to_string(tag_path(path)).map_err(|e| anyhow::anyhow!("no tag: {e}"))?;
    let bytes = std::fs::read(path)?;
    anyhow::ensure!(
        hex::encode(hmac(key, &bytes)) == tag.trim(),
        "its tag does not match: it was not written by this host, or was changed since"
    );
    // SAFETY: these bytes are exactly what `Component::serialize` of this
    // wasmtime build (the engine hash is in the file name) produced on this
    // host: the tag, keyed by a secret outside the cache directory, proves
    // it. Deserializing trusted precompiled code is this API's documented use.
    unsafe { Component::deserialize(engine, &bytes) }.map_err(anyhow::Error::from)
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
fn hmac(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The host's cache key, read or created once per process; `None` (and no
/// disk cache) when there is nowhere to keep it.
fn cache_key() -> Option<&'static [u8; 32]> {
    static KEY: OnceLock<Option<[u8; 32]>> = OnceLock::new();
    KEY.get_or_init(|| {
        let path = key_path()?;
        load_or_create_key(&path)
            .map_err(|e| tracing::warn!("no compiled-code cache: cannot use its key {}: {e}", path.display()))
            .ok()
    })
    .as_ref()
}

fn key_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MEMBRANE_CACHE_KEY") {
        return Some(PathBuf::from(path));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("membrane").join("cache.key"))
}

fn load_or_create_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    if path.exists() {
        return read_key(path);
    }
    let mut key = [0u8; 32];
    getrandom::getrandom(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&tmp)?.write_all(hex::encode(key).as_bytes())?;
    }
    // Another host may have created it meanwhile: theirs wins, for both.
    if std::fs::hard_link(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        return read_key(path);
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(key)
}

fn read_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(std::fs::read_to_string(path)?.trim())?;
    bytes.try_into().map_err(|_| anyhow::anyhow!("not 32 bytes of hex"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2 uses a 4-byte key ("Jefe"); zero-padded to 32
        // bytes it is the same HMAC key.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn header_check_names_what_the_bytes_are() {
        assert!(check_component_header(b"\0asm\x0d\x00\x01\x00").is_ok());
        let core = check_component_header(b"\0asm\x01\x00\x00\x00").unwrap_err();
        assert!(core.contains("core WebAssembly module"), "{core}");
        let junk = check_component_header(b"#!/bin/sh\necho").unwrap_err();
        assert!(junk.contains("not a WebAssembly file"), "{junk}");
    }
}
