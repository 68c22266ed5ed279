//! The admin endpoint: one loopback HTTP server per host for its operator.
//!
//! - `/metrics`: every series of [`crate::metrics`] in the Prometheus text
//!   format, plus what is read at scrape time (instances busy and parked,
//!   the NATS connection, resident memory);
//! - `/healthz`: 200 while the agent's loop ticks; 503 naming the problem;
//! - `/readyz`: 200 once every app runs what is placed here and NATS (where
//!   needed) is connected; 503 listing what is not ready;
//! - `/status.json`: the host, its apps, components and peers, with call
//!   counts (what the status page draws);
//! - `/`: the status page for a person ([`PAGE`]).
//!
//! It serves for the whole process, whatever happens to its NATS
//! connection, and reads only: nothing here changes what the host runs.

use crate::lattice::inventory::AppsView;
use crate::lattice::status::StatusBoard;
use crate::metrics::{Gauge, registry, resident_bytes};
use crate::transports::serve::HttpLimits;
use crate::transports::serve::serve_http;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The status page: static HTML that polls `/status.json`.
pub const PAGE: &str = include_str!("page.html");

/// What the admin endpoint reads.
#[derive(Clone)]
pub struct Admin {
    /// The agent's reports.
    pub board: Arc<StatusBoard>,
    /// The apps running here.
    pub apps: AppsView,
    /// Call counts sampled every second, oldest first, for live rates.
    samples: Arc<Mutex<VecDeque<(Instant, Totals)>>>,
    /// Host names a request may name besides IP addresses and `localhost`
    /// (`--admin-host`).
    names: Arc<Vec<String>>,
}

/// Calls by `[app, component]`.
type Totals = BTreeMap<Vec<String>, u64>;

/// The window live rates are taken over.
const RATE_WINDOW: Duration = Duration::from_secs(5);

impl Admin {
    /// An endpoint that reads `board` and `apps`.
    pub fn new(board: Arc<StatusBoard>, apps: AppsView) -> Admin {
        Admin {
            board,
            apps,
            samples: Arc::default(),
            names: Arc::default(),
        }
    }

    /// Also answers requests whose `Host` is one of `names` (a DNS name the
    /// endpoint is reached by, behind a proxy or in a cluster).
    pub fn answering_to(mut self, names: &[String]) -> Admin {
        self.names = Arc::new(names.iter().map(|n| n.to_ascii_lowercase()).collect());
        self
    }

    /// Binds `address` and serves until `shutdown`; answers the address bound.
    pub async fn serve(
        self,
        address: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("--admin {address}: cannot listen: {e}"))?;
        let local = listener.local_addr()?;
        let limits = HttpLimits {
            max_connections: 64,
            header_timeout_ms: 10_000,
        };
        let sampler = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => sampler.sample(),
                    _ = stop.cancelled() => break,
                }
            }
        });
        let task = tokio::spawn(async move {
            let result = serve_http(listener, limits, None, shutdown, move |request| {
                let admin = self.clone();
                async move { admin.respond(&request) }
            })
            .await;
            if let Err(e) = result {
                tracing::error!("admin endpoint {local} stopped: {e:#}");
            }
        });
        Ok((local, task))
    }

    fn respond<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let host = request.uri().authority().map(|a| a.as_str().to_string()).or_else(|| {
            request
                .headers()
                .get(hyper::header::HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        });
        if let Some(host) = host
            && !host_allowed(&host, &self.names)
        {
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                "this admin endpoint answers only to IP addresses, localhost and the names given with --admin-host\n",
            );
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        match request.uri().path() {
            "/" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE.into()),
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                registry().render(&self.gauges()).into(),
            ),
            "/healthz" => match self.board.healthy() {
                Ok(()) => text(StatusCode::OK, "ok\n"),
                Err(problem) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{problem}\n")),
            },
            "/readyz" => match self.board.ready() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(problems) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{}\n", problems.join("\n"))),
            },
            "/status.json" => match serde_json::to_vec(&self.status()) {
                Ok(body) => reply(StatusCode::OK, "application/json", body.into()),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            },
            path => text(
                StatusCode::NOT_FOUND,
                &format!(
                    "no page {}; try /, /metrics, /healthz, /readyz, /status.json\n",
                    path.escape_default()
                ),
            ),
        }
    }

    /// Values read at scrape time.
    fn gauges(&self) -> Vec<Gauge> {
        let gauge = |name, help, labels: Vec<(&'static str, String)>, value: f64| Gauge {
            name,
            help,
            labels,
            value,
        };
        let status = self.board.status();
        let mut gauges = vec![gauge(
            "membrane_host_info",
            "This host: its id and lattice.",
            vec![
                ("host", status.host.clone()),
                ("lattice", status.lattice.clone().unwrap_or_default()),
                ("version", env!("CARGO_PKG_VERSION").to_string()),
            ],
            1.0,
        )];
        for component in self.components() {
            let labels = || vec![("app", component.app.clone()), ("component", component.name.clone())];
            gauges.push(gauge(
                "membrane_instances_busy",
                "Instances serving a call right now.",
                labels(),
                f64::from(component.busy),
            ));
            gauges.push(gauge(
                "membrane_instances_parked",
                "Instances parked between calls (reuse).",
                labels(),
                f64::from(component.parked),
            ));
            gauges.push(gauge(
                "membrane_instances_max",
                "The component's max_instances.",
                labels(),
                f64::from(component.max),
            ));
        }
        for app in &status.apps {
            gauges.push(gauge(
                "membrane_app_ready",
                "1 when the app runs every component placed on this host.",
                vec![("app", app.name.clone())],
                f64::from(u8::from(
                    app.problem.is_none() && app.running.len() >= app.placed_here.len(),
                )),
            ));
        }
        if status.nats != "none" {
            gauges.push(gauge(
                "membrane_nats_connected",
                "1 while the host's NATS connection is up.",
                vec![],
                f64::from(u8::from(status.nats == "connected")),
            ));
        }
        if let Some(bytes) = resident_bytes() {
            gauges.push(gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                vec![],
                bytes as f64,
            ));
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            gauges.push(gauge(
                "membrane_tokio_tasks",
                "Tasks alive on the host's async runtime (a leak shows as growth).",
                vec![],
                runtime.metrics().num_alive_tasks() as f64,
            ));
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauges.push(gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                vec![],
                fds.count() as f64,
            ));
        }
        gauges.push(gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            vec![],
            self.board.started_unix_ms() as f64 / 1e3,
        ));
        gauges
    }

    /// Calls by app and component: what this host's media, link servers and
    /// in-process links delivered.
    fn totals() -> Totals {
        let mut calls = registry().totals("membrane_calls_total", &["app", "component"]);
        let links = registry().totals("membrane_link_calls_total", &["app", "to", "where"]);
        for (mut key, n) in links {
            if key.pop().as_deref() == Some("local") {
                *calls.entry(key).or_insert(0) += n;
            }
        }
        calls
    }

    /// Records the call counts now, keeping [`RATE_WINDOW`] of samples.
    fn sample(&self) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        samples.push_back((now, Admin::totals()));
        while samples.len() > 2 && samples.front().is_some_and(|(at, _)| now - *at > RATE_WINDOW) {
            samples.pop_front();
        }
    }

    /// Every component running here, with its instances and call counts.
    fn components(&self) -> Vec<ComponentStatus> {
        let calls = Admin::totals();
        let (since, then) = self
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .cloned()
            .unwrap_or_else(|| (Instant::now(), calls.clone()));
        let seconds = since.elapsed().as_secs_f64();
        let faults = registry().totals("membrane_call_faults_total", &["app", "component"]);
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let mut components = Vec::new();
        for (app, runtime) in apps.iter() {
            for loaded in runtime.loaded() {
                let key = vec![app.clone(), loaded.name.to_string()];
                components.push(ComponentStatus {
                    app: app.clone(),
                    name: loaded.name.to_string(),
                    digest: loaded.digest.clone(),
                    busy: loaded.instances_in_use(),
                    parked: loaded.instances_parked(),
                    max: loaded.max_instances(),
                    calls: calls.get(&key).copied().unwrap_or(0),
                    rate: if seconds > 0.5 {
                        let before = then.get(&key).copied().unwrap_or(0);
                        calls.get(&key).copied().unwrap_or(0).saturating_sub(before) as f64 / seconds
                    } else {
                        0.0
                    },
                    faults: faults.get(&key).copied().unwrap_or(0),
                    links: loaded.links_made.clone(),
                });
            }
        }
        components.sort_by(|a, b| (&a.app, &a.name).cmp(&(&b.app, &b.name)));
        components
    }

    fn status(&self) -> StatusDocument {
        StatusDocument {
            status: self.board.status(),
            version: env!("CARGO_PKG_VERSION"),
            healthy: self.board.healthy().err(),
            not_ready: self.board.ready().err().unwrap_or_default(),
            components: self.components(),
        }
    }
}

