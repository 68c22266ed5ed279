//! wasi:keyvalue@0.2.0-draft, the first draft, as `wasmcloud-component`
//! 0.2 imports it: the same buckets, grants and limits as draft2 (the
//! parent module), through draft 1's signatures. Where they differ:
//! - `increment` takes and answers a `u64`: a delta above `i64::MAX`, or a
//!   counter below zero, answers `other` rather than wrapping;
//! - `list-keys` pages by a `u64` cursor, the number of keys already
//!   listed; each page re-walks the pages before it, holding one page;
//! - `get-many` answers `none` for a missing key;
//! - there is no compare-and-swap.

use super::BucketHandle;
use crate::runtime::keyvalue::{self as kv, Bucket, KvError};
use crate::runtime::state::HostState;
use wasmtime::component::{HasSelf, Linker, Resource};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/keyvalue-draft",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::runtime::capabilities::keyvalue::BucketHandle,
        },
    });
}
use bindings::wasi::keyvalue::{atomics, batch, store};

/// The interface version.
pub const VERSION: &str = "0.2.0-draft";

type Answer<T> = wasmtime::Result<Result<T, store::Error>>;

fn other(e: KvError) -> store::Error {
    store::Error::Other(e.0)
}

/// Adds draft 1's host functions to `linker`.
pub fn add_to_linker<C: Send + 'static>(linker: &mut Linker<HostState<C>>) -> wasmtime::Result<()> {
    store::add_to_linker::<_, HasSelf<HostState<C>>>(linker, |s| s)?;
    atomics::add_to_linker::<_, HasSelf<HostState<C>>>(linker, |s| s)?;
    batch::add_to_linker::<_, HasSelf<HostState<C>>>(linker, |s| s)
}

/// The draft-2 error as draft 1's (the same cases).
fn from_draft2(e: super::store::Error) -> store::Error {
    match e {
        super::store::Error::NoSuchStore => store::Error::NoSuchStore,
        super::store::Error::AccessDenied => store::Error::AccessDenied,
        super::store::Error::Other(message) => store::Error::Other(message),
    }
}

/// The page of keys that starts `offset` keys into `bucket`, and the
/// cursor of the next page (`None` after the last). `resume` is where this
/// handle's last page ended: a guest listing page after page (the usual
/// loop) reads one page per call; any other offset walks from the first
/// key, a page at a time, within the call's deadline.
async fn page_at(
    bucket: &dyn Bucket,
    offset: u64,
    resume: &std::sync::Mutex<Option<(u64, String)>>,
) -> kv::KvResult<(Vec<String>, Option<u64>)> {
    let resumed = match &*resume.lock().unwrap_or_else(|e| e.into_inner()) {
        Some((at, key)) if *at == offset => Some(key.clone()),
        _ => None,
    };
    let (mut after, mut skipped) = match resumed {
        Some(key) => (Some(key), offset),
        None => (None, 0u64),
    };
    let (keys, next) = loop {
        let (keys, more) = bucket.list_keys(after, kv::PAGE_KEYS).await?;
        let n = keys.len() as u64;
        if skipped + n > offset || !more || keys.is_empty() {
            let start = usize::try_from(offset.saturating_sub(skipped)).map_or(keys.len(), |s| s.min(keys.len()));
            let next = more.then_some(skipped + n);
            break (keys[start..].to_vec(), next);
        }
        skipped += n;
        after = keys.last().cloned();
    };
    let mut resume = resume.lock().unwrap_or_else(|e| e.into_inner());
    *resume = next.zip(keys.last().cloned());
    Ok((keys, next))
}

/// Draft 1's `u64` delta as the backend's `i64`.
fn signed_delta(delta: u64) -> kv::KvResult<i64> {
    i64::try_from(delta).map_err(|_| KvError::new(format!("a delta may be at most {}; this one is {delta}", i64::MAX)))
}

/// The backend's counter as draft 1's `u64`.
fn unsigned_count(key: &str, count: i64) -> kv::KvResult<u64> {
    u64::try_from(count).map_err(|_| {
        KvError::new(format!(
            "the counter at `{key}` is {count}, below zero, which wasi:keyvalue@0.2.0-draft cannot answer"
        ))
    })
}

impl<C: Send> store::Host for HostState<C> {
    async fn open(&mut self, identifier: String) -> Answer<Resource<BucketHandle>> {
        Ok(super::store::Host::open(self, identifier).await?.map_err(from_draft2))
    }
}

impl<C: Send> store::HostBucket for HostState<C> {
    async fn get(&mut self, this: Resource<BucketHandle>, key: String) -> Answer<Option<Vec<u8>>> {
        Ok(super::store::HostBucket::get(self, this, key)
            .await?
            .map_err(from_draft2))
    }

