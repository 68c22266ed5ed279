//! The control plane: versioned NATS subjects and JSON payloads that steer a
//! lattice (`docs/control.md` is the reference).
//!
//! - Changes (apply, delete, update, scale) are made by the operator
//!   ([`operator`], run by `membrane ctl`): it writes the desired state
//!   ([`crate::lattice::desired`]), signed with its key; every host then
//!   reconciles to it. Hosts cannot write it.
//! - `membrane.<lattice>.ctl.v1.inventory` is answered by every host.
//! - Events go to `membrane.<lattice>.evt.v1.<kind>`: host and component
//!   lifecycle, published by the host where they happen. They are defined in
//!   [`crate::lattice::events`] and re-exported here.
//! - [`permissions`] renders the NATS permissions of each role.
//!
//! [`ctl`] is the `membrane ctl` client.

pub mod apps;
pub mod ctl;
pub mod operator;
pub mod permissions;

pub use crate::lattice::events::{Event, EventKind, Events};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Apply: store an app as desired state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// The manifest (TOML); every `source` must be a `sha256:` artifact.
    pub manifest: String,
}

/// What an apply did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyReply {
    /// The app.
    pub app: String,
    /// Its new revision.
    pub revision: u64,
}

/// Delete: remove an app; every host stops its share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// The app.
    pub app: String,
}

/// What a delete did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteReply {
    /// The app that was deleted.
    pub app: String,
}

/// Update: run another version of a component.
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
    /// What the host did.
    pub outcome: HostOutcomeKind,
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

/// What an update did.
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
    /// What the update did as a whole.
    pub outcome: UpdateOutcome,
    /// Each affected host's answer.
    pub hosts: Vec<HostOutcome>,
    /// Hosts expected to answer that did not, in time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silent: Vec<String>,
}

/// What one host did with the new version of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostOutcomeKind {
    /// It swapped to the new version.
    Updated,
    /// It started the new version (it did not run the component before).
    Started,
    /// It refused the new version; the old one keeps serving there.
    Rejected,
    /// The component could not start or bind there.
    Failed,
}

impl HostOutcomeKind {
    /// The outcome a component event of `kind` reports; `None` for the kinds
    /// that answer no update.
    pub fn of(kind: EventKind) -> Option<HostOutcomeKind> {
        match kind {
            EventKind::ComponentUpdated => Some(HostOutcomeKind::Updated),
            EventKind::ComponentStarted => Some(HostOutcomeKind::Started),
            EventKind::ComponentRejected | EventKind::AppRejected => Some(HostOutcomeKind::Rejected),
            EventKind::ComponentFailed => Some(HostOutcomeKind::Failed),
            EventKind::ComponentStopped
            | EventKind::HostStarted
            | EventKind::HostStopped
            | EventKind::PlacementAdapted
            | EventKind::PlacementReverted => None,
        }
    }

    /// Whether the host now serves the new version.
    pub fn serves_new_version(self) -> bool {
        matches!(self, HostOutcomeKind::Updated | HostOutcomeKind::Started)
    }

    /// The outcome as on the wire, e.g. `updated`.
    pub const fn as_str(self) -> &'static str {
        match self {
            HostOutcomeKind::Updated => "updated",
            HostOutcomeKind::Started => "started",
            HostOutcomeKind::Rejected => "rejected",
            HostOutcomeKind::Failed => "failed",
        }
    }
}

impl fmt::Display for HostOutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What an update did as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateOutcome {
    /// Every affected host swapped to the new version.
    Updated,
    /// Some host refused it; the old version keeps serving everywhere.
    Rejected,
    /// The new version already ran.
    Unchanged,
}

impl UpdateOutcome {
    /// The outcome as on the wire, e.g. `rejected`.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpdateOutcome::Updated => "updated",
            UpdateOutcome::Rejected => "rejected",
            UpdateOutcome::Unchanged => "unchanged",
        }
    }
}

impl fmt::Display for UpdateOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Scale: run a component on this many of its matching hosts.
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

/// What a scale did.
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

/// What a rollback did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackReply {
    /// The app.
    pub app: String,
    /// The revision whose manifest was restored.
    pub from: u64,
    /// The new revision that carries it.
    pub revision: u64,
}

/// A failed change: what went wrong and, for bad input, the field at fault.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_keep_their_wire_strings() {
        for (outcome, json) in [
            (HostOutcomeKind::Updated, "\"updated\""),
            (HostOutcomeKind::Started, "\"started\""),
            (HostOutcomeKind::Rejected, "\"rejected\""),
            (HostOutcomeKind::Failed, "\"failed\""),
        ] {
            assert_eq!(serde_json::to_string(&outcome).ok().as_deref(), Some(json));
            assert_eq!(format!("\"{outcome}\""), json);
        }
        for (outcome, json) in [
            (UpdateOutcome::Updated, "\"updated\""),
            (UpdateOutcome::Rejected, "\"rejected\""),
            (UpdateOutcome::Unchanged, "\"unchanged\""),
        ] {
            assert_eq!(serde_json::to_string(&outcome).ok().as_deref(), Some(json));
            assert_eq!(serde_json::from_str::<UpdateOutcome>(json).ok(), Some(outcome));
        }
    }
}