/// `/status.json`.
#[derive(Serialize)]
struct StatusDocument {
    #[serde(flatten)]
    status: crate::lattice::status::HostStatus,
    version: &'static str,
    /// The health problem, if any.
    healthy: Option<String>,
    /// What is not ready.
    not_ready: Vec<String>,
    components: Vec<ComponentStatus>,
}

/// One component running here, for `/status.json`.
#[derive(Serialize)]
struct ComponentStatus {
    app: String,
    name: String,
    digest: String,
    busy: u32,
    parked: u32,
    max: u32,
    /// Calls delivered by this host's media, link servers and in-process
    /// links.
    calls: u64,
    /// Calls per second over the last few seconds.
    rate: f64,
    /// Of which failed.
    faults: u64,
    /// How its links are made here.
    links: Vec<crate::runtime::component::LinkReport>,
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    reply(status, "text/plain; charset=utf-8", Bytes::from(body.to_string()))
}

/// Whether a request naming `host` (a `Host` header or an HTTP/2
/// authority, with or without a port) may be answered: an IP address,
/// `localhost`, or one of `names`. Any other name is what a DNS-rebinding
/// page sends, so a browser tab on another site cannot read this endpoint.
pub fn host_allowed(host: &str, names: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:9090`: an IPv6 literal.
        Some(rest) => {
            return rest.split_once(']').is_some_and(|(ip, port)| {
                ip.parse::<std::net::Ipv6Addr>().is_ok() && (port.is_empty() || port_ok(port))
            });
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) if port_ok(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || names.contains(&name)
}

/// `:PORT`'s digits.
fn port_ok(port: &str) -> bool {
    let port = port.strip_prefix(':').unwrap_or(port);
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_localhost_and_named_hosts_are_answered() {
        let names = vec!["admin.internal".to_string()];
        let table = [
            ("127.0.0.1:9090", true),
            ("127.0.0.1", true),
            ("10.1.2.3:80", true),
            ("[::1]:9090", true),
            ("[::1]", true),
            ("localhost:9090", true),
            ("LOCALHOST", true),
            ("admin.internal:9090", true),
            ("evil.example:9090", false),
            ("127.0.0.1.evil.example", false),
            ("localhost.evil.example", false),
            ("[::1]x", false),
            ("127.0.0.1:90x", false),
            ("", false),
        ];
        for (host, allowed) in table {
            assert_eq!(host_allowed(host, &names), allowed, "{host}");
        }
    }
}
