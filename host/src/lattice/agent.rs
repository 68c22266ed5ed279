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

use super::adapt::{Adapter, AppView, Decision, Sample};
use super::decide::{Known, Step, decide};
use super::desired::{AppRevision, Desired};
use super::events::{Event, EventKind, Events, vouched};
use super::handover::Handovers;
use super::inventory::{AppsView, HostInventory};
use super::placement::{self, Member, Members};
use super::policy::Policy;
use super::status::{AppStatus, HostStatus, PeerStatus, StatusBoard};
use super::trust::{self, Sequences, Trust};
use crate::app::{AppRunner, HostContext, Reconciled, short};
use crate::bus::Bus;
use crate::manifest::Manifest;
use crate::runtime::{Change, LoadError};
use crate::transports::serve::flush_briefly;
use futures::StreamExt as _;
use futures::stream::SelectAll;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

/// The longest a leaving host waits for others to take its components over.
const LEAVE_WAIT: Duration = Duration::from_secs(10);

/// How often adaptive placement weighs the link counters.
const ADAPT_EVERY: Duration = Duration::from_secs(1);

/// The revisions of the lattice's desired state, from
/// [`super::desired::Desired::watch`].
pub type DesiredStream = std::pin::Pin<Box<dyn futures::Stream<Item = AppRevision> + Send>>;

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

/// One app as this host knows it.
struct AppState {
    manifest: Manifest,
    /// Its manifest text: what changed is judged by it.
    text: String,
    /// The desired-state revision, for applied apps.
    revision: Option<u64>,
    runner: Option<AppRunner>,
    /// The text and placement last reconciled successfully.
    applied: Option<(String, BTreeSet<String>)>,
    /// The manifest last reconciled successfully.
    applied_manifest: Option<Manifest>,
    /// Why the last reconcile failed, if it did.
    problem: Option<String>,
    /// Extra replicas run here for this host's own callers (adaptive
    /// placement), beside what placement puts here.
    extras: BTreeSet<String>,
    /// What this host serves for the whole lattice (placed here, or kept
    /// for a hand-over), as of the last successful reconcile: not extras.
    served: BTreeSet<String>,
}

