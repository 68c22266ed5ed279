//! The lattice console (`membrane ctl console`): one read-only web page that
//! shows the whole lattice, served by the operator's own process.
//!
//! - The page (`console/dist`, built by `scripts/build-console.sh` from
//!   `console/src` and committed) is embedded here: `/`, `/console.js`,
//!   `/console.css`.
//! - `/events` is a server-sent-events feed: a `snapshot` of the lattice
//!   ([`view::Snapshot`]) on connect and every [`ROUND`], and each lattice
//!   `event` as it happens (the log's last [`RECENT`] first).
//!   `/snapshot.json` is the current snapshot, for scripts.
//! - What it shows comes from NATS only: heartbeats and events on
//!   `evt.v1.>`, one inventory round every [`ROUND`] (one request that every
//!   host answers, not a poll of each), the desired state and the event
//!   log. It needs only the `viewer` role (`ctl permissions`) and keeps no
//!   state the lattice does not have.
//! - It answers only requests that name its own address in `Host` and carry
//!   no foreign `Origin` ([`admit`]), so neither another site's page nor a
//!   DNS-rebinding name can read it through a browser.
//!
//! [`view`] turns what NATS delivered into snapshots; this file does the
//! I/O.

pub mod view;

use crate::lattice::desired::Desired;
use crate::lattice::events::{self, Event, vouched};
use crate::lattice::inventory::{self, HostInventory};
use crate::manifest::Manifest;
use crate::transports::serve::{HttpLimits, serve_http};
use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use view::{Applied, Lattice};

/// The page.
const INDEX: &str = include_str!("../../../console/dist/index.html");
/// The page's script: cytoscape, cytoscape-dagre and uPlot, bundled.
const SCRIPT: &str = include_str!("../../../console/dist/console.js");
/// The page's styles.
const STYLE: &str = include_str!("../../../console/dist/console.css");

/// How often the console takes an inventory round and sends a snapshot.
pub const ROUND: Duration = Duration::from_secs(2);
/// How many of the log's events a page gets when it connects.
pub const RECENT: usize = 200;
/// How many pages may follow the feed at once; more get 503.
pub const MAX_CLIENTS: usize = 16;
/// How long a feed may stay silent before a `:` comment keeps it open
/// through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How many frames a slow page may fall behind before it is sent the
/// newest snapshot instead of what it missed.
const BACKLOG: usize = 64;
/// The desired state is read every this many rounds, and after events.
const DESIRED_EVERY: u32 = 5;

/// What every feed shares: the newest snapshot, the recent events and the
/// live frames.
struct Hub {
    live: broadcast::Sender<Arc<str>>,
    snapshot: Mutex<Latest>,
    recent: Mutex<VecDeque<Arc<str>>>,
    clients: AtomicUsize,
    shutdown: CancellationToken,
}

/// The newest snapshot, as JSON for `/snapshot.json` and as its frame.
#[derive(Default)]
struct Latest {
    json: Arc<str>,
    frame: Arc<str>,
}

impl Hub {
    fn new(shutdown: CancellationToken) -> Hub {
        Hub {
            live: broadcast::channel(BACKLOG).0,
            snapshot: Mutex::new(Latest::default()),
            recent: Mutex::new(VecDeque::new()),
            clients: AtomicUsize::new(0),
            shutdown,
        }
    }

    fn snapshot(&self, snapshot: &view::Snapshot) {
        let json: Arc<str> = serde_json::to_string(snapshot).unwrap_or_default().into();
        let frame: Arc<str> = frame("snapshot", &json).into();
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Latest {
            json,
            frame: frame.clone(),
        };
        let _ = self.live.send(frame);
    }

    fn event(&self, event: &serde_json::Value) {
        let frame: Arc<str> = frame("event", &event.to_string()).into();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.push_back(frame.clone());
        while recent.len() > RECENT {
            recent.pop_front();
        }
        drop(recent);
        let _ = self.live.send(frame);
    }

