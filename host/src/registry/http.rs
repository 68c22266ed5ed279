//! One HTTP/1.1 exchange with a registry: a fresh connection (TLS unless the
//! caller allowed plain HTTP), a bounded time, a bounded body. No pooling:
//! a pull is a handful of requests.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{HeaderMap, Method, StatusCode};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_rustls::rustls;
use url::Url;

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A response, its body read whole.
pub struct Response {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Response {
    /// A header's value, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answered (refused, unreachable, timed out, TLS failed):
    /// worth a retry, and a cached answer may stand in.
    #[error("{0}")]
    Unreachable(String),
    /// The answer broke a bound or the protocol.
    #[error("{0}")]
    Bad(String),
}

/// Sends one request to `url` and reads the answer's body, refusing more
/// than `limit` bytes; the whole exchange takes at most `timeout`.
pub async fn send(
    method: Method,
    url: &Url,
    headers: &[(&str, String)],
    body: Bytes,
    limit: u64,
    timeout: Duration,
) -> Result<Response, Error> {
    tokio::time::timeout(timeout, exchange(method, url, headers, body, limit))
        .await
        .map_err(|_| Error::Unreachable(format!("{} did not answer in {timeout:?}", origin(url))))?
}

async fn exchange(
    method: Method,
    url: &Url,
    headers: &[(&str, String)],
    body: Bytes,
    limit: u64,
) -> Result<Response, Error> {
    let host = url.host_str().ok_or_else(|| Error::Bad(format!("{url} has no host")))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let unreachable = |e: &dyn std::fmt::Display| Error::Unreachable(format!("{}: {e}", origin(url)));
    // `[::1]` is written with brackets in a URL, not in a socket address.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((bare, port)))
        .await
        .map_err(|_| unreachable(&format!("no connection in {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(url.as_str())
        .header("host", host_header(url))
        .header("user-agent", concat!("membrane/", env!("CARGO_PKG_VERSION")));
    for (name, value) in headers {
        request = request.header(*name, value.as_str());
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| Error::Bad(format!("cannot make a request to {}: {e}", origin(url))))?;
    let response = if url.scheme() == "https" {
        let name = rustls::pki_types::ServerName::try_from(bare.to_string())
            .map_err(|e| Error::Bad(format!("{host}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(tls_config().map_err(Error::Bad)?);
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| unreachable(&"no TLS handshake in time"))?
            .map_err(|e| {
                unreachable(&format!(
                    "TLS failed: {e} (if this registry serves plain HTTP, name it with --insecure-registry)"
                ))
            })?;
        roundtrip(tls, request).await
    } else {
        roundtrip(tcp, request).await
    }
    .map_err(|e| unreachable(&e))?;
    let (parts, incoming) = response.into_parts();
    if let Some(length) = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && length > limit
    {
        return Err(Error::Bad(format!(
            "{} answered with {length} bytes, more than the {limit} expected",
            origin(url)
        )));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let body = Limited::new(incoming, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Error::Bad(format!("{} sent more than the {limit} bytes expected", origin(url)))
            } else {
                Error::Unreachable(format!("{}: the answer broke off: {e}", origin(url)))
            }
        })?
        .to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

async fn roundtrip<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("registry connection: {e}");
        }
    });
    sender.send_request(request).await
}

/// `scheme://host[:port]`, for messages: never a path, query or credential.
pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn host_header(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_string(),
        _ => String::new(),
    }
}

/// The client TLS configuration: the system's roots (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured), ring, HTTP/1.1.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "no trusted root certificates on this machine (install ca-certificates, or set SSL_CERT_FILE)"
                        .into(),
                );
            }
            let mut config =
                rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}
