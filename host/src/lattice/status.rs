//! The host's status board: what the agent last reconciled, the lattice's
//! other hosts as the agent sees them, and whether the agent's loop is alive.
//!
//! The agent writes it after every reconcile and on every tick of its loop;
//! the admin endpoint (`/healthz`, `/readyz`, `/status.json`, the status
//! page) reads it. It lives for the whole process, across a fresh start
//! after a lost NATS connection.

use crate::bus::Bus;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What this host reports about itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostStatus {
    /// The host's id.
    pub host: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The lattice it belongs to, when it has a NATS connection.
    pub lattice: Option<String>,
    /// `connected`, `disconnected`, or `none` (no NATS needed).
    pub nats: String,
    /// Its apps.
    pub apps: Vec<AppStatus>,
    /// The lattice's other hosts, as this host sees them.
    pub peers: Vec<PeerStatus>,
    /// Seconds since the process started.
    pub uptime_s: u64,
}

/// One app on this host.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AppStatus {
    /// Its name.
    pub name: String,
    /// The desired-state revision it runs (none for a local manifest).
    pub revision: Option<u64>,
    /// Components placed on this host.
    pub placed_here: Vec<String>,
    /// Components running on this host.
    pub running: Vec<String>,
    /// Of those, the extra replicas adaptive placement started for this
    /// host's own callers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adapted: Vec<String>,
    /// Components in the whole app.
    pub components: usize,
    /// Why the last reconcile failed, if it did.
    pub problem: Option<String>,
}

/// Another host of the lattice.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Its id.
    pub host: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// The board: a snapshot and the agent loop's last tick.
pub struct StatusBoard {
    status: RwLock<HostStatus>,
    /// When the agent loop last ticked; `None` before it runs.
    beat: RwLock<Option<Instant>>,
    /// The loop's tick period.
    period: RwLock<Duration>,
    /// The host's NATS connection, whose state is read live.
    nats: RwLock<Option<Bus>>,
    started: Instant,
    started_unix_ms: u64,
}

impl Default for StatusBoard {
    fn default() -> StatusBoard {
        StatusBoard {
            status: RwLock::default(),
            beat: RwLock::default(),
            period: RwLock::new(Duration::from_secs(10)),
            nats: RwLock::default(),
            started: Instant::now(),
            started_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}

impl StatusBoard {
    /// Replaces the snapshot.
    pub fn publish(&self, mut status: HostStatus) {
        status.uptime_s = self.started.elapsed().as_secs();
        *self.status.write().unwrap_or_else(|e| e.into_inner()) = status;
    }

    /// The latest snapshot, with the NATS connection's state as it is now.
    pub fn status(&self) -> HostStatus {
        let mut status = self.status.read().unwrap_or_else(|e| e.into_inner()).clone();
        status.uptime_s = self.started.elapsed().as_secs();
        if let Some(bus) = &*self.nats.read().unwrap_or_else(|e| e.into_inner()) {
            let connected = bus.client().connection_state() == async_nats::connection::State::Connected;
            status.nats = if connected { "connected" } else { "disconnected" }.into();
        }
        status
    }

    /// Follows `client`'s state (or none, for a host without NATS).
    pub fn watch_nats(&self, bus: Option<Bus>) {
        *self.nats.write().unwrap_or_else(|e| e.into_inner()) = bus;
    }

    /// When the process started, in Unix milliseconds.
    pub fn started_unix_ms(&self) -> u64 {
        self.started_unix_ms
    }

    /// The agent loop ticked; it ticks every `period`.
    pub fn beat(&self, period: Duration) {
        *self.beat.write().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        *self.period.write().unwrap_or_else(|e| e.into_inner()) = period;
    }

    /// The agent loop stopped on purpose (shutdown or a fresh start).
    pub fn rest(&self) {
        *self.beat.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `Err` naming the problem when the agent loop has missed three ticks.
    pub fn healthy(&self) -> Result<(), String> {
        let beat = *self.beat.read().unwrap_or_else(|e| e.into_inner());
        let period = *self.period.read().unwrap_or_else(|e| e.into_inner());
        match beat {
            Some(at) if at.elapsed() > period * 3 + Duration::from_secs(1) => Err(format!(
                "the agent loop has not ticked for {:.1} s (period {:?})",
                at.elapsed().as_secs_f64(),
                period
            )),
            _ => Ok(()),
        }
    }

    /// `Err` listing what is not ready: the agent loop not running yet, an
    /// app whose last reconcile failed or that runs less than is placed here,
    /// a NATS connection that is down.
    pub fn ready(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.beat.read().unwrap_or_else(|e| e.into_inner()).is_none() {
            problems.push("the host is starting".to_string());
        }
        let status = self.status();
        if status.nats == "disconnected" {
            problems.push("nats: disconnected".to_string());
        }
        for app in &status.apps {
            if let Some(problem) = &app.problem {
                problems.push(format!("app `{}`: {problem}", app.name));
            } else if app.running.len() < app.placed_here.len() {
                problems.push(format!(
                    "app `{}`: {} of {} component(s) placed here run",
                    app.name,
                    app.running.len(),
                    app.placed_here.len()
                ));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_the_loop_runs_and_every_app_runs_what_is_placed_here() {
        let board = StatusBoard::default();
        assert_eq!(board.ready(), Err(vec!["the host is starting".to_string()]));
        assert_eq!(board.healthy(), Ok(()), "alive while it starts");
        board.beat(Duration::from_millis(10));
        let app = AppStatus {
            name: "a".into(),
            placed_here: vec!["x".into()],
            ..Default::default()
        };
        board.publish(HostStatus {
            nats: "connected".into(),
            apps: vec![app.clone()],
            ..Default::default()
        });
        assert_eq!(
            board.ready(),
            Err(vec!["app `a`: 0 of 1 component(s) placed here run".to_string()])
        );
        let running = AppStatus {
            running: vec!["x".into()],
            ..app
        };
        board.publish(HostStatus {
            nats: "connected".into(),
            apps: vec![running],
            ..Default::default()
        });
        assert_eq!(board.ready(), Ok(()));
    }
}
