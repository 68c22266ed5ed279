//! wasi:keyvalue@0.2.0-draft2 (`store`, `atomics` with `cas`, `batch`):
//! buckets that outlive instances, deny by default. The first draft
//! (`0.2.0-draft`, which `wasmcloud-component` 0.2 imports) is served on
//! the same buckets and grants ([`draft1`]), and so is Spin's
//! `spin:key-value@3.0.0` ([`spin`]).
//!
//! A component opens only the buckets `[components.<name>] keyvalue = {
//! buckets = [...] }` grants it; any other identifier answers
//! `error::access-denied` (whether or not such a bucket exists), and a
//! component that imports wasi:keyvalue without a grant fails at load with
//! a message naming the field. The buckets themselves are opened when the
//! app is staged (`runtime::keyvalue::AppBuckets`) on the backend the app's
//! `[keyvalue.<bucket>]` table names, and attached to the grant here.
//!
//! Every failure reaches the guest as one of the interface's error cases
//! (`other(message)` for anything a backend or a limit refuses); only a
//! host bug (a stale resource handle) traps. Every operation is counted in
//! `membrane_keyvalue_ops_total`.

use super::capability::{Capability, Load};
use super::policy::HostPolicy;
use crate::manifest::{ComponentSpec, Manifest};
use crate::runtime::keyvalue::{self as kv, Bucket, Grant, KvError, Revision};
use crate::runtime::state::HostState;
use std::collections::BTreeSet;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker, Resource};

pub mod draft1;
pub mod spin;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": super::BucketHandle,
            "wasi:keyvalue/atomics.cas": super::CasHandle,
        },
    });
}
use bindings::wasi::keyvalue::{atomics, batch, store};

/// The interface version this host implements.
pub const VERSION: &str = "0.2.0-draft2";

/// Every version served.
pub const VERSIONS: [&str; 2] = [VERSION, draft1::VERSION];

/// The wasi:keyvalue capability.
pub struct KeyValue;

impl Capability for KeyValue {
    type Prepared = Arc<Grant>;
    type Instance = Arc<Grant>;

    fn admit(policy: &HostPolicy, app: &Manifest, name: &str, spec: &ComponentSpec) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, bucket) in spec.keyvalue.buckets.iter().enumerate() {
            let backend = app.bucket_backend(bucket);
            if !policy.allows_keyvalue(backend) {
                problems.push(format!(
                    "components.{name}.keyvalue.buckets[{i}]: bucket `{bucket}` ({}) is not allowed by this host (--allow-keyvalue {})",
                    backend.name(),
                    backend.name()
                ));
            }
        }
        problems
    }

    fn prepare(load: &Load) -> Result<Arc<Grant>, Vec<String>> {
        let name = load.name;
        let granted: BTreeSet<String> = load.spec.keyvalue.buckets.iter().cloned().collect();
        let kv_imports: Vec<&String> = load
            .imports
            .iter()
            .filter(|i| i.starts_with("wasi:keyvalue/") || *i == spin::INTERFACE)
            .collect();
        let mut problems: Vec<String> = kv_imports
            .iter()
            .filter(|import| import.starts_with("wasi:"))
            .filter(|import| !VERSIONS.iter().any(|v| import.ends_with(&format!("@{v}"))))
            .map(|import| {
                format!(
                    "components.{name}: imports `{import}`, but this host implements wasi:keyvalue@{} only",
                    VERSIONS.join(" and @")
                )
            })
            .collect();
        if let Some(import) = kv_imports.first()
            && granted.is_empty()
        {
            problems.push(format!(
                "components.{name}: imports `{import}`, but `components.{name}.keyvalue` grants no bucket; \
                 list the buckets it may open, e.g. keyvalue = {{ buckets = [\"counts\"] }}"
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let buckets = load
            .app
            .buckets
            .iter()
            .filter(|(bucket, _)| granted.contains(*bucket))
            .map(|(bucket, opened)| (bucket.clone(), opened.clone()))
            .collect();
        Ok(Arc::new(Grant {
            app: load.app.app.as_str().into(),
            component: name.into(),
            granted,
            buckets,
        }))
    }

    fn add_to_linker<C: Send + 'static>(
        _: &Arc<Grant>,
        linker: &mut Linker<HostState<C>>,
        concurrent: bool,
    ) -> wasmtime::Result<()> {
        store::add_to_linker::<_, HasSelf<HostState<C>>>(linker, |s| s)?;
        atomics::add_to_linker::<_, HasSelf<HostState<C>>>(linker, |s| s)?;
        batch::add_to_linker::<_, HasSelf<HostState<C>>>(linker, |s| s)?;
        draft1::add_to_linker(linker)?;
        if concurrent {
            spin::add_to_linker(linker)?;
        }
        Ok(())
    }

    fn instance(prepared: &Arc<Grant>) -> wasmtime::Result<Arc<Grant>> {
        Ok(prepared.clone())
    }
}

/// An open bucket, as a guest holds it.
#[derive(Clone)]
pub struct BucketHandle {
    name: Arc<str>,
    bucket: Arc<dyn Bucket>,
    /// Draft 1's `list-keys` cursor (an offset) where the last page this
    /// handle listed ended, and the key it ended after: the next page
    /// starts there instead of walking from the first key.
    resume: Arc<std::sync::Mutex<Option<(u64, String)>>>,
}

/// A `cas` handle: the key's value and revision when it was taken.
pub struct CasHandle {
    bucket: BucketHandle,
    key: String,
    value: Option<Vec<u8>>,
    revision: Revision,
}

type Answer<T> = wasmtime::Result<Result<T, store::Error>>;

fn other(e: KvError) -> store::Error {
    store::Error::Other(e.0)
}

/// Checks every key of a batch, and their number.
fn check_keys<'a>(keys: impl ExactSizeIterator<Item = &'a String>) -> kv::KvResult<()> {
    if keys.len() > kv::MAX_BATCH_KEYS {
        return Err(KvError::new(format!(
            "a batch may name at most {} keys; this one names {}",
            kv::MAX_BATCH_KEYS,
            keys.len()
        )));
    }
    keys.into_iter().try_for_each(|k| kv::check_key(k))
}

