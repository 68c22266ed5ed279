//! The host agent: what this host runs, kept equal to what it should run.
//!
//! The agent holds the desired manifest of every app it knows (from a local
//! file, or from the lattice's desired state in KV) and the lattice's
//! membership (from heartbeats and host events). Whenever either changes, it
//! asks [`decide`] (pure: placement, hand-overs, extras) what each app runs
//! here, carries it out ([`AppRunner::reconcile`]), then publishes what
//! happened as events. A
//! version that fails validation is reported `component.rejected` and the
//! old one keeps serving. There is no scheduler: every host runs this same
//! loop over the same inputs.

mod reconcile;

use super::adapt::Adapter;
use super::apps::{AppState, DesiredApp};
use super::desired::{self, Desired, DesiredStream};
use super::events::{EventKind, Events};
use super::handover::Handovers;
use super::inventory::AppsView;
use super::peers;
use super::placement::{Member, Members};
use super::policy::Policy;
use super::report::Reporter;
use super::status::StatusBoard;
use super::trust::{Sequences, Trust};
use crate::app::{AppRunner, HostContext};
use crate::bus::Bus;
use crate::manifest::Manifest;
use crate::transports::serve::flush_briefly;
use futures::StreamExt as _;
use futures::stream::SelectAll;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often adaptive placement weighs the link counters.
const ADAPT_EVERY: Duration = Duration::from_secs(1);

/// This host's agent.
pub struct Agent {
    me: Member,
    host: HostContext,
    reporter: Reporter,
    lattice: String,
    apps: BTreeMap<String, AppState>,
    view: AppsView,
    members: Members,
    /// Whose desired state this host runs.
    trust: Trust,
    /// The highest entry number run per app, kept across fresh starts of
    /// the host in this process.
    sequences: Sequences,
    /// What apps from the lattice may be granted here.
    policy: Policy,
    /// Where this host's status is reported.
    board: Arc<StatusBoard>,
    /// Adaptive placement's view of this host's links.
    adapter: Adapter,
    /// Who runs what, and the components kept here until their new hosts
    /// run them (make-before-break).
    handovers: Handovers,
    /// The host's heartbeat and inventory services, silenced before it
    /// announces that it leaves.
    services: Option<CancellationToken>,
}

impl Agent {
    /// An agent for host `me` that runs nothing yet. `heartbeat` is the
    /// lattice's heartbeat period: a peer silent for three is gone.
    pub fn new(me: Member, lattice: &str, host: HostContext, view: AppsView, heartbeat: Duration) -> Agent {
        Agent {
            reporter: Reporter::new(&me.host, host.nats.clone().map(|bus| Events::new(bus, lattice))),
            me,
            host,
            lattice: lattice.to_string(),
            apps: BTreeMap::new(),
            view,
            members: Members::new(heartbeat * 3),
            trust: Trust::default(),
            sequences: Sequences::default(),
            policy: Policy::default(),
            board: Arc::default(),
            adapter: Adapter::default(),
            handovers: Handovers::default(),
            services: None,
        }
    }

    /// How many other live hosts this host knows of, as membership changes.
    pub fn peers(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.members.known()
    }

    /// Cancels `services` (heartbeats, inventory) first when the host
    /// leaves: a heartbeat after `host.stopped` would make it a member again.
    pub fn silence_on_leave(&mut self, services: CancellationToken) {
        self.services = Some(services);
    }

    /// Reports this host's status on `board` (the admin endpoint reads it).
    pub fn reporting(mut self, board: Arc<StatusBoard>) -> Agent {
        board.watch_nats(self.host.nats.clone());
        self.board = board;
        self
    }

    /// Writes this host's status to its board.
    fn publish_status(&self) {
        let nats = match &self.host.nats {
            None => "none",
            Some(_) if self.connected() => "connected",
            Some(_) => "disconnected",
        };
        let lattice = self.host.nats.as_ref().map(|_| self.lattice.as_str());
        let status = super::apps::host_status(&self.me, lattice, nats, &self.apps, self.members.list());
        self.board.publish(status);
    }

    /// Runs only the desired state `trust` admits, and only apps whose
    /// grants `policy` allows (a manifest file run with `start_static` is
    /// the user's own and is not judged).
    pub fn guarded(mut self, trust: Trust, policy: Policy) -> Agent {
        self.trust = trust;
        self.policy = policy;
        self
    }