    /// The newest snapshot's frame; empty before the first.
    fn latest_frame(&self) -> Arc<str> {
        self.snapshot.lock().unwrap_or_else(|e| e.into_inner()).frame.clone()
    }

    /// What a page gets first: the reconnect delay, the snapshot and the
    /// recent events.
    fn opening(&self) -> Vec<Arc<str>> {
        let mut frames: Vec<Arc<str>> = vec![Arc::from("retry: 2000\n\n")];
        let snapshot = self.latest_frame();
        if !snapshot.is_empty() {
            frames.push(snapshot);
        }
        frames.extend(self.recent.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        frames
    }
}

/// One server-sent event: its type and one line of JSON.
fn frame(kind: &str, json: &str) -> String {
    format!("event: {kind}\ndata: {json}\n\n")
}

/// Decrements the client count when a feed ends.
struct Client(Arc<Hub>);

impl Drop for Client {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One page's feed: the opening frames, then live ones; the newest
/// snapshot when it fell behind; a comment when quiet; ends on shutdown.
fn feed(hub: Arc<Hub>) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    let opening: VecDeque<Arc<str>> = hub.opening().into();
    let live = hub.live.subscribe();
    let mut quiet = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    quiet.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let client = Client(hub);
    futures::stream::unfold(
        (opening, live, quiet, client),
        |(mut opening, mut live, mut quiet, client)| async move {
            let next: Arc<str> = match opening.pop_front() {
                Some(frame) => frame,
                None => tokio::select! {
                    received = live.recv() => match received {
                        Ok(frame) => frame,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            client.0.latest_frame()
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = quiet.tick() => Arc::from(":\n\n"),
                    _ = client.0.shutdown.cancelled() => return None,
                },
            };
            quiet.reset();
            let data = Bytes::copy_from_slice(next.as_bytes());
            Some((Ok(Frame::data(data)), (opening, live, quiet, client)))
        },
    )
}

/// What a request may get.
#[derive(Debug, PartialEq, Eq)]
pub enum Page {
    /// `/`.
    Index,
    /// `/console.js`.
    Script,
    /// `/console.css`.
    Style,
    /// `/events`.
    Events,
    /// `/snapshot.json`.
    Snapshot,
}

/// Whether to answer a request, and with what: only `GET` (or `HEAD`), only
/// with a `Host` that names this console's own address (`listen`; with
/// `any`, any IP address on its port), and only without an `Origin` or with
/// this page's own. The refusal names the culprit.
pub fn admit(
    method: &Method,
    path: &str,
    host: Option<&str>,
    origin: Option<&str>,
    listen: SocketAddr,
    any: bool,
) -> Result<Page, (StatusCode, String)> {
    if method != Method::GET && method != Method::HEAD {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "the console only reads: use GET\n".into(),
        ));
    }
    let Some(host) = host else {
        return Err((StatusCode::BAD_REQUEST, "no Host header\n".into()));
    };
    if !host_names_console(host, listen, any) {
        return Err((
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {:?} does not name this console ({listen}): it answers only to its own address\n",
                host.escape_default().to_string()
            ),
        ));
    }
    if let Some(origin) = origin
        && origin != format!("http://{host}")
    {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "Origin {:?} is another site: the console answers only its own page\n",
                origin.escape_default().to_string()
            ),
        ));
    }
    match path {
        "/" | "/index.html" => Ok(Page::Index),
        "/console.js" => Ok(Page::Script),
        "/console.css" => Ok(Page::Style),
        "/events" => Ok(Page::Events),
        "/snapshot.json" => Ok(Page::Snapshot),
        other => Err((
            StatusCode::NOT_FOUND,
            format!("no page {}; try /, /events, /snapshot.json\n", other.escape_default()),
        )),
    }
}