impl<C: Send> HostState<C> {
    /// The bucket behind `handle`, counting `op` on it.
    fn bucket(&mut self, handle: &Resource<BucketHandle>, op: &'static str) -> wasmtime::Result<BucketHandle> {
        let bucket = self.table().get(handle)?.clone();
        self.caps.keyvalue.count(op, bucket.bucket.backend());
        Ok(bucket)
    }
}

/// Why a bucket did not open.
pub enum Unopened {
    /// The grant does not list it.
    Denied,
    /// Listed, but not opened by the app phase.
    Missing,
}

/// Opens bucket `identifier` under `grant`, counting and logging a refusal:
/// every interface version's `open`.
pub fn open_bucket(grant: &Grant, identifier: String) -> Result<BucketHandle, Unopened> {
    if !grant.granted.contains(&identifier) {
        grant.count("open", "none");
        tracing::warn!(
            component = &*grant.component,
            "keyvalue: open({identifier:?}) refused: not in components.{}.keyvalue.buckets",
            grant.component
        );
        return Err(Unopened::Denied);
    }
    let Some(bucket) = grant.buckets.get(&identifier) else {
        grant.count("open", "none");
        return Err(Unopened::Missing);
    };
    grant.count("open", bucket.backend());
    Ok(BucketHandle {
        name: identifier.into(),
        bucket: bucket.clone(),
        resume: Arc::default(),
    })
}

impl<C: Send> store::Host for HostState<C> {
    async fn open(&mut self, identifier: String) -> Answer<Resource<BucketHandle>> {
        let handle = match open_bucket(&self.caps.keyvalue, identifier) {
            Ok(handle) => handle,
            Err(Unopened::Denied) => return Ok(Err(store::Error::AccessDenied)),
            Err(Unopened::Missing) => return Ok(Err(store::Error::NoSuchStore)),
        };
        Ok(Ok(self.table().push(handle)?))
    }
}

impl<C: Send> store::HostBucket for HostState<C> {
    async fn get(&mut self, this: Resource<BucketHandle>, key: String) -> Answer<Option<Vec<u8>>> {
        let b = self.bucket(&this, "get")?;
        let result = async {
            kv::check_key(&key).map_err(other)?;
            b.bucket.get(key).await.map_err(other)
        }
        .await;
        Ok(result)
    }

    async fn set(&mut self, this: Resource<BucketHandle>, key: String, value: Vec<u8>) -> Answer<()> {
        let b = self.bucket(&this, "set")?;
        let result = async {
            kv::check_key(&key).map_err(other)?;
            kv::check_value(&value).map_err(other)?;
            b.bucket.set(key, value).await.map_err(other)
        };
        Ok(result.await)
    }

    async fn delete(&mut self, this: Resource<BucketHandle>, key: String) -> Answer<()> {
        let b = self.bucket(&this, "delete")?;
        let result = async {
            kv::check_key(&key).map_err(other)?;
            b.bucket.delete(key).await.map_err(other)
        };
        Ok(result.await)
    }

    async fn exists(&mut self, this: Resource<BucketHandle>, key: String) -> Answer<bool> {
        let b = self.bucket(&this, "exists")?;
        let result = async {
            kv::check_key(&key).map_err(other)?;
            b.bucket.exists(key).await.map_err(other)
        };
        Ok(result.await)
    }