    /// The same agent, refusing entries older than those in `sequences`
    /// (and recording what it runs there).
    pub fn remembering(mut self, sequences: Sequences) -> Agent {
        self.sequences = sequences;
        self
    }

    /// Learns the lattice's current hosts by asking for their inventory.
    pub async fn discover(&mut self, settle: Duration) -> anyhow::Result<()> {
        let Some(bus) = &self.host.nats else { return Ok(()) };
        for host in super::inventory::gather(&bus.client(), &self.lattice, settle).await? {
            for component in &host.components {
                self.handovers.started(&component.app, &component.name, &host.host);
            }
            self.members.saw(peers::member_of(&host));
        }
        self.members.learned();
        Ok(())
    }

    /// Runs `manifest` (from a local file) and waits until it serves. Any
    /// validation or bind error is returned: `membrane up` fails on it.
    pub async fn start_static(&mut self, manifest: Manifest, text: String) -> anyhow::Result<()> {
        let app = manifest.app.name.clone();
        let desired = DesiredApp {
            manifest,
            text,
            revision: None,
        };
        self.apps.insert(app.clone(), AppState::new(desired));
        Ok(self.reconcile(&app).await?)
    }

    /// Summary of what runs here, for the ready line.
    pub fn running(&self) -> (usize, usize, usize) {
        self.apps
            .values()
            .map(|s| {
                let runner = s.runner.as_ref();
                (
                    runner.map_or(0, |r| r.here().len()),
                    s.desired.manifest.components.len(),
                    runner.map_or(0, AppRunner::media),
                )
            })
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    }

    /// Publishes `host.started`.
    pub async fn announce(&self) {
        let mut event = self.reporter.host_event(EventKind::HostStarted);
        event.labels = self.me.labels.clone();
        self.reporter.emit(event).await;
    }

    /// Reconciles until `shutdown`, following membership and, when
    /// `desired` is given, the lattice's desired state. Then stops every app
    /// (calls in flight finish) and publishes `host.stopped`.
    pub async fn run(mut self, follow: bool, heartbeat: Duration, shutdown: impl Future<Output = ()>) {
        let desired = |agent: &Agent| {
            agent
                .host
                .nats
                .as_ref()
                .filter(|_| follow)
                .map(|bus| Desired::new(bus.client(), &agent.lattice))
        };
        // A new connection (the old one died): bind again what subscribes.
        let mut generation = self.host.nats.as_ref().map(Bus::generation);
        // The watch starts at once (the timer is due) and again whenever it ends.
        let mut watch: Option<DesiredStream> = None;
        let mut failures = 0u32;
        // The bucket's newest revision every few seconds, against which the
        // watch is checked: the highest revision it delivered, and the
        // bucket's one check ago (see `desired::behind`).
        let mut newest = desired(&self).map(|d| Box::pin(d.newest_revisions()));
        let (mut seen, mut previous) = (0u64, None);
        let rewatch = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(rewatch);
        let mut peers = self.follow_peers().await;
        let mut expiry = tokio::time::interval(heartbeat);
        let mut adapting = tokio::time::interval(ADAPT_EVERY);
        adapting.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        self.board.beat(heartbeat);
        self.publish_status();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                next = async { watch.as_mut()?.next().await }, if watch.is_some() => match next {
                    Some(revision) => {
                        seen = seen.max(revision.revision);
                        self.on_revision(revision).await
                    }
                    None => {
                        // The watch ended (the server went away for good, or
                        // its consumer was lost): follow again from the
                        // latest revisions, which reconcile as no-ops.
                        tracing::warn!("desired-state watch ended; following it again in 1 s");
                        watch = None;
                        rewatch.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                },
                Some(last) = async { newest.as_mut()?.next().await } => {
                    if watch.is_none() {
                        previous = None;
                    } else if desired::behind(previous, seen) {
                        tracing::warn!(
                            "the desired-state watch is behind (it delivered revision {seen}, the bucket had {}); following it again",
                            previous.unwrap_or_default()
                        );
                        watch = None;
                        previous = None;
                        rewatch.as_mut().reset(tokio::time::Instant::now());
                    } else {
                        previous = Some(last);
                    }
                }
                _ = &mut rewatch, if watch.is_none() && follow && self.host.nats.is_some() => {
                    let Some(desired) = desired(&self) else { continue };
                    watch = desired::rewatch(&desired, rewatch.as_mut(), &mut failures).await;
                }
                changed = async {
                    match generation.as_mut() {
                        Some(generation) => generation.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    if !changed {
                        generation = None;
                        continue;
                    }
                    self.reconnected().await;
                    peers = self.follow_peers().await;
                    if follow {
                        watch = None;
                        rewatch.as_mut().reset(tokio::time::Instant::now());
                    }
                }
                Some(message) = async { peers.as_mut()?.next().await } => {
                    let (me, members, handovers) = (&self.me.host, &mut self.members, &mut self.handovers);
                    if peers::heard(&self.lattice, me, members, handovers, &message) {
                        self.reconcile_all().await;
                    }
                }
                _ = adapting.tick() => self.adapt().await,
                _ = expiry.tick() => {
                    self.board.beat(heartbeat);
                    self.publish_status();
                    if !self.connected() {
                        // A peer is not gone because this host is deaf.
                        self.members.vouch_all();
                    } else if self.members.expire() || self.handovers.overdue() {
                        self.reconcile_all().await;
                    }
                }
            }
        }
        self.board.rest();
        self.stop_all().await;
        self.publish_status();
    }

