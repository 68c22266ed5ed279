//! The lattice as the console's page draws it: [`Lattice`] keeps the last two
//! inventories of every host, its heartbeats, the desired state and the
//! refusals seen in events, and [`Lattice::snapshot`] turns them into one
//! [`Snapshot`] (hosts and their components, links with their rate and
//! latency over the last interval, entry points, health).
//!
//! Everything here is pure: the caller passes the time and what NATS
//! delivered; `super::serve` does the I/O.

use crate::lattice::events::{Event, EventKind};
use crate::lattice::inventory::{ComponentInventory, HostInventory, LinkTraffic};
use crate::lattice::placement;
use crate::manifest::Manifest;
use crate::metrics::CALL_BUCKETS;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A host that sent nothing for this long after being missed is forgotten.
const FORGET_MS: u64 = 10 * 60 * 1000;

/// The heartbeat period assumed for a host that has not said its own.
const DEFAULT_HEARTBEAT_MS: u64 = 10_000;
/// The longest heartbeat period a host may claim; a claim past it is cut to
/// it, so a peer cannot make itself never go missing.
const MAX_HEARTBEAT_MS: u64 = 10 * 60 * 1000;

/// The heartbeat period to believe for a host's claim: the default when it
/// claims none, else its claim within 1 ms ..= [`MAX_HEARTBEAT_MS`].
fn heartbeat_period(claimed: Option<u64>) -> u64 {
    claimed.unwrap_or(DEFAULT_HEARTBEAT_MS).clamp(1, MAX_HEARTBEAT_MS)
}

/// What the page draws, sent whole on every update.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Snapshot {
    /// The lattice's name.
    pub lattice: String,
    /// When it was taken (Unix milliseconds).
    pub at_ms: u64,
    /// Every host known, missing ones included.
    pub hosts: Vec<HostView>,
    /// Every link made, from the caller's host to each callee's.
    pub links: Vec<LinkView>,
    /// Bindings: where calls enter the lattice.
    pub entries: Vec<Entry>,
    /// What needs an operator.
    pub health: Vec<Problem>,
}

/// One host.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HostView {
    /// Its id.
    pub id: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it sent a heartbeat or an inventory within three periods.
    pub alive: bool,
    /// Milliseconds since it was last heard from.
    pub silent_ms: u64,
    /// What it runs (as last reported, for a missing host).
    pub components: Vec<ComponentView>,
}

/// One component on one host.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ComponentView {
    /// Its app.
    pub app: String,
    /// Its name.
    pub name: String,
    /// The version it runs.
    pub digest: String,
    /// The app's revision in the desired state.
    pub revision: Option<u64>,
    /// Instances alive.
    pub instances: u32,
    /// Its `max_instances`.
    pub max_instances: u32,
    /// Calls per second over the last interval.
    pub rate: Option<f64>,
    /// Median call time over the last interval (milliseconds).
    pub p50_ms: Option<f64>,
    /// 99th percentile call time over the last interval (milliseconds).
    pub p99_ms: Option<f64>,
    /// Failed calls by kind since the host started.
    pub faults: BTreeMap<String, u64>,
    /// The composition it runs inside, if it was composed into another.
    pub fused_into: Option<String>,
}

/// One link from a component on one host to the same callee on another (or
/// the same) host.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LinkView {
    /// The app.
    pub app: String,
    /// The caller.
    pub from: String,
    /// The caller's host.
    pub from_host: String,
    /// The callee.
    pub to: String,
    /// The callee's host.
    pub to_host: String,
    /// `local` (in process), `composed` (inside one composition: its rate
    /// is the calls into the composition, an upper bound, and it has no
    /// latency of its own), `remote` (NATS) or `queued` (JetStream).
    #[serde(rename = "where")]
    pub place: String,
    /// Calls per second over the last interval; a remote link's calls are
    /// shared evenly among the hosts that run the callee (NATS picks one per
    /// call, and the caller does not learn which).
    pub rate: Option<f64>,
    /// Median call time, caller side (milliseconds).
    pub p50_ms: Option<f64>,
    /// 99th percentile call time, caller side (milliseconds).
    pub p99_ms: Option<f64>,
}

