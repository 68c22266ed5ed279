//! Adaptive placement: which callees this host runs beside their hot callers.
//!
//! Placement ([`super::placement`]) says where each component runs. With
//! `[adaptive]` in the manifest and `may_run` on a component, a host also
//! watches its own remote links: when the calls from components here to a
//! component elsewhere stay at or above `hot` per second for `hold_ms`, and
//! the callee may run here and the host has room, it starts an *extra*
//! replica of the callee. The extra serves only this host's own callers (no
//! medium, no RPC subject), so their links become in-process. When the calls
//! to an extra stay under `cold` per second for `hold_ms`, it stops again.
//!
//! A link whose caller is placed here but may itself run elsewhere waits
//! three hold times: in a chain a -> b -> c, the host of `a` pulls `b` first
//! and then `c`, instead of the host of `b` pulling `c` only to let it go
//! again when `b` leaves.
//!
//! A hot rate must also be steady: one that halves from one second to the
//! next (the callers went elsewhere) starts the hold again.
//!
//! Every host decides for itself from its own counters; nothing is
//! coordinated and nothing is stored. The decisions are pure functions of
//! two samples of the link counters ([`Sample`]), which keeps them testable;
//! the agent applies them through the ordinary reconcile, so a move uses the
//! same zero-failure swap as an update.

use super::placement::Member;
use crate::links::{LinkKey, LinkTotals};
use crate::manifest::{Delivery, Manifest};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// How many hold times a hot link waits when its caller may itself move.
const CHAIN_WAIT: u32 = 3;

/// One app as adaptation sees it.
pub struct AppView<'a> {
    /// Its desired manifest.
    pub manifest: &'a Manifest,
    /// The components placement puts on this host.
    pub placed: &'a BTreeSet<String>,
    /// The extra replicas adaptation started here.
    pub extras: &'a BTreeSet<String>,
}

/// A change of this host's extra replicas, with why, for the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Start `component` of `app` here for this host's callers.
    Adapt {
        /// The app.
        app: String,
        /// The callee.
        component: String,
        /// Why, for people.
        reason: String,
    },
    /// Stop the extra replica of `component` of `app` here.
    Revert {
        /// The app.
        app: String,
        /// The callee.
        component: String,
        /// Why, for people.
        reason: String,
    },
}

/// The link counters of this host at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When they were read.
    pub at: Instant,
    /// Each link's totals, by (app, from, to).
    pub links: BTreeMap<LinkKey, LinkTotals>,
}

impl Sample {
    /// The counters as they are now: the links layer's own handles, not
    /// series looked up in the metrics registry by name.
    pub fn now() -> Sample {
        Sample {
            at: Instant::now(),
            links: crate::links::link_totals(),
        }
    }
}

/// Which components this host runs as extra replicas, and since when each
/// candidate has been hot or cold.
#[derive(Debug, Default)]
pub struct Adapter {
    last: Option<Sample>,
    /// When (app, component) began to be hot (not here) or cold (an extra).
    since: HashMap<(String, String), Instant>,
    /// The last rate of each hot link, to tell a steady load from a falling one.
    rates: HashMap<(String, String), f64>,
}

