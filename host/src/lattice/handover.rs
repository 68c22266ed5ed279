//! Make-before-break: a component that placement moves off this host keeps
//! serving here until a host that now runs it says so.
//!
//! When a host joins, rendezvous hashing may give it a replica that this
//! host ran. Stopping ours at once, while the new host is still starting
//! its copy, leaves a gap in which calls find no responder: with
//! `instances = 1`, every call of that gap fails. So this host keeps the
//! component (and its media) until one of the hosts that placement now
//! gives it to announces it runs it (`component.started` or `.updated`), or
//! until [`HANDOVER_MAX`] has passed, and only then stops (and drains) its
//! own. A host that leaves gracefully does the same the other way round: it
//! stops its heartbeats, announces `host.stopped`, and keeps serving until
//! the hosts that take its components over announce them ([`Handovers::unserved`]).
//! Who runs what is learned from the lattice's inventory at start-up and
//! from component events afterwards.

use super::placement::{Member, placed_here};
use crate::manifest::Manifest;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The longest a component is kept here for a host that does not announce
/// it (it failed to start it, or its event was lost).
pub const HANDOVER_MAX: Duration = Duration::from_secs(30);

/// Which hosts run which components, and the hand-overs under way.
#[derive(Debug, Default)]
pub struct Handovers {
    /// The hosts known to run each (app, component).
    running: HashMap<(String, String), BTreeSet<String>>,
    /// Components kept here past their placement, until when at most.
    pending: BTreeMap<(String, String), Instant>,
}

impl Handovers {
    /// Records that `host` runs `component` of `app`; whether that completes
    /// a hand-over under way (a reconcile is then due).
    pub fn started(&mut self, app: &str, component: &str, host: &str) -> bool {
        let key = (app.to_string(), component.to_string());
        self.running.entry(key.clone()).or_default().insert(host.to_string());
        self.pending.contains_key(&key)
    }

    /// Records that `host` no longer runs `component` of `app`.
    pub fn stopped(&mut self, app: &str, component: &str, host: &str) {
        if let Some(hosts) = self.running.get_mut(&(app.to_string(), component.to_string())) {
            hosts.remove(host);
        }
    }

    /// Forgets everything `host` ran (it left, or was missed).
    pub fn gone(&mut self, host: &str) {
        for hosts in self.running.values_mut() {
            hosts.remove(host);
        }
    }

    /// Whether a hand-over has waited out [`HANDOVER_MAX`].
    pub fn overdue(&self) -> bool {
        let now = Instant::now();
        self.pending.values().any(|until| *until <= now)
    }

    /// Of the components of `manifest` running on this host (`running`),
    /// those that no other live host (`members`, this host left out) runs
    /// yet although placement gives them one once this host is gone: what
    /// a leaving host waits for before it stops.
    pub fn unserved(
        &self,
        manifest: &Manifest,
        members: &[Member],
        running: &BTreeSet<String>,
    ) -> Vec<(String, String)> {
        let app = &manifest.app.name;
        let owners: Vec<(&Member, BTreeSet<String>)> =
            members.iter().map(|m| (m, placed_here(manifest, m, members))).collect();
        running
            .iter()
            .filter(|component| {
                let takers: Vec<&str> = owners
                    .iter()
                    .filter(|(_, here)| here.contains(*component))
                    .map(|(m, _)| m.host.as_str())
                    .collect();
                let served = self
                    .running
                    .get(&(app.clone(), component.to_string()))
                    .is_some_and(|hosts| takers.iter().any(|t| hosts.contains(*t)));
                !takers.is_empty() && !served
            })
            .map(|component| (app.clone(), component.clone()))
            .collect()
    }

