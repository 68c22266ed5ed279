//! Spin's key-value interface, `spin:key-value/key-value@3.0.0` (spin-sdk 6
//! and 7's `key_value` module), on the same buckets and grants as
//! wasi:keyvalue: a Spin store's label is a bucket name (`spin.toml`'s
//! `key_value_stores = ["default"]` grants bucket `default`). Every function
//! is an `async func`, so a component that imports it runs on the engine
//! with concurrency support.
//!
//! As Spin answers: a label not granted is `access-denied`, one granted but
//! not opened `no-such-store`. `get-keys` answers a stream of every key,
//! read from the bucket one page at a time as the guest reads the stream
//! ([`KeyPages`]): the host holds one page, however large the bucket.

use super::BucketHandle;
use crate::runtime::keyvalue::{self as kv, Grant, KvError};
use crate::runtime::state::HostState;
use futures::future::BoxFuture;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime::StoreContextMut;
use wasmtime::component::{
    Accessor, Destination, FutureReader, HasData, Linker, Resource, ResourceTable, StreamProducer, StreamReader,
    StreamResult, VecBuffer,
};

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

/// One page of keys being read: the keys, and whether more follow.
type PageRead = BoxFuture<'static, kv::KvResult<(Vec<String>, bool)>>;

/// The keys of a bucket as a `get-keys` stream: one page read from the
/// bucket each time the guest reads, so the host holds one page at a time.
/// How it ended goes to `done` (the call's future): `Ok` at the last key,
/// or the backend's error.
struct KeyPages {
    bucket: Arc<dyn kv::Bucket>,
    /// The last key streamed so far.
    after: Option<String>,
    /// The page being read.
    reading: Option<PageRead>,
    done: Option<tokio::sync::oneshot::Sender<Result<(), Error>>>,
}

impl KeyPages {
    fn end(&mut self, result: Result<(), Error>) -> Poll<wasmtime::Result<StreamResult>> {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
        Poll::Ready(Ok(StreamResult::Dropped))
    }
}

impl<D> StreamProducer<D> for KeyPages {
    type Item = String;
    type Buffer = VecBuffer<String>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        store: StoreContextMut<'a, D>,
        mut destination: Destination<'a, String, VecBuffer<String>>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let this = self.get_mut();
        if this.done.is_none() {
            return Poll::Ready(Ok(StreamResult::Dropped));
        }
        if finish {
            // Cancelled: nothing was written; a page being read is read again.
            this.reading = None;
            return Poll::Ready(Ok(StreamResult::Cancelled));
        }
        if destination.remaining(store) == Some(0) {
            return Poll::Ready(Ok(StreamResult::Completed));
        }
        let reading = this.reading.get_or_insert_with(|| {
            let (bucket, after) = (this.bucket.clone(), this.after.clone());
            Box::pin(async move { bucket.list_keys(after, kv::PAGE_KEYS).await })
        });
        let read = std::task::ready!(reading.as_mut().poll(cx));
        this.reading = None;
        match read {
            Ok((page, more)) => {
                if let Some(last) = page.last() {
                    this.after = Some(last.clone());
                }
                destination.set_buffer(page.into());
                if more {
                    Poll::Ready(Ok(StreamResult::Completed))
                } else {
                    this.end(Ok(()))
                }
            }
            Err(e) => this.end(Err(other(e))),
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
        let (done, result) = tokio::sync::oneshot::channel();
        let pages = KeyPages {
            bucket: b.bucket.clone(),
            after: None,
            reading: None,
            done: Some(done),
        };
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, pages)?;
            // A stream dropped before its end ends the call well.
            let done = FutureReader::new(&mut access, async move {
                Ok::<_, wasmtime::Error>(result.await.unwrap_or(Ok(())))
            })?;
            Ok((stream, done))
        })
    }
}