impl Adapter {
    /// Weighs `sample` against the previous one for every app in `apps` that
    /// is `[adaptive]`, on host `me` (`room`: whether it may start one more
    /// component); the moves whose condition has held long enough.
    pub fn tick(
        &mut self,
        sample: Sample,
        me: &Member,
        room: bool,
        apps: &BTreeMap<String, AppView<'_>>,
    ) -> Vec<Decision> {
        let Some(last) = self.last.replace(sample) else {
            return Vec::new();
        };
        let Some(now) = self.last.as_ref() else {
            return Vec::new();
        };
        let seconds = now.at.saturating_duration_since(last.at).as_secs_f64();
        if seconds < 0.05 {
            return Vec::new();
        }
        // What one of a link's totals grew by since the last sample.
        let delta = |pick: fn(&LinkTotals) -> u64, app: &str, from: &str, to: &str| -> u64 {
            let key: LinkKey = (app.to_string(), from.to_string(), to.to_string());
            let was = last.links.get(&key).map_or(0, pick);
            now.links.get(&key).map_or(0, pick).saturating_sub(was)
        };
        let mut decisions = Vec::new();
        let mut watched = BTreeSet::new();
        for (app, view) in apps {
            let Some(spec) = &view.manifest.adaptive else { continue };
            let hold = Duration::from_millis(spec.hold_ms);
            for (name, component) in &view.manifest.components {
                let Some(may_run) = &component.may_run else { continue };
                if view.placed.contains(name) {
                    continue;
                }
                // The calls-only links from components here to this one.
                let callers: Vec<&str> = view
                    .manifest
                    .links
                    .iter()
                    .filter(|l| &l.to == name && l.delivery == Delivery::Call)
                    .filter(|l| view.placed.contains(&l.from) || view.extras.contains(&l.from))
                    .map(|l| l.from.as_str())
                    .collect();
                let key = (app.clone(), name.clone());
                if view.extras.contains(name) {
                    let calls: u64 = callers
                        .iter()
                        .map(|from| delta(|t| t.local + t.composed, app, from, name))
                        .sum();
                    let rate = calls as f64 / seconds;
                    if rate >= spec.cold {
                        continue;
                    }
                    watched.insert(key.clone());
                    let since = *self.since.entry(key.clone()).or_insert(now.at);
                    if now.at.saturating_duration_since(since) >= hold {
                        self.since.remove(&key);
                        decisions.push(Decision::Revert {
                            app: app.clone(),
                            component: name.clone(),
                            reason: format!(
                                "calls from this host fell to {rate:.0}/s (under {} for {})",
                                spec.cold,
                                seconds_text(hold)
                            ),
                        });
                    }
                    continue;
                }
                let fits = may_run.iter().all(|(k, v)| me.labels.get(k) == Some(v));
                if callers.is_empty() || !fits || !room {
                    continue;
                }
                let calls: u64 = callers.iter().map(|from| delta(|t| t.remote, app, from, name)).sum();
                let waited: u64 = callers.iter().map(|from| delta(|t| t.waited_us, app, from, name)).sum();
                let rate = calls as f64 / seconds;
                if rate < spec.hot {
                    continue;
                }
                // A caller placed here that may itself run elsewhere may be
                // about to be pulled next to its own callers, taking these
                // calls with it: give it the time to go first, so a chain
                // moves from its head instead of twice.
                let movable = callers.iter().any(|from| {
                    view.placed.contains(*from)
                        && view.manifest.components.get(*from).is_some_and(|c| c.may_run.is_some())
                });
                let hold = if movable { hold * CHAIN_WAIT } else { hold };
                watched.insert(key.clone());
                // A rate that halved in a second is load going away (its
                // callers moved), not a steady load: the hold starts again.
                let previous = self.rates.insert(key.clone(), rate);
                if previous.is_some_and(|p| rate < p / 2.0) {
                    self.since.insert(key.clone(), now.at);
                }
                let since = *self.since.entry(key.clone()).or_insert(now.at);
                tracing::debug!(
                    "app `{app}`: calls to `{name}` over the lattice are hot ({rate:.0}/s) since {:.1} s",
                    now.at.saturating_duration_since(since).as_secs_f64()
                );
                if now.at.saturating_duration_since(since) >= hold {
                    self.since.remove(&key);
                    let each_ms = waited as f64 / calls.max(1) as f64 / 1e3;
                    decisions.push(Decision::Adapt {
                        app: app.clone(),
                        component: name.clone(),
                        reason: format!(
                            "{} called it {rate:.0}/s over the lattice at {each_ms:.2} ms each (at least {} for {})",
                            callers.join(", "),
                            spec.hot,
                            seconds_text(hold)
                        ),
                    });
                }
            }
        }
        // A condition that broke starts its hold again next time.
        self.since.retain(|key, _| watched.contains(key));
        self.rates.retain(|key, _| self.since.contains_key(key));
        decisions
    }
}