/// Whether `host` (a `Host` header) names the console at `listen`: its port,
/// and `localhost` or an IP address (any, with `any`; else the one bound,
/// or loopback when bound to loopback).
fn host_names_console(host: &str, listen: SocketAddr, any: bool) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, "")) => (ip, "80"),
            Some((ip, port)) => match port.strip_prefix(':') {
                Some(port) => (ip, port),
                None => return false,
            },
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some(pair) => pair,
            // A browser leaves out the default port.
            None => (host, "80"),
        },
    };
    if port.parse::<u16>().ok() != Some(listen.port()) {
        return false;
    }
    let name = name.to_ascii_lowercase();
    match name.parse::<std::net::IpAddr>() {
        Ok(ip) => any || ip == listen.ip() || (ip.is_loopback() && listen.ip().is_loopback()),
        Err(_) => name == "localhost" && (any || listen.ip().is_loopback()),
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn reply(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let set = |headers: &mut hyper::HeaderMap, name, value| {
        headers.insert(name, hyper::header::HeaderValue::from_static(value));
    };
    set(headers, hyper::header::CONTENT_TYPE, content_type);
    set(headers, hyper::header::CACHE_CONTROL, "no-cache");
    set(headers, hyper::header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, hyper::header::X_FRAME_OPTIONS, "DENY");
    set(headers, hyper::header::REFERRER_POLICY, "no-referrer");
    // The graph and chart libraries set style attributes; nothing else
    // inline, and nothing from elsewhere.
    set(
        headers,
        hyper::header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
    );
    response
}

fn fixed(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    reply(status, content_type, BodyExt::boxed(Full::new(body.into())))
}

fn respond<B>(hub: &Arc<Hub>, request: &Request<B>, listen: SocketAddr, any: bool) -> Response<Body> {
    let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or(header(hyper::header::HOST));
    let page = admit(
        request.method(),
        request.uri().path(),
        host,
        header(hyper::header::ORIGIN),
        listen,
        any,
    );
    match page {
        Err((status, why)) => fixed(status, "text/plain; charset=utf-8", why),
        Ok(Page::Index) => fixed(StatusCode::OK, "text/html; charset=utf-8", INDEX),
        Ok(Page::Script) => fixed(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
        Ok(Page::Style) => fixed(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        Ok(Page::Snapshot) => {
            let json = hub.snapshot.lock().unwrap_or_else(|e| e.into_inner()).json.clone();
            let json = if json.is_empty() { "{}" } else { &json };
            fixed(StatusCode::OK, "application/json", json.to_string())
        }
        Ok(Page::Events) => {
            if hub.clients.fetch_add(1, Ordering::Relaxed) >= MAX_CLIENTS {
                hub.clients.fetch_sub(1, Ordering::Relaxed);
                return fixed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    format!("{MAX_CLIENTS} pages already follow this console\n"),
                );
            }
            reply(
                StatusCode::OK,
                "text/event-stream",
                BodyExt::boxed(StreamBody::new(feed(hub.clone()))),
            )
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serves the console of `lattice` on `listen` until `shutdown`; `bound` is
/// told the address once it listens.
pub async fn run(
    client: async_nats::Client,
    lattice: &str,
    (listen, any): (SocketAddr, bool),
    shutdown: CancellationToken,
    bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen {listen}: cannot listen: {e}"))?;
    let local = listener.local_addr()?;
    let hub = Arc::new(Hub::new(shutdown.clone()));
    let mut picture = Lattice::new(lattice);
    let mut events = client.subscribe(crate::subjects::events_all(lattice)).await?;
    match events::recent(&client, lattice, RECENT as u64).await {
        Ok(recent) => {
            for event in recent {
                picture.event(&event);
                hub.event(&serde_json::to_value(&event).unwrap_or_default());
            }
        }
        Err(e) => tracing::warn!("console: the event log is unreadable, the timeline starts empty: {e:#}"),
    }
    let limits = HttpLimits {
        max_connections: MAX_CLIENTS as u32 + 16,
        header_timeout_ms: 10_000,
    };
    let server = {
        let (hub, shutdown) = (hub.clone(), shutdown.clone());
        tokio::spawn(async move {
            serve_http(listener, limits, None, shutdown, move |request| {
                let hub = hub.clone();
                async move { respond(&hub, &request, local, any) }
            })
            .await
        })
    };
    bound(local);
    let (rounds_tx, mut rounds) = tokio::sync::mpsc::channel(1);
    let want_desired = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let gatherer = tokio::spawn(gather_rounds(
        client.clone(),
        lattice.to_string(),
        rounds_tx,
        want_desired.clone(),
    ));
    let heartbeat = crate::subjects::heartbeat(lattice, "");
    let mut since = now_ms();
    let result = loop {
        tokio::select! {
            message = events.next() => {
                let Some(message) = message else {
                    break Err(anyhow::anyhow!("the NATS connection closed"));
                };
                let Ok(json) = serde_json::from_slice::<serde_json::Value>(&message.payload) else { continue };
                // A document naming another host than its subject's is a forgery.
                if !json["host"].as_str().is_some_and(|host| vouched(&message.subject, host)) {
                    continue;
                }
                if message.subject.starts_with(&heartbeat) {
                    if let Ok(host) = serde_json::from_value::<HostInventory>(json) {
                        picture.heartbeat(&host, now_ms());
                    }
                } else if let Ok(event) = serde_json::from_value::<Event>(json.clone()) {
                    picture.event(&event);
                    want_desired.store(true, Ordering::Relaxed);
                    hub.event(&json);
                }
            }
            round = rounds.recv() => {
                let Some((hosts, desired)) = round else {
                    break Err(anyhow::anyhow!("the inventory task stopped"));
                };
                let now = now_ms();
                picture.inventories(hosts, now);
                if let Some(desired) = desired {
                    picture.desired(desired);
                }
                for (host, silent) in picture.newly_missing(now, since) {
                    hub.event(&serde_json::json!({
                        "kind": "host.missing",
                        "host": host,
                        "at_ms": now,
                        "reason": format!("no heartbeat for {} s", silent / 1000),
                    }));
                }
                since = now;
                hub.snapshot(&picture.snapshot(now));
            }
            _ = shutdown.cancelled() => break Ok(()),
        }
    };
    gatherer.abort();
    shutdown.cancel();
    let _ = server.await;
    result
}

/// One round's inventories, and the desired state when it was read.
type Round = (Vec<HostInventory>, Option<BTreeMap<String, Applied>>);

/// One inventory round every [`ROUND`], with the desired state when asked
/// for (or every [`DESIRED_EVERY`] rounds), sent to the console's loop.
async fn gather_rounds(
    client: async_nats::Client,
    lattice: String,
    rounds: tokio::sync::mpsc::Sender<Round>,
    want_desired: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut tick = tokio::time::interval(ROUND);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let desired = Desired::new(client.clone(), &lattice);
    for round in 0u32.. {
        tick.tick().await;
        let hosts = inventory::gather(&client, &lattice, Duration::from_millis(250))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("console: no inventory this round: {e:#}");
                Vec::new()
            });
        let read = want_desired.swap(false, Ordering::Relaxed) || round % DESIRED_EVERY == 0;
        let applied = match read {
            true => match desired.apps().await {
                Ok(apps) => Some(
                    apps.into_iter()
                        .filter_map(|a| {
                            let manifest = Manifest::parse(a.manifest.as_deref()?, &a.app).ok()?;
                            Some((
                                a.app,
                                Applied {
                                    revision: a.revision,
                                    manifest,
                                },
                            ))
                        })
                        .collect(),
                ),
                Err(e) => {
                    tracing::warn!("console: the desired state is unreadable this round: {e:#}");
                    None
                }
            },
            false => None,
        };
        if rounds.send((hosts, applied)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, path, Host, Origin, listen, --listen-any) and the page or
    /// the status wanted.
    type Case<'a> = (
        &'a Method,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        SocketAddr,
        bool,
        Result<Page, u16>,
    );

    #[test]
    fn only_its_own_page_is_answered() {
        let loopback: SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7878".parse().unwrap();
        let get = Method::GET;
        // (method, path, Host, Origin, listen, --listen-any) -> status or page.
        let cases: &[Case] = &[
            (
                &get,
                "/",
                Some("127.0.0.1:7878"),
                None,
                loopback,
                false,
                Ok(Page::Index),
            ),
            (
                &get,
                "/events",
                Some("localhost:7878"),
                None,
                loopback,
                false,
                Ok(Page::Events),
            ),
            (
                &get,
                "/events",
                Some("[::1]:7878"),
                None,
                loopback,
                false,
                Ok(Page::Events),
            ),
            (
                &get,
                "/events",
                Some("127.0.0.1:7878"),
                Some("http://127.0.0.1:7878"),
                loopback,
                false,
                Ok(Page::Events),
            ),
            (
                &get,
                "/snapshot.json",
                Some("127.0.0.1:7878"),
                None,
                loopback,
                false,
                Ok(Page::Snapshot),
            ),
            (
                &get,
                "/console.js",
                Some("127.0.0.1:7878"),
                None,
                loopback,
                false,
                Ok(Page::Script),
            ),
            // DNS rebinding: another name, even resolving to loopback.
            (
                &get,
                "/events",
                Some("evil.example:7878"),
                None,
                loopback,
                false,
                Err(421),
            ),
            (
                &get,
                "/events",
                Some("127.0.0.1.nip.io:7878"),
                None,
                loopback,
                false,
                Err(421),
            ),
            // Another port, or none.
            (&get, "/events", Some("127.0.0.1:80"), None, loopback, false, Err(421)),
            (&get, "/events", Some("127.0.0.1"), None, loopback, false, Err(421)),
            (&get, "/events", None, None, loopback, false, Err(400)),
            // Another site's page, or a sandboxed one.
            (
                &get,
                "/events",
                Some("127.0.0.1:7878"),
                Some("http://evil.example"),
                loopback,
                false,
                Err(403),
            ),
            (
                &get,
                "/events",
                Some("127.0.0.1:7878"),
                Some("null"),
                loopback,
                false,
                Err(403),
            ),
            (
                &get,
                "/events",
                Some("127.0.0.1:7878"),
                Some("https://127.0.0.1:7878"),
                loopback,
                false,
                Err(403),
            ),
            // It only reads.
            (
                &Method::POST,
                "/events",
                Some("127.0.0.1:7878"),
                None,
                loopback,
                false,
                Err(405),
            ),
            (
                &get,
                "/../etc/passwd",
                Some("127.0.0.1:7878"),
                None,
                loopback,
                false,
                Err(404),
            ),
            // On every address: any IP address on its port, never a name
            // but localhost.
            (&get, "/", Some("10.1.2.3:7878"), None, any, true, Ok(Page::Index)),
            (&get, "/", Some("localhost:7878"), None, any, true, Ok(Page::Index)),
            (&get, "/", Some("console.example:7878"), None, any, true, Err(421)),
            (&get, "/", Some("10.1.2.3:7878"), None, loopback, false, Err(421)),
        ];
        for (method, path, host, origin, listen, any, want) in cases {
            let got = admit(method, path, *host, *origin, *listen, *any).map_err(|(status, _)| status.as_u16());
            assert_eq!(
                &got, want,
                "{method} {path} host {host:?} origin {origin:?} on {listen}"
            );
        }
        let (_, why) = admit(
            &get,
            "/",
            Some("127.0.0.1:7878"),
            Some("http://evil.example"),
            loopback,
            false,
        )
        .unwrap_err();
        assert!(why.contains("evil.example"), "the refusal names the culprit: {why}");
    }

    #[test]
    fn a_frame_is_one_event_of_one_line() {
        let json = serde_json::json!({"reason": "two\nlines"}).to_string();
        let f = frame("event", &json);
        assert_eq!(f.matches('\n').count(), 3, "{f:?}");
        assert!(f.starts_with("event: event\ndata: {") && f.ends_with("}\n\n"));
    }
}