/// This host's agent.
pub struct Agent {
    me: Member,
    host: HostContext,
    events: Option<Events>,
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
            events: host.nats.clone().map(|bus| Events::new(bus, lattice)),
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
        let apps = self
            .apps
            .iter()
            .map(|(name, state)| AppStatus {
                name: name.clone(),
                revision: state.revision,
                placed_here: state
                    .applied
                    .as_ref()
                    .map(|(_, here)| here.iter().cloned().collect())
                    .unwrap_or_else(|| {
                        placement::placed_here(&state.manifest, &self.me, &self.members.list())
                            .into_iter()
                            .collect()
                    }),
                running: state
                    .runner
                    .as_ref()
                    .map(|r| r.here().iter().cloned().collect())
                    .unwrap_or_default(),
                adapted: state.extras.iter().cloned().collect(),
                components: state.manifest.components.len(),
                problem: state.problem.clone(),
            })
            .collect();
        let nats = match &self.host.nats {
            None => "none",
            Some(_) if self.connected() => "connected",
            Some(_) => "disconnected",
        };
        self.board.publish(HostStatus {
            host: self.me.host.clone(),
            labels: self.me.labels.clone(),
            lattice: self.host.nats.as_ref().map(|_| self.lattice.clone()),
            nats: nats.to_string(),
            apps,
            peers: self
                .members
                .list()
                .into_iter()
                .map(|m| PeerStatus {
                    host: m.host,
                    labels: m.labels,
                })
                .collect(),
            uptime_s: 0,
        });
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
            self.members.saw(member_of(&host));
        }
        self.members.learned();
        Ok(())
    }

    /// Runs `manifest` (from a local file) and waits until it serves. Any
    /// validation or bind error is returned: `membrane up` fails on it.
    pub async fn start_static(&mut self, manifest: Manifest, text: String) -> anyhow::Result<()> {
        let app = manifest.app.name.clone();
        self.apps.insert(app.clone(), AppState::new(manifest, text, None));
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
                    s.manifest.components.len(),
                    runner.map_or(0, AppRunner::media),
                )
            })
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2))
    }

    /// Publishes `host.started`.
    pub async fn announce(&self) {
        let mut event = Event::new(EventKind::HostStarted, &self.me.host);
        event.labels = self.me.labels.clone();
        self.emit(event).await;
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
                    Some(revision) => self.on_revision(revision).await,
                    None => {
                        // The watch ended (the server went away for good, or
                        // its consumer was lost): follow again from the
                        // latest revisions, which reconcile as no-ops.
                        tracing::warn!("desired-state watch ended; following it again in 1 s");
                        watch = None;
                        rewatch.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
                    }
                },
                _ = &mut rewatch, if watch.is_none() && follow && self.host.nats.is_some() => {
                    let Some(desired) = desired(&self) else { continue };
                    watch = rewatch_desired(&desired, rewatch.as_mut(), &mut failures).await;
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
                    if self.on_peer(&message) {
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

    /// Subscribes to the lattice's heartbeats and host events; `None` without
    /// NATS.
    async fn follow_peers(&self) -> Option<SelectAll<async_nats::Subscriber>> {
        let client = self.host.nats.as_ref()?.client();
        let subjects = [
            crate::subjects::heartbeat(&self.lattice, "*"),
            crate::subjects::event(&self.lattice, "host.*.*"),
            crate::subjects::event(&self.lattice, "component.*.*"),
        ];
        let mut subscribers = Vec::new();
        for subject in subjects {
            match client.subscribe(subject).await {
                Ok(s) => subscribers.push(s),
                Err(e) => tracing::warn!("cannot follow the lattice's hosts: {e}"),
            }
        }
        Some(futures::stream::select_all(subscribers))
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
    /// (at most [`LEAVE_WAIT`]): a graceful leave is make-before-break too.
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
                pending.extend(self.handovers.unserved(&state.manifest, &members, &state.served));
            }
        }
        self.emit(Event::new(EventKind::HostStopped, &self.me.host)).await;
        flush_briefly(&client).await;
        let Ok(mut events) = followed else { return };
        if pending.is_empty() || !self.connected() {
            return;
        }
        tracing::info!("handing {} component(s) over before stopping", pending.len());
        let deadline = tokio::time::Instant::now() + LEAVE_WAIT;
        while !pending.is_empty() {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, events.next()).await else {
                break;
            };
            let Ok(event) = serde_json::from_slice::<Event>(&message.payload) else {
                continue;
            };
            if event.host != self.me.host
                && vouched(&message.subject, &event.host)
                && matches!(event.kind, EventKind::ComponentStarted | EventKind::ComponentUpdated)
                && let (Some(app), Some(component)) = (event.app, event.component)
            {
                pending.remove(&(app, component));
            }
        }
        if !pending.is_empty() {
            let names: Vec<String> = pending.iter().map(|(a, c)| format!("{a}/{c}")).collect();
            tracing::warn!(
                "stopping after {} s with {} not yet running elsewhere",
                LEAVE_WAIT.as_secs(),
                names.join(", ")
            );
        }
    }

    /// Takes in a new revision (or the deletion) of an app and reconciles it.
    async fn on_revision(&mut self, revision: AppRevision) {
        let AppRevision {
            app,
            revision,
            manifest,
            seq,
            seal,
        } = revision;
        let highest = self
            .sequences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&app)
            .copied();
        if let Err(why) = self.trust.admit(&seal).and_then(|()| trust::in_order(seq, highest)) {
            let what = if manifest.is_some() { "revision" } else { "deletion" };
            tracing::error!("app `{app}`: {what} {revision} ignored: {why}");
            self.reject_app(&app, revision, format!("{what} ignored: {why}")).await;
            return;
        }
        self.sequences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.clone(), seq);
        let Some(text) = manifest else {
            tracing::info!("app `{app}` deleted (revision {revision})");
            if let Some(state) = self.apps.remove(&app) {
                self.stop_app(&app, state, Some(revision)).await;
            }
            self.publish_status();
            return;
        };
        let manifest = match crate::transports::parse(&text, &format!("app `{app}` revision {revision}")) {
            Ok(manifest) => manifest,
            Err(e) => {
                tracing::error!("{e}");
                self.reject_app(&app, revision, e.to_string()).await;
                return;
            }
        };

        match self.apps.get_mut(&app) {
            Some(state) => {
                state.manifest = manifest;
                state.text = text;
                state.revision = Some(revision);
            }
            None => {
                self.apps
                    .insert(app.clone(), AppState::new(manifest, text, Some(revision)));
            }
        }
        if let Err(e) = self.reconcile(&app).await {
            tracing::error!("app `{app}` revision {revision}: {e:#}");
        }
    }

    /// Publishes `app.rejected` for `revision` of `app`: nothing changed here.
    async fn reject_app(&self, app: &str, revision: u64, reason: String) {
        let mut event = Event::new(EventKind::AppRejected, &self.me.host);
        (event.app, event.revision, event.reason) = (Some(app.to_string()), Some(revision), Some(reason));
        self.emit(event).await;
    }

    /// Records a heartbeat or host event; whether membership changed.
    /// A claim about a host counts only from that host's own subject
    /// ([`vouched`]).
    fn on_peer(&mut self, message: &async_nats::Message) -> bool {
        if message
            .subject
            .starts_with(&crate::subjects::heartbeat(&self.lattice, ""))
        {
            return match serde_json::from_slice::<HostInventory>(&message.payload) {
                Ok(host) if host.host != self.me.host && vouched(&message.subject, &host.host) => {
                    self.members.saw(member_of(&host))
                }
                _ => false,
            };
        }
        let Ok(event) = serde_json::from_slice::<Event>(&message.payload) else {
            return false;
        };
        if event.host == self.me.host || !vouched(&message.subject, &event.host) {
            return false;
        }
        match event.kind {
            EventKind::HostStarted => self.members.saw(Member {
                host: event.host,
                labels: event.labels,
            }),
            EventKind::HostStopped => {
                self.handovers.gone(&event.host);
                self.members.left(&event.host)
            }
            // A component now running elsewhere may complete a hand-over.
            EventKind::ComponentStarted | EventKind::ComponentUpdated => match (&event.app, &event.component) {
                (Some(app), Some(component)) => self.handovers.started(app, component, &event.host),
                _ => false,
            },
            EventKind::ComponentStopped => {
                if let (Some(app), Some(component)) = (&event.app, &event.component) {
                    self.handovers.stopped(app, component, &event.host);
                }
                false
            }
            EventKind::ComponentRejected
            | EventKind::ComponentFailed
            | EventKind::AppRejected
            | EventKind::PlacementAdapted
            | EventKind::PlacementReverted => false,
        }
    }

    /// Reconciles every app, logging each one's error.
    async fn reconcile_all(&mut self) {
        let names: Vec<String> = self.apps.keys().cloned().collect();
        for app in names {
            if let Err(e) = self.reconcile(&app).await {
                tracing::error!("app `{app}`: {e:#}");
            }
        }
    }

    /// Brings app `app` to its desired manifest and this host's placement,
    /// and reports the outcome on the status board.
    async fn reconcile(&mut self, app: &str) -> Result<(), ReconcileError> {
        let outcome = self.reconcile_app(app).await;
        if let Some(state) = self.apps.get_mut(app) {
            state.problem = outcome.as_ref().err().map(|e| format!("{e:#}"));
        }
        self.publish_status();
        outcome
    }

    async fn reconcile_app(&mut self, app: &str) -> Result<(), ReconcileError> {
        let members = self.members.list();
        let Some(state) = self.apps.get_mut(app) else {
            return Ok(());
        };
        let known = Known {
            manifest: &state.manifest,
            text: &state.text,
            me: &self.me,
            members: &members,
            served: &state.served,
            extras: &state.extras,
            applied: state.applied.as_ref().map(|(text, here)| (text.as_str(), here)),
        };
        let (handovers, me) = (&mut self.handovers, &self.me);
        // What placement moved elsewhere serves here until it runs there.
        let step = decide(&known, |running, placed| {
            handovers.keep(known.manifest, me, &members, running, placed)
        });
        let (here, placed) = match step {
            Step::Unchanged { extras } => {
                state.extras = extras;
                return Ok(());
            }
            Step::StepAside => {
                state.extras.clear();
                self.step_aside(app).await;
                return Ok(());
            }
            Step::Run { here, served, extras } => {
                state.extras = extras;
                (here, served)
            }
        };
        let extras = state.extras.clone();
        let (manifest, revision) = (state.manifest.clone(), state.revision);
        let previous = state.applied_manifest.clone();
        // An app from the lattice gets only what this host's policy allows.
        if revision.is_some()
            && let Err(problems) = self.policy.admit(&manifest, &here)
        {
            let error = ReconcileError::Refused(problems);
            self.report_refused(app, &here, &manifest, previous.as_ref(), revision, &error)
                .await;
            return Err(error);
        }
        let mut runner = match state.runner.take() {
            Some(runner) => runner,
            None => AppRunner::new(&manifest, &self.host),
        };
        let outcome = runner.reconcile_with_extras(&manifest, here.clone(), &extras).await;
        let runtime = runner.runtime().clone();
        // A runner that never ran anything here is not kept after a failure.
        if outcome.is_ok() || state.applied.is_some() {
            state.runner = Some(runner);
        }
        match outcome {
            Ok(done) => {
                state.applied = Some((state.text.clone(), here.clone()));
                state.served = placed;
                state.applied_manifest = Some(manifest.clone());
                self.view
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(app.to_string(), runtime);
                self.report_reconciled(app, &here, &manifest, revision, done).await
            }
            Err(e) => {
                let e = ReconcileError::Load(e);
                self.report_refused(app, &here, &manifest, previous.as_ref(), revision, &e)
                    .await;
                Err(e)
            }
        }
    }

    /// Weighs this host's link counters (adaptive placement) and starts or
    /// stops the extra replicas whose calls stayed hot or cold long enough,
    /// each through an ordinary reconcile, each announced with its reason.
    async fn adapt(&mut self) {
        if !self.apps.values().any(|s| s.manifest.adaptive.is_some()) {
            return;
        }
        let members = self.members.list();
        let placed: BTreeMap<String, BTreeSet<String>> = self
            .apps
            .iter()
            .filter(|(_, s)| s.manifest.adaptive.is_some() && s.runner.is_some())
            .map(|(name, s)| (name.clone(), placement::placed_here(&s.manifest, &self.me, &members)))
            .collect();
        let views: BTreeMap<String, AppView<'_>> = placed
            .iter()
            .filter_map(|(name, placed)| {
                let state = self.apps.get(name)?;
                let view = AppView {
                    manifest: &state.manifest,
                    placed,
                    extras: &state.extras,
                };
                Some((name.clone(), view))
            })
            .collect();
        let room = self.host.engine.has_room();
        let decisions = self.adapter.tick(Sample::now(), &self.me, room, &views);
        for decision in decisions {
            let (app, component, reason, adapted) = match decision {
                Decision::Adapt { app, component, reason } => (app, component, reason, true),
                Decision::Revert { app, component, reason } => (app, component, reason, false),
            };
            let Some(state) = self.apps.get_mut(&app) else { continue };
            let revision = state.revision;
            if adapted {
                state.extras.insert(component.clone());
            } else {
                state.extras.remove(&component);
            }
            let (kind, verb) = if adapted {
                (EventKind::PlacementAdapted, "starting an extra replica of")
            } else {
                (EventKind::PlacementReverted, "stopping the extra replica of")
            };
            tracing::info!("app `{app}`: {verb} `{component}` here: {reason}");
            match self.reconcile(&app).await {
                Ok(()) => {
                    let mut event = self.event(kind, &app, &component, revision);
                    event.reason = Some(reason);
                    self.emit(event).await;
                }
                Err(e) => {
                    tracing::warn!("app `{app}`: placement of `{component}` unchanged: {e:#}");
                    if let Some(state) = self.apps.get_mut(&app) {
                        if adapted {
                            state.extras.remove(&component);
                        } else {
                            state.extras.insert(component.clone());
                        }
                    }
                    if let Err(e) = self.reconcile(&app).await {
                        tracing::warn!("app `{app}`: {e:#}");
                    }
                }
            }
        }
    }

    /// Stops what app `app` runs here, now that it is placed on other hosts.
    async fn step_aside(&mut self, app: &str) {
        let Some(state) = self.apps.get_mut(app) else { return };
        if let Some(runner) = state.runner.take() {
            let revision = state.revision;
            self.view.write().unwrap_or_else(|e| e.into_inner()).remove(app);
            let stopped = runner.here().clone();
            runner.stop().await;
            for name in stopped {
                tracing::info!("stopped {name}: placed on other hosts");
                let mut event = self.event(EventKind::ComponentStopped, app, &name, revision);
                event.reason = Some("placed on other hosts".into());
                self.emit(event).await;
            }
        }
        if let Some(state) = self.apps.get_mut(app) {
            state.applied = Some((state.text.clone(), BTreeSet::new()));
            state.served.clear();
        }
    }

    /// Logs and publishes a successful reconcile of app `app`; an error if
    /// some of its media failed to bind.
    async fn report_reconciled(
        &self,
        app: &str,
        here: &BTreeSet<String>,
        manifest: &Manifest,
        revision: Option<u64>,
        done: Reconciled,
    ) -> Result<(), ReconcileError> {
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
        Err(ReconcileError::Unbound(done.failures))
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

    /// Logs and publishes a failed reconcile of app `app`: the components
    /// whose version changed were rejected or, if none did, the app failed to
    /// start here.
    async fn report_refused(
        &self,
        app: &str,
        here: &BTreeSet<String>,
        manifest: &Manifest,
        previous: Option<&Manifest>,
        revision: Option<u64>,
        error: &ReconcileError,
    ) {
        let reason = error.reason();
        let changed = changed_components(previous, manifest);
        let (kind, names) = if changed.is_empty() {
            (EventKind::ComponentFailed, here.iter().cloned().collect())
        } else {
            (EventKind::ComponentRejected, changed)
        };
        for name in names {
            let mut event = self.event(kind, app, &name, revision);
            event.digest = manifest.components.get(&name).map(|c| c.source.display().to_string());
            event.reason = Some(reason.clone());
            tracing::warn!(
                "{kind} {name} ({}): {reason}",
                short(event.digest.as_deref().unwrap_or(""))
            );
            self.emit(event).await;
        }
    }

    /// Stops app `app` here (its app was deleted) and publishes what stopped.
    async fn stop_app(&mut self, app: &str, state: AppState, revision: Option<u64>) {
        self.view.write().unwrap_or_else(|e| e.into_inner()).remove(app);
        if let Some(runner) = state.runner {
            let stopped = runner.here().clone();
            runner.stop().await;
            for name in stopped {
                tracing::info!("stopped {name}");
                let event = self.event(EventKind::ComponentStopped, app, &name, revision);
                self.emit(event).await;
            }
        }
    }

    /// A new event of `kind` about `component` of `app`.
    fn event(&self, kind: EventKind, app: &str, component: &str, revision: Option<u64>) -> Event {
        let mut event = Event::new(kind, &self.me.host);
        event.app = Some(app.to_string());
        event.component = Some(component.to_string());
        event.revision = revision;
        event
    }

    /// Publishes `event` when this host has NATS.
    async fn emit(&self, event: Event) {
        if let Some(events) = &self.events {
            events.emit(&event).await;
        }
    }
}

