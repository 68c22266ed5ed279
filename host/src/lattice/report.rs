//! What the agent tells the lattice: the lifecycle events of one host's
//! reconciles (started, updated, stopped, rejected, failed, adapted), built
//! from the outcome and published on the host's own event subjects. It
//! decides nothing; `agent.rs` calls it after it has acted.

use super::events::{Event, EventKind, Events};
use crate::app::{Reconciled, short};
use crate::manifest::Manifest;
use crate::runtime::Change;
use std::collections::BTreeSet;

/// Publishes one host's events (logs only, without NATS).
pub struct Reporter {
    /// The host's id, the events' `host`.
    host: String,
    events: Option<Events>,
}

/// An app that failed to reconcile: what the refusal is about.
pub struct Refusal<'a> {
    /// The app.
    pub app: &'a str,
    /// The components placed here.
    pub here: &'a BTreeSet<String>,
    /// The manifest that failed.
    pub manifest: &'a Manifest,
    /// The manifest last applied, to tell which components changed.
    pub previous: Option<&'a Manifest>,
    /// The desired-state revision, for an app from the lattice.
    pub revision: Option<u64>,
}

impl Reporter {
    /// A reporter for host `host`, publishing through `events` if it has NATS.
    pub fn new(host: &str, events: Option<Events>) -> Reporter {
        Reporter {
            host: host.to_string(),
            events,
        }
    }

    /// A new event of `kind` about this host.
    pub fn host_event(&self, kind: EventKind) -> Event {
        Event::new(kind, &self.host)
    }

    /// A new event of `kind` about `component` of `app`.
    pub fn event(&self, kind: EventKind, app: &str, component: &str, revision: Option<u64>) -> Event {
        let mut event = Event::new(kind, &self.host);
        event.app = Some(app.to_string());
        event.component = Some(component.to_string());
        event.revision = revision;
        event
    }

    /// Publishes `event` when this host has NATS.
    pub async fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            events.emit(&event).await;
        }
    }

    /// Publishes `app.rejected` for `revision` of `app`: nothing changed here.
    pub async fn app_rejected(&self, app: &str, revision: u64, reason: String) {
        let mut event = Event::new(EventKind::AppRejected, &self.host);
        (event.app, event.revision, event.reason) = (Some(app.to_string()), Some(revision), Some(reason));
        self.emit(event).await;
    }

    /// Logs and publishes that `stopped` components of `app` stopped here,
    /// with `reason` if one is given.
    pub async fn stopped(&self, app: &str, stopped: BTreeSet<String>, revision: Option<u64>, reason: Option<&str>) {
        for name in stopped {
            match reason {
                Some(reason) => tracing::info!("stopped {name}: {reason}"),
                None => tracing::info!("stopped {name}"),
            }
            let mut event = self.event(EventKind::ComponentStopped, app, &name, revision);
            event.reason = reason.map(str::to_string);
            self.emit(event).await;
        }
    }

    /// Logs and publishes a successful reconcile of app `app`; the failures
    /// of media that did not bind, if some did not.
    pub async fn reconciled(
        &self,
        app: &str,
        here: &BTreeSet<String>,
        manifest: &Manifest,
        revision: Option<u64>,
        done: Reconciled,
    ) -> Result<(), Vec<String>> {
        tracing::info!(
            "app `{app}`{}: {} of {} component(s) here",
            revision.map(|r| format!(" revision {r}")).unwrap_or_default(),
            here.len(),
            manifest.components.len()
        );
        for change in &done.changes {
            let mut event = self.change_event(app, change, revision);
            event.compile_ms = Some(done.compile.as_secs_f64() * 1e3);
            event.swap_ms = Some(done.swap.as_secs_f64() * 1e3);
            self.emit(event).await;
        }
        if done.failures.is_empty() {
            return Ok(());
        }
        for name in here {
            let mut event = self.event(EventKind::ComponentFailed, app, name, revision);
            event.reason = Some(done.failures.join("; "));
            self.emit(event).await;
        }
        Err(done.failures)
    }

    /// The event of one `change` to app `app`.
    fn change_event(&self, app: &str, change: &Change, revision: Option<u64>) -> Event {
        match change {
            Change::Started { name, digest } => {
                let mut e = self.event(EventKind::ComponentStarted, app, name, revision);
                e.digest = Some(digest.clone());
                e
            }
            Change::Updated { name, from, to } => {
                let mut e = self.event(EventKind::ComponentUpdated, app, name, revision);
                (e.digest, e.previous) = (Some(to.clone()), Some(from.clone()));
                e
            }
            Change::Stopped { name, digest } => {
                let mut e = self.event(EventKind::ComponentStopped, app, name, revision);
                e.digest = Some(digest.clone());
                e
            }
        }
    }

    /// Logs and publishes a failed reconcile: the components whose version
    /// changed were rejected or, if none did, the app failed to start here.
    pub async fn refused(&self, refusal: Refusal<'_>, reason: &str) {
        let changed = changed_components(refusal.previous, refusal.manifest);
        let (kind, names) = if changed.is_empty() {
            (EventKind::ComponentFailed, refusal.here.iter().cloned().collect())
        } else {
            (EventKind::ComponentRejected, changed)
        };
        for name in names {
            let mut event = self.event(kind, refusal.app, &name, refusal.revision);
            event.digest = refusal
                .manifest
                .components
                .get(&name)
                .map(|c| c.source.display().to_string());
            event.reason = Some(reason.to_string());
            tracing::warn!(
                "{kind} {name} ({}): {reason}",
                short(event.digest.as_deref().unwrap_or(""))
            );
            self.emit(event).await;
        }
    }
}

/// Components whose source differs between the manifest last applied and
/// `manifest` (none without one).
fn changed_components(previous: Option<&Manifest>, manifest: &Manifest) -> Vec<String> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    manifest
        .components
        .iter()
        .filter(|(name, spec)| {
            previous
                .components
                .get(*name)
                .is_none_or(|old| old.source != spec.source)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(rater: &str) -> Manifest {
        let text = format!(
            "[app]\nname = \"a\"\n[components.gateway]\nsource = \"g.wasm\"\n[components.rater]\nsource = \"{rater}\"\n"
        );
        Manifest::parse(&text, "test").unwrap()
    }

    #[test]
    fn only_components_whose_source_changed_are_rejected() {
        let (old, new) = (manifest("r1.wasm"), manifest("r2.wasm"));
        assert_eq!(changed_components(Some(&old), &new), vec!["rater".to_string()]);
        assert!(changed_components(Some(&old), &old).is_empty());
        // Nothing applied before: the app failed to start, nothing was rejected.
        assert!(changed_components(None, &new).is_empty());
    }
}
