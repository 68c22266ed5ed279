//! The OCI distribution API, as far as components need it: resolve a tag,
//! pull a manifest and its one layer (verified against their digests),
//! push a component. Spoken directly over [`super::http`].
//!
//! What a registry sends is hostile until checked:
//! - a manifest is read up to 4 MiB and must hash to the pinned digest;
//! - a layer is read up to the size its manifest declares, which is at most
//!   the component cap, and must hash to the layer digest;
//! - a redirect (blob storage) is followed at most 5 times, only to HTTPS
//!   or back to the registry itself, and credentials never follow it to
//!   another origin;
//! - a token realm must be HTTPS (or the registry itself when it is named
//!   insecure); the registry's own credentials go to it only then.

use super::artifact::{self, Descriptor};
use super::auth::{self, Challenge, Credentials};
use super::http::{self, origin};
use super::reference::Reference;
use super::{Error, blobs};
use bytes::Bytes;
use hyper::{Method, StatusCode};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use url::Url;

/// How long a manifest or token request may take.
const SMALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long moving one blob may take.
const BLOB_TIMEOUT: Duration = Duration::from_secs(300);
/// Waits before the retries of a request nobody answered (or answered 5xx/429).
const BACKOFF: [Duration; 2] = [Duration::from_millis(300), Duration::from_millis(1200)];
/// Redirects followed for one blob.
const MAX_REDIRECTS: usize = 5;

/// A registry client: which registries may be spoken to in plain HTTP, and
/// the largest component it fetches.
#[derive(Debug, Clone)]
pub struct Registry {
    insecure: BTreeSet<String>,
    max_bytes: u64,
}

/// A pulled component.
#[derive(Debug)]
pub struct Pulled {
    /// Its bytes, verified.
    pub bytes: Vec<u8>,
    /// The manifest's digest.
    pub manifest: String,
    /// The layer's digest: the component's own `sha256:`.
    pub layer: String,
}

impl Registry {
    /// A client that speaks plain HTTP only to the `host:port`s in
    /// `insecure`, and fetches components of at most `max_bytes`.
    pub fn new(insecure: impl IntoIterator<Item = String>, max_bytes: u64) -> Registry {
        Registry {
            insecure: insecure.into_iter().collect(),
            max_bytes,
        }
    }

    /// Whether plain HTTP may be used for `registry`.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure.contains(registry)
    }

    /// The manifest digest `reference` names now, and the manifest (a Wasm
    /// component artifact; anything else is refused).
    pub async fn resolve(&self, reference: &Reference) -> Result<(String, Vec<u8>, Descriptor), Error> {
        let mut session = Session::open(self, reference, false).await?;
        session.manifest(reference).await
    }

    /// The component `reference` names: from `cache` when it is pinned and
    /// both its manifest and layer are there, else from the registry (then
    /// kept in `cache`).
    pub async fn pull(&self, reference: &Reference, cache: Option<&Path>) -> Result<Pulled, Error> {
        if let Some(digest) = &reference.digest
            && let Some(pulled) = self.cached(digest, cache).await
        {
            return Ok(pulled);
        }
        let mut session = Session::open(self, reference, false).await?;
        let (manifest, manifest_bytes, layer) = session.manifest(reference).await?;
        let bytes = match blobs::read(cache, &layer.digest).await {
            Some(bytes) => bytes,
            None => session.blob(reference, &layer).await?,
        };
        blobs::keep(cache, &manifest, &manifest_bytes).await;
        blobs::keep(cache, &layer.digest, &bytes).await;
        if reference.digest.is_none() {
            blobs::keep_tag(cache, &reference.unpinned(), &manifest).await;
        }
        Ok(Pulled {
            bytes,
            manifest,
            layer: layer.digest,
        })
    }

    /// A pinned component whose manifest and layer are both in `cache`.
    pub async fn cached(&self, manifest: &str, cache: Option<&Path>) -> Option<Pulled> {
        let manifest_bytes = blobs::read(cache, manifest).await?;
        let layer = artifact::check_manifest(&manifest_bytes, self.max_bytes).ok()?;
        let bytes = blobs::read(cache, &layer.digest).await?;
        Some(Pulled {
            bytes,
            manifest: manifest.to_string(),
            layer: layer.digest,
        })
    }

    /// Pushes component `bytes` to `reference` (its tag, or by digest) in
    /// the Wasm artifact layout; the manifest's digest.
    pub async fn push(&self, reference: &Reference, bytes: &[u8]) -> Result<String, Error> {
        let names = artifact::component_names(bytes).map_err(Error::Failed)?;
        let layer = blobs::digest(bytes);
        let (config, manifest) = artifact::build(&layer, bytes.len() as u64, names, created());
        let mut session = Session::open(self, reference, true).await?;
        session.put_blob(reference, &config).await?;
        session.put_blob(reference, bytes).await?;
        session.put_manifest(reference, artifact::MANIFEST, &manifest).await
    }

    /// Pushes a manifest of any shape with its blobs, as given: for tests
    /// and tools that must write what `push` never would.
    pub async fn push_raw(
        &self,
        reference: &Reference,
        blobs: &[&[u8]],
        media_type: &str,
        manifest: &[u8],
    ) -> Result<String, Error> {
        let mut session = Session::open(self, reference, true).await?;
        for blob in blobs {
            session.put_blob(reference, blob).await?;
        }
        session.put_manifest(reference, media_type, manifest).await
    }
}

