//! Span export over OTLP/HTTP (protobuf): `membrane up --otlp URL`.
//!
//! This file owns the export pipeline and nothing else: the OpenTelemetry
//! tracer provider (service `membrane`, resource attributes naming the host
//! and its lattice), its batch span processor, the `tracing` layer that turns
//! the host's spans into OpenTelemetry spans, and the small HTTP client that
//! posts the batches. What spans exist and how they find their parents is
//! `runtime::trace`'s business; this only ships them.
//!
//! A dead or slow collector never slows or fails a call: spans queue in a
//! bounded channel (2048 by default, `OTEL_BSP_MAX_QUEUE_SIZE`), a thread of
//! the SDK's own exports them in batches every 5 s (`OTEL_BSP_SCHEDULE_DELAY`)
//! with a 5 s timeout per export, and spans that find the queue full are
//! dropped (the SDK warns once). A failing collector is warned about once,
//! and again only after it has answered in between. [`Export::shutdown`]
//! flushes what is queued.
//!
//! The client speaks plain HTTP/1.1 on hyper (no gRPC, no TLS stack); for an
//! `https://` collector, run a local collector or agent in between.

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_subscriber::Registry;
use tracing_subscriber::filter::{LevelFilter, Targets};

/// How long one export (one POST of a batch) may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest collector response read, in bytes.
const MAX_RESPONSE: usize = 1 << 20;

/// The `tracing` layer that exports spans, as installed on the registry.
pub type Layer = tracing_subscriber::filter::Filtered<
    tracing_opentelemetry::OpenTelemetryLayer<Registry, SdkTracer>,
    Targets,
    Registry,
>;

/// Where spans go: `--otlp` (or `MEMBRANE_OTLP`), else the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT`. `None`: no export at all.
pub fn endpoint(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .map(|url| url.trim().to_string())
        .filter(|url| !url.is_empty())
}

/// The URL spans are posted to: `base` with `/v1/traces` appended (as for
/// `OTEL_EXPORTER_OTLP_ENDPOINT`), unless it already ends with it.
pub fn traces_url(base: &str) -> anyhow::Result<String> {
    let url = base.trim_end_matches('/');
    let url = if url.ends_with("/v1/traces") {
        url.to_string()
    } else {
        format!("{url}/v1/traces")
    };
    let uri: hyper::Uri = url.parse().with_context(|| format!("--otlp {base:?} is not a URL"))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(url),
        Some("https") => anyhow::bail!(
            "--otlp {base:?}: only plain http:// collectors are supported; point it at a local collector or agent"
        ),
        _ => anyhow::bail!("--otlp {base:?} is not an http:// URL (e.g. http://127.0.0.1:4318)"),
    }
}

/// Who exports: the resource attributes of every span of this process.
pub struct Identity {
    /// The host's id (`host-…`), also its `service.instance.id`.
    pub host: String,
    /// The lattice it joins, if it joins one.
    pub lattice: Option<String>,
    /// Its labels.
    pub labels: Vec<(String, String)>,
}

/// A running export: keep it, and [`Export::shutdown`] it on the way out.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Flushes what is queued (bounded by the export timeout) and stops.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("otlp: flushing spans at shutdown: {e}");
        }
    }
}

/// Starts exporting to `base` (a collector's OTLP/HTTP base URL, e.g.
/// `http://127.0.0.1:4318`) as `identity`; posts run on `runtime`. Returns
/// the layer to install and the handle that flushes at shutdown.
pub fn start(base: &str, identity: &Identity, runtime: tokio::runtime::Handle) -> anyhow::Result<(Layer, Export)> {
    let url = traces_url(base)?;
    let client = PostClient {
        runtime,
        inner: Client::builder(hyper_util::rt::TokioExecutor::new()).build(HttpConnector::new()),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .context("otlp: cannot build the exporter")?;
    let mut attributes = vec![
        KeyValue::new("service.instance.id", identity.host.clone()),
        KeyValue::new("membrane.host.id", identity.host.clone()),
    ];
    if let Some(lattice) = &identity.lattice {
        attributes.push(KeyValue::new("membrane.lattice", lattice.clone()));
    }
    for (key, value) in &identity.labels {
        attributes.push(KeyValue::new(format!("membrane.label.{key}"), value.clone()));
    }
    let resource = Resource::builder()
        .with_service_name("membrane")
        .with_attributes(attributes)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(WarnOnce {
            inner: exporter,
            url,
            failing: AtomicBool::new(false),
        })
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("membrane"))
        // Parents come from each call's context (runtime::trace), never from
        // the span that happens to be entered.
        .with_context_activation(false)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false);
    let only_membrane = Targets::new().with_target("membrane", LevelFilter::INFO);
    Ok((
        tracing_subscriber::Layer::with_filter(layer, only_membrane),
        Export { provider },
    ))
}

/// The OTLP exporter, warning once when the collector stops taking spans
/// (and once more after each recovery), rather than at every batch.
#[derive(Debug)]
struct WarnOnce<E> {
    inner: E,
    url: String,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for WarnOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("otlp: {} takes spans again", self.url);
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "otlp: cannot export {spans} span(s) to {} ({e}); spans are dropped until it answers",
                        self.url
                    );
                }
            }
        }
        // The failure is reported here, once; the SDK need not log it again.
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Posts export batches with hyper, on the host's tokio runtime. The SDK's
/// export thread is not a tokio thread, so each post runs as a task there
/// and the thread waits for it.
#[derive(Debug)]
struct PostClient {
    runtime: tokio::runtime::Handle,
    inner: Client<HttpConnector, Full<Bytes>>,
}

type Posted<'a> = Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'a>>;

impl HttpClient for PostClient {
    fn send_bytes<'life0, 'async_trait>(&'life0 self, request: Request<Bytes>) -> Posted<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let inner = self.inner.clone();
        let post = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let exchange = async {
                let response = inner.request(Request::from_parts(parts, Full::new(body))).await?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            tokio::time::timeout(EXPORT_TIMEOUT, exchange)
                .await
                .map_err(|_| HttpError::from(format!("no answer within {EXPORT_TIMEOUT:?}")))?
        });
        Box::pin(async move { post.await.map_err(HttpError::from)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").unwrap(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces").unwrap(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(traces_url("http://gw/otel").unwrap(), "http://gw/otel/v1/traces");
        for bad in [
            "",
            "collector:4318",
            "ftp://x/",
            "http://",
            "https://collector:4318",
            "not a url",
        ] {
            assert!(traces_url(bad).is_err(), "{bad:?}");
        }
    }
}
