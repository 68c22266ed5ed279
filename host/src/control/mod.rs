//! The control plane: versioned NATS subjects and JSON payloads that steer a
//! lattice (`docs/control.md` is the reference).
//!
//! - Requests go to `membrane.<lattice>.ctl.v1.<operation>`. Operations that
//!   change the lattice (`app.apply`, `app.delete`, `component.update`,
//!   `component.scale`) are answered by any one host (a queue group), which
//!   writes the desired state ([`crate::lattice::desired`]); every host then
//!   reconciles to it. `inventory` is answered by every host.
//! - Events go to `membrane.<lattice>.evt.v1.<kind>`: host and component
//!   lifecycle, published by the host where they happen.
//!
//! [`server`] answers the requests on a host; [`ctl`] is the `membrane ctl`
//! client. Any NATS client can do what `ctl` does.

pub mod ctl;
pub mod server;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The request subject of `operation` in `lattice`.
pub fn ctl_subject(lattice: &str, operation: &str) -> String {
    format!("membrane.{lattice}.ctl.v1.{operation}")
}

/// The subject of event `kind` in `lattice`.
pub fn event_subject(lattice: &str, kind: &str) -> String {
    format!("membrane.{lattice}.evt.v1.{kind}")
}

/// `app.apply`: store an app as desired state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// The manifest (TOML); every `source` must be a `sha256:` artifact.
    pub manifest: String,
}

/// The answer to `app.apply`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyReply {
    /// The app.
    pub app: String,
    /// Its new revision.
    pub revision: u64,
}

/// `app.delete`: remove an app; every host stops its share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// The app.
    pub app: String,
}

/// The answer to `app.delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteReply {
    /// The app that was deleted.
    pub app: String,
}

/// `component.update`: run another version of a component.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// The component, by its manifest name.
    pub component: String,
    /// The new version: `sha256:<hex>` of an artifact pushed before.
    pub digest: String,
    /// The app, needed only when several apps have a component of that name.
    #[serde(default)]
    pub app: Option<String>,
    /// How long to wait for the hosts' answers (default 30 000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// One host's part in an update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostOutcome {
    /// The host.
    pub host: String,
    /// `updated`, `rejected` or `failed`.
    pub outcome: String,
    /// Why, when it was not updated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Fetch and compile time of the new version on that host.
    #[serde(default)]
    pub compile_ms: f64,
    /// From the end of compilation to the new version serving.
    #[serde(default)]
    pub swap_ms: f64,
}

/// The answer to `component.update`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateReply {
    /// The app.
    pub app: String,
    /// The component.
    pub component: String,
    /// The version now running everywhere.
    pub running: String,
    /// The version asked for.
    pub digest: String,
    /// The revision of the desired state that carried the update.
    pub revision: u64,
    /// `updated` (every host swapped), `rejected` (the old version keeps
    /// serving everywhere) or `unchanged` (it already ran).
    pub outcome: String,
    /// Each affected host's answer.
    pub hosts: Vec<HostOutcome>,
    /// Hosts expected to answer that did not, in time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silent: Vec<String>,
}

/// `component.scale`: run a component on this many of its matching hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// The component.
    pub component: String,
    /// Replicas wanted, at least 1.
    pub instances: u32,
    /// The app, needed only when several apps have a component of that name.
    #[serde(default)]
    pub app: Option<String>,
}

/// The answer to `component.scale`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleReply {
    /// The app.
    pub app: String,
    /// The component.
    pub component: String,
    /// Replicas wanted.
    pub instances: u32,
    /// The revision of the desired state that carries it.
    pub revision: u64,
}

/// A failed control request: what went wrong and, for a bad payload, the
/// field at fault.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{}{message}", field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ControlError {
    /// The error sentence.
    pub message: String,
    /// The payload field at fault, as a dotted path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ControlError {
    /// An error about field `field`.
    pub fn field(field: &str, message: impl Into<String>) -> ControlError {
        ControlError {
            message: message.into(),
            field: Some(field.to_string()),
        }
    }

    /// An error about the request as a whole.
    pub fn new(message: impl Into<String>) -> ControlError {
        ControlError {
            message: message.into(),
            field: None,
        }
    }
}

impl From<anyhow::Error> for ControlError {
    fn from(e: anyhow::Error) -> ControlError {
        ControlError::new(format!("{e:#}"))
    }
}

/// The reply envelope: `{"ok": <reply>}` or `{"error": {"message", "field"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Envelope<T> {
    /// Success.
    Ok(T),
    /// Failure.
    Error(ControlError),
}

/// Decodes a request payload, naming the field at fault.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ControlError> {
    let mut json = serde_json::Deserializer::from_slice(payload);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        ControlError {
            message,
            field: (path != ".").then_some(path),
        }
    })
}

/// A lifecycle event, published on [`event_subject`] of its `kind`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Event {
    /// `host.started`, `host.stopped`, `component.started`,
    /// `component.updated`, `component.stopped`, `component.rejected` or
    /// `component.failed`.
    pub kind: String,
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
    /// Why, for `rejected` and `failed`.
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
    pub fn new(kind: &str, host: &str) -> Event {
        Event {
            kind: kind.to_string(),
            host: host.to_string(),
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            ..Default::default()
        }
    }
}

/// Publishes this host's events.
#[derive(Clone)]
pub struct Events {
    client: async_nats::Client,
    lattice: String,
}

impl Events {
    /// Events of `lattice` on `client`.
    pub fn new(client: async_nats::Client, lattice: &str) -> Events {
        Events {
            client,
            lattice: lattice.to_string(),
        }
    }

    /// Publishes `event`; a lost event is logged, never fatal.
    pub async fn emit(&self, event: &Event) {
        let payload = serde_json::to_vec(event).unwrap_or_default();
        if let Err(e) = self
            .client
            .publish(event_subject(&self.lattice, &event.kind), payload.into())
            .await
        {
            tracing::debug!("event {} not sent: {e}", event.kind);
        }
    }
}
