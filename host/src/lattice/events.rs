//! Lifecycle events: the typed kinds ([`EventKind`]), the JSON document a host
//! publishes on `membrane.<lattice>.evt.v1.<kind>.<host>` ([`Event`], see
//! [`crate::subjects::host_event`]) and the publisher ([`Events`]).
//!
//! The last token of the subject is the publishing host's id, and a reader
//! takes an event (or a heartbeat) only when the document names the same
//! host ([`vouched`]): with per-host NATS users (`ctl permissions --host`),
//! the server lets a host publish only under its own id, so a compromised
//! host can lie only about itself.
//!
//! The host agent ([`super::agent`]) emits them and follows its peers' host
//! events; the control plane waits for component events to answer an update.
//! `docs/control.md` documents the shapes.
//!
//! The lattice keeps the recent ones in a stream ([`log_stream`], created by
//! the operator with the desired state): `ctl apps` shows an app's last
//! events from it. Heartbeats are not kept.

use crate::bus::Bus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether a document that names host `claimed` came from that host's own
/// subject (its last token).
pub fn vouched(subject: &str, claimed: &str) -> bool {
    subject.rsplit('.').next() == Some(claimed)
}

/// A host id is one subject token of letters, digits, `-` and `_` (at most
/// 64), so that it can end a subject and name a NATS user.
pub fn is_host_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What happened. Its JSON string is also the last tokens of the subject; a
/// kind this host does not know fails to deserialize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A host is serving (carries its labels).
    #[serde(rename = "host.started")]
    HostStarted,
    /// A host stopped cleanly.
    #[serde(rename = "host.stopped")]
    HostStopped,
    /// A component started on a host.
    #[serde(rename = "component.started")]
    ComponentStarted,
    /// A new version replaced the old one.
    #[serde(rename = "component.updated")]
    ComponentUpdated,
    /// A component stopped on a host.
    #[serde(rename = "component.stopped")]
    ComponentStopped,
    /// A host refused a new version; the old one keeps serving.
    #[serde(rename = "component.rejected")]
    ComponentRejected,
    /// A component could not start or bind here.
    #[serde(rename = "component.failed")]
    ComponentFailed,
    /// A host refused a revision of an app's desired state as a whole
    /// (unsigned, signed by a key it does not trust, unreadable); what it ran
    /// keeps running.
    #[serde(rename = "app.rejected")]
    AppRejected,
    /// A host started an extra replica of a component beside its hot
    /// callers (adaptive placement); `reason` says how hot.
    #[serde(rename = "placement.adapted")]
    PlacementAdapted,
    /// A host stopped an extra replica whose calls went cold.
    #[serde(rename = "placement.reverted")]
    PlacementReverted,
}

impl EventKind {
    /// The kind as on the wire, e.g. `component.updated`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::HostStarted => "host.started",
            EventKind::HostStopped => "host.stopped",
            EventKind::ComponentStarted => "component.started",
            EventKind::ComponentUpdated => "component.updated",
            EventKind::ComponentStopped => "component.stopped",
            EventKind::ComponentRejected => "component.rejected",
            EventKind::ComponentFailed => "component.failed",
            EventKind::AppRejected => "app.rejected",
            EventKind::PlacementAdapted => "placement.adapted",
            EventKind::PlacementReverted => "placement.reverted",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A lifecycle event, published on [`crate::subjects::event`] of its `kind`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The host it happened on.
    pub host: String,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// The host's labels (host events).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// The version now running (or the one refused, for `rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The version before an update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The desired-state revision that caused it, for applied apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Why, for `rejected`, `failed` and `placement.*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fetch and compile time, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_ms: Option<f64>,
    /// From the end of compilation to serving, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_ms: Option<f64>,
}

impl Event {
    /// A new event of `kind` on `host`, stamped now.
    pub fn new(kind: EventKind, host: &str) -> Event {
        Event {
            kind,
            host: host.to_string(),
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            labels: BTreeMap::new(),
            app: None,
            component: None,
            digest: None,
            previous: None,
            revision: None,
            reason: None,
            compile_ms: None,
            swap_ms: None,
        }
    }
}

/// Publishes this host's events.
#[derive(Clone)]
pub struct Events {
    bus: Bus,
    lattice: String,
}

impl Events {
    /// Events of `lattice` on `client`.
    pub fn new(bus: Bus, lattice: &str) -> Events {
        Events {
            bus,
            lattice: lattice.to_string(),
        }
    }