/// A binding of a component on a host: an entry point.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// Its medium (`http`, `nats`, `queue`, ...).
    pub medium: String,
    /// Its address, subject or topic as the manifest gives it.
    pub address: String,
    /// The host that serves it.
    pub host: String,
    /// The app.
    pub app: String,
    /// The component it delivers to.
    pub component: String,
}

/// Something wrong, for the health list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// `missing`, `unsatisfied` or `refused`.
    pub kind: &'static str,
    /// One line for a person.
    pub detail: String,
    /// The host concerned, if one.
    pub host: Option<String>,
    /// The app concerned, if one.
    pub app: Option<String>,
    /// The component concerned, if one.
    pub component: Option<String>,
}

/// One applied app, as the desired state holds it.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Its revision.
    pub revision: u64,
    /// Its manifest.
    pub manifest: Manifest,
}

/// What the console knows of one host.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// The last two inventories, with when each came (newest last).
    inventories: Vec<(u64, HostInventory)>,
    /// Its labels, from whichever document came last.
    labels: BTreeMap<String, String>,
    /// When it was last heard from.
    last_ms: u64,
    /// Its heartbeat period, as [`heartbeat_period`] believes it.
    heartbeat_ms: u64,
}

impl Seen {
    /// How long it may stay silent before it counts as missing: three periods.
    fn expiry_ms(&self) -> u64 {
        self.heartbeat_ms.saturating_mul(3)
    }

    /// Whether it has been heard from within its expiry at `now_ms`.
    fn alive(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_ms) <= self.expiry_ms()
    }
}

/// The console's picture of a lattice, fed by NATS and read as snapshots.
#[derive(Debug, Default)]
pub struct Lattice {
    name: String,
    hosts: BTreeMap<String, Seen>,
    desired: BTreeMap<String, Applied>,
    /// The last refusal per (host, app, component) not since cleared by a
    /// start or an update there.
    refusals: BTreeMap<(String, String, String), String>,
}

impl Lattice {
    /// An empty picture of lattice `name`.
    pub fn new(name: &str) -> Lattice {
        Lattice {
            name: name.to_string(),
            ..Default::default()
        }
    }

    fn seen(&mut self, host: &HostInventory, now_ms: u64) -> &mut Seen {
        let seen = self.hosts.entry(host.host.clone()).or_default();
        seen.last_ms = seen.last_ms.max(now_ms);
        seen.labels = host.labels.clone();
        seen.heartbeat_ms = heartbeat_period(host.heartbeat_ms);
        seen
    }

    /// A heartbeat from `host` at `now_ms`.
    pub fn heartbeat(&mut self, host: &HostInventory, now_ms: u64) {
        self.seen(host, now_ms);
    }

    /// One inventory round's answers, gathered at `now_ms`.
    pub fn inventories(&mut self, answers: Vec<HostInventory>, now_ms: u64) {
        for answer in answers {
            let seen = self.seen(&answer, now_ms);
            seen.inventories.push((now_ms, answer));
            if seen.inventories.len() > 2 {
                seen.inventories.remove(0);
            }
        }
    }

    /// The desired state as just read.
    pub fn desired(&mut self, apps: BTreeMap<String, Applied>) {
        self.desired = apps;
    }

    /// A lattice event: a stopped host is forgotten, refusals are kept until
    /// the component starts there.
    pub fn event(&mut self, event: &Event) {
        let key = || {
            (
                event.host.clone(),
                event.app.clone().unwrap_or_default(),
                event.component.clone().unwrap_or_default(),
            )
        };
        match event.kind {
            EventKind::HostStopped => {
                self.hosts.remove(&event.host);
                self.refusals.retain(|(host, _, _), _| host != &event.host);
            }
            EventKind::ComponentFailed | EventKind::ComponentRejected | EventKind::AppRejected => {
                let reason = event.reason.clone().unwrap_or_else(|| event.kind.to_string());
                self.refusals.insert(key(), reason);
            }
            EventKind::ComponentStarted | EventKind::ComponentUpdated | EventKind::ComponentStopped => {
                let (host, app, component) = key();
                self.refusals.remove(&(host.clone(), app.clone(), component));
                // An app refused as a whole is cleared by any of its
                // components starting there.
                self.refusals.remove(&(host, app, String::new()));
            }
            _ => {}
        }
    }

