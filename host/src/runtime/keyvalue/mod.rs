//! Key-value buckets: what the `wasi:keyvalue` capability
//! (`capabilities/keyvalue.rs`) stores its values in.
//!
//! [`Bucket`] is the one shape every backend has: single-key reads and
//! writes, a paged key listing, an atomic counter, a revision-guarded swap
//! (for `cas`) and batches. Two backends implement it:
//!
//! - [`embedded`]: a redb file in the host's data directory, one per app, for
//!   a single host (the default);
//! - a NATS JetStream KV bucket shared by the lattice (`lattice::keyvalue`),
//!   reached through the [`Remote`] trait, so this module knows nothing of NATS.
//!
//! This module also owns the rules every backend shares: the size limits, the
//! counter format (see [`parse_counter`]) and the errors, which always reach
//! the guest as `error::other`, never as a trap. Whatever a bucket holds is
//! hostile input: another component, another host or an operator may have
//! written it.

pub mod embedded;

use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// The largest value, in bytes (JetStream's default `max_payload`).
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The most keys one `list-keys` page holds.
pub const PAGE_KEYS: usize = 1000;
/// The most keys one batch call may name.
pub const MAX_BATCH_KEYS: usize = 1000;
/// The most value bytes one `get-many` may return.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// A failed bucket operation: the guest sees `error::other(message)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KvError(pub String);

impl KvError {
    /// An error with `message`.
    pub fn new(message: impl Into<String>) -> KvError {
        KvError(message.into())
    }
}

/// A bucket operation's outcome.
pub type KvResult<T> = Result<T, KvError>;

/// A revision of one key: 0 when the key has never been written (or, on the
/// embedded backend, has been deleted); any write changes it.
pub type Revision = u64;

/// One bucket of one app, on one backend. Every method may run concurrently
/// with any other, from any number of instances.
pub trait Bucket: Send + Sync {
    /// The backend's name, for metrics and messages: `embedded` or `nats`.
    fn backend(&self) -> &'static str;

    /// The value of `key`, if it has one.
    fn get(&self, key: String) -> BoxFuture<'_, KvResult<Option<Vec<u8>>>>;

    /// Sets `key` to `value`.
    fn set(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, KvResult<()>>;

    /// Removes `key`; removing a missing key is no error.
    fn delete(&self, key: String) -> BoxFuture<'_, KvResult<()>>;

    /// Up to `limit` keys after `after` (all keys when `None`), in byte
    /// order, and whether more follow.
    fn list_keys(&self, after: Option<String>, limit: usize) -> BoxFuture<'_, KvResult<(Vec<String>, bool)>>;

    /// Adds `delta` to the counter at `key` (0 when missing) atomically and
    /// answers the new value.
    fn increment(&self, key: String, delta: i64) -> BoxFuture<'_, KvResult<i64>>;

    /// The value of `key` and its revision, for a later [`Bucket::swap`].
    fn read(&self, key: String) -> BoxFuture<'_, KvResult<(Option<Vec<u8>>, Revision)>>;

    /// Sets `key` to `value` if its revision is still `revision`; `false`
    /// (and nothing written) when it has changed since.
    fn swap(&self, key: String, value: Vec<u8>, revision: Revision) -> BoxFuture<'_, KvResult<bool>>;

    /// Whether `key` has a value.
    fn exists(&self, key: String) -> BoxFuture<'_, KvResult<bool>> {
        Box::pin(async move { Ok(self.get(key).await?.is_some()) })
    }

    /// Sets every pair; not atomic (a failure may leave some set).
    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> BoxFuture<'_, KvResult<()>> {
        Box::pin(async move {
            for (key, value) in pairs {
                self.set(key, value).await?;
            }
            Ok(())
        })
    }

    /// Deletes every key; not atomic.
    fn delete_many(&self, keys: Vec<String>) -> BoxFuture<'_, KvResult<()>> {
        Box::pin(async move {
            for key in keys {
                self.delete(key).await?;
            }
            Ok(())
        })
    }
}

/// Where the buckets whose backend is `nats` live: the lattice's JetStream
/// (implemented in `lattice::keyvalue`).
pub trait Remote: Send + Sync {
    /// Bucket `bucket` of app `app`, created if missing.
    fn open<'a>(&'a self, app: &'a str, bucket: &'a str) -> BoxFuture<'a, anyhow::Result<Arc<dyn Bucket>>>;
}

/// Where this host keeps buckets: its data directory for the embedded
/// backend, the lattice for the `nats` one.
#[derive(Clone, Default)]
pub struct Stores {
    /// The host's data directory (`membrane up --data-dir`); `None` leaves
    /// the embedded backend unavailable.
    pub data_dir: Option<PathBuf>,
    /// The lattice's buckets, when the host has NATS.
    pub remote: Option<Arc<dyn Remote>>,
}