/// The config's `created`: `SOURCE_DATE_EPOCH` when set (reproducible
/// pushes give the same digest), else now.
fn created() -> String {
    let at = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .unwrap_or_else(chrono::Utc::now);
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Requests to one repository, with the authorization learned on the way.
struct Session<'a> {
    registry: &'a Registry,
    base: Url,
    name: String,
    scope: String,
    credentials: Option<Credentials>,
    authorization: Option<String>,
}

impl<'a> Session<'a> {
    async fn open(registry: &'a Registry, reference: &Reference, push: bool) -> Result<Session<'a>, Error> {
        let scheme = if registry.is_insecure(&reference.registry) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{}/", reference.api_host()))
            .map_err(|e| Error::Failed(format!("registry {}: {e}", reference.registry)))?;
        let actions = if push { "pull,push" } else { "pull" };
        Ok(Session {
            registry,
            base,
            name: reference.registry.clone(),
            scope: format!("repository:{}:{actions}", reference.repository),
            credentials: auth::lookup(&reference.registry).await,
            authorization: None,
        })
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        self.base
            .join(path)
            .map_err(|e| Error::Failed(format!("{}: {e}", self.name)))
    }

    /// Sends a request; retries what nobody answered (GET and HEAD only),
    /// and answers one 401 by authenticating.
    async fn send(
        &mut self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: Bytes,
        limits: (u64, Duration),
    ) -> Result<http::Response, Error> {
        let mut authenticated = false;
        loop {
            let response = self
                .send_retrying(method.clone(), url, headers, body.clone(), limits)
                .await?;
            if response.status != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            if authenticated {
                return Err(self.refused());
            }
            let challenge = response
                .header("www-authenticate")
                .and_then(auth::parse_challenge)
                .ok_or_else(|| self.refused())?;
            self.authenticate(challenge).await?;
            authenticated = true;
        }
    }

    async fn send_retrying(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, String)],
        body: Bytes,
        (limit, timeout): (u64, Duration),
    ) -> Result<http::Response, Error> {
        let idempotent = method == Method::GET || method == Method::HEAD;
        let mut all: Vec<(&str, String)> = headers.to_vec();
        if let Some(value) = &self.authorization
            && origin(url) == origin(&self.base)
        {
            all.push(("authorization", value.clone()));
        }
        let mut waits = BACKOFF.iter();
        loop {
            let outcome = http::send(method.clone(), url, &all, body.clone(), limit, timeout).await;
            let retry = match &outcome {
                Err(http::Error::Unreachable(_)) => true,
                Ok(r) => r.status.is_server_error() || r.status == StatusCode::TOO_MANY_REQUESTS,
                Err(http::Error::Bad(_)) => false,
            };
            match (retry && idempotent).then(|| waits.next()).flatten() {
                Some(wait) => tokio::time::sleep(*wait).await,
                None => {
                    return outcome.map_err(|e| match e {
                        http::Error::Unreachable(why) => Error::Unreachable(format!("registry {}: {why}", self.name)),
                        http::Error::Bad(why) => Error::Failed(format!("registry {}: {why}", self.name)),
                    });
                }
            }
        }
    }

    fn refused(&self) -> Error {
        Error::Failed(match &self.credentials {
            Some(c) => format!(
                "registry {} refused the credentials of user {:?} (from {}): 401 unauthorized",
                self.name, c.username, c.from
            ),
            None => format!(
                "registry {} needs credentials: 401 unauthorized (`docker login {}`, or set {})",
                self.name,
                self.name,
                auth::ENV
            ),
        })
    }

    async fn authenticate(&mut self, challenge: Challenge) -> Result<(), Error> {
        match challenge {
            Challenge::Basic => {
                let credentials = self.credentials.as_ref().ok_or_else(|| self.refused())?;
                self.authorization = Some(credentials.basic());
                Ok(())
            }
            Challenge::Bearer { realm, service, .. } => {
                let mut url = Url::parse(&realm)
                    .map_err(|_| Error::Failed(format!("registry {}: its token realm is not a URL", self.name)))?;
                let same_origin = origin(&url) == origin(&self.base);
                if url.scheme() != "https" && !same_origin {
                    return Err(Error::Failed(format!(
                        "registry {} sends for tokens to {}, which is neither HTTPS nor the registry itself",
                        self.name,
                        origin(&url)
                    )));
                }
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = &service {
                        query.append_pair("service", service);
                    }
                    query.append_pair("scope", &self.scope);
                }
                let mut headers = Vec::new();
                if let Some(c) = &self.credentials {
                    headers.push(("authorization", c.basic()));
                }
                let response = http::send(Method::GET, &url, &headers, Bytes::new(), 1 << 20, SMALL_TIMEOUT)
                    .await
                    .map_err(|e| Error::Unreachable(format!("registry {}: token: {e}", self.name)))?;
                if !response.status.is_success() {
                    return Err(self.refused());
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let token: Token = serde_json::from_slice(&response.body)
                    .map_err(|_| Error::Failed(format!("registry {}: its token answer is not JSON", self.name)))?;
                let token = token
                    .token
                    .or(token.access_token)
                    .ok_or_else(|| Error::Failed(format!("registry {}: its token answer has no token", self.name)))?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
        }
    }

    /// The manifest `reference` names: its digest (checked against the
    /// pin), its bytes, and its component layer.
    async fn manifest(&mut self, reference: &Reference) -> Result<(String, Vec<u8>, Descriptor), Error> {
        let url = self.url(&format!("v2/{}/manifests/{}", reference.repository, reference.target()))?;
        let accept = [("accept", artifact::ACCEPT.to_string())];
        let response = self
            .send(
                Method::GET,
                &url,
                &accept,
                Bytes::new(),
                (artifact::MAX_MANIFEST_BYTES, SMALL_TIMEOUT),
            )
            .await?;
        match response.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(Error::Failed(format!(
                    "{reference}: not found in registry {}",
                    self.name
                )));
            }
            status => {
                return Err(Error::Failed(format!(
                    "{reference}: {}",
                    failure(status, &response.body)
                )));
            }
        }
        let digest = blobs::digest(&response.body);
        if let Some(pinned) = &reference.digest
            && *pinned != digest
        {
            return Err(Error::Failed(format!(
                "{reference}: the registry sent a manifest that hashes to {digest}, not the pinned digest"
            )));
        }
        if let Some(said) = response.header("docker-content-digest")
            && said != digest
        {
            return Err(Error::Failed(format!(
                "{reference}: the registry says its manifest is {said}, but it hashes to {digest}"
            )));
        }
        let layer = artifact::check_manifest(&response.body, self.registry.max_bytes)
            .map_err(|why| Error::Failed(format!("{reference} {why}")))?;
        Ok((digest, response.body.to_vec(), layer))
    }

    /// The bytes of `layer`, following redirects to blob storage, checked
    /// against its size and digest.
    async fn blob(&mut self, reference: &Reference, layer: &Descriptor) -> Result<Vec<u8>, Error> {
        let mut url = self.url(&format!("v2/{}/blobs/{}", reference.repository, layer.digest))?;
        let limits = (layer.size, BLOB_TIMEOUT);
        let mut response = self.send(Method::GET, &url, &[], Bytes::new(), limits).await;
        for _ in 0..MAX_REDIRECTS {
            let Ok(r) = &response else { break };
            if !r.status.is_redirection() {
                break;
            }
            let location = r
                .header("location")
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| Error::Failed(format!("{reference}: a redirect without a location")))?;
            if location.scheme() != "https" && origin(&location) != origin(&self.base) {
                return Err(Error::Failed(format!(
                    "{reference}: the registry redirects to {}, which is neither HTTPS nor the registry itself",
                    origin(&location)
                )));
            }
            url = location;
            response = self.send(Method::GET, &url, &[], Bytes::new(), limits).await;
        }
        let response = response.map_err(|e| match e {
            Error::Failed(why) => Error::Failed(format!("{reference}: component {}: {why}", layer.digest)),
            other => other,
        })?;
        if !response.status.is_success() {
            return Err(Error::Failed(format!(
                "{reference}: component {}: {}",
                layer.digest,
                failure(response.status, &response.body)
            )));
        }
        if response.body.len() as u64 != layer.size {
            return Err(Error::Failed(format!(
                "{reference}: component {}: the registry sent {} bytes, its manifest says {}",
                layer.digest,
                response.body.len(),
                layer.size
            )));
        }
        let found = blobs::digest(&response.body);
        if found != layer.digest {
            return Err(Error::Failed(format!(
                "{reference}: digest mismatch: the registry sent bytes that hash to {found}, not {}",
                layer.digest
            )));
        }
        Ok(response.body.to_vec())
    }

    /// Uploads `bytes` unless the repository has them (POST, then PUT).
    async fn put_blob(&mut self, reference: &Reference, bytes: &[u8]) -> Result<(), Error> {
        let digest = blobs::digest(bytes);
        let repo = &reference.repository;
        let head = self.url(&format!("v2/{repo}/blobs/{digest}"))?;
        let small = (1 << 16, SMALL_TIMEOUT);
        if self.send(Method::HEAD, &head, &[], Bytes::new(), small).await?.status == StatusCode::OK {
            return Ok(());
        }
        let start = self.url(&format!("v2/{repo}/blobs/uploads/"))?;
        let response = self.send(Method::POST, &start, &[], Bytes::new(), small).await?;
        if response.status != StatusCode::ACCEPTED {
            return Err(Error::Failed(format!(
                "{reference}: starting an upload: {}",
                failure(response.status, &response.body)
            )));
        }
        let mut upload = response
            .header("location")
            .and_then(|l| start.join(l).ok())
            .ok_or_else(|| Error::Failed(format!("{reference}: the registry gave no upload location")))?;
        if origin(&upload) != origin(&self.base) {
            return Err(Error::Failed(format!(
                "{reference}: the registry sends the upload to another origin, {}",
                origin(&upload)
            )));
        }
        upload.query_pairs_mut().append_pair("digest", &digest);
        let headers = [("content-type", "application/octet-stream".to_string())];
        let body = Bytes::copy_from_slice(bytes);
        let response = self
            .send(Method::PUT, &upload, &headers, body, (1 << 16, BLOB_TIMEOUT))
            .await?;
        if response.status != StatusCode::CREATED {
            return Err(Error::Failed(format!(
                "{reference}: uploading {digest}: {}",
                failure(response.status, &response.body)
            )));
        }
        Ok(())
    }

    async fn put_manifest(&mut self, reference: &Reference, media_type: &str, bytes: &[u8]) -> Result<String, Error> {
        let digest = blobs::digest(bytes);
        let target = reference.tag.as_deref().unwrap_or(&digest).to_string();
        let url = self.url(&format!("v2/{}/manifests/{target}", reference.repository))?;
        let headers = [("content-type", media_type.to_string())];
        let body = Bytes::copy_from_slice(bytes);
        let response = self
            .send(Method::PUT, &url, &headers, body, (1 << 16, SMALL_TIMEOUT))
            .await?;
        if response.status != StatusCode::CREATED {
            return Err(Error::Failed(format!(
                "{reference}: storing the manifest: {}",
                failure(response.status, &response.body)
            )));
        }
        Ok(digest)
    }
}

/// A failed status with the registry's first error code and message, in
/// at most 200 printable characters.
fn failure(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<One>,
    }
    #[derive(serde::Deserialize)]
    struct One {
        code: Option<String>,
        message: Option<String>,
    }
    let said = serde_json::from_slice::<Errors>(body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| format!("{} {}", e.code.unwrap_or_default(), e.message.unwrap_or_default()));
    match said {
        Some(text) => {
            let clean: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
            format!("{status}: {}", clean.trim())
        }
        None => status.to_string(),
    }
}