    /// The hosts that went missing at `now_ms`, to announce once each: those
    /// silent for more than three periods, and not more than four.
    pub fn newly_missing(&self, now_ms: u64, since_ms: u64) -> Vec<(String, u64)> {
        self.hosts
            .iter()
            .filter_map(|(id, seen)| {
                let expiry = seen.last_ms.saturating_add(seen.expiry_ms());
                (expiry > since_ms && expiry <= now_ms).then(|| (id.clone(), now_ms - seen.last_ms))
            })
            .collect()
    }

    /// The picture at `now_ms`; hosts silent past [`FORGET_MS`] are dropped.
    pub fn snapshot(&mut self, now_ms: u64) -> Snapshot {
        self.hosts
            .retain(|_, seen| now_ms.saturating_sub(seen.last_ms) <= FORGET_MS + seen.expiry_ms());
        let alive = |seen: &Seen| seen.alive(now_ms);
        let mut hosts = Vec::new();
        let mut links = Vec::new();
        let mut entries = Vec::new();
        // Which alive hosts run each (app, component).
        let mut runs: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
        for (id, seen) in &self.hosts {
            if !alive(seen) {
                continue;
            }
            for c in seen.inventories.last().map(|(_, i)| &i.components[..]).unwrap_or(&[]) {
                runs.entry((&c.app, &c.name)).or_default().push(id);
            }
        }
        for (id, seen) in &self.hosts {
            let up = alive(seen);
            let (last, previous) = match &seen.inventories[..] {
                [] => (None, None),
                [only] => (Some(only), None),
                [previous, last, ..] => (Some(last), Some(previous)),
            };
            let interval = |c: &ComponentInventory| {
                let (at, inventory) = previous?;
                let before = inventory
                    .components
                    .iter()
                    .find(|p| p.app == c.app && p.name == c.name)?;
                let seconds = last?.0.saturating_sub(*at) as f64 / 1000.0;
                Some((before, seconds))
            };
            let mut components = Vec::new();
            for c in last.map(|(_, i)| &i.components[..]).unwrap_or(&[]) {
                let figures = match interval(c).filter(|_| up) {
                    Some((before, seconds)) => {
                        Figures::between((before.calls, &before.latency[..]), (c.calls, &c.latency[..]), seconds)
                    }
                    None => Figures::default(),
                };
                components.push(ComponentView {
                    app: c.app.clone(),
                    name: c.name.clone(),
                    digest: c.digest.clone(),
                    revision: self.desired.get(&c.app).map(|a| a.revision),
                    instances: c.instances,
                    max_instances: c.max_instances,
                    rate: figures.rate,
                    p50_ms: figures.p50_ms,
                    p99_ms: figures.p99_ms,
                    faults: c.faults.clone(),
                    fused_into: None,
                });
                for (member, digest) in &c.fused {
                    components.push(ComponentView {
                        app: c.app.clone(),
                        name: member.clone(),
                        digest: digest.clone(),
                        revision: self.desired.get(&c.app).map(|a| a.revision),
                        instances: c.instances,
                        max_instances: c.max_instances,
                        rate: None,
                        p50_ms: None,
                        p99_ms: None,
                        faults: BTreeMap::new(),
                        fused_into: Some(c.name.clone()),
                    });
                }
                let manifest = self.desired.get(&c.app).map(|a| &a.manifest);
                links.extend(links_of(id, c, interval(c).filter(|_| up), &runs, manifest));
                if up && let Some(applied) = self.desired.get(&c.app) {
                    entries.extend(entries_of(id, c, &applied.manifest));
                }
            }
            hosts.push(HostView {
                id: id.clone(),
                labels: seen.labels.clone(),
                alive: up,
                silent_ms: now_ms.saturating_sub(seen.last_ms),
                components,
            });
        }
        let health = self.health(now_ms, &runs);
        Snapshot {
            lattice: self.name.clone(),
            at_ms: now_ms,
            hosts,
            links,
            entries,
            health,
        }
    }