    /// Whether this host hears the lattice (always, without NATS).
    fn connected(&self) -> bool {
        self.host
            .nats
            .as_ref()
            .is_none_or(|bus| bus.client().connection_state() == async_nats::connection::State::Connected)
    }

    /// Follows the lattice's heartbeats and host events; `None` without NATS.
    async fn follow_peers(&self) -> Option<SelectAll<async_nats::Subscriber>> {
        Some(peers::follow(&self.host.nats.as_ref()?.client(), &self.lattice).await)
    }

    /// The bus has a new NATS connection (the old one died): every app binds
    /// its NATS media, link servers and buckets again on it. Nothing else
    /// stops: HTTP listeners, instances, calls in flight.
    async fn reconnected(&mut self) {
        let started = std::time::Instant::now();
        for (name, state) in &mut self.apps {
            let Some(runner) = state.runner.as_mut() else { continue };
            match runner.reconnect().await {
                Ok(done) => {
                    for failure in done.failures {
                        tracing::warn!("app `{name}` on the new connection: {failure}");
                    }
                }
                Err(e) => tracing::error!("app `{name}`: cannot bind again on the new connection: {e:#}"),
            }
        }
        tracing::info!(
            "nats: every app serves on the new connection ({:.1} ms)",
            started.elapsed().as_secs_f64() * 1e3
        );
    }

    /// Stops every app (calls in flight finish), then publishes
    /// `host.stopped`.
    async fn stop_all(&mut self) {
        tracing::info!("shutting down: finishing in-flight requests");
        if let Some(services) = &self.services {
            services.cancel();
        }
        self.hand_over_on_leave().await;
        for (_, state) in std::mem::take(&mut self.apps) {
            if let Some(runner) = state.runner {
                runner.stop().await;
            }
        }
        if let Some(bus) = &self.host.nats {
            flush_briefly(&bus.client()).await;
        }
    }

    /// Announces `host.stopped`, then keeps serving until every component
    /// that only this host runs is announced by a host that takes it over
    /// (at most [`peers::LEAVE_WAIT`]): a graceful leave is make-before-break too.
    async fn hand_over_on_leave(&mut self) {
        let Some(client) = self.host.nats.as_ref().map(|bus| bus.client()) else {
            return;
        };
        let subject = crate::subjects::event(&self.lattice, "component.*.*");
        let followed = client.subscribe(subject).await;
        let members: Vec<Member> = self.members.list();
        let mut pending: BTreeSet<(String, String)> = BTreeSet::new();
        for state in self.apps.values() {
            if state.runner.is_some() {
                pending.extend(
                    self.handovers
                        .unserved(&state.desired.manifest, &members, &state.served()),
                );
            }
        }
        self.reporter
            .emit(self.reporter.host_event(EventKind::HostStopped))
            .await;
        flush_briefly(&client).await;
        let Ok(events) = followed else { return };
        if !pending.is_empty() && self.connected() {
            peers::await_takeover(events, &self.me.host, pending).await;
        }
    }
}
