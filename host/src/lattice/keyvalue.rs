//! The `nats` key-value backend: the lattice's buckets, in one JetStream KV
//! bucket, so that every host of the lattice sees the same data.
//!
//! KV bucket `membrane-<lattice>-kv` (created on first use, keeping one
//! revision per key) holds every app's buckets: bucket `counts` of app
//! `shop` is the keys under `shop.counts.`, so no two apps' names can
//! collide (app and bucket names have no dots) and NATS permissions can
//! confine a host to the apps it runs (`$KV.membrane-<lattice>-kv.<app>.>`).
//!
//! `increment` is a read and a write guarded by the key's revision, retried
//! on conflict: within one host, the increments of one key take turns (a
//! per-key lock), so retries are needed only against other hosts; after
//! [`MAX_ATTEMPTS`] conflicts the guest gets `error::other("contention ...")`.
//! A `cas` swap is the same guarded write, once.

use crate::bus::Bus;
use crate::runtime::keyvalue::{Bucket, KvError, KvResult, Remote, Revision, add_counter, parse_counter};
use async_nats::jetstream;
use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
use async_nats::jetstream::kv::{Entry, Operation, Store, UpdateErrorKind};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Conflicting writes `increment` rides out before it gives up.
pub const MAX_ATTEMPTS: u32 = 64;
/// The most keys `list-keys` scans in one bucket.
const MAX_SCAN: usize = 100_000;
/// How long a key listing may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);
/// Room left in a message for the key and headers, besides the value.
const HEADROOM: usize = 2048;

/// The KV bucket of `lattice`'s app buckets.
pub fn bucket_name(lattice: &str) -> String {
    format!("membrane-{lattice}-kv")
}

/// The lattice's buckets (see the module documentation).
pub struct LatticeBuckets {
    bus: Bus,
    name: String,
    /// The KV bucket as opened on the bus's client of that generation.
    store: tokio::sync::Mutex<Option<(u64, Store)>>,
}

impl LatticeBuckets {
    /// The buckets of `lattice`, reached through `bus`.
    pub fn new(bus: Bus, lattice: &str) -> LatticeBuckets {
        LatticeBuckets {
            bus,
            name: bucket_name(lattice),
            store: tokio::sync::Mutex::default(),
        }
    }

    /// The KV bucket, created if missing (one revision per key); opened
    /// again on a new connection.
    async fn store(&self) -> anyhow::Result<Store> {
        let generation = self.bus.current_generation();
        let mut cached = self.store.lock().await;
        if let Some((opened, store)) = &*cached
            && *opened == generation
        {
            return Ok(store.clone());
        }
        let jetstream = crate::bus::jetstream(self.bus.client());
        let store = crate::bus::open_kv(&jetstream, &self.name, "Membrane app key-value buckets", (1, None)).await?;
        *cached = Some((generation, store.clone()));
        Ok(store)
    }
}

impl Remote for LatticeBuckets {
    fn open<'a>(&'a self, app: &'a str, bucket: &'a str) -> BoxFuture<'a, anyhow::Result<Arc<dyn Bucket>>> {
        Box::pin(async move {
            let store = self.store().await?;
            let client = self.bus.client();
            let max_payload = client.server_info().max_payload;
            Ok(Arc::new(NatsBucket {
                store,
                jetstream: crate::bus::jetstream(client.clone()),
                client,
                kv: self.name.clone(),
                prefix: format!("{app}.{bucket}."),
                max_value: max_payload.saturating_sub(HEADROOM),
                locks: KeyLocks::default(),
            }) as Arc<dyn Bucket>)
        })
    }
}

/// One app's bucket: the keys under `prefix` in the lattice's KV bucket.
struct NatsBucket {
    store: Store,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// The KV bucket's name.
    kv: String,
    /// `<app>.<bucket>.`
    prefix: String,
    /// The largest value the server takes.
    max_value: usize,
    locks: KeyLocks,
}

fn other(what: &str, e: impl std::fmt::Display) -> KvError {
    KvError::new(format!("nats: {what}: {e}"))
}

impl NatsBucket {
    /// The KV key of guest key `key`, if NATS can store it: letters, digits
    /// and `-/_=.`, not starting or ending with `.`, no empty token.
    fn key(&self, key: &str) -> KvResult<String> {
        let allowed = key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'));
        if !allowed || key.starts_with('.') || key.ends_with('.') || key.contains("..") {
            return Err(KvError::new(format!(
                "key {key:?} cannot be stored in a nats bucket: use letters, digits and `-/_=.` \
                 (not starting or ending with `.`, no `..`)"
            )));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    fn check_size(&self, value: &[u8]) -> KvResult<()> {
        if value.len() > self.max_value {
            return Err(KvError::new(format!(
                "a value of {} bytes is more than the NATS server takes ({} bytes)",
                value.len(),
                self.max_value
            )));
        }
        Ok(())
    }

    /// The entry of `full` (a KV key), if it ever had one.
    async fn entry(&self, full: &str) -> KvResult<Option<Entry>> {
        self.store.entry(full).await.map_err(|e| other("read", e))
    }
}

/// Whether `entry` holds a value (not a deletion marker).
fn live(entry: &Entry) -> bool {
    entry.operation == Operation::Put
}

impl Bucket for NatsBucket {
    fn backend(&self) -> &'static str {
        "nats"
    }

    fn get(&self, key: String) -> BoxFuture<'_, KvResult<Option<Vec<u8>>>> {
        Box::pin(async move {
            let full = self.key(&key)?;
            Ok(self.entry(&full).await?.filter(live).map(|e| e.value.to_vec()))
        })
    }