/// Where data that outlives the host is kept by default:
/// `$MEMBRANE_DATA_DIR`, else `$XDG_DATA_HOME/membrane`, else
/// `~/.local/share/membrane` (as `cache::default_cache_dir` does for code).
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MEMBRANE_DATA_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return Some(PathBuf::from(dir).join("membrane"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share").join("membrane"))
}

/// The buckets open for one generation of an app: what its components'
/// grants may reach.
#[derive(Clone, Default)]
pub struct Opened {
    /// The app's name.
    pub app: String,
    /// Its open buckets, by name.
    pub buckets: BTreeMap<String, Arc<dyn Bucket>>,
}

/// What one component version may open: the buckets its grant names, and
/// those of them this host has opened (built by `capabilities/keyvalue.rs`).
pub struct Grant {
    /// The app, for metrics.
    pub app: Arc<str>,
    /// The component.
    pub component: Arc<str>,
    /// The bucket names its grant lists.
    pub granted: BTreeSet<String>,
    /// The granted buckets this host has opened.
    pub buckets: BTreeMap<String, Arc<dyn Bucket>>,
}

impl Grant {
    /// Counts operation `op` on `backend` (`membrane_keyvalue_ops_total`).
    pub fn count(&self, op: &'static str, backend: &'static str) {
        crate::metrics::registry()
            .counter(
                "membrane_keyvalue_ops_total",
                "wasi:keyvalue operations, by component, operation and backend.",
                &[
                    ("app", &self.app),
                    ("component", &self.component),
                    ("op", op),
                    ("backend", backend),
                ],
            )
            .inc();
    }
}

/// The open buckets of one app on this host, kept across generations (a
/// hot swap reuses them).
#[derive(Default)]
pub struct AppBuckets {
    open: Mutex<BTreeMap<(String, crate::manifest::KvBackend), Arc<dyn Bucket>>>,
}

impl AppBuckets {
    /// Opens every bucket granted to a component in `here` (each on the
    /// backend `manifest` names for it), reusing those already open. Each
    /// problem names its manifest field.
    pub async fn open(
        &self,
        stores: &Stores,
        manifest: &crate::manifest::Manifest,
        here: &BTreeSet<String>,
    ) -> Result<Opened, Vec<String>> {
        let wanted: BTreeSet<&String> = manifest
            .components
            .iter()
            .filter(|(name, _)| here.contains(*name))
            .flat_map(|(_, spec)| &spec.keyvalue.buckets)
            .collect();
        let mut opened = Opened {
            app: manifest.app.name.clone(),
            buckets: BTreeMap::new(),
        };
        let mut problems = Vec::new();
        for bucket in wanted {
            let backend = manifest.bucket_backend(bucket);
            let key = (bucket.clone(), backend);
            let known = self.open.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
            let handle = match known {
                Some(handle) => handle,
                None => match open_bucket(stores, &manifest.app.name, bucket, backend).await {
                    Ok(handle) => {
                        self.open
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(key, handle.clone());
                        handle
                    }
                    Err(e) => {
                        problems.push(format!("keyvalue.{bucket}: {e:#}"));
                        continue;
                    }
                },
            };
            opened.buckets.insert(bucket.clone(), handle);
        }
        if problems.is_empty() { Ok(opened) } else { Err(problems) }
    }
}

/// Opens bucket `bucket` of `app` on `backend`.
async fn open_bucket(
    stores: &Stores,
    app: &str,
    bucket: &str,
    backend: crate::manifest::KvBackend,
) -> anyhow::Result<Arc<dyn Bucket>> {
    use crate::manifest::KvBackend;
    match backend {
        KvBackend::Embedded => {
            let Some(dir) = &stores.data_dir else {
                anyhow::bail!("the embedded backend needs a data directory (membrane up --data-dir)");
            };
            let path = dir.join("keyvalue").join(format!("{app}.redb"));
            let bucket = bucket.to_string();
            let opened = tokio::task::spawn_blocking(move || embedded::open(&path, &bucket)).await??;
            Ok(Arc::new(opened))
        }
        KvBackend::Nats => {
            let Some(remote) = &stores.remote else {
                anyhow::bail!("backend = \"nats\" needs a lattice: pass --nats URL");
            };
            remote.open(app, bucket).await
        }
    }
}

/// The counter at a key, from its stored bytes: the decimal text of a
/// signed 64-bit integer (`"42"`, `"-7"`), so that `get` and `set` read and
/// write counters as plain text and tools such as `nats kv get` show them.
pub fn parse_counter(key: &str, bytes: &[u8]) -> KvResult<i64> {
    let text = std::str::from_utf8(bytes).ok().filter(|t| t.len() <= 20);
    text.and_then(|t| t.parse::<i64>().ok()).ok_or_else(|| {
        KvError::new(format!(
            "the value of key {key:?} is not a counter (the decimal text of a 64-bit integer); increment cannot add to it"
        ))
    })
}

/// `current + delta`, or an error naming `key` on overflow.
pub fn add_counter(key: &str, current: i64, delta: i64) -> KvResult<i64> {
    current.checked_add(delta).ok_or_else(|| {
        KvError::new(format!(
            "incrementing key {key:?} by {delta} overflows a 64-bit integer"
        ))
    })
}

/// Checks a key against the limits every backend shares.
pub fn check_key(key: &str) -> KvResult<()> {
    if key.is_empty() {
        return Err(KvError::new("a key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::new(format!(
            "a key may have at most {MAX_KEY_BYTES} bytes; this one has {}",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value against the limits every backend shares.
pub fn check_value(value: &[u8]) -> KvResult<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(KvError::new(format!(
            "a value may have at most {MAX_VALUE_BYTES} bytes; this one has {}",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_decimal_text_and_anything_else_is_refused() {
        assert_eq!(parse_counter("k", b"42"), Ok(42));
        assert_eq!(parse_counter("k", b"-7"), Ok(-7));
        for bad in [&b""[..], b"4 2", b"0x10", b"\xff\xfe", b"99999999999999999999", b"1.5"] {
            let err = parse_counter("k", bad).unwrap_err();
            assert!(err.0.contains("is not a counter"), "{bad:?}: {err}");
        }
        assert!(add_counter("k", i64::MAX, 1).unwrap_err().0.contains("overflows"));
        assert_eq!(add_counter("k", 1, -3), Ok(-2));
    }

    #[test]
    fn keys_and_values_have_limits() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        assert!(check_value(&vec![0; MAX_VALUE_BYTES + 1]).is_err());
    }
}
