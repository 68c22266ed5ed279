//! Components as OCI artifacts: `oci://REGISTRY/REPOSITORY:TAG` or
//! `...@sha256:DIGEST` sources, pulled from and pushed to any registry that
//! speaks the OCI distribution API (ghcr.io, Docker Hub, Harbor, `zot`,
//! CNCF distribution), in the layout `wkg` and `oci-wasm` use.
//!
//! - [`reference`]: the reference grammar;
//! - [`artifact`]: the Wasm artifact layout (pure);
//! - [`auth`]: credentials and challenges;
//! - [`client`]: the distribution API, verifying every byte;
//! - [`blobs`]: the content-addressed store on disk, shared with the
//!   lattice's artifacts;
//! - `http`: one bounded HTTP exchange.
//!
//! The bottom layer: it imports nothing else of the crate.

pub mod artifact;
pub mod auth;
pub mod blobs;
pub mod client;
mod http;
pub mod reference;

pub use client::{Pulled, Registry};
pub use reference::Reference;
use std::path::Path;

/// The largest component a host reads, fetches or pulls: 256 MiB.
pub const MAX_COMPONENT_BYTES: u64 = 256 << 20;

impl Default for Registry {
    /// TLS to every registry; components up to [`MAX_COMPONENT_BYTES`].
    fn default() -> Registry {
        Registry::new([], MAX_COMPONENT_BYTES)
    }
}

/// Why a registry operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The registry did not answer (refused, timed out, 5xx after retries):
    /// a cached resolution may stand in.
    #[error("{0}")]
    Unreachable(String),
    /// It answered, and the answer is a refusal or fails a check.
    #[error("{0}")]
    Failed(String),
}

impl Registry {
    /// [`Registry::pull`], except that a tag whose registry cannot be
    /// reached runs the digest it resolved to last time, if its bytes are
    /// cached (logged as a warning naming both).
    pub async fn pull_or_cached(&self, reference: &Reference, cache: Option<&Path>) -> Result<Pulled, Error> {
        match self.pull(reference, cache).await {
            Err(Error::Unreachable(why)) if reference.digest.is_none() => {
                if let Some(record) = blobs::read_tag(cache, &reference.unpinned()).await
                    && let Some(pulled) = self.cached(&record.digest, cache).await
                {
                    tracing::warn!(
                        "{why}; running {} as cached: the tag named {} at {}",
                        reference.unpinned(),
                        record.digest,
                        record.resolved
                    );
                    return Ok(pulled);
                }
                Err(Error::Unreachable(format!("{why} (and no cached copy of {reference})")))
            }
            other => other,
        }
    }
}
