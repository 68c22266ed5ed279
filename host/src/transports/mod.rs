//! Transports: the media that deliver calls to components.
//!
//! Every medium has the same shape ([`Medium`]): it is bound at start-up (so a
//! busy port fails `membrane up` before anything serves) and then serves until
//! shutdown, handing each call to the dispatcher in [`crate::runtime`]. A new
//! medium is one new file here plus a manifest variant. Transports know
//! nothing of wasmtime; they map a [`crate::runtime::fault::Fault`] to their
//! own error form.

pub mod http;

use crate::manifest::{BindingSpec, Manifest};
use crate::runtime::Runtime;
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A bound medium, ready to serve.
pub trait Medium: Send {
    /// A short description for logs, e.g. `http://127.0.0.1:8080 -> gateway`.
    fn describe(&self) -> String;
    /// Serves until `shutdown` is cancelled, then lets in-flight calls finish.
    fn serve(
        self: Box<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// Binds every binding of `manifest`, in order. Fails on the first that cannot bind.
pub async fn bind_all(
    manifest: &Manifest,
    runtime: &Arc<Runtime>,
) -> anyhow::Result<Vec<Box<dyn Medium>>> {
    let mut media: Vec<Box<dyn Medium>> = Vec::new();
    for (i, binding) in manifest.bindings.iter().enumerate() {
        match binding {
            BindingSpec::Http(spec) => media.push(Box::new(
                http::HttpMedium::bind(i, spec, runtime.clone()).await?,
            )),
        }
    }
    Ok(media)
}
