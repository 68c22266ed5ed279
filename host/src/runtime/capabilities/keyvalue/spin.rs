//! Spin's key-value interface, `spin:key-value/key-value@3.0.0` (spin-sdk 6
//! and 7's `key_value` module), on the same buckets and grants as
//! wasi:keyvalue: a Spin store's label is a bucket name (`spin.toml`'s
//! `key_value_stores = ["default"]` grants bucket `default`). Every function
//! is an `async func`, so a component that imports it runs on the engine
//! with concurrency support.
//!
//! As Spin answers: a label not granted is `access-denied`, one granted but
//! not opened `no-such-store`. `get-keys` answers a stream of every key;
//! a bucket of more than [`MAX_KEYS`] keys ends the stream there and
//! answers `other` in its future.

use super::BucketHandle;
use crate::runtime::keyvalue::{self as kv, Grant, KvError};
use crate::runtime::state::HostState;
use std::sync::Arc;
use wasmtime::component::{Accessor, FutureReader, HasData, Linker, Resource, ResourceTable, StreamReader};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/spin-key-value",
        world: "spin:key-value/imports",
        imports: { default: async | store | trappable },
        with: {
            "spin:key-value/key-value.store": crate::runtime::capabilities::keyvalue::BucketHandle,
        },
    });
}
use bindings::spin::key_value::key_value::{self as spin_kv, Error};

/// The interface name.
pub const INTERFACE: &str = "spin:key-value/key-value@3.0.0";

/// The most keys one `get-keys` streams.
pub const MAX_KEYS: usize = 100_000;

/// What the host functions see of one instance's state.
pub struct View<'a> {
    grant: &'a Arc<Grant>,
    table: &'a mut ResourceTable,
}

/// The [`HasData`] of this interface.
pub struct SpinKeyValue;

impl HasData for SpinKeyValue {
    type Data<'a> = View<'a>;
}

/// Adds Spin's key-value functions to `linker` (an engine with concurrency support).
pub fn add_to_linker<C: Send + 'static>(linker: &mut Linker<HostState<C>>) -> wasmtime::Result<()> {
    spin_kv::add_to_linker::<_, SpinKeyValue>(linker, |state| {
        let (caps, table) = state.caps_and_table();
        View {
            grant: &caps.keyvalue,
            table,
        }
    })
}

fn other(e: KvError) -> Error {
    Error::Other(e.0)
}

type Answer<T> = wasmtime::Result<Result<T, Error>>;

/// The bucket behind `handle`, counting `op` on it.
fn bucket<T>(
    accessor: &Accessor<T, SpinKeyValue>,
    handle: &Resource<BucketHandle>,
    op: &'static str,
) -> wasmtime::Result<BucketHandle> {
    accessor.with(|mut access| {
        let view = access.get();
        let bucket = view.table.get(handle)?.clone();
        view.grant.count(op, bucket.bucket.backend());
        Ok(bucket)
    })
}

/// Every key of `bucket`, page by page, up to [`MAX_KEYS`].
async fn all_keys(bucket: &BucketHandle) -> (Vec<String>, Result<(), Error>) {
    let (mut keys, mut after) = (Vec::new(), None);
    loop {
        let (page, more) = match bucket.bucket.list_keys(after, kv::PAGE_KEYS).await {
            Ok(found) => found,
            Err(e) => return (keys, Err(other(e))),
        };
        after = page.last().cloned();
        keys.extend(page);
        if keys.len() > MAX_KEYS {
            keys.truncate(MAX_KEYS);
            let message = format!("the store has more than {MAX_KEYS} keys; get-keys streamed the first {MAX_KEYS}");
            return (keys, Err(Error::Other(message)));
        }
        if !more {
            return (keys, Ok(()));
        }
    }
}

impl spin_kv::Host for View<'_> {}

impl spin_kv::HostStore for View<'_> {}

impl<T> spin_kv::HostStoreWithStore<T> for SpinKeyValue {
    async fn drop(accessor: &Accessor<T, Self>, this: Resource<BucketHandle>) -> wasmtime::Result<()> {
        accessor.with(|mut access| access.get().table.delete(this))?;
        Ok(())
    }

    async fn open(accessor: &Accessor<T, Self>, label: String) -> Answer<Resource<BucketHandle>> {
        accessor.with(|mut access| {
            let view = access.get();
            let handle = match super::open_bucket(view.grant, label) {
                Ok(handle) => handle,
                Err(super::Unopened::Denied) => return Ok(Err(Error::AccessDenied)),
                Err(super::Unopened::Missing) => return Ok(Err(Error::NoSuchStore)),
            };
            match view.table.push(handle) {
                Ok(handle) => Ok(Ok(handle)),
                Err(_) => Ok(Err(Error::StoreTableFull)),
            }
        })
    }

    async fn get(accessor: &Accessor<T, Self>, this: Resource<BucketHandle>, key: String) -> Answer<Option<Vec<u8>>> {
        let b = bucket(accessor, &this, "get")?;
        let result = async {
            kv::check_key(&key)?;
            b.bucket.get(key).await
        };
        Ok(result.await.map_err(other))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> Answer<()> {
        let b = bucket(accessor, &this, "set")?;
        let result = async {
            kv::check_key(&key)?;
            kv::check_value(&value)?;
            b.bucket.set(key, value).await
        };
        Ok(result.await.map_err(other))
    }

    async fn delete(accessor: &Accessor<T, Self>, this: Resource<BucketHandle>, key: String) -> Answer<()> {
        let b = bucket(accessor, &this, "delete")?;
        let result = async {
            kv::check_key(&key)?;
            b.bucket.delete(key).await
        };
        Ok(result.await.map_err(other))
    }

    async fn exists(accessor: &Accessor<T, Self>, this: Resource<BucketHandle>, key: String) -> Answer<bool> {
        let b = bucket(accessor, &this, "exists")?;
        let result = async {
            kv::check_key(&key)?;
            b.bucket.exists(key).await
        };
        Ok(result.await.map_err(other))
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), Error>>)> {
        let b = bucket(accessor, &this, "get-keys")?;
        let (keys, result) = all_keys(&b).await;
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, keys)?;
            let done = FutureReader::new(&mut access, async move { Ok::<_, wasmtime::Error>(result) })?;
            Ok((stream, done))
        })
    }
}
