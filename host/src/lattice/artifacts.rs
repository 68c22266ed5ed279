//! Artifacts: component bytes in a JetStream object store, keyed by digest.
//!
//! `membrane ctl push` puts a component into the bucket
//! `membrane-<lattice>-artifacts` under its `sha256:<hex>` name. Hosts fetch a
//! version by digest, verify that the bytes hash to it, and keep them on
//! disk beside the compiled code ([`blobs`], shared with OCI pulls), so a
//! version crosses the network once per host. The object store chunks large components itself, so components far
//! beyond NATS's `max_payload` work.

use crate::bus::Bus;
use crate::registry::blobs;
use crate::runtime::cache;
use anyhow::{Context as _, bail};
use async_nats::jetstream::object_store::{self, ObjectStore};
use std::path::Path;
use tokio::io::AsyncReadExt as _;

/// How long fetching one artifact may take.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The artifact store of one lattice.
#[derive(Clone)]
pub struct Artifacts {
    bus: Bus,
    bucket: String,
}

/// The object store bucket of `lattice`.
pub fn bucket_name(lattice: &str) -> String {
    format!("membrane-{lattice}-artifacts")
}

impl Artifacts {
    /// The artifact store of `lattice` on `bus`'s JetStream. Nothing is
    /// contacted until first use.
    pub fn new(bus: Bus, lattice: &str) -> Artifacts {
        Artifacts {
            bus,
            bucket: bucket_name(lattice),
        }
    }

    async fn store(&self, create: bool) -> anyhow::Result<ObjectStore> {
        let jetstream = crate::bus::jetstream(self.bus.client());
        match jetstream.get_object_store(&self.bucket).await {
            Ok(store) => Ok(store),
            // No answer says nothing of whether the store exists: creating
            // it would only wait out a second timeout.
            Err(e) if crate::bus::jetstream_failure(&e.to_string()) == crate::bus::Failure::NoQuorum => Err(
                crate::bus::explain(&format!("cannot open object store `{}`", self.bucket), e),
            ),
            Err(_) if create => jetstream
                .create_object_store(object_store::Config {
                    bucket: self.bucket.clone(),
                    description: Some("Membrane component artifacts, by sha256".into()),
                    num_replicas: crate::bus::replicas(),
                    ..Default::default()
                })
                .await
                .map_err(|e| crate::bus::explain(&format!("cannot create object store `{}`", self.bucket), e)),
            Err(e) => Err(e).with_context(|| format!("no artifact store `{}` (push a component first)", self.bucket)),
        }
    }

    /// Stores `bytes` under their digest (once) and returns the digest.
    pub async fn push(&self, bytes: &[u8]) -> anyhow::Result<String> {
        self.push_reporting(bytes, &|_| {}).await
    }

    /// [`Artifacts::push`], calling `progress` with the bytes sent so far.
    pub async fn push_reporting(&self, bytes: &[u8], progress: &(dyn Fn(u64) + Sync)) -> anyhow::Result<String> {
        let digest = cache::digest(bytes);
        let store = self.store(true).await?;
        if store.info(&digest).await.is_ok_and(|info| info.size == bytes.len()) {
            progress(bytes.len() as u64);
            return Ok(digest);
        }
        let mut reader = Counting {
            bytes,
            sent: 0,
            progress,
        };
        store
            .put(digest.as_str(), &mut reader)
            .await
            .map_err(|e| crate::bus::explain_write(&format!("cannot store {digest}"), e))?;
        Ok(digest)
    }

    /// Whether the store holds version `digest` (`false` if it does not
    /// answer within [`FETCH_TIMEOUT`]); an error when JetStream cannot
    /// answer at all (no quorum), which says nothing of the artifact.
    pub async fn exists(&self, digest: &str) -> anyhow::Result<bool> {
        let found = async {
            let store = match self.store(false).await {
                Ok(store) => store,
                Err(e) if crate::bus::jetstream_failure(&format!("{e:#}")) == crate::bus::Failure::NoQuorum => {
                    return Err(e);
                }
                Err(_) => return Ok(false),
            };
            match store.info(digest).await {
                Ok(_) => Ok(true),
                Err(e) if crate::bus::jetstream_failure(&e.to_string()) == crate::bus::Failure::NoQuorum => Err(
                    crate::bus::explain(&format!("cannot look up {digest} in the artifact store"), e),
                ),
                Err(_) => Ok(false),
            }
        };
        tokio::time::timeout(FETCH_TIMEOUT, found).await.unwrap_or(Ok(false))
    }

    /// The bytes of version `digest`, from `cache_dir` when a verified copy
    /// is there, else from the object store (then kept in `cache_dir`).
    pub async fn fetch(&self, digest: &str, cache_dir: Option<&Path>) -> anyhow::Result<Vec<u8>> {
        if let Some(bytes) = blobs::read(cache_dir, digest).await {
            return Ok(bytes);
        }
        let found = tokio::time::timeout(FETCH_TIMEOUT, async {
            let store = self.store(false).await?;
            store
                .get(digest)
                .await
                .with_context(|| format!("artifact {digest} is not in `{}`", self.bucket))
        });
        let mut object = found
            .await
            .map_err(|_| anyhow::anyhow!("artifact {digest}: the store did not answer in {FETCH_TIMEOUT:?}"))??;
        // The object's metadata is the store's word: it sizes nothing here.
        let size = object.info().size as u64;
        if size > cache::MAX_COMPONENT_BYTES {
            bail!(
                "artifact {digest} has {size} bytes, more than a component may have ({} MiB)",
                cache::MAX_COMPONENT_BYTES >> 20
            );
        }
        let mut bytes = Vec::new();
        let mut limited = (&mut object).take(cache::MAX_COMPONENT_BYTES + 1);
        let read = limited.read_to_end(&mut bytes);
        tokio::time::timeout(FETCH_TIMEOUT, read)
            .await
            .map_err(|_| anyhow::anyhow!("artifact {digest}: not fetched in {FETCH_TIMEOUT:?}"))?
            .with_context(|| format!("cannot read artifact {digest}"))?;
        if bytes.len() as u64 > cache::MAX_COMPONENT_BYTES {
            bail!("artifact {digest} is larger than its metadata says");
        }
        let found = cache::digest(&bytes);
        if found != digest {
            bail!("artifact {digest} is corrupt: its bytes hash to {found}");
        }
        blobs::keep(cache_dir, digest, &bytes).await;
        Ok(bytes)
    }
}

impl crate::runtime::ArtifactStore for Artifacts {
    fn fetch<'a>(
        &'a self,
        digest: &'a str,
        cache_dir: Option<&'a Path>,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<Vec<u8>>> {
        Box::pin(Artifacts::fetch(self, digest, cache_dir))
    }
}
/// Reads `bytes`, reporting how many were read.
struct Counting<'a> {
    bytes: &'a [u8],
    sent: usize,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl tokio::io::AsyncRead for Counting<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let rest = &self.bytes[self.sent..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.sent += n;
        (self.progress)(self.sent as u64);
        std::task::Poll::Ready(Ok(()))
    }
}