    /// Missing hosts, unsatisfied placement and refusals.
    fn health(&self, now_ms: u64, runs: &BTreeMap<(&str, &str), Vec<&str>>) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (id, seen) in &self.hosts {
            let silent = now_ms.saturating_sub(seen.last_ms);
            if !seen.alive(now_ms) {
                problems.push(Problem {
                    kind: "missing",
                    detail: format!(
                        "{id} missed its heartbeats: silent for {} s (expiry {} s)",
                        silent / 1000,
                        seen.expiry_ms() / 1000
                    ),
                    host: Some(id.clone()),
                    app: None,
                    component: None,
                });
            }
        }
        let alive: Vec<(&String, &Seen)> = self.hosts.iter().filter(|(_, s)| s.alive(now_ms)).collect();
        for (app, applied) in &self.desired {
            for (name, spec) in &applied.manifest.components {
                let matching = alive
                    .iter()
                    .filter(|(_, s)| placement::matches(spec, &s.labels))
                    .count();
                let wanted = spec.instances.map_or(matching, |n| (n as usize).min(matching));
                let running = runs.get(&(app.as_str(), name.as_str())).map_or(0, Vec::len);
                let detail = match spec.instances {
                    _ if matching == 0 => Some(format!("{app}/{name}: no live host matches its placement")),
                    _ if running < wanted => Some(format!("{app}/{name}: runs on {running} of {wanted} hosts wanted")),
                    Some(n) if (n as usize) > matching => {
                        Some(format!("{app}/{name}: wants {n} hosts; {matching} match its placement"))
                    }
                    _ => None,
                };
                if let Some(detail) = detail {
                    problems.push(Problem {
                        kind: "unsatisfied",
                        detail,
                        host: None,
                        app: Some(app.clone()),
                        component: Some(name.clone()),
                    });
                }
            }
        }
        for ((host, app, component), reason) in &self.refusals {
            let what = if component.is_empty() {
                app.clone()
            } else {
                format!("{app}/{component}")
            };
            problems.push(Problem {
                kind: "refused",
                detail: format!("{host} refused {what}: {reason}"),
                host: Some(host.clone()),
                app: Some(app.clone()),
                component: (!component.is_empty()).then(|| component.clone()),
            });
        }
        problems
    }
}

/// A rate and two quantiles over one interval.
#[derive(Debug, Default, PartialEq)]
struct Figures {
    rate: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

impl Figures {
    /// From two readings of a count and its duration buckets, `seconds`
    /// apart. A count that went down (the host restarted) gives nothing.
    fn between(before: (u64, &[u64]), after: (u64, &[u64]), seconds: f64) -> Figures {
        if seconds <= 0.0 || after.0 < before.0 {
            return Figures::default();
        }
        let delta: Vec<u64> = after
            .1
            .iter()
            .enumerate()
            .map(|(i, n)| n.saturating_sub(before.1.get(i).copied().unwrap_or(0)))
            .collect();
        Figures {
            rate: Some(round((after.0 - before.0) as f64 / seconds)),
            p50_ms: quantile(&delta, 0.5).map(round),
            p99_ms: quantile(&delta, 0.99).map(round),
        }
    }
}

/// Two decimals are all a label shows.
fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The `q` quantile in milliseconds of the calls counted per bucket of
/// [`CALL_BUCKETS`] (then `+Inf`), interpolated within its bucket as
/// Prometheus's `histogram_quantile` does; `None` without calls. A quantile
/// in the `+Inf` bucket is given as the largest bound.
fn quantile(counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = CALL_BUCKETS.get(i) else {
                return CALL_BUCKETS.last().map(|b| b * 1000.0);
            };
            let lower = if i == 0 { 0.0 } else { CALL_BUCKETS[i - 1] };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some((lower + (upper - lower) * within) * 1000.0);
        }
        below += n;
    }
    CALL_BUCKETS.last().map(|b| b * 1000.0)
}