    fn set(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, KvResult<()>> {
        Box::pin(async move {
            let full = self.key(&key)?;
            self.check_size(&value)?;
            self.store
                .put(full, value.into())
                .await
                .map_err(|e| other("write", e))?;
            Ok(())
        })
    }

    fn delete(&self, key: String) -> BoxFuture<'_, KvResult<()>> {
        Box::pin(async move {
            let full = self.key(&key)?;
            self.store.delete(full).await.map_err(|e| other("delete", e))
        })
    }

    fn exists(&self, key: String) -> BoxFuture<'_, KvResult<bool>> {
        Box::pin(async move {
            let full = self.key(&key)?;
            Ok(self.entry(&full).await?.is_some_and(|e| live(&e)))
        })
    }

    fn list_keys(&self, after: Option<String>, limit: usize) -> BoxFuture<'_, KvResult<(Vec<String>, bool)>> {
        Box::pin(async move {
            let mut keys = tokio::time::timeout(LIST_TIMEOUT, self.all_keys())
                .await
                .map_err(|_| KvError::new(format!("nats: listing keys took more than {LIST_TIMEOUT:?}")))??;
            keys.sort();
            let start = after.map_or(0, |after| keys.partition_point(|k| *k <= after));
            let more = keys.len() > start + limit;
            keys.truncate(start + limit);
            Ok((keys.split_off(start.min(keys.len())), more))
        })
    }

    fn increment(&self, key: String, delta: i64) -> BoxFuture<'_, KvResult<i64>> {
        Box::pin(async move {
            let full = self.key(&key)?;
            let _turn = self.locks.lock(&full).await;
            for attempt in 0..MAX_ATTEMPTS {
                let (current, revision) = match self.entry(&full).await? {
                    Some(e) if live(&e) => (parse_counter(&key, &e.value)?, e.revision),
                    Some(e) => (0, e.revision),
                    None => (0, 0),
                };
                let next = add_counter(&key, current, delta)?;
                match self.store.update(&full, next.to_string().into(), revision).await {
                    Ok(_) => return Ok(next),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => backoff(attempt).await,
                    Err(e) => return Err(other("write", e)),
                }
            }
            Err(KvError::new(format!(
                "contention: key {key:?} changed under {MAX_ATTEMPTS} increments in a row; try again"
            )))
        })
    }

    fn read(&self, key: String) -> BoxFuture<'_, KvResult<(Option<Vec<u8>>, Revision)>> {
        Box::pin(async move {
            let full = self.key(&key)?;
            Ok(match self.entry(&full).await? {
                Some(e) if live(&e) => (Some(e.value.to_vec()), e.revision),
                Some(e) => (None, e.revision),
                None => (None, 0),
            })
        })
    }

    fn swap(&self, key: String, value: Vec<u8>, revision: Revision) -> BoxFuture<'_, KvResult<bool>> {
        Box::pin(async move {
            let full = self.key(&key)?;
            self.check_size(&value)?;
            match self.store.update(&full, value.into(), revision).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(other("write", e)),
            }
        })
    }
}

impl NatsBucket {
    /// Every key of the bucket that holds a value (unordered): the last
    /// message of each subject under the prefix, headers only.
    async fn all_keys(&self) -> KvResult<Vec<String>> {
        let stream = self
            .jetstream
            .get_stream(format!("KV_{}", self.kv))
            .await
            .map_err(|e| other("list", e))?;
        let subject_prefix = format!("$KV.{}.{}", self.kv, self.prefix);
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: format!("{subject_prefix}>"),
                headers_only: true,
                replay_policy: ReplayPolicy::Instant,
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| other("list", e))?;
        let mut keys = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(keys);
        }
        let mut messages = consumer.messages().await.map_err(|e| other("list", e))?;
        let mut scanned = 0;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| other("list", e))?;
            let pending = message.info().map_err(|e| other("list", e))?.pending;
            let deleted = message
                .headers
                .as_ref()
                .and_then(|h| h.get("KV-Operation"))
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            if !deleted && let Some(key) = message.subject.as_str().strip_prefix(&subject_prefix) {
                keys.push(key.to_string());
            }
            scanned += 1;
            if scanned > MAX_SCAN {
                return Err(KvError::new(format!(
                    "nats: the bucket has more than {MAX_SCAN} keys to list"
                )));
            }
            if pending == 0 {
                break;
            }
        }
        Ok(keys)
    }
}

/// Waits a random while before retry number `attempt + 1`: up to 1, 2, 4 ...
/// 32 ms, so that hosts racing for one key fall out of step.
async fn backoff(attempt: u32) {
    let ceiling_us = 1000u64 << attempt.min(5);
    let wait = crate::runtime::trace::random_u64() % ceiling_us;
    tokio::time::sleep(Duration::from_micros(wait)).await;
}

/// One lock per key in use, so a host's increments of one key take turns.
#[derive(Default)]
struct KeyLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// A key's turn; the key's lock is forgotten when nobody waits for it.
struct Turn<'a> {
    locks: &'a KeyLocks,
    key: String,
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    async fn lock(&self, key: &str) -> Turn<'_> {
        let lock = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        Turn {
            locks: self,
            key: key.to_string(),
            lock: Some(lock),
            guard: Some(guard),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.locks.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = self.lock.take()
            && Arc::strong_count(&lock) == 2
        {
            // Only the map and this turn hold it, and a new holder would
            // need the map's lock, held here.
            locks.remove(&self.key);
        }
    }
}
