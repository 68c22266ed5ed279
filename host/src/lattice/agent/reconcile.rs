//! The agent's reconcile of one app: a new revision taken in, the decision
//! ([`decide`]) of what runs here, the policy check, the runner carrying it
//! out, the report; and adaptive placement's extra replicas, each through an
//! ordinary reconcile.

use super::Agent;
use crate::app::AppRunner;
use crate::lattice::adapt::{AppView, Decision, Sample};
use crate::lattice::apps::{AppState, Applied, DesiredApp, ReconcileError};
use crate::lattice::decide::{Known, Step, decide};
use crate::lattice::desired::AppRevision;
use crate::lattice::events::EventKind;
use crate::lattice::placement;
use crate::lattice::report::Refusal;
use crate::lattice::trust;
use std::collections::{BTreeMap, BTreeSet};

impl Agent {
    /// Takes in a new revision (or the deletion) of an app and reconciles it.
    pub(super) async fn on_revision(&mut self, revision: AppRevision) {
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
            self.reporter
                .app_rejected(&app, revision, format!("{what} ignored: {why}"))
                .await;
            return;
        }
        self.sequences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.clone(), seq);
        let Some(text) = manifest else {
            tracing::info!("app `{app}` deleted (revision {revision})");
            if let Some(runner) = self.apps.remove(&app).and_then(|state| state.runner) {
                self.stop_runner(&app, runner, Some(revision), None).await;
            }
            self.publish_status();
            return;
        };
        let manifest = match crate::transports::parse(&text, &format!("app `{app}` revision {revision}")) {
            Ok(manifest) => manifest,
            Err(e) => {
                tracing::error!("{e}");
                self.reporter.app_rejected(&app, revision, e.to_string()).await;
                return;
            }
        };

        let desired = DesiredApp {
            manifest,
            text,
            revision: Some(revision),
        };
        match self.apps.get_mut(&app) {
            Some(state) => state.desired = desired,
            None => {
                self.apps.insert(app.clone(), AppState::new(desired));
            }
        }
        if let Err(e) = self.reconcile(&app).await {
            tracing::error!("app `{app}` revision {revision}: {e:#}");
        }
    }

    /// Reconciles every app, logging each one's error.
    pub(super) async fn reconcile_all(&mut self) {
        let names: Vec<String> = self.apps.keys().cloned().collect();
        for app in names {
            if let Err(e) = self.reconcile(&app).await {
                tracing::error!("app `{app}`: {e:#}");
            }
        }
    }

    /// Brings app `app` to its desired manifest and this host's placement,
    /// and reports the outcome on the status board.
    pub(super) async fn reconcile(&mut self, app: &str) -> Result<(), ReconcileError> {
        let outcome = self.reconcile_app(app).await;
        if let Some(state) = self.apps.get_mut(app) {
            state.problem = outcome.as_ref().err().map(|e| format!("{e:#}"));
        }
        self.publish_status();
        outcome
    }

    pub(super) async fn reconcile_app(&mut self, app: &str) -> Result<(), ReconcileError> {
        let members = self.members.list();
        let Some(state) = self.apps.get_mut(app) else {
            return Ok(());
        };
        let served = state.served();
        let known = Known {
            manifest: &state.desired.manifest,
            text: &state.desired.text,
            me: &self.me,
            members: &members,
            served: &served,
            extras: &state.extras,
            applied: state.applied.as_ref().map(|a| (a.text.as_str(), &a.here)),
        };
        let (handovers, me) = (&mut self.handovers, &self.me);
        // What placement moved elsewhere serves here until it runs there.
        let step = decide(&known, |running, placed| {
            handovers.keep(known.manifest, me, &members, running, placed)
        });
        let (here, served) = match step {
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
        self.apply(app, here, served).await
    }

    /// Runs app `app` with `here` placed on this host (and its extras), of
    /// which it serves `served` for the lattice: the policy check, the runner,
    /// the report.
    async fn apply(
        &mut self,
        app: &str,
        here: BTreeSet<String>,
        served: BTreeSet<String>,
    ) -> Result<(), ReconcileError> {
        let Some(state) = self.apps.get_mut(app) else {
            return Ok(());
        };
        let desired = &state.desired;
        let (manifest, revision) = (desired.manifest.clone(), desired.revision);
        let refusal = |previous| Refusal {
            app,
            here: &here,
            manifest: &manifest,
            previous,
            revision,
        };
        // An app from the lattice gets only what this host's policy allows.
        if revision.is_some()
            && let Err(problems) = self.policy.admit(&manifest, &here)
        {
            let error = ReconcileError::Refused(problems);
            let previous = state.applied.as_ref().map(|a| &a.manifest);
            self.reporter.refused(refusal(previous), &error.reason()).await;
            return Err(error);
        }
        let mut runner = match state.runner.take() {
            Some(runner) => runner,
            None => AppRunner::new(&manifest, &self.host),
        };
        let outcome = runner
            .reconcile_with_extras(&manifest, here.clone(), &state.extras)
            .await;
        let runtime = runner.runtime().clone();
        // A runner that never ran anything here is not kept after a failure.
        if outcome.is_ok() || state.applied.is_some() {
            state.runner = Some(runner);
        }
        let done = match outcome {
            Ok(done) => done,
            Err(e) => {
                let e = ReconcileError::Load(e);
                let previous = state.applied.as_ref().map(|a| &a.manifest);
                self.reporter.refused(refusal(previous), &e.reason()).await;
                return Err(e);
            }
        };
        state.applied = Some(Applied {
            text: state.desired.text.clone(),
            manifest: manifest.clone(),
            here: here.clone(),
            served,
        });
        self.view
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.to_string(), runtime);
        self.reporter
            .reconciled(app, &here, &manifest, revision, done)
            .await
            .map_err(ReconcileError::Unbound)
    }

    /// Weighs this host's link counters (adaptive placement) and starts or
    /// stops the extra replicas whose calls stayed hot or cold long enough,
    /// each through an ordinary reconcile, each announced with its reason.
    pub(super) async fn adapt(&mut self) {
        if !self.apps.values().any(|s| s.desired.manifest.adaptive.is_some()) {
            return;
        }
        let members = self.members.list();
        let placed: BTreeMap<String, BTreeSet<String>> = self
            .apps
            .iter()
            .filter(|(_, s)| s.desired.manifest.adaptive.is_some() && s.runner.is_some())
            .map(|(name, s)| {
                (
                    name.clone(),
                    placement::placed_here(&s.desired.manifest, &self.me, &members),
                )
            })
            .collect();
        let views: BTreeMap<String, AppView<'_>> = placed
            .iter()
            .filter_map(|(name, placed)| {
                let state = self.apps.get(name)?;
                let view = AppView {
                    manifest: &state.desired.manifest,
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
            let revision = state.desired.revision;
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
                    let mut event = self.reporter.event(kind, &app, &component, revision);
                    event.reason = Some(reason);
                    self.reporter.emit(event).await;
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
    pub(super) async fn step_aside(&mut self, app: &str) {
        let Some(state) = self.apps.get_mut(app) else { return };
        let revision = state.desired.revision;
        state.applied = Some(Applied {
            text: state.desired.text.clone(),
            manifest: state.desired.manifest.clone(),
            here: BTreeSet::new(),
            served: BTreeSet::new(),
        });
        if let Some(runner) = state.runner.take() {
            self.stop_runner(app, runner, revision, Some("placed on other hosts"))
                .await;
        }
    }

    /// Stops what `runner` runs of app `app` and publishes what stopped.
    pub(super) async fn stop_runner(&self, app: &str, runner: AppRunner, revision: Option<u64>, reason: Option<&str>) {
        self.view.write().unwrap_or_else(|e| e.into_inner()).remove(app);
        let stopped = runner.here().clone();
        runner.stop().await;
        self.reporter.stopped(app, stopped, revision, reason).await;
    }
}
