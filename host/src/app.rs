//! One app on this host: its runtime, its media, and reconciling both to a
//! manifest.
//!
//! [`AppRunner::reconcile`] is the only way an app changes, at start-up and
//! afterwards (hot swap, scale, a new revision of the desired state, a host
//! joining or leaving): stage and validate the new generation (nothing
//! changes if that fails), stop the media no longer wanted (they drain: no
//! new calls, calls in flight finish), commit the generation atomically, then
//! bind the media newly wanted. A medium whose configuration is unchanged
//! keeps serving throughout, so an update drops no call.

use crate::links::remote::{Lattice, RpcServer};
use crate::manifest::Manifest;
use crate::runtime::{Change, LoadOptions, Runtime};
use crate::transports::{self, Medium, Planned};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A medium serving in its own task.
struct Running {
    describe: String,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.token.cancel();
        match self.task.await {
            Ok(Ok(())) => tracing::info!("stopped {}", self.describe),
            Ok(Err(e)) => tracing::warn!("{} stopped with an error: {e:#}", self.describe),
            Err(e) => tracing::warn!("{} failed: {e}", self.describe),
        }
    }
}

/// What a medium-to-be serves.
enum Plan {
    Binding(Planned),
    /// The linked exports of one component, for other hosts' remote links.
    Rpc(Vec<(String, String)>),
}

/// The outcome of one reconcile.
#[derive(Debug, Default)]
pub struct Reconciled {
    /// What changed, per component.
    pub changes: Vec<Change>,
    /// Time spent fetching and compiling new versions.
    pub compile: Duration,
    /// Time from the end of compilation to the new generation serving.
    pub swap: Duration,
    /// Media that failed to bind (the rest is serving).
    pub failures: Vec<String>,
}

/// One app on this host.
pub struct AppRunner {
    name: String,
    runtime: Arc<Runtime>,
    nats: Option<async_nats::Client>,
    lattice: Option<Lattice>,
    media: BTreeMap<String, Running>,
    here: BTreeSet<String>,
}

impl AppRunner {
    /// An app with nothing running yet; its engine fits `manifest`.
    pub fn new(
        manifest: &Manifest,
        options: &LoadOptions,
        nats: Option<async_nats::Client>,
    ) -> anyhow::Result<AppRunner> {
        Ok(AppRunner {
            name: manifest.app.name.clone(),
            runtime: Runtime::new(manifest, options)?,
            nats,
            lattice: options.lattice.clone(),
            media: BTreeMap::new(),
            here: BTreeSet::new(),
        })
    }

    /// The app's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The components placed here by the last reconcile.
    pub fn here(&self) -> &BTreeSet<String> {
        &self.here
    }

    /// Brings this host's share of the app to `manifest` with the components
    /// in `here`. A validation error changes nothing and is the `Err`; a
    /// medium that fails to bind is reported in [`Reconciled::failures`]
    /// after the rest is running.
    pub async fn reconcile(&mut self, manifest: &Manifest, here: BTreeSet<String>) -> anyhow::Result<Reconciled> {
        let staged = self.runtime.stage(manifest, &here).await?;
        let compile = staged.compile;
        let compiled_at = Instant::now();
        let wanted = self.plan(manifest, &here);
        let leaving: Vec<String> = self
            .media
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in leaving {
            if let Some(running) = self.media.remove(&key) {
                running.stop().await;
            }
        }
        let changes = self.runtime.commit(staged);
        self.here = here;
        let mut failures = Vec::new();
        for (key, plan) in wanted {
            if self.media.contains_key(&key) {
                continue;
            }
            match self.bind(manifest, &plan).await {
                Ok(medium) => {
                    let describe = medium.describe();
                    tracing::info!("serving {describe}");
                    let token = CancellationToken::new();
                    let task = tokio::spawn(medium.serve(token.clone()));
                    self.media.insert(key, Running { describe, token, task });
                }
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        for change in &changes {
            match change {
                Change::Started { name, digest } => tracing::info!("started {name} ({})", short(digest)),
                Change::Updated { name, from, to } => {
                    tracing::info!("updated {name}: {} -> {}", short(from), short(to))
                }
                Change::Stopped { name, .. } => tracing::info!("stopped {name}"),
            }
        }
        Ok(Reconciled {
            changes,
            compile,
            swap: compiled_at.elapsed(),
            failures,
        })
    }

    fn plan(&self, manifest: &Manifest, here: &BTreeSet<String>) -> BTreeMap<String, Plan> {
        let mut wanted: BTreeMap<String, Plan> = transports::plan(manifest, here)
            .into_iter()
            .map(|p| (p.key.clone(), Plan::Binding(p)))
            .collect();
        if self.lattice.is_some() {
            // Serve every linked export here, whoever the callers are: a
            // caller elsewhere links remotely.
            for component in here {
                let mut exports: Vec<(String, String)> = manifest
                    .links
                    .iter()
                    .filter(|l| &l.to == component)
                    .map(|l| (l.to.clone(), l.import.clone()))
                    .collect();
                exports.sort();
                exports.dedup();
                if !exports.is_empty() {
                    wanted.insert(format!("rpc {exports:?}"), Plan::Rpc(exports));
                }
            }
        }
        wanted
    }

    async fn bind(&self, manifest: &Manifest, plan: &Plan) -> anyhow::Result<Box<dyn Medium>> {
        match (plan, &self.lattice) {
            (Plan::Binding(planned), _) => transports::bind(planned, manifest, &self.runtime, self.nats.as_ref()).await,
            (Plan::Rpc(exports), Some(lattice)) => {
                Ok(Box::new(RpcServer::bind(lattice, self.runtime.clone(), exports).await?))
            }
            (Plan::Rpc(_), None) => anyhow::bail!("remote links need a lattice"),
        }
    }

    /// Stops every medium (each drains its calls in flight) and then the app.
    pub async fn stop(mut self) {
        let media = std::mem::take(&mut self.media);
        let stops = media.into_values().map(Running::stop);
        futures::future::join_all(stops).await;
    }

    /// How many media are serving.
    pub fn media(&self) -> usize {
        self.media.len()
    }
}

/// The first 12 hex digits of a digest, for logs.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}