impl AppState {
    /// An app not reconciled yet.
    fn new(manifest: Manifest, text: String, revision: Option<u64>) -> AppState {
        AppState {
            manifest,
            text,
            revision,
            runner: None,
            applied: None,
            applied_manifest: None,
            problem: None,
            extras: BTreeSet::new(),
            served: BTreeSet::new(),
        }
    }
}

/// The member a host's inventory describes.
fn member_of(host: &HostInventory) -> Member {
    Member {
        host: host.host.clone(),
        labels: host.labels.clone(),
    }
}

/// Components whose source differs between the manifest last applied and
/// `manifest`.
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

/// Follows the desired state (again, after its watch ended); `None`, with
/// `retry` reset to a second from now, when that fails. The first of a run
/// of `failures` is a warning, the rest are quiet.
async fn rewatch_desired(desired: &Desired, retry: Pin<&mut Sleep>, failures: &mut u32) -> Option<DesiredStream> {
    match desired.watch().await {
        Ok(stream) => {
            tracing::info!("following the lattice's desired state");
            *failures = 0;
            Some(Box::pin(stream))
        }
        Err(e) => {
            if *failures == 0 {
                tracing::warn!("cannot follow the desired state yet (retrying every second): {e:#}");
            } else {
                tracing::debug!("cannot follow the desired state yet: {e:#}");
            }
            *failures += 1;
            retry.reset(tokio::time::Instant::now() + Duration::from_secs(1));
            None
        }
    }
}
