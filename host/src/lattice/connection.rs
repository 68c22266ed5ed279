//! The host's NATS connection: manifest settings mapped one to one onto
//! `async_nats::ConnectOptions`, and connection events in the log.
//!
//! The client reconnects forever with backoff and restores subscriptions by
//! itself; media only have to survive the gap (see `transports::queue`).
//! What the client cannot survive is the end of its own connection task (a
//! panic in the library on a malformed message from a peer, for one): then
//! nothing reconnects and every subscription is silently gone. [`lost`]
//! notices that at once, and [`keep_connected`] connects afresh and puts the
//! new client on the host's [`Bus`], whose users bind again on it.

use crate::bus::Bus;
use crate::manifest::NatsSpec;
use anyhow::Context as _;
use async_nats::client::FlushErrorKind;
use async_nats::connection::State;
use async_nats::{ConnectOptions, Event, ServerAddr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often [`lost`] checks the connection task.
const WATCH_PERIOD: Duration = Duration::from_millis(500);

/// Resolves when `client`'s connection is gone for good: its connection task
/// has ended, so a flush cannot even be handed to it. An outage the client
/// is riding out (disconnected, reconnecting) is not that.
///
/// The end is seen at once on a subscription of the host's own (a fresh
/// inbox, where nothing is ever sent): the connection task owns every
/// subscription's sender, so when it dies the subscription ends. A flush
/// every [`WATCH_PERIOD`] is the backstop.
pub async fn lost(client: &async_nats::Client) {
    let canary = client.subscribe(client.new_inbox()).await;
    let ended = async {
        match canary {
            Ok(mut canary) => while futures::StreamExt::next(&mut canary).await.is_some() {},
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ended => {}
        () = flush_fails(client) => {}
    }
}

/// Resolves when a flush cannot even be handed to the connection task.
async fn flush_fails(client: &async_nats::Client) {
    loop {
        tokio::time::sleep(WATCH_PERIOD).await;
        // While disconnected, a flush would only queue up behind the outage.
        if client.connection_state() != State::Connected {
            continue;
        }
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), client.flush()).await
            && e.kind() == FlushErrorKind::SendError
        {
            return;
        }
    }
}

/// How to connect the host to NATS, again and again.
pub struct Reconnect {
    /// The manifest's (or flags') NATS settings.
    pub spec: NatsSpec,
    /// `--nats`, which replaces `spec.urls`.
    pub urls: Option<String>,
    /// The connection's name.
    pub name: String,
    /// Where replies arrive.
    pub inbox: String,
}

impl Reconnect {
    /// A new connection.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        connect(&self.spec, self.urls.as_deref(), &self.name, &self.inbox).await
    }
}

/// Until `stop`: whenever the bus's connection is gone for good, connects
/// afresh (retrying with backoff up to 5 s) and puts the new client on the
/// bus. Apps, instances and HTTP listeners are not touched; what subscribes
/// binds again when the bus's generation moves.
pub async fn keep_connected(bus: Bus, reconnect: Reconnect, stop: CancellationToken) -> anyhow::Result<()> {
    loop {
        let client = bus.client();
        tokio::select! {
            () = lost(&client) => {}
            () = stop.cancelled() => return Ok(()),
        }
        tracing::error!("nats: the connection is dead (its task ended); connecting afresh");
        crate::metrics::registry()
            .counter(
                "membrane_nats_replaced_total",
                "Dead NATS connections this host replaced.",
                &[],
            )
            .inc();
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(50);
        loop {
            match tokio::select! {
                connected = reconnect.connect() => connected,
                () = stop.cancelled() => return Ok(()),
            } {
                Ok(client) => {
                    bus.replace(client);
                    tracing::info!(
                        "nats: connected afresh in {:.1} ms",
                        started.elapsed().as_secs_f64() * 1e3
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!("nats: cannot connect afresh (retrying in {wait:?}): {e:#}");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.cancelled() => return Ok(()),
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Connects to NATS. `url_override` (the `--nats` flag, comma-separated)
/// replaces `spec.urls`; replies arrive under `inbox_prefix` (each role has
/// its own, so NATS permissions can keep the roles' replies apart). Fails at
/// once, naming the servers, if none answers: a host must not report ready
/// with its NATS bindings dead.
pub async fn connect(
    spec: &NatsSpec,
    url_override: Option<&str>,
    name: &str,
    inbox_prefix: &str,
) -> anyhow::Result<async_nats::Client> {
    let urls: Vec<String> = match url_override {
        Some(urls) => urls.split(',').map(|u| u.trim().to_string()).collect(),
        None => spec.urls.clone(),
    };
    anyhow::ensure!(
        !urls.is_empty(),
        "the manifest has NATS bindings but no NATS server: pass --nats URL or set [nats] urls"
    );
    let addrs = urls
        .iter()
        .map(|u| {
            u.parse::<ServerAddr>()
                .with_context(|| format!("nats.urls: {u:?} is not a NATS URL"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(replicas) = spec.replicas {
        anyhow::ensure!(
            (1..=5).contains(&replicas),
            "nats.replicas: {replicas} is not a replica count (1 to 5)"
        );
        crate::bus::set_replicas(replicas);
    }
    if let Some(domain) = &spec.jetstream_domain {
        anyhow::ensure!(
            !domain.is_empty()
                && domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "nats.jetstream_domain: {domain:?} is not a JetStream domain (letters, digits, `-`, `_`)"
        );
    }
    crate::bus::set_jetstream_domain(spec.jetstream_domain.clone());
    let mut options = ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(inbox_prefix)
        .max_reconnects(None)
        .require_tls(spec.require_tls)
        .event_callback(|event| async move {
            let counter = |name| crate::metrics::registry().counter(name, "NATS connection events of this host.", &[]);
            match &event {
                Event::Connected => counter("membrane_nats_connects_total").inc(),
                Event::Disconnected => counter("membrane_nats_disconnects_total").inc(),
                _ => {}
            }
            match event {
                Event::Connected => tracing::info!("nats: connected"),
                Event::Disconnected => tracing::warn!("nats: disconnected; reconnecting"),
                // Permission violations among them: never silent.
                Event::ServerError(e) => {
                    crate::bus::note_server_error(&e.to_string());
                    tracing::warn!("nats: the server says: {e}")
                }
                other => tracing::debug!("nats: {other}"),
            }
        });
    if let (Some(user), Some(password)) = (&spec.user, &spec.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &spec.token {
        options = options.token(token.clone());
    }
    if let Some(creds) = &spec.creds {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("nats.creds: {}", creds.display()))?;
    }
    if let Some(path) = &spec.nkey {
        let seed = tokio::fs::read_to_string(path)
            .await
            .with_context(|| format!("nats.nkey: cannot read {}", path.display()))?;
        let seed = seed.trim().to_string();
        anyhow::ensure!(
            seed.starts_with("SU"),
            "nats.nkey: {} holds no user NKey seed (it starts with `SU`)",
            path.display()
        );
        options = options.nkey(seed);
    }
    if let Some(ca) = &spec.tls_ca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&spec.tls_cert, &spec.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    options
        .connect(addrs)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", urls.join(", ")))
}
