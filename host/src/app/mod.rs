//! One app on this host: its runtime, its media, and reconciling both to a
//! manifest ([`stage`] validates a manifest into a generation).
//!
//! [`AppRunner::reconcile`] is the only way an app changes, at start-up and
//! afterwards (hot swap, scale, a new revision of the desired state, a host
//! joining or leaving): stage and validate the new generation (nothing
//! changes if that fails), stop the media no longer wanted (they drain: no
//! new calls, calls in flight finish), commit the generation atomically, then
//! bind the media newly wanted. A medium whose configuration is unchanged
//! keeps serving throughout, so an update drops no call.

pub mod stage;

use crate::bus::Bus;
use crate::links::remote::Lattice;
use crate::manifest::Manifest;
use crate::runtime::engine::{EngineOptions, HostEngine};
use crate::runtime::{Change, LoadError, LoadOptions, Runtime};
use crate::transports::forward::ForwardServer;
use crate::transports::rpc::LinkServer;
use crate::transports::{self, BindContext, Planned, Service};
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
    /// Whether it subscribes on NATS (so must be bound again on a new
    /// connection).
    nats: bool,
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
    /// The components whose http routes other hosts' listeners forward here.
    HttpForward(Vec<String>),
}

impl Plan {
    /// Whether it subscribes on NATS.
    fn needs_nats(&self, manifest: &Manifest) -> bool {
        match self {
            Plan::Binding(planned) => planned.needs_nats(manifest),
            Plan::Rpc(_) | Plan::HttpForward(_) => true,
        }
    }
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

/// Whether the components `here` of `manifest` need NATS: a binding of
/// theirs whose medium does, a link between one of them and a component
/// elsewhere, or a key-value bucket of theirs on the lattice. The one
/// answer for `up` (the components placed on it) and `dev` (all of them).
pub fn needs_nats(manifest: &Manifest, here: &BTreeSet<String>) -> bool {
    let shared_bucket = here
        .iter()
        .filter_map(|c| manifest.components.get(c))
        .flat_map(|c| &c.keyvalue.buckets)
        .any(|b| manifest.bucket_backend(b) == crate::manifest::KvBackend::Nats);
    shared_bucket
        || manifest
            .links
            .iter()
            .any(|l| here.contains(&l.from) != here.contains(&l.to))
        || manifest
            .bindings
            .iter()
            .any(|b| transports::needs_nats(b) && here.contains(b.component()))
}

/// What every app on this host shares.
#[derive(Clone)]
pub struct HostContext {
    /// The host's one engine and instance budget.
    pub engine: Arc<HostEngine>,
    /// The code cache and artifact store.
    pub load: LoadOptions,
    /// The host's NATS connection, if it has one.
    pub nats: Option<Bus>,
    /// The lattice, for links to components placed elsewhere.
    pub lattice: Option<Lattice>,
}

impl HostContext {
    /// A host with no NATS: an engine of `engine`'s sizing, code cached in
    /// `cache_dir`.
    pub fn local(engine: EngineOptions, cache_dir: Option<std::path::PathBuf>) -> anyhow::Result<HostContext> {
        Ok(HostContext {
            engine: HostEngine::new(engine).map_err(anyhow::Error::from)?,
            load: LoadOptions {
                cache_dir,
                artifacts: None,
                secrets: Default::default(),
                keyvalue: Default::default(),
                registry: Default::default(),
            },
            nats: None,
            lattice: None,
        })
    }
}

/// Stages and commits the components of `manifest` in `here` (default: all)
/// on a new runtime of `host`, without binding media (for tests, benchmarks
/// and embedding).
pub async fn load(
    manifest: &Manifest,
    host: &HostContext,
    here: Option<BTreeSet<String>>,
) -> anyhow::Result<Arc<Runtime>> {
    let runtime = Runtime::new(host.engine.clone(), &host.load);
    let here = here.unwrap_or_else(|| manifest.components.keys().cloned().collect());
    let staged = stage::stage(&runtime, manifest, &here, host.lattice.as_ref()).await?;
    runtime.commit(staged);
    Ok(runtime)
}

/// One app on this host.
pub struct AppRunner {
    name: String,
    runtime: Arc<Runtime>,
    nats: Option<Bus>,
    lattice: Option<Lattice>,
    media: BTreeMap<String, Running>,
    here: BTreeSet<String>,
    /// The manifest and extras of the last reconcile, to bind again on a
    /// new NATS connection.
    last: Option<(Manifest, BTreeSet<String>)>,
}

impl AppRunner {
    /// App `manifest` with nothing running yet, on `host`'s engine.
    pub fn new(manifest: &Manifest, host: &HostContext) -> AppRunner {
        AppRunner {
            name: manifest.app.name.clone(),
            runtime: Runtime::new(host.engine.clone(), &host.load),
            nats: host.nats.clone(),
            lattice: host.lattice.clone(),
            media: BTreeMap::new(),
            here: BTreeSet::new(),
            last: None,
        }
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
    pub async fn reconcile(&mut self, manifest: &Manifest, here: BTreeSet<String>) -> Result<Reconciled, LoadError> {
        self.reconcile_with_extras(manifest, here, &BTreeSet::new()).await
    }

    /// [`AppRunner::reconcile`], where the `extras` among `here` are extra
    /// replicas for this host's own callers (adaptive placement): they are
    /// linked in process but serve no medium and no remote link.
    pub async fn reconcile_with_extras(
        &mut self,
        manifest: &Manifest,
        here: BTreeSet<String>,
        extras: &BTreeSet<String>,
    ) -> Result<Reconciled, LoadError> {
        let staged = stage::stage(&self.runtime, manifest, &here, self.lattice.as_ref()).await?;
        let compile = staged.compile;
        let compiled_at = Instant::now();
        let served: BTreeSet<String> = here.difference(extras).cloned().collect();
        let wanted = self.plan(manifest, &served);
        let leaving: Vec<String> = self
            .media
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        // Leaving media drain at once, not one after another.
        let stopping = leaving
            .iter()
            .filter_map(|key| self.media.remove(key))
            .map(Running::stop);
        futures::future::join_all(stopping).await;
        let changes = self.runtime.commit(staged);
        self.here = here;
        self.last = Some((manifest.clone(), extras.clone()));
        let failures = self.bind_missing(manifest, wanted).await;
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
                    let key: Vec<String> = exports.iter().map(|(c, i)| format!("{c}/{i}")).collect();
                    wanted.insert(format!("rpc {}", key.join(" ")), Plan::Rpc(exports));
                }
            }
            let forwarded = transports::forwarded_to(manifest, here);
            if !forwarded.is_empty() {
                wanted.insert(
                    format!("http-forward {}", forwarded.join(" ")),
                    Plan::HttpForward(forwarded),
                );
            }
        }
        wanted
    }

    /// Binds the media of `wanted` that are not running; the failures.
    async fn bind_missing(&mut self, manifest: &Manifest, wanted: BTreeMap<String, Plan>) -> Vec<String> {
        let mut failures = Vec::new();
        for (key, plan) in wanted {
            if self.media.contains_key(&key) {
                continue;
            }
            let nats = plan.needs_nats(manifest);
            match self.bind(manifest, &plan).await {
                Ok(medium) => {
                    let describe = medium.describe();
                    tracing::info!("serving {describe}");
                    let token = CancellationToken::new();
                    let task = tokio::spawn(medium.serve(token.clone()));
                    self.media.insert(
                        key,
                        Running {
                            describe,
                            token,
                            task,
                            nats,
                        },
                    );
                }
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        failures
    }

    /// Moves the app onto the bus's new NATS connection: the media that
    /// subscribe on NATS stop (their subscriptions died with the old
    /// connection) and are bound again at once on the running generation
    /// (whose links ask the bus for the client); then the app is reconciled
    /// again, which opens its key-value buckets on the new client. HTTP
    /// listeners, instances and calls in flight on other media are not
    /// touched.
    pub async fn reconnect(&mut self) -> Result<Reconciled, LoadError> {
        let Some((manifest, extras)) = self.last.clone() else {
            return Ok(Reconciled::default());
        };
        let dead: Vec<String> = self
            .media
            .iter()
            .filter(|(_, running)| running.nats)
            .map(|(key, _)| key.clone())
            .collect();
        let stopping = dead.iter().filter_map(|key| self.media.remove(key)).map(Running::stop);
        futures::future::join_all(stopping).await;
        let served: BTreeSet<String> = self.here.difference(&extras).cloned().collect();
        let wanted = self.plan(&manifest, &served);
        let mut failures = self.bind_missing(&manifest, wanted).await;
        let mut reconciled = self
            .reconcile_with_extras(&manifest, self.here.clone(), &extras)
            .await?;
        failures.append(&mut reconciled.failures);
        reconciled.failures = failures;
        Ok(reconciled)
    }

    async fn bind(&self, manifest: &Manifest, plan: &Plan) -> anyhow::Result<Box<dyn Service>> {
        match (plan, &self.lattice) {
            (Plan::Binding(planned), _) => {
                let client = self.nats.as_ref().map(Bus::client);
                let cx = BindContext {
                    app: &self.name,
                    manifest,
                    runtime: &self.runtime,
                    nats: client.as_ref(),
                    lattice: self.lattice.as_ref(),
                };
                transports::bind(planned, manifest, &cx).await
            }
            (Plan::Rpc(exports), Some(lattice)) => Ok(Box::new(
                LinkServer::bind(lattice, &self.name, self.runtime.clone(), exports).await?,
            )),
            (Plan::HttpForward(components), Some(lattice)) => Ok(Box::new(
                ForwardServer::bind(lattice, &self.name, self.runtime.clone(), components).await?,
            )),
            (Plan::Rpc(_) | Plan::HttpForward(_), None) => anyhow::bail!("remote links and routes need a lattice"),
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

/// `sha256:` and the first 12 hex digits of a digest, for logs. Cuts only
/// at a character boundary, so any text (a path, a KV entry) is safe.
pub fn short(digest: &str) -> &str {
    let mut end = digest.len().min(19);
    while !digest.is_char_boundary(end) {
        end -= 1;
    }
    &digest[..end]
}
