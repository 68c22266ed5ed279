//! Placement: which components of an app run on this host.
//!
//! A component runs on the hosts whose labels include all of its `placement`
//! labels. With `instances = n`, only `n` of those do: every host ranks the
//! matching hosts by a hash of (app, component, host id), highest first
//! (rendezvous hashing), and runs the component if it is among the first `n`.
//! Every host computes the same answer from the same membership, with no
//! coordinator; when a host joins or leaves, only the replicas it held or
//! takes move. Membership comes from heartbeats ([`Members`]).

use crate::manifest::{ComponentSpec, Manifest};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A host of the lattice as its peers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub host: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// Whether a host with `labels` may run `spec`.
pub fn matches(spec: &ComponentSpec, labels: &BTreeMap<String, String>) -> bool {
    spec.placement.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The components of `manifest` that host `me` runs, given every live host
/// (`me` included).
pub fn placed_here(manifest: &Manifest, me: &Member, members: &[Member]) -> BTreeSet<String> {
    let mut here = BTreeSet::new();
    for (name, spec) in &manifest.components {
        if !matches(spec, &me.labels) {
            continue;
        }
        let Some(wanted) = spec.instances else {
            here.insert(name.clone());
            continue;
        };
        let mut candidates: Vec<(u64, &str)> = members
            .iter()
            .chain(std::iter::once(me))
            .filter(|m| matches(spec, &m.labels))
            .map(|m| (score(&manifest.app.name, name, &m.host), m.host.as_str()))
            .collect();
        candidates.sort_unstable_by(|a, b| b.cmp(a));
        candidates.dedup_by(|a, b| a.1 == b.1);
        if candidates
            .iter()
            .take(wanted as usize)
            .any(|(_, host)| *host == me.host)
        {
            here.insert(name.clone());
        }
    }
    here
}

fn score(app: &str, component: &str, host: &str) -> u64 {
    let hash = Sha256::digest(format!("{app}/{component}/{host}"));
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// The live hosts of a lattice, from their heartbeats and start/stop events.
/// A host unheard of for `expiry` is gone.
#[derive(Debug)]
pub struct Members {
    expiry: Duration,
    seen: HashMap<String, (Member, Instant)>,
    /// How many hosts are known, kept for readers elsewhere (the inventory);
    /// [`UNKNOWN`] until the view is complete.
    known: Arc<AtomicUsize>,
    /// When following began; after `expiry` every live host has been heard.
    since: Instant,
    /// Whether the view is complete (learned from an inventory).
    complete: bool,
}

/// What [`Members::known`] holds while this host's view may still be missing
/// hosts: just started, it has not heard every peer's heartbeat yet.
pub const UNKNOWN: usize = usize::MAX;

impl Members {
    /// No hosts known yet.
    pub fn new(expiry: Duration) -> Members {
        Members {
            expiry,
            seen: HashMap::new(),
            known: Arc::new(AtomicUsize::new(UNKNOWN)),
            since: Instant::now(),
            complete: false,
        }
    }

    /// Marks the view complete: every live host has just answered.
    pub fn learned(&mut self) {
        self.complete = true;
        self.count();
    }

    /// How many peers are live, kept up to date as membership changes, or
    /// [`UNKNOWN`] while the view may be incomplete.
    pub fn known(&self) -> Arc<AtomicUsize> {
        self.known.clone()
    }

    fn count(&self) {
        let complete = self.complete || self.since.elapsed() >= self.expiry;
        let known = if complete { self.seen.len() } else { UNKNOWN };
        self.known.store(known, Ordering::Relaxed);
    }

    /// Records a sign of life; whether the membership changed.
    pub fn saw(&mut self, member: Member) -> bool {
        let now = Instant::now();
        let changed = match self.seen.insert(member.host.clone(), (member.clone(), now)) {
            Some((old, _)) => old != member,
            None => true,
        };
        self.count();
        changed
    }

    /// Records a clean stop; whether the host was known.
    pub fn left(&mut self, host: &str) -> bool {
        let known = self.seen.remove(host).is_some();
        self.count();
        known
    }

    /// Counts every known host as heard of now: while this host itself
    /// cannot hear anyone, silence says nothing about its peers.
    pub fn vouch_all(&mut self) {
        let now = Instant::now();
        for (_, at) in self.seen.values_mut() {
            *at = now;
        }
    }

    /// Forgets hosts unheard of for too long; whether any were.
    pub fn expire(&mut self) -> bool {
        let before = self.seen.len();
        let expiry = self.expiry;
        self.seen.retain(|_, (_, at)| at.elapsed() < expiry);
        self.count();
        self.seen.len() != before
    }

    /// Every live host.
    pub fn list(&self) -> Vec<Member> {
        let mut list: Vec<Member> = self.seen.values().map(|(m, _)| m.clone()).collect();
        list.sort_by(|a, b| a.host.cmp(&b.host));
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(host: &str, node: &str) -> Member {
        Member {
            host: host.into(),
            labels: [("node".to_string(), node.to_string())].into(),
        }
    }

    fn manifest(instances: &str) -> Manifest {
        let text = format!(
            "[app]\nname = \"demo\"\n[components.worker]\nsource = \"w.wasm\"\nplacement = {{ node = \"b\" }}\n{instances}\n"
        );
        Manifest::parse(&text, "test").expect("manifest")
    }

    #[test]
    fn every_host_agrees_on_exactly_n_replicas() {
        let hosts: Vec<Member> = (0..6)
            .map(|i| member(&format!("host-{i}"), if i == 5 { "a" } else { "b" }))
            .collect();
        for n in 1..=5u32 {
            let manifest = manifest(&format!("instances = {n}"));
            let running: Vec<&str> = hosts
                .iter()
                .filter(|me| placed_here(&manifest, me, &hosts).contains("worker"))
                .map(|m| m.host.as_str())
                .collect();
            // Only the 5 hosts labelled node=b are candidates.
            assert_eq!(running.len(), n.min(5) as usize, "instances = {n}: {running:?}");
            assert!(!running.contains(&"host-5"));
        }
    }

    #[test]
    fn scaling_up_keeps_the_replicas_that_ran() {
        let hosts: Vec<Member> = (0..5).map(|i| member(&format!("host-{i}"), "b")).collect();
        let at = |n: u32| -> BTreeSet<String> {
            let manifest = manifest(&format!("instances = {n}"));
            hosts
                .iter()
                .filter(|me| placed_here(&manifest, me, &hosts).contains("worker"))
                .map(|m| m.host.clone())
                .collect()
        };
        assert!(at(1).is_subset(&at(2)));
        assert!(at(2).is_subset(&at(3)));
    }

    #[test]
    fn without_instances_every_matching_host_runs_it() {
        let hosts = vec![member("x", "b"), member("y", "b"), member("z", "c")];
        let manifest = manifest("");
        let running = hosts
            .iter()
            .filter(|me| placed_here(&manifest, me, &hosts).contains("worker"))
            .count();
        assert_eq!(running, 2);
    }
}