/// The links component `c` on host `host` makes, one per callee host: what
/// its inventory says is made (`links`), and for a composition the links
/// among its members (from `manifest`), with what it counted (`traffic`);
/// `interval` gives the previous reading and the seconds since.
fn links_of(
    host: &str,
    c: &ComponentInventory,
    interval: Option<(&ComponentInventory, f64)>,
    runs: &BTreeMap<(&str, &str), Vec<&str>>,
    manifest: Option<&Manifest>,
) -> Vec<LinkView> {
    // (from, to, how) of every link made here by `c` or its members.
    let mut made: Vec<(&str, &str, &str)> = c
        .links
        .iter()
        .map(|l| (c.name.as_str(), l.to.as_str(), l.made.as_str()))
        .collect();
    let members: Vec<&str> = c.fused.iter().map(|(name, _)| name.as_str()).collect();
    for link in manifest.map_or(&[][..], |m| &m.links[..]) {
        if members.contains(&link.from.as_str()) {
            let inside = link.to == c.name || members.contains(&link.to.as_str());
            made.push((
                link.from.as_str(),
                link.to.as_str(),
                if inside { "composed" } else { "remote" },
            ));
        }
    }
    let mut out = Vec::new();
    for (from, to, how) in made {
        let place = match how {
            "composed" => "composed",
            "dynamic" => "local",
            "remote" => "remote",
            _ => "queued",
        };
        let counted = |t: &&LinkTraffic| t.from == from && t.to == to && (place == "queued" || t.place == place);
        let figures = match (c.traffic.iter().find(counted), interval) {
            (Some(now), Some((before, seconds))) => {
                let then = before.traffic.iter().find(counted);
                Figures::between(
                    then.map_or((0, &[][..]), |t| (t.calls, &t.latency[..])),
                    (now.calls, &now.latency[..]),
                    seconds,
                )
            }
            _ => Figures::default(),
        };
        let callees: Vec<&str> = match place {
            "local" | "composed" => vec![host],
            _ => runs
                .get(&(c.app.as_str(), to))
                .map(|hosts| hosts.iter().copied().filter(|h| *h != host).collect())
                .unwrap_or_default(),
        };
        let share = callees.len().max(1) as f64;
        for to_host in callees {
            out.push(LinkView {
                app: c.app.clone(),
                from: from.to_string(),
                from_host: host.to_string(),
                to: to.to_string(),
                to_host: to_host.to_string(),
                place: place.to_string(),
                rate: figures.rate.map(|r| round(r / share)),
                p50_ms: figures.p50_ms,
                p99_ms: figures.p99_ms,
            });
        }
    }
    out
}