    async fn list_keys(&mut self, this: Resource<BucketHandle>, cursor: Option<String>) -> Answer<store::KeyResponse> {
        let b = self.bucket(&this, "list-keys")?;
        let result = async {
            if let Some(cursor) = &cursor {
                kv::check_key(cursor).map_err(|e| other(KvError::new(format!("cursor: {e}"))))?;
            }
            let (keys, more) = b.bucket.list_keys(cursor, kv::PAGE_KEYS).await.map_err(other)?;
            let cursor = if more { keys.last().cloned() } else { None };
            Ok(store::KeyResponse { keys, cursor })
        };
        Ok(result.await)
    }

    async fn drop(&mut self, this: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table().delete(this)?;
        Ok(())
    }
}

impl<C: Send> atomics::Host for HostState<C> {
    async fn increment(&mut self, bucket: Resource<BucketHandle>, key: String, delta: i64) -> Answer<i64> {
        let b = self.bucket(&bucket, "increment")?;
        let result = async {
            kv::check_key(&key).map_err(other)?;
            b.bucket.increment(key, delta).await.map_err(other)
        };
        Ok(result.await)
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let cas = self.table().delete(cas)?;
        self.caps.keyvalue.count("swap", cas.bucket.bucket.backend());
        if let Err(e) = kv::check_value(&value) {
            return Ok(Err(atomics::CasError::StoreError(other(e))));
        }
        let bucket = cas.bucket.bucket.clone();
        match bucket.swap(cas.key.clone(), value, cas.revision).await {
            Ok(true) => Ok(Ok(())),
            Ok(false) => match bucket.read(cas.key.clone()).await {
                Ok((value, revision)) => {
                    let fresh = CasHandle {
                        bucket: cas.bucket,
                        key: cas.key,
                        value,
                        revision,
                    };
                    Ok(Err(atomics::CasError::CasFailed(self.table().push(fresh)?)))
                }
                Err(e) => Ok(Err(atomics::CasError::StoreError(other(e)))),
            },
            Err(e) => Ok(Err(atomics::CasError::StoreError(other(e)))),
        }
    }
}

impl<C: Send> atomics::HostCas for HostState<C> {
    async fn new(&mut self, bucket: Resource<BucketHandle>, key: String) -> Answer<Resource<CasHandle>> {
        let b = self.bucket(&bucket, "cas-new")?;
        if let Err(e) = kv::check_key(&key) {
            return Ok(Err(other(e)));
        }
        match b.bucket.read(key.clone()).await {
            Ok((value, revision)) => {
                let cas = CasHandle {
                    bucket: b,
                    key,
                    value,
                    revision,
                };
                Ok(Ok(self.table().push(cas)?))
            }
            Err(e) => Ok(Err(other(e))),
        }
    }

    async fn current(&mut self, this: Resource<CasHandle>) -> Answer<Option<Vec<u8>>> {
        let cas = self.table().get(&this)?;
        let value = cas.value.clone();
        let backend = cas.bucket.bucket.backend();
        self.caps.keyvalue.count("cas-current", backend);
        Ok(Ok(value))
    }

    async fn drop(&mut self, this: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table().delete(this)?;
        Ok(())
    }
}

impl<C: Send> batch::Host for HostState<C> {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Answer<Vec<(String, Option<Vec<u8>>)>> {
        let b = self.bucket(&bucket, "get-many")?;
        let result = async {
            check_keys(keys.iter()).map_err(other)?;
            let mut found = Vec::with_capacity(keys.len());
            let mut bytes = 0;
            for key in keys {
                let value = b.bucket.get(key.clone()).await.map_err(other)?;
                bytes += value.as_ref().map_or(0, Vec::len);
                if bytes > kv::MAX_BATCH_BYTES {
                    return Err(other(KvError::new(format!(
                        "the values asked for exceed {} bytes; ask for fewer keys at once",
                        kv::MAX_BATCH_BYTES
                    ))));
                }
                found.push((key, value));
            }
            Ok(found)
        };
        Ok(result.await)
    }

    async fn set_many(&mut self, bucket: Resource<BucketHandle>, key_values: Vec<(String, Vec<u8>)>) -> Answer<()> {
        let b = self.bucket(&bucket, "set-many")?;
        let result = async {
            check_keys(key_values.iter().map(|(k, _)| k)).map_err(other)?;
            key_values
                .iter()
                .try_for_each(|(_, v)| kv::check_value(v))
                .map_err(other)?;
            b.bucket.set_many(key_values).await.map_err(other)
        };
        Ok(result.await)
    }

    async fn delete_many(&mut self, bucket: Resource<BucketHandle>, keys: Vec<String>) -> Answer<()> {
        let b = self.bucket(&bucket, "delete-many")?;
        let result = async {
            check_keys(keys.iter()).map_err(other)?;
            b.bucket.delete_many(keys).await.map_err(other)
        };
        Ok(result.await)
    }
}

impl std::fmt::Debug for BucketHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bucket {:?} ({})", self.name, self.bucket.backend())
    }
}