    /// Publishes `event`; a lost event is logged, never fatal.
    pub async fn emit(&self, event: &Event) {
        let payload = serde_json::to_vec(event).unwrap_or_default();
        if let Err(e) = self
            .bus
            .client()
            .publish(
                crate::subjects::host_event(&self.lattice, event.kind.as_str(), &event.host),
                payload.into(),
            )
            .await
        {
            tracing::debug!("event {} not sent: {e}", event.kind);
        }
    }
}

/// The stream that keeps `lattice`'s recent events.
pub fn log_stream(lattice: &str) -> String {
    format!("membrane-{lattice}-events")
}

/// Events the log keeps: at most this many, for at most a week.
const LOG_MESSAGES: i64 = 10_000;

/// Creates `lattice`'s event log if it is missing, or brings an older one's
/// subjects up to date (a log made before `placement.*` events).
pub async fn ensure_log(client: &async_nats::Client, lattice: &str) -> anyhow::Result<()> {
    let js = crate::bus::jetstream(client.clone());
    let config = async_nats::jetstream::stream::Config {
        name: log_stream(lattice),
        description: Some("Membrane lattice events".into()),
        subjects: ["host", "component", "app", "placement"]
            .iter()
            .map(|kind| crate::subjects::event(lattice, &format!("{kind}.>")))
            .collect(),
        max_messages: LOG_MESSAGES,
        max_age: std::time::Duration::from_secs(7 * 24 * 3600),
        discard: async_nats::jetstream::stream::DiscardPolicy::Old,
        num_replicas: crate::bus::replicas(),
        ..Default::default()
    };
    let fail = |e: &dyn std::fmt::Display| {
        crate::bus::explain(&format!("cannot create the event log {}", log_stream(lattice)), e)
    };
    let mut stream = js.get_or_create_stream(config.clone()).await.map_err(|e| fail(&e))?;
    let current = stream.info().await.map_err(|e| fail(&e))?.config.subjects.clone();
    if current != config.subjects {
        js.update_stream(config).await.map_err(|e| fail(&e))?;
    }
    Ok(())
}

/// The last `n` events of `lattice`'s log (oldest first); none when the log
/// does not exist. Unreadable entries are skipped.
///
/// Each is read by its sequence, 32 at a time, from the stream's leader: a
/// consumer would be placed by the cluster, and one placed on a server
/// that has just died waits out the whole request timeout.
pub async fn recent(client: &async_nats::Client, lattice: &str, n: u64) -> anyhow::Result<Vec<Event>> {
    use futures::StreamExt as _;
    let js = crate::bus::jetstream(client.clone());
    let mut stream = match js.get_stream(log_stream(lattice)).await {
        Ok(stream) => stream,
        Err(e) if crate::bus::jetstream_failure(&e.to_string()) == crate::bus::Failure::NoQuorum => {
            return Err(crate::bus::explain("cannot read the event log", e));
        }
        Err(_) => return Ok(Vec::new()),
    };
    let info = stream
        .info()
        .await
        .map_err(|e| crate::bus::explain("cannot read the event log", e))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    let start = last.saturating_sub(n.saturating_sub(1)).max(first);
    let stream = &stream;
    let messages: Vec<_> = futures::stream::iter(start..=last)
        .map(|sequence| async move { stream.get_raw_message(sequence).await })
        .buffered(32)
        .collect()
        .await;
    let mut events = Vec::new();
    for message in messages {
        match message {
            Ok(message) => {
                if let Ok(event) = serde_json::from_slice::<Event>(&message.payload)
                    && vouched(&message.subject, &event.host)
                {
                    events.push(event);
                }
            }
            // A sequence the log has dropped since (its limits) or deleted.
            Err(e) if e.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(crate::bus::explain("cannot read the event log", e)),
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_their_wire_strings() {
        for kind in [
            EventKind::HostStarted,
            EventKind::HostStopped,
            EventKind::ComponentStarted,
            EventKind::ComponentUpdated,
            EventKind::ComponentStopped,
            EventKind::ComponentRejected,
            EventKind::ComponentFailed,
            EventKind::AppRejected,
            EventKind::PlacementAdapted,
            EventKind::PlacementReverted,
        ] {
            let json = serde_json::to_string(&kind).expect("a kind serializes");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&json).ok(), Some(kind));
        }
    }

    #[test]
    fn an_unknown_kind_does_not_deserialize() {
        let json = r#"{"kind": "component.exploded", "host": "h", "at_ms": 1}"#;
        assert!(serde_json::from_str::<Event>(json).is_err());
    }

    #[test]
    fn display_pads_like_a_str() {
        assert_eq!(format!("{:<19}|", EventKind::HostStarted), "host.started       |");
    }
}