    async fn set(&mut self, this: Resource<BucketHandle>, key: String, value: Vec<u8>) -> Answer<()> {
        Ok(super::store::HostBucket::set(self, this, key, value)
            .await?
            .map_err(from_draft2))
    }

    async fn delete(&mut self, this: Resource<BucketHandle>, key: String) -> Answer<()> {
        Ok(super::store::HostBucket::delete(self, this, key)
            .await?
            .map_err(from_draft2))
    }

    async fn exists(&mut self, this: Resource<BucketHandle>, key: String) -> Answer<bool> {
        Ok(super::store::HostBucket::exists(self, this, key)
            .await?
            .map_err(from_draft2))
    }

    async fn list_keys(&mut self, this: Resource<BucketHandle>, cursor: Option<u64>) -> Answer<store::KeyResponse> {
        let b = self.bucket(&this, "list-keys")?;
        let page = page_at(&*b.bucket, cursor.unwrap_or(0), &b.resume).await;
        Ok(page
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
            .map_err(other))
    }

    async fn drop(&mut self, this: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table().delete(this)?;
        Ok(())
    }
}

impl<C: Send> atomics::Host for HostState<C> {
    async fn increment(&mut self, bucket: Resource<BucketHandle>, key: String, delta: u64) -> Answer<u64> {
        let b = self.bucket(&bucket, "increment")?;
        let result = async {
            kv::check_key(&key)?;
            let count = b.bucket.increment(key.clone(), signed_delta(delta)?).await?;
            unsigned_count(&key, count)
        };
        Ok(result.await.map_err(other))
    }
}

impl<C: Send> batch::Host for HostState<C> {
    async fn get_many(
        &mut self,
        bucket: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
        let found = super::batch::Host::get_many(self, bucket, keys)
            .await?
            .map_err(from_draft2)?;
        Ok(Ok(found
            .into_iter()
            .map(|(key, value)| value.map(|v| (key, v)))
            .collect()))
    }

    async fn set_many(&mut self, bucket: Resource<BucketHandle>, key_values: Vec<(String, Vec<u8>)>) -> Answer<()> {
        Ok(super::batch::Host::set_many(self, bucket, key_values)
            .await?
            .map_err(from_draft2))
    }

    async fn delete_many(&mut self, bucket: Resource<BucketHandle>, keys: Vec<String>) -> Answer<()> {
        Ok(super::batch::Host::delete_many(self, bucket, keys)
            .await?
            .map_err(from_draft2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::keyvalue::embedded;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_u64_cursor_pages_through_every_key_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = embedded::open(&dir.path().join("app.redb"), "b").expect("open");
        let keys: Vec<String> = (0..2500).map(|i| format!("k{i:05}")).collect();
        bucket
            .set_many(keys.iter().map(|k| (k.clone(), b"v".to_vec())).collect())
            .await
            .unwrap();
        let resume = std::sync::Mutex::new(None);
        let (mut listed, mut cursor, mut pages) = (Vec::new(), Some(0), 0);
        while let Some(offset) = cursor {
            let (page, next) = page_at(&bucket, offset, &resume).await.unwrap();
            assert!(page.len() <= kv::PAGE_KEYS);
            listed.extend(page);
            cursor = next;
            pages += 1;
            // Each next page resumes after the key this one ended with.
            let expected = next.zip(listed.last().cloned());
            assert_eq!(*resume.lock().unwrap(), expected);
        }
        assert_eq!((listed, pages), (keys.clone(), 3));
        // A cursor the guest made up: mid-page, or past the end, with and
        // without a page to resume from.
        for resume in [
            std::sync::Mutex::new(None),
            std::sync::Mutex::new(Some((1000, "k00999".into()))),
        ] {
            let (page, next) = page_at(&bucket, 2498, &resume).await.unwrap();
            assert_eq!((page, next), (keys[2498..].to_vec(), None));
            assert_eq!(page_at(&bucket, u64::MAX, &resume).await.unwrap(), (Vec::new(), None));
            let (page, _) = page_at(&bucket, 1000, &std::sync::Mutex::new(Some((1000, "k00999".into()))))
                .await
                .unwrap();
            assert_eq!(page.first(), Some(&keys[1000]));
        }
    }

    #[test]
    fn deltas_and_counts_outside_i64_are_errors_not_wraps() {
        assert_eq!(signed_delta(1).unwrap(), 1);
        assert_eq!(signed_delta(i64::MAX as u64).unwrap(), i64::MAX);
        assert!(signed_delta(i64::MAX as u64 + 1).unwrap_err().0.contains("at most"));
        assert_eq!(unsigned_count("k", 7).unwrap(), 7);
        assert!(unsigned_count("k", -1).unwrap_err().0.contains("below zero"));
    }
}