    /// Of the components of `manifest` running on host `me` (`running`),
    /// those to keep serving although `placed` no longer includes them:
    /// placement gives them to other live hosts (`members`), none of which
    /// has announced running them yet, and the wait is not over.
    pub fn keep(
        &mut self,
        manifest: &Manifest,
        me: &Member,
        members: &[Member],
        running: &BTreeSet<String>,
        placed: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let app = &manifest.app.name;
        let leaving: BTreeSet<&String> = running
            .iter()
            .filter(|c| !placed.contains(*c) && manifest.components.contains_key(*c))
            .collect();
        self.pending.retain(|(a, c), _| a != app || leaving.contains(c));
        if leaving.is_empty() {
            return BTreeSet::new();
        }
        // Where placement puts each component now, host by host.
        let everyone: Vec<Member> = members.iter().cloned().chain(std::iter::once(me.clone())).collect();
        let owners: Vec<(&Member, BTreeSet<String>)> = members
            .iter()
            .filter(|m| m.host != me.host)
            .map(|m| (m, placed_here(manifest, m, &everyone)))
            .collect();
        let now = Instant::now();
        let mut kept = BTreeSet::new();
        for component in leaving {
            let key = (app.clone(), component.clone());
            let takers: Vec<&str> = owners
                .iter()
                .filter(|(_, here)| here.contains(component))
                .map(|(m, _)| m.host.as_str())
                .collect();
            let announced = self
                .running
                .get(&key)
                .is_some_and(|hosts| takers.iter().any(|t| hosts.contains(*t)));
            if takers.is_empty() || announced {
                self.pending.remove(&key);
                continue;
            }
            let until = *self.pending.entry(key.clone()).or_insert_with(|| {
                tracing::info!(
                    "app `{app}`: `{component}` is now placed on {}; serving it here until it runs there",
                    takers.join(", ")
                );
                now + HANDOVER_MAX
            });
            if now < until {
                kept.insert(component.clone());
            } else {
                tracing::warn!(
                    "app `{app}`: {} did not announce `{component}` within {} s; stopping it here anyway",
                    takers.join(", "),
                    HANDOVER_MAX.as_secs()
                );
                self.pending.remove(&key);
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(host: &str) -> Member {
        Member {
            host: host.into(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn a_moved_component_stays_until_its_new_host_announces_it() {
        let manifest = Manifest::parse(
            "[app]\nname = \"a\"\n[components.solo]\nsource = \"s.wasm\"\ninstances = 1\n",
            "test",
        )
        .expect("manifest");
        // Find a newcomer that rendezvous hashing ranks above `old`.
        let old = member("old");
        let newcomer = (0..100)
            .map(|i| member(&format!("new-{i}")))
            .find(|n| !placed_here(&manifest, &old, std::slice::from_ref(n)).contains("solo"))
            .expect("some newcomer takes the replica");
        let mut handovers = Handovers::default();
        let running: BTreeSet<String> = ["solo".to_string()].into();
        let placed = placed_here(&manifest, &old, std::slice::from_ref(&newcomer));
        assert!(placed.is_empty());
        let members = [newcomer.clone()];
        let kept = handovers.keep(&manifest, &old, &members, &running, &placed);
        assert_eq!(kept, running, "kept until the newcomer runs it");
        assert!(!handovers.overdue());
        assert!(
            handovers.started("a", "solo", &newcomer.host),
            "its start completes the hand-over"
        );
        assert!(handovers.keep(&manifest, &old, &members, &running, &placed).is_empty());
    }

    #[test]
    fn nothing_is_kept_when_no_live_host_takes_it() {
        let manifest = Manifest::parse(
            "[app]\nname = \"a\"\n[components.solo]\nsource = \"s.wasm\"\nplacement = { zone = \"x\" }\n",
            "test",
        )
        .expect("manifest");
        let mut handovers = Handovers::default();
        let running: BTreeSet<String> = ["solo".to_string()].into();
        let kept = handovers.keep(&manifest, &member("me"), &[member("other")], &running, &BTreeSet::new());
        assert!(kept.is_empty());
    }
}