/// The bindings of `manifest` that deliver to component `c` on `host`.
fn entries_of(host: &str, c: &ComponentInventory, manifest: &Manifest) -> Vec<Entry> {
    manifest
        .bindings
        .iter()
        .filter(|b| b.component == c.name)
        .map(|b| {
            let address = ["address", "route", "subject", "topic", "stream", "schedule"]
                .iter()
                .find_map(|key| b.table.get(*key).and_then(|v| v.as_str()))
                .unwrap_or("")
                .to_string();
            Entry {
                medium: b.medium.clone(),
                address,
                host: host.to_string(),
                app: c.app.clone(),
                component: c.name.clone(),
            }
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::component::LinkReport;

    /// Bucket counts with `n` calls in bucket `i` of [`CALL_BUCKETS`].
    fn buckets(put: &[(usize, u64)]) -> Vec<u64> {
        let mut counts = vec![0; CALL_BUCKETS.len() + 1];
        for &(i, n) in put {
            counts[i] = n;
        }
        counts
    }

    #[test]
    fn a_claimed_heartbeat_period_is_believed_only_within_bounds() {
        let cases: &[(Option<u64>, u64)] = &[
            (None, DEFAULT_HEARTBEAT_MS),
            (Some(0), 1),
            (Some(1), 1),
            (Some(1000), 1000),
            (Some(MAX_HEARTBEAT_MS), MAX_HEARTBEAT_MS),
            (Some(MAX_HEARTBEAT_MS + 1), MAX_HEARTBEAT_MS),
            (Some(u64::MAX), MAX_HEARTBEAT_MS),
        ];
        for (claimed, want) in cases {
            assert_eq!(heartbeat_period(*claimed), *want, "{claimed:?}");
        }
    }

    #[test]
    fn a_host_claiming_an_endless_heartbeat_still_goes_missing() {
        let mut l = Lattice::new("t");
        let mut liar = host("liar", &[], vec![]);
        liar.heartbeat_ms = Some(u64::MAX);
        l.heartbeat(&liar, 1_000);
        let expiry = 1_000 + 3 * MAX_HEARTBEAT_MS;
        assert!(l.snapshot(expiry).health.is_empty());
        let missing = l.newly_missing(expiry + 1, expiry - 1);
        assert_eq!(missing, vec![("liar".to_string(), expiry + 1 - 1_000)]);
        let health = l.snapshot(expiry + 1).health;
        assert_eq!(health.len(), 1, "{health:?}");
        assert_eq!(health[0].kind, "missing");
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        // Bucket 4 is (0.5 ms, 1 ms]; bucket 6 is (2.5 ms, 5 ms].
        // (calls per bucket, quantile, milliseconds wanted).
        type Case<'a> = (&'a [(usize, u64)], f64, Option<f64>);
        let cases: &[Case] = &[
            (&[], 0.5, None),
            (&[(4, 10)], 0.5, Some(0.75)),
            (&[(4, 10)], 1.0, Some(1.0)),
            (&[(0, 10)], 0.5, Some(0.025)),
            (&[(4, 99), (6, 1)], 0.5, Some(0.5 + 0.5 * 50.0 / 99.0)),
            (&[(4, 98), (6, 2)], 0.99, Some(2.5 + 2.5 * 0.5)),
            // Past the last bound: the last bound.
            (&[(CALL_BUCKETS.len(), 3)], 0.5, Some(10_000.0)),
        ];
        for (put, q, want) in cases {
            let got = quantile(&buckets(put), *q);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{put:?} q{q}: {g} != {w}"),
                _ => assert_eq!(got, *want, "{put:?} q{q}"),
            }
        }
    }

    #[test]
    fn figures_come_from_the_difference_of_two_readings() {
        let before = buckets(&[(4, 10)]);
        let after = buckets(&[(4, 10), (6, 20)]);
        let f = Figures::between((10, &before[..]), (30, &after[..]), 2.0);
        assert_eq!(f.rate, Some(10.0));
        assert_eq!(f.p50_ms, Some(3.75), "only the new calls count");
        // A host that restarted counts from zero again: no figures.
        assert_eq!(
            Figures::between((30, &after[..]), (5, &before[..]), 2.0),
            Figures::default()
        );
        assert_eq!(
            Figures::between((1, &before[..]), (5, &after[..]), 0.0),
            Figures::default()
        );
        // No calls: a rate of zero and no latency.
        let idle = Figures::between((5, &before[..]), (5, &before[..]), 2.0);
        assert_eq!((idle.rate, idle.p50_ms), (Some(0.0), None));
    }

    fn component(app: &str, name: &str, calls: u64) -> ComponentInventory {
        ComponentInventory {
            app: app.into(),
            name: name.into(),
            digest: format!("sha256:{name}"),
            instances: 1,
            max_instances: 4,
            links: Vec::new(),
            calls,
            latency: buckets(&[(4, calls)]),
            faults: BTreeMap::new(),
            traffic: Vec::new(),
            fused: Vec::new(),
        }
    }

    fn calling(mut c: ComponentInventory, to: &str, made: &str, calls: u64) -> ComponentInventory {
        c.links.push(LinkReport {
            to: to.into(),
            made: made.into(),
            why: None,
        });
        let place = if made == "remote" { "remote" } else { "local" };
        c.traffic.push(LinkTraffic {
            from: c.name.clone(),
            to: to.into(),
            place: place.into(),
            calls,
            latency: buckets(&[(6, calls)]),
        });
        c
    }

    fn host(id: &str, labels: &[(&str, &str)], components: Vec<ComponentInventory>) -> HostInventory {
        HostInventory {
            host: id.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            uptime_s: 1,
            components,
            component_count: None,
            lattice_hosts: None,
            heartbeat_ms: Some(1000),
        }
    }

    const APP: &str = "[app]\nname = \"shop\"\n\
        [components.gateway]\nsource = \"g.wasm\"\nplacement = { node = \"a\" }\n\
        [components.rater]\nsource = \"r.wasm\"\ninstances = 2\n\
        [[links]]\nfrom = \"gateway\"\nto = \"rater\"\nimport = \"x:y/z\"\n\
        [[bindings]]\nmedium = \"http\"\naddress = \"127.0.0.1:8080\"\ncomponent = \"gateway\"\n";

    /// Host a calls rater on b remotely; b's rater is called 20 times a
    /// second; c runs nothing.
    fn lattice(calls: u64) -> Vec<HostInventory> {
        vec![
            host(
                "a",
                &[("node", "a")],
                vec![calling(component("shop", "gateway", calls), "rater", "remote", calls)],
            ),
            host("b", &[("node", "b")], vec![component("shop", "rater", calls)]),
            host("c", &[("node", "c")], vec![]),
        ]
    }

    fn picture() -> Lattice {
        let mut l = Lattice::new("test");
        let manifest = Manifest::parse(APP, "shop").unwrap();
        l.desired(BTreeMap::from([(
            "shop".to_string(),
            Applied { revision: 7, manifest },
        )]));
        l.inventories(lattice(100), 10_000);
        l.inventories(lattice(140), 12_000);
        l
    }

    #[test]
    fn a_snapshot_places_components_links_and_entries_on_their_hosts() {
        let s = picture().snapshot(12_500);
        let hosts: Vec<(&str, bool, Vec<&str>)> = s
            .hosts
            .iter()
            .map(|h| {
                (
                    h.id.as_str(),
                    h.alive,
                    h.components.iter().map(|c| c.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            hosts,
            [
                ("a", true, vec!["gateway"]),
                ("b", true, vec!["rater"]),
                ("c", true, vec![])
            ]
        );
        let rater = &s.hosts[1].components[0];
        assert_eq!((rater.rate, rater.revision), (Some(20.0), Some(7)));
        assert_eq!(rater.p50_ms, Some(0.75));
        assert_eq!(s.links.len(), 1);
        let link = &s.links[0];
        assert_eq!(
            (
                link.from_host.as_str(),
                link.to_host.as_str(),
                link.place.as_str(),
                link.rate
            ),
            ("a", "b", "remote", Some(20.0))
        );
        assert_eq!(link.p99_ms, Some(4.98), "2.5 ms + 0.99 of the 2.5 ms bucket, rounded");
        assert_eq!(s.entries.len(), 1);
        assert_eq!(
            (s.entries[0].host.as_str(), s.entries[0].address.as_str()),
            ("a", "127.0.0.1:8080")
        );
        // rater wants 2 hosts and runs on 1.
        let health: Vec<(&str, &str)> = s.health.iter().map(|p| (p.kind, p.detail.as_str())).collect();
        assert_eq!(health, [("unsatisfied", "shop/rater: runs on 1 of 2 hosts wanted")]);
    }

    #[test]
    fn a_local_link_ends_on_its_own_host_and_a_remote_one_is_shared_among_callees() {
        let mut l = Lattice::new("test");
        let hosts = |calls| {
            vec![
                host(
                    "a",
                    &[],
                    vec![
                        calling(component("shop", "gateway", calls), "rater", "dynamic", calls),
                        component("shop", "rater", calls),
                    ],
                ),
                host(
                    "b",
                    &[],
                    vec![calling(component("shop", "gateway", calls), "rater", "remote", calls)],
                ),
                host("c", &[], vec![component("shop", "rater", 0)]),
            ]
        };
        l.inventories(hosts(0), 0);
        l.inventories(hosts(100), 1000);
        let s = l.snapshot(1000);
        let links: Vec<(&str, &str, &str, Option<f64>)> = s
            .links
            .iter()
            .map(|k| (k.from_host.as_str(), k.to_host.as_str(), k.place.as_str(), k.rate))
            .collect();
        assert_eq!(
            links,
            [
                ("a", "a", "local", Some(100.0)),
                ("b", "a", "remote", Some(50.0)),
                ("b", "c", "remote", Some(50.0))
            ]
        );
    }

    #[test]
    fn a_silent_host_is_missing_after_three_heartbeats_once_and_a_stopped_one_is_gone() {
        let mut l = picture();
        // a and b beat at 13 s; c last answered at 12 s.
        l.heartbeat(&host("a", &[("node", "a")], vec![]), 13_000);
        l.heartbeat(&host("b", &[("node", "b")], vec![]), 13_000);
        assert!(l.newly_missing(14_900, 14_000).is_empty());
        assert_eq!(l.newly_missing(15_500, 14_900), [("c".to_string(), 3_500)]);
        assert!(l.newly_missing(15_900, 15_500).is_empty(), "announced once");
        let s = l.snapshot(15_500);
        let c = s.hosts.iter().find(|h| h.id == "c").unwrap();
        assert!(!c.alive);
        assert!(
            s.health
                .iter()
                .any(|p| p.kind == "missing" && p.host.as_deref() == Some("c"))
        );
        // A missing host's components get no rate.
        l.heartbeat(&host("a", &[("node", "a")], vec![]), 20_000);
        let s = l.snapshot(20_000);
        assert!(
            s.hosts.iter().find(|h| h.id == "b").unwrap().components[0]
                .rate
                .is_none()
        );
        let mut stopped = Event::new(EventKind::HostStopped, "c");
        stopped.at_ms = 20_000;
        l.event(&stopped);
        assert!(!l.snapshot(20_000).hosts.iter().any(|h| h.id == "c"));
        // Forgotten after ten minutes of silence.
        assert!(l.snapshot(20_000 + FORGET_MS + 10_000).hosts.is_empty());
    }

    #[test]
    fn a_refusal_shows_until_the_component_starts_there() {
        let mut l = picture();
        let mut failed = Event::new(EventKind::ComponentFailed, "b");
        failed.app = Some("shop".into());
        failed.component = Some("rater".into());
        failed.reason = Some("memory_mib: 512 is more than this host allows".into());
        l.event(&failed);
        let refused = |l: &mut Lattice| {
            l.snapshot(12_500)
                .health
                .into_iter()
                .filter(|p| p.kind == "refused")
                .map(|p| p.detail)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            refused(&mut l),
            ["b refused shop/rater: memory_mib: 512 is more than this host allows"]
        );
        let mut started = failed.clone();
        started.kind = EventKind::ComponentStarted;
        l.event(&started);
        assert!(refused(&mut l).is_empty());
    }

    #[test]
    fn a_composition_shows_its_members_inside_it_and_its_links_as_composed() {
        let mut l = picture();
        let fused = |calls| {
            let mut gateway = calling(component("shop", "gateway", calls), "rater", "composed", calls);
            gateway.traffic[0].place = "composed".into();
            gateway.fused = vec![("rater".into(), "sha256:r".into())];
            vec![host("a", &[("node", "a")], vec![gateway])]
        };
        l.inventories(fused(0), 20_000);
        l.inventories(fused(30), 21_000);
        let s = l.snapshot(21_000);
        let a = &s.hosts[0];
        let names: Vec<(&str, Option<&str>)> = a
            .components
            .iter()
            .map(|c| (c.name.as_str(), c.fused_into.as_deref()))
            .collect();
        assert_eq!(names, [("gateway", None), ("rater", Some("gateway"))]);
        let links: Vec<(&str, &str, &str, Option<f64>)> = s
            .links
            .iter()
            .map(|k| (k.from.as_str(), k.to_host.as_str(), k.place.as_str(), k.rate))
            .collect();
        assert_eq!(links, [("gateway", "a", "composed", Some(30.0))]);
    }
}
