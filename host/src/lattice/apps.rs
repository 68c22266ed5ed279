//! What the agent knows of each app: the version it should run
//! ([`DesiredApp`]), what it last applied here ([`Applied`]), its runner and
//! extra replicas, and the line of the status board it reports.

use super::placement::{self, Member};
use super::status::{AppStatus, HostStatus, PeerStatus};
use crate::app::AppRunner;
use crate::manifest::Manifest;
use crate::runtime::LoadError;
use std::collections::{BTreeMap, BTreeSet};

/// Why an app does not run here as it should.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// This host's policy refuses what an app from the lattice asks for.
    #[error("refused by this host's policy: {}", .0.join("; "))]
    Refused(Vec<String>),
    /// The manifest or its components did not load; the old version serves.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// It runs, but some of its media could not bind.
    #[error("{}", .0.join("\n"))]
    Unbound(Vec<String>),
}

impl ReconcileError {
    /// The reason an event gives: the problems on one line.
    pub fn reason(&self) -> String {
        match self {
            ReconcileError::Refused(_) => self.to_string(),
            ReconcileError::Load(load) => load.problems.join("; "),
            ReconcileError::Unbound(failures) => failures.join("; "),
        }
    }
}

/// The version of an app this host should run.
pub struct DesiredApp {
    /// The manifest.
    pub manifest: Manifest,
    /// Its text: what changed is judged by it.
    pub text: String,
    /// The desired-state revision, for apps from the lattice.
    pub revision: Option<u64>,
}

/// What the last successful reconcile put in place here.
pub struct Applied {
    /// The manifest text applied.
    pub text: String,
    /// Its manifest, to tell which components a later version changes.
    pub manifest: Manifest,
    /// The components placed here then.
    pub here: BTreeSet<String>,
    /// What this host serves for the whole lattice (placed here, or kept for
    /// a hand-over): not extras.
    pub served: BTreeSet<String>,
}

/// One app as this host knows it.
pub struct AppState {
    /// What it should run.
    pub desired: DesiredApp,
    /// What runs, if a reconcile ever succeeded.
    pub applied: Option<Applied>,
    /// Its runner, while anything of it runs here.
    pub runner: Option<AppRunner>,
    /// Why the last reconcile failed, if it did.
    pub problem: Option<String>,
    /// Extra replicas run here for this host's own callers (adaptive
    /// placement), beside what placement puts here.
    pub extras: BTreeSet<String>,
}

impl AppState {
    /// An app not reconciled yet.
    pub fn new(desired: DesiredApp) -> AppState {
        AppState {
            desired,
            applied: None,
            runner: None,
            problem: None,
            extras: BTreeSet::new(),
        }
    }

    /// What it serves for the lattice as last applied (empty before).
    pub fn served(&self) -> BTreeSet<String> {
        self.applied.as_ref().map(|a| a.served.clone()).unwrap_or_default()
    }

    /// Its line on the status board; `members` places it where nothing was
    /// applied yet.
    pub fn status(&self, name: &str, me: &Member, members: &[Member]) -> AppStatus {
        AppStatus {
            name: name.to_string(),
            revision: self.desired.revision,
            placed_here: match &self.applied {
                Some(applied) => applied.here.iter().cloned().collect(),
                None => placement::placed_here(&self.desired.manifest, me, members)
                    .into_iter()
                    .collect(),
            },
            running: self
                .runner
                .as_ref()
                .map(|r| r.here().iter().cloned().collect())
                .unwrap_or_default(),
            adapted: self.extras.iter().cloned().collect(),
            components: self.desired.manifest.components.len(),
            problem: self.problem.clone(),
        }
    }
}

/// The status of host `me` running `apps`, for its board: `lattice` if it
/// has NATS, whose state is `nats`; `members` are its live peers.
pub fn host_status(
    me: &Member,
    lattice: Option<&str>,
    nats: &str,
    apps: &BTreeMap<String, AppState>,
    members: Vec<Member>,
) -> HostStatus {
    HostStatus {
        host: me.host.clone(),
        labels: me.labels.clone(),
        lattice: lattice.map(str::to_string),
        nats: nats.to_string(),
        apps: apps
            .iter()
            .map(|(name, state)| state.status(name, me, &members))
            .collect(),
        peers: members
            .into_iter()
            .map(|m| PeerStatus {
                host: m.host,
                labels: m.labels,
            })
            .collect(),
        uptime_s: 0,
    }
}
