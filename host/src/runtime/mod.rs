//! The runtime: the host's engine, the loaded components, and calls into them.
//!
//! It knows nothing of media, links or the lattice. The layers above stage
//! an app with its primitives: [`Runtime::compile_all`] (once per digest,
//! off the async runtime, cached in memory and on disk), [`Runtime::linker`]
//! (the capabilities a component is granted, checked), [`Loaded::new`]
//! (pre-instantiation), [`Runtime::staged`] (what a commit would change).
//! [`Runtime::commit`] then swaps the generation in atomically (hot swap): a
//! call starts in the current generation and finishes in it, with its whole
//! local call chain, so calls in flight finish on the old versions while new
//! calls get the new ones.
//!
//! Calls enter through [`dispatch`] and leave as values or a
//! [`fault::Fault`].

pub mod cache;
pub mod capabilities;
pub mod component;
pub mod context;
pub mod dispatch;
pub mod engine;
pub mod fault;
pub(crate) mod idle;
pub mod keyvalue;
pub mod output;
pub mod secrets;
pub(crate) mod shared;
pub mod state;
pub mod trace;
mod verdict;
pub(crate) mod workers;

use crate::manifest::{ArtifactsFrom, ComponentSpec, Manifest};
use capabilities::Granted;
use component::{Generation, Host, Loaded};
use engine::HostEngine;
use futures::future::BoxFuture;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use wasmtime::component::{Component, Linker};

/// Where `sha256:` sources come from: the lattice's artifact store.
pub trait ArtifactStore: Send + Sync {
    /// The verified bytes of version `digest`, kept in `cache_dir` if given.
    fn fetch<'a>(&'a self, digest: &'a str, cache_dir: Option<&'a Path>) -> BoxFuture<'a, anyhow::Result<Vec<u8>>>;
}

/// How to load apps.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Where compiled code is cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The lattice's artifact store, for `sha256:` sources.
    pub artifacts: Option<Arc<dyn ArtifactStore>>,
    /// Where secrets named by manifests are found.
    pub secrets: Arc<secrets::Secrets>,
    /// Where key-value buckets live.
    pub keyvalue: keyvalue::Stores,
    /// The registry client for `oci://` sources.
    pub registry: Arc<crate::registry::Registry>,
}

/// What a commit changed, one entry per component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The component now runs here.
    Started {
        /// Its name.
        name: String,
        /// The version that started.
        digest: String,
    },
    /// A new version replaced the old one.
    Updated {
        /// Its name.
        name: String,
        /// The old version.
        from: String,
        /// The new version.
        to: String,
    },
    /// The component no longer runs here.
    Stopped {
        /// Its name.
        name: String,
        /// The version that stopped.
        digest: String,
    },
}

impl Change {
    /// The order changes are reported in: starts, then stops, then
    /// updates; by component name within each.
    fn order(&self) -> (u8, &str) {
        match self {
            Change::Started { name, .. } => (0, name),
            Change::Stopped { name, .. } => (1, name),
            Change::Updated { name, .. } => (2, name),
        }
    }
}

/// A validated generation, ready to [`Runtime::commit`].
pub struct Staged {
    generation: Generation,
    /// What committing it will change.
    pub changes: Vec<Change>,
    /// Time spent fetching and compiling new versions.
    pub compile: Duration,
}

impl Staged {
    /// The version of `name` this generation would run.
    pub fn get(&self, name: &str) -> Option<&Arc<Loaded>> {
        self.generation.get(name)
    }
}

/// A compiled version: the component and its digest.
pub type Version = (Component, String);

/// The components of one app on this host.
pub struct Runtime {
    engine: Arc<HostEngine>,
    options: LoadOptions,
    current: RwLock<Arc<Generation>>,
    /// Compiled components by digest: a version compiles once per process.
    compiled: Mutex<HashMap<String, Component>>,
    /// The bytes of each compiled source, by digest, for composition.
    sources: Mutex<HashMap<String, Arc<[u8]>>>,
    /// The digest of each composition built, by what it was built from
    /// (its group and its members' digests): a composition is built once.
    fused: Mutex<HashMap<String, String>>,
    /// The app's key-value buckets opened so far.
    buckets: keyvalue::AppBuckets,
}