fn seconds_text(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The extras still worth keeping on host `me`: not placed here anyway, still
/// allowed by `may_run`, and still called by a component that runs here.
pub fn still_wanted(
    manifest: &Manifest,
    me: &Member,
    placed: &BTreeSet<String>,
    extras: &BTreeSet<String>,
) -> BTreeSet<String> {
    if manifest.adaptive.is_none() {
        return BTreeSet::new();
    }
    let mut kept: BTreeSet<String> = extras
        .iter()
        .filter(|name| !placed.contains(*name))
        .filter(|name| {
            manifest
                .components
                .get(*name)
                .and_then(|c| c.may_run.as_ref())
                .is_some_and(|may_run| may_run.iter().all(|(k, v)| me.labels.get(k) == Some(v)))
        })
        .cloned()
        .collect();
    // Drop extras whose callers are gone, until none is left to drop (an
    // extra may be the caller of another).
    loop {
        let callers = |name: &String| {
            manifest
                .links
                .iter()
                .any(|l| &l.to == name && (placed.contains(&l.from) || kept.contains(&l.from)))
        };
        let orphan = kept.iter().find(|name| !callers(name)).cloned();
        match orphan {
            Some(name) => kept.remove(&name),
            None => break,
        };
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "[app]\nname = \"shop\"\n[adaptive]\nhot = 100\ncold = 10\nhold_ms = 2000\n\
        [components.front]\nsource = \"f.wasm\"\nplacement = { node = \"a\" }\n\
        [components.back]\nsource = \"b.wasm\"\nplacement = { node = \"b\" }\nmay_run = {}\n\
        [[links]]\nfrom = \"front\"\nimport = \"shop:x/back@0.1.0\"\nto = \"back\"\n";

    fn me() -> Member {
        Member {
            host: "h1".into(),
            labels: [("node".to_string(), "a".to_string())].into(),
        }
    }

    /// A sample at `t0 + secs` with `remote` and `local` calls so far from
    /// `front` to `back`, each remote one having waited 500 µs.
    fn sample(t0: Instant, secs: u64, remote: u64, local: u64) -> Sample {
        let key = ("shop".to_string(), "front".to_string(), "back".to_string());
        let totals = LinkTotals {
            local,
            remote,
            waited_us: remote * 500,
            composed: 0,
        };
        Sample {
            at: t0 + Duration::from_secs(secs),
            links: [(key, totals)].into(),
        }
    }

    fn run(adapter: &mut Adapter, manifest: &Manifest, extras: &BTreeSet<String>, s: Sample) -> Vec<Decision> {
        let placed: BTreeSet<String> = ["front".to_string()].into();
        let apps = [(
            "shop".to_string(),
            AppView {
                manifest,
                placed: &placed,
                extras,
            },
        )]
        .into();
        adapter.tick(s, &me(), true, &apps)
    }

    #[test]
    fn a_link_hot_for_the_hold_time_adapts_once_with_its_reason() {
        let manifest = Manifest::parse(APP, "test").expect("manifest");
        let (mut adapter, t0, none) = (Adapter::default(), Instant::now(), BTreeSet::new());
        assert!(run(&mut adapter, &manifest, &none, sample(t0, 0, 0, 0)).is_empty());
        assert!(
            run(&mut adapter, &manifest, &none, sample(t0, 1, 500, 0)).is_empty(),
            "hot, not held yet"
        );
        assert!(run(&mut adapter, &manifest, &none, sample(t0, 2, 1000, 0)).is_empty());
        let decided = run(&mut adapter, &manifest, &none, sample(t0, 3, 1500, 0));
        let [Decision::Adapt { component, reason, .. }] = decided.as_slice() else {
            panic!("one adapt decision: {decided:?}");
        };
        assert_eq!(component, "back");
        assert!(
            reason.contains("front called it 500/s") && reason.contains("0.50 ms"),
            "{reason}"
        );
    }

    #[test]
    fn a_caller_that_may_move_itself_gets_three_hold_times_to_go_first() {
        let chain = APP.replace(
            "placement = { node = \"a\" }\n",
            "placement = { node = \"a\" }\nmay_run = {}\n",
        );
        let manifest = Manifest::parse(&chain, "test").expect("manifest");
        let (mut adapter, t0, none) = (Adapter::default(), Instant::now(), BTreeSet::new());
        run(&mut adapter, &manifest, &none, sample(t0, 0, 0, 0));
        for second in 1..7 {
            let decided = run(&mut adapter, &manifest, &none, sample(t0, second, second * 500, 0));
            // Hot from second 1: held 2 s at 3, 6 s (three hold times) at 7.
            assert!(decided.is_empty(), "second {second}: {decided:?}");
        }
        assert_eq!(run(&mut adapter, &manifest, &none, sample(t0, 7, 3500, 0)).len(), 1);
    }

    #[test]
    fn a_rate_that_halves_restarts_the_hold_even_above_the_threshold() {
        let manifest = Manifest::parse(APP, "test").expect("manifest");
        let (mut adapter, t0, none) = (Adapter::default(), Instant::now(), BTreeSet::new());
        run(&mut adapter, &manifest, &none, sample(t0, 0, 0, 0));
        // 1 500/s, 1 500/s, then the callers leave: 120/s is still hot, but
        // falling, so the 2 s are not yet held.
        run(&mut adapter, &manifest, &none, sample(t0, 1, 1500, 0));
        run(&mut adapter, &manifest, &none, sample(t0, 2, 3000, 0));
        assert!(run(&mut adapter, &manifest, &none, sample(t0, 3, 3120, 0)).is_empty());
        assert!(
            run(&mut adapter, &manifest, &none, sample(t0, 4, 3150, 0)).is_empty(),
            "30/s: cold"
        );
    }

    #[test]
    fn a_dip_under_the_threshold_restarts_the_hold() {
        let manifest = Manifest::parse(APP, "test").expect("manifest");
        let (mut adapter, t0, none) = (Adapter::default(), Instant::now(), BTreeSet::new());
        let mut calls = 0;
        run(&mut adapter, &manifest, &none, sample(t0, 0, calls, 0));
        // Hot, hot, a second at 50/s, then hot again: 2 s must pass anew.
        for (second, rate) in [(1, 500), (2, 500), (3, 50), (4, 500), (5, 500)] {
            calls += rate;
            let decided = run(&mut adapter, &manifest, &none, sample(t0, second, calls, 0));
            assert!(decided.is_empty(), "second {second}: {decided:?}");
        }
        calls += 500;
        assert_eq!(run(&mut adapter, &manifest, &none, sample(t0, 6, calls, 0)).len(), 1);
    }

    #[test]
    fn an_extra_reverts_only_after_staying_cold_and_never_flaps_under_steady_load() {
        let manifest = Manifest::parse(APP, "test").expect("manifest");
        let (mut adapter, t0) = (Adapter::default(), Instant::now());
        let extras: BTreeSet<String> = ["back".to_string()].into();
        let mut local = 0;
        run(&mut adapter, &manifest, &extras, sample(t0, 0, 0, local));
        // Steady load, now in process: nothing moves for a minute.
        for second in 1..60 {
            local += 400;
            assert!(run(&mut adapter, &manifest, &extras, sample(t0, second, 0, local)).is_empty());
        }
        // Between cold and hot (50/s): still nothing.
        for second in 60..70 {
            local += 50;
            assert!(run(&mut adapter, &manifest, &extras, sample(t0, second, 0, local)).is_empty());
        }
        // Cold (2/s) for the hold time: one revert.
        let mut decided = Vec::new();
        for second in 70..73 {
            local += 2;
            decided.extend(run(&mut adapter, &manifest, &extras, sample(t0, second, 0, local)));
        }
        assert!(
            matches!(decided.as_slice(), [Decision::Revert { component, .. }] if component == "back"),
            "{decided:?}"
        );
    }

    #[test]
    fn a_callee_that_may_not_run_here_or_finds_no_room_stays_put() {
        let narrow = APP.replace("may_run = {}", "may_run = { node = \"b\" }");
        let manifest = Manifest::parse(&narrow, "test").expect("manifest");
        let (mut adapter, t0, none) = (Adapter::default(), Instant::now(), BTreeSet::new());
        for second in 0..10 {
            assert!(run(&mut adapter, &manifest, &none, sample(t0, second, second * 1000, 0)).is_empty());
        }
        let manifest = Manifest::parse(APP, "test").expect("manifest");
        let placed: BTreeSet<String> = ["front".to_string()].into();
        let apps = [(
            "shop".to_string(),
            AppView {
                manifest: &manifest,
                placed: &placed,
                extras: &none,
            },
        )]
        .into();
        let mut adapter = Adapter::default();
        for second in 0..10 {
            let full = adapter.tick(sample(t0, second, second * 1000, 0), &me(), false, &apps);
            assert!(full.is_empty(), "no room: {full:?}");
        }
    }

    #[test]
    fn extras_go_with_their_callers() {
        let manifest = Manifest::parse(APP, "test").expect("manifest");
        let extras: BTreeSet<String> = ["back".to_string()].into();
        let front: BTreeSet<String> = ["front".to_string()].into();
        assert_eq!(still_wanted(&manifest, &me(), &front, &extras), extras);
        assert!(
            still_wanted(&manifest, &me(), &BTreeSet::new(), &extras).is_empty(),
            "no caller here"
        );
        let both: BTreeSet<String> = ["front".to_string(), "back".to_string()].into();
        assert!(
            still_wanted(&manifest, &me(), &both, &extras).is_empty(),
            "placed here anyway"
        );
    }

    #[test]
    fn may_run_must_be_wider_and_thresholds_must_leave_a_gap() {
        let narrower = APP.replace("may_run = {}", "may_run = { node = \"c\" }");
        let e = Manifest::parse(&narrower, "test")
            .expect_err("narrower may_run")
            .to_string();
        assert!(e.contains("components.back.may_run: `node = \"c\"` is narrower"), "{e}");
        let flat = APP.replace("cold = 10", "cold = 100");
        let e = Manifest::parse(&flat, "test").expect_err("cold = hot").to_string();
        assert!(
            e.contains("adaptive.cold: 100 must be at least 0 and below adaptive.hot (100)"),
            "{e}"
        );
        let stateful = APP.replace("may_run = {}", "may_run = {}\nkeyvalue = { buckets = [\"carts\"] }");
        let e = Manifest::parse(&stateful, "test")
            .expect_err("embedded bucket")
            .to_string();
        assert!(e.contains("components.back.may_run: bucket `carts` is embedded"), "{e}");
    }
}