/// A load failure: every problem found, each naming its culprit.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the app:\n  - {}", problems.join("\n  - "))]
pub struct LoadError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl From<Vec<String>> for LoadError {
    fn from(problems: Vec<String>) -> LoadError {
        LoadError { problems }
    }
}

impl Runtime {
    /// An empty runtime on the host's engine.
    pub fn new(engine: Arc<HostEngine>, options: &LoadOptions) -> Arc<Runtime> {
        Arc::new(Runtime {
            current: RwLock::new(Arc::new(Generation::empty(engine.clone()))),
            engine,
            options: options.clone(),
            compiled: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
            fused: Mutex::new(HashMap::new()),
            buckets: keyvalue::AppBuckets::default(),
        })
    }

    /// The host's engine.
    pub fn host_engine(&self) -> &Arc<HostEngine> {
        &self.engine
    }

    /// The wasmtime engine of components without concurrency (WASI 0.2).
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine.engine
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.engine.pooling
    }

    /// The current generation.
    pub fn generation(&self) -> Arc<Generation> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current version of component `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Loaded>> {
        self.generation().get(name).cloned()
    }

    /// Every component running on this host.
    pub fn loaded(&self) -> Vec<Arc<Loaded>> {
        self.generation().components().cloned().collect()
    }

    /// The capabilities' app phase: opens what the components of `manifest`
    /// in `here` share (the key-value buckets granted to them, reusing those
    /// a generation before opened).
    pub async fn open_app(
        &self,
        manifest: &Manifest,
        here: &std::collections::BTreeSet<String>,
    ) -> Result<capabilities::AppShare, Vec<String>> {
        self.buckets.open(&self.options.keyvalue, manifest, here).await
    }

    /// A linker for component `name` with every capability its grants allow,
    /// after checking those grants against its imports; `app` is what the
    /// app phase opened; `engine` is the one its version was compiled on.
    /// Links come on top.
    pub fn linker(
        &self,
        engine: &wasmtime::Engine,
        name: &str,
        spec: &ComponentSpec,
        imports: &[String],
        app: &capabilities::AppShare,
    ) -> Result<(Linker<Host>, Granted), Vec<String>> {
        let mut problems = Vec::new();
        if spec.limits.memory_mib > self.engine.options.max_memory_mib {
            problems.push(format!(
                "components.{name}.limits.memory_mib: {} is more than this host allows ({} MiB; membrane up --max-memory-mib)",
                spec.limits.memory_mib, self.engine.options.max_memory_mib
            ));
        }
        let spec = secrets::resolve(name, spec, &self.options.secrets).map_err(|p| [problems.clone(), p].concat())?;
        let granted = Granted::prepare(name, &spec, imports, app).map_err(|p| [problems.clone(), p].concat())?;
        let mut linker = Linker::<Host>::new(engine);
        linker.allow_shadowing(true);
        if let Err(e) = granted.add_to_linker(&mut linker, self.engine.is_concurrent(engine)) {
            problems.push(format!("components.{name}: cannot set up capabilities: {e}"));
        }
        if problems.is_empty() {
            Ok((linker, granted))
        } else {
            Err(problems)
        }
    }

    /// The generation of `components`, and what committing it would change.
    pub fn staged(&self, components: HashMap<Arc<str>, Arc<Loaded>>, compile: Duration) -> Staged {
        let current = self.generation();
        let mut changes = Vec::new();
        for (name, new) in &components {
            match current.get(name) {
                None => changes.push(Change::Started {
                    name: name.to_string(),
                    digest: new.digest.clone(),
                }),
                Some(old) if old.digest != new.digest => changes.push(Change::Updated {
                    name: name.to_string(),
                    from: old.digest.clone(),
                    to: new.digest.clone(),
                }),
                Some(_) => {}
            }
        }
        for old in current.components() {
            if !components.contains_key(&old.name) {
                changes.push(Change::Stopped {
                    name: old.name.to_string(),
                    digest: old.digest.clone(),
                });
            }
        }
        changes.sort_by(|a, b| a.order().cmp(&b.order()));
        Staged {
            generation: Generation {
                engine: self.engine.clone(),
                components,
            },
            changes,
            compile,
        }
    }

    /// Makes a staged generation the current one, atomically. Calls in
    /// flight finish on the generation they started in.
    pub fn commit(&self, staged: Staged) -> Vec<Change> {
        let old = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            Arc::new(staged.generation),
        );
        // Calls in flight keep the old versions, but their parked instances
        // go now: nothing new will take them.
        for loaded in old.components() {
            loaded.retire();
        }
        staged.changes
    }

    /// Reads (or fetches) and compiles every component, on the blocking pool,
    /// reusing versions compiled before. All unreadable or non-component
    /// sources are reported together.
    ///
    /// At most one component per core is read and compiled (or loaded from
    /// the cache) at a time: one blocking task per component at once made a
    /// manifest of 1000 components start 512 threads (tokio's blocking pool
    /// limit), each compiling with its own Cranelift working set (1.6 GiB
    /// resident on a cold start), with every source read up front. Each
    /// compile still uses every core (`parallel_compilation`).
    pub async fn compile_all(&self, manifest: &Manifest) -> Result<BTreeMap<String, Version>, LoadError> {
        use futures::StreamExt as _;
        let parallel = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Only a link's ends may be composed: only their bytes are kept.
        let ends: std::collections::HashSet<&str> = (manifest.links.iter())
            .filter(|link| link.delivery != crate::manifest::Delivery::Queue)
            .flat_map(|link| [link.from.as_str(), link.to.as_str()])
            .collect();
        let ends = &ends;
        let outcomes: Vec<(String, Result<Version, String>)> = futures::stream::iter(&manifest.components)
            .map(|(name, spec)| async move {
                let keep = ends.contains(name.as_str());
                (
                    name.clone(),
                    self.compile_one(name, spec, manifest.app.artifacts, keep).await,
                )
            })
            .buffered(parallel)
            .collect()
            .await;
        let mut problems = Vec::new();
        let mut compiled = BTreeMap::new();
        for (name, outcome) in outcomes {
            match outcome {
                Ok(version) => {
                    compiled.insert(name, version);
                }
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(compiled)
        } else {
            Err(LoadError { problems })
        }
    }

    /// Reads (or fetches) and compiles component `name`, on the blocking
    /// pool, unless this process compiled its version before; a problem
    /// names the field. With `keep`, its bytes stay at hand for composition
    /// ([`Runtime::source`]); other components' bytes are dropped once
    /// compiled (a thousand components would otherwise hold their sources).
    async fn compile_one(
        &self,
        name: &str,
        spec: &ComponentSpec,
        from: ArtifactsFrom,
        keep: bool,
    ) -> Result<Version, String> {
        let bytes = match self.source_bytes(name, spec, from, keep).await? {
            Source::Compiled(done) => return Ok(done),
            Source::Bytes(bytes) => bytes,
        };
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let kept = bytes.clone();
        let (engine, cache_dir, label) = (self.engine.clone(), self.options.cache_dir.clone(), name.to_string());
        let c = tokio::task::spawn_blocking(move || compile_on(&engine, &label, &bytes, cache_dir.as_deref()))
            .await
            .map_err(|e| format!("a compile task failed: {e}"))?
            .map_err(|e| {
                format!(
                    "components.{name}.source: {}: not a valid component: {e:#}",
                    spec.source.display()
                )
            })?;
        let how = if c.cached { "loaded from cache" } else { "compiled" };
        tracing::info!("{how} {name} in {:.0?} ({})", c.elapsed, &c.digest[..19]);
        crate::metrics::registry()
            .histogram(
                "membrane_compile_duration_seconds",
                "Time to compile a component version, or to load it from the cache.",
                &[("cached", if c.cached { "true" } else { "false" })],
                crate::metrics::COMPILE_BUCKETS,
            )
            .observe(c.elapsed.as_secs_f64());
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.digest.clone(), c.component.clone());
        if keep {
            self.sources
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(c.digest.clone(), kept);
        }
        Ok((c.component, c.digest))
    }

    /// The bytes of version `digest`, when this process compiled it.
    pub fn source(&self, digest: &str) -> Option<Arc<[u8]>> {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }

    /// The compiled composition built from `key` (its group and the
    /// digests of its parts), building its bytes with `build` and compiling
    /// them (or loading them from the disk cache) only the first time; a
    /// problem says why it cannot be built. `label` names it in the log.
    pub async fn fused(
        &self,
        label: &str,
        key: String,
        build: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static,
    ) -> Result<Version, String> {
        let known = self.fused.lock().unwrap_or_else(|e| e.into_inner()).get(&key).cloned();
        if let Some(component) = known.as_deref().and_then(|digest| self.compiled_version(digest)) {
            return Ok((component, known.unwrap_or_default()));
        }
        let (engine, cache_dir, name) = (self.engine.clone(), self.options.cache_dir.clone(), label.to_string());
        let c = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let bytes = build()?;
            let composed = started.elapsed();
            let compiled = compile_on(&engine, &name, &bytes, cache_dir.as_deref()).map_err(|e| format!("{e:#}"))?;
            Ok::<_, String>((compiled, composed, bytes.len()))
        })
        .await
        .map_err(|e| format!("the composition task failed: {e}"))?;
        let (c, composed, size) = c?;
        let how = if c.cached { "loaded from cache" } else { "compiled" };
        tracing::info!(
            "composed {label} in {composed:.0?} ({} KiB), {how} in {:.0?} ({})",
            size / 1024,
            c.elapsed,
            &c.digest[..19]
        );
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(c.digest.clone(), c.component.clone());
        self.fused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, c.digest.clone());
        Ok((c.component, c.digest))
    }

    /// Component `name`'s config values and environment as the guest sees
    /// them, its secrets resolved on this host: what a plug serves it in a
    /// composition.
    pub fn own_values(&self, name: &str, spec: &ComponentSpec) -> Result<capabilities::plug::Values, Vec<String>> {
        let spec = secrets::resolve(name, spec, &self.options.secrets)?;
        let text = |values: &BTreeMap<String, crate::manifest::ConfigValue>| -> Vec<(String, String)> {
            values.iter().map(|(k, v)| (k.clone(), v.as_config_string())).collect()
        };
        Ok(capabilities::plug::Values {
            config: Arc::new(text(&spec.config).into_iter().collect()),
            env: text(&spec.wasi.env),
        })
    }

    /// The bytes of `name`'s source, or its compiled version when this
    /// process has it already (and its bytes too, if `keep` wants them); a
    /// problem names the field.
    async fn source_bytes(
        &self,
        name: &str,
        spec: &ComponentSpec,
        from: ArtifactsFrom,
        keep: bool,
    ) -> Result<Source, String> {
        let source = spec.source.display();
        if let Some(reference) = spec.oci_source() {
            let bytes = self
                .oci_bytes(&reference, from)
                .await
                .map_err(|e| format!("components.{name}.source: {e}"))?;
            return self.checked(name, spec, bytes);
        }
        let bytes = match spec.digest_source() {
            Some(digest) => {
                if let Some(component) = self.compiled_version(digest)
                    && (!keep || self.source(digest).is_some())
                {
                    return Ok(Source::Compiled((component, digest.to_string())));
                }
                let Some(artifacts) = &self.options.artifacts else {
                    return Err(format!(
                        "components.{name}.source: {source} names an artifact, but this host has no lattice (pass --nats URL)"
                    ));
                };
                artifacts
                    .fetch(digest, self.options.cache_dir.as_deref())
                    .await
                    .map_err(|e| format!("components.{name}.source: {e:#}"))?
            }
            None => cache::read_source(&spec.source)
                .await
                .map_err(|e| format!("components.{name}.source: {source}: {e}"))?,
        };
        self.checked(name, spec, bytes)
    }

    /// `bytes` as a compiled version this process has, or checked to be a
    /// component.
    fn checked(&self, name: &str, spec: &ComponentSpec, bytes: Vec<u8>) -> Result<Source, String> {
        let source = spec.source.display();
        let digest = cache::digest(&bytes);
        if let Some(component) = self.compiled_version(&digest) {
            return Ok(Source::Compiled((component, digest)));
        }
        cache::check_component_header(&bytes).map_err(|why| format!("components.{name}.source: {source} {why}"))?;
        Ok(Source::Bytes(bytes))
    }

    /// The component an OCI reference names: from the lattice's object store
    /// when the app says so and this host has a lattice (the reference is
    /// pinned there), else from the registry, or the disk cache.
    async fn oci_bytes(&self, reference: &crate::registry::Reference, from: ArtifactsFrom) -> anyhow::Result<Vec<u8>> {
        let cache_dir = self.options.cache_dir.as_deref();
        if let (ArtifactsFrom::Lattice, Some(artifacts)) = (from, &self.options.artifacts) {
            let Some(pinned) = &reference.digest else {
                anyhow::bail!(
                    "{reference}: an app with `artifacts = \"lattice\"` names pinned references (`membrane ctl apply` pins them)"
                );
            };
            let manifest = artifacts.fetch(pinned, cache_dir).await?;
            let layer = crate::registry::artifact::check_manifest(&manifest, cache::MAX_COMPONENT_BYTES)
                .map_err(|why| anyhow::anyhow!("{reference} {why}"))?;
            return artifacts.fetch(&layer.digest, cache_dir).await;
        }
        let pulled = self.options.registry.pull_or_cached(reference, cache_dir).await?;
        tracing::debug!("{reference}: component {}", pulled.layer);
        Ok(pulled.bytes)
    }

    /// Forgets every compiled version the current generation does not run,
    /// so a long run of swaps (`membrane dev` rebuilds on every save) does
    /// not keep each version's code alive. A version asked for again is
    /// compiled again (or loaded from the disk cache).
    pub fn forget_unused_versions(&self) {
        let current = self.generation();
        let running: std::collections::HashSet<&str> = (current.components())
            .flat_map(|c| std::iter::once(c.digest.as_str()).chain(c.fused.as_ref().map(|f| f.digest.as_str())))
            .collect();
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|digest, _| running.contains(digest.as_str()));
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|digest, _| running.contains(digest.as_str()));
        self.fused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, digest| running.contains(digest.as_str()));
    }

    fn compiled_version(&self, digest: &str) -> Option<Component> {
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }
}

/// A component's source, as [`Runtime::source_bytes`] found it.
enum Source {
    Compiled(Version),
    Bytes(Vec<u8>),
}

/// Compiles `bytes` on the engine without concurrency support unless the
/// component needs it: it does not validate without the component-model
/// async features, or it imports or exports an interface whose host side
/// is async ([`capabilities::needs_concurrency`]). Then it compiles on the
/// engine with concurrency support.
fn compile_on(
    host: &HostEngine,
    label: &str,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> wasmtime::Result<cache::Compiled> {
    if let Ok(compiled) = cache::compile(&host.engine, label, bytes, cache_dir) {
        let (engine, ty) = (compiled.component.engine(), compiled.component.component_type());
        let needs = (ty.imports(engine).map(|(n, _)| n))
            .chain(ty.exports(engine).map(|(n, _)| n))
            .any(capabilities::needs_concurrency);
        if !needs {
            return Ok(compiled);
        }
    }
    cache::compile(&host.concurrent()?, label, bytes, cache_dir)
}
