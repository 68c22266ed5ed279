//! The runtime: one engine, the loaded components, and calls into them.
//!
//! [`Runtime::stage`] turns a checked manifest into a [`Generation`]: one
//! consistent set of component versions. It does all validation that needs
//! the components themselves before anything serves: every source is a
//! component, every link type-checks, every import is satisfied, every binding
//! names an export of the right shape, and an update keeps the signature of
//! every bound function. Compilation happens once per digest, off the async
//! runtime, cached in memory and on disk. [`Runtime::commit`] then swaps the
//! generation in atomically (hot swap): a call starts in the current
//! generation and finishes in it, with its whole local call chain, so calls
//! in flight finish on the old versions while new calls get the new ones.
//!
//! Calls enter through [`dispatch`] (one fresh instance per call, with its own
//! store, deadline, memory cap and instance permit) and leave as values or a
//! [`fault::Fault`].

pub mod cache;
pub mod context;
pub mod dispatch;
pub mod engine;
pub mod fault;
pub(crate) mod idle;
pub mod state;

use crate::links;
use crate::manifest::{BindingSpec, Manifest, WasiGrants, split_export};
use context::CallContext;
use fault::{DeadlineExceeded, Fault, FaultKind};
use state::HostState;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::p2::bindings::{ProxyIndices, ProxyPre};

/// How to load an app.
#[derive(Clone, Default)]
pub struct LoadOptions {
    /// Where compiled code is cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling allocator when the machine allows it.
    pub pooling: bool,
    /// The components placed on this host; `None` means all of them.
    pub here: Option<BTreeSet<String>>,
    /// The lattice, for links to components placed elsewhere.
    pub lattice: Option<links::remote::Lattice>,
    /// The lattice's artifact store, for `sha256:` sources.
    pub artifacts: Option<crate::lattice::artifacts::Artifacts>,
}

impl LoadOptions {
    /// Whether component `name` runs on this host.
    pub fn runs_here(&self, name: &str) -> bool {
        self.here.as_ref().is_none_or(|here| here.contains(name))
    }
}

/// A component ready to instantiate: one version of it.
pub struct Loaded {
    /// Its name in the manifest.
    pub name: Arc<str>,
    /// `sha256:<hex>` of its bytes.
    pub digest: String,
    /// The compiled component.
    pub component: Component,
    pub(crate) pre: InstancePre<HostState>,
    /// Present when the component exports `wasi:http/incoming-handler`.
    pub(crate) proxy: Option<ProxyPre<HostState>>,
    /// Where `proxy`'s exports sit in an instance, for reused instances.
    pub(crate) proxy_indices: Option<ProxyIndices>,
    /// Instances parked for reuse (`reuse` in the manifest).
    pub(crate) idle: idle::IdlePool,
    /// Exported functions by interface and name, for function-level media.
    functions: HashMap<String, HashMap<String, ComponentFunc>>,
    /// Deadline of one call.
    pub timeout: Duration,
    memory_mib: u64,
    max_instances: u32,
    grants: WasiGrants,
    config: Arc<WasiConfigVariables>,
    permits: Arc<Semaphore>,
    links: usize,
}

impl Loaded {
    /// Classifies an error from a call into this component.
    pub(crate) fn classify(&self, err: wasmtime::Error) -> Fault {
        Fault::classify(&self.name, self.timeout, err)
    }

    /// Instances of this version serving a call right now.
    pub fn instances_in_use(&self) -> u32 {
        let alive = self.max_instances - self.permits.available_permits() as u32;
        alive.saturating_sub(self.idle.len() as u32)
    }

    /// Its `max_instances` limit.
    pub fn max_instances(&self) -> u32 {
        self.max_instances
    }

    /// The type of exported `interface#function`, if there is one.
    pub(crate) fn function(&self, interface: &str, function: &str) -> Option<&ComponentFunc> {
        self.functions.get(interface)?.get(function)
    }

    /// The functions of exported `interface`.
    pub(crate) fn function_names(&self, interface: &str) -> Vec<String> {
        self.functions
            .get(interface)
            .map_or_else(Vec::new, |fs| fs.keys().cloned().collect())
    }

    /// Checks that a function-level medium can call `interface#function`.
    fn check_function(&self, interface: &str, function: &str) -> Result<(), String> {
        let Some(func) = self.function(interface, function) else {
            let mut known: Vec<String> = self
                .functions
                .iter()
                .flat_map(|(i, fs)| fs.keys().map(move |f| format!("{i}#{f}")))
                .collect();
            known.sort();
            return Err(format!(
                "component `{}` has no exported function `{interface}#{function}` (it exports: {})",
                self.name,
                if known.is_empty() {
                    "no functions".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        if func.params().any(|(_, t)| links::typecheck::carries_handle(&t))
            || func.results().any(|t| links::typecheck::carries_handle(&t))
        {
            return Err(format!(
                "`{interface}#{function}` of `{}` passes a resource or stream, which no medium can carry",
                self.name
            ));
        }
        Ok(())
    }

    /// A host-side failure attributed to this component.
    pub(crate) fn fault_host(&self, message: String) -> Fault {
        Fault {
            component: self.name.clone(),
            kind: FaultKind::Host(message),
        }
    }
}

/// One consistent set of component versions on this host. Calls hold it from
/// start to finish, so a swap never changes the versions under a call.
#[derive(Default)]
pub struct Generation {
    components: HashMap<Arc<str>, Arc<Loaded>>,
}

impl Generation {
    /// The version of component `name` in this generation.
    pub fn get(&self, name: &str) -> Option<&Arc<Loaded>> {
        self.components.get(name)
    }
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

/// A validated generation, ready to [`Runtime::commit`].
pub struct Staged {
    generation: Generation,
    /// What committing it will change.
    pub changes: Vec<Change>,
    /// Time spent fetching and compiling new versions.
    pub compile: Duration,
}

/// The components of one app on this host.
pub struct Runtime {
    engine: engine::HostEngine,
    options: LoadOptions,
    current: RwLock<Arc<Generation>>,
    /// Compiled components by digest: a version compiles once per process.
    compiled: Mutex<HashMap<String, Component>>,
}

/// A load failure: every problem found, each naming its culprit.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the app:\n  - {}", problems.join("\n  - "))]
pub struct LoadError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl Runtime {
    /// An empty runtime whose engine fits `manifest`'s limits.
    pub fn new(manifest: &Manifest, options: &LoadOptions) -> anyhow::Result<Arc<Runtime>> {
        let specs = &manifest.components;
        let engine = engine::HostEngine::new(engine::EngineOptions {
            max_memory_mib: specs.values().map(|c| c.limits.memory_mib).max().unwrap_or(64),
            total_instances: specs
                .values()
                .map(|c| c.limits.max_instances)
                .sum::<u32>()
                .clamp(16, 1000),
            pooling: options.pooling,
        })
        .map_err(anyhow::Error::from)?;
        tracing::debug!(pooling = engine.pooling, "engine ready");
        Ok(Arc::new(Runtime {
            engine,
            options: options.clone(),
            current: RwLock::new(Arc::new(Generation::default())),
            compiled: Mutex::new(HashMap::new()),
        }))
    }

    /// Compiles, validates and starts every component of `manifest` that
    /// `options.here` places on this host.
    pub async fn load(manifest: &Manifest, options: &LoadOptions) -> anyhow::Result<Arc<Runtime>> {
        let runtime = Runtime::new(manifest, options)?;
        let here = options
            .here
            .clone()
            .unwrap_or_else(|| manifest.components.keys().cloned().collect());
        let staged = runtime.stage(manifest, &here).await?;
        runtime.commit(staged);
        Ok(runtime)
    }

    /// Fetches, compiles and validates the versions `manifest` asks for, with
    /// the components in `here` prepared to run on this host. Nothing changes
    /// until [`Runtime::commit`]; on error, nothing changes at all.
    pub async fn stage(self: &Arc<Self>, manifest: &Manifest, here: &BTreeSet<String>) -> Result<Staged, LoadError> {
        let started = Instant::now();
        let compiled = self.compile_all(manifest).await?;
        let compile = started.elapsed();
        let components = self.prepare(manifest, compiled, here)?;
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
        for (name, old) in &current.components {
            if !components.contains_key(name) {
                changes.push(Change::Stopped {
                    name: name.to_string(),
                    digest: old.digest.clone(),
                });
            }
        }
        changes.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        Ok(Staged {
            generation: Generation { components },
            changes,
            compile,
        })
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
        for loaded in old.components.values() {
            loaded.idle.close();
        }
        staged.changes
    }

    /// The current generation.
    pub fn generation(&self) -> Arc<Generation> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &wasmtime::Engine {
        &self.engine.engine
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.engine.pooling
    }

    /// The current version of component `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Loaded>> {
        self.generation().get(name).cloned()
    }

    /// Every component running on this host.
    pub fn loaded(&self) -> Vec<Arc<Loaded>> {
        self.generation().components.values().cloned().collect()
    }

    /// Link checks, linkers and pre-instantiation for every component.
    fn prepare(
        self: &Arc<Self>,
        manifest: &Manifest,
        compiled: BTreeMap<String, cache::Compiled>,
        here: &BTreeSet<String>,
    ) -> Result<HashMap<Arc<str>, Arc<Loaded>>, LoadError> {
        let engine = self.engine();
        let options = &self.options;
        let runs_here = |name: &str| here.contains(name);
        let mut problems = Vec::new();
        let types: BTreeMap<String, _> = compiled
            .iter()
            .map(|(name, c)| (name.clone(), c.component.component_type()))
            .collect();

        // Links: both sides' types, before anything is instantiated.
        let mut link_types = Vec::new();
        for (i, link) in manifest.links.iter().enumerate() {
            match links::check(engine, i, link, &types[&link.from], &types[&link.to]) {
                Ok(ty) => link_types.push(Some(ty)),
                Err(problem) => {
                    problems.push(problem);
                    link_types.push(None);
                }
            }
        }

        let mut loaded = HashMap::new();
        for (name, compiled) in compiled {
            // Every host type-checks every link, but prepares only its own share.
            if !runs_here(&name) {
                continue;
            }
            let spec = &manifest.components[&name];
            let mut linker = Linker::<HostState>::new(engine);
            linker.allow_shadowing(true);
            if let Err(e) = state::add_capabilities(&mut linker, &spec.wasi) {
                problems.push(format!("components.{name}: cannot set up capabilities: {e}"));
                continue;
            }
            let mut slots = 0;
            for (i, link) in manifest.links.iter().enumerate().filter(|(_, l)| l.from == name) {
                let Some(ty) = &link_types[i] else { continue };
                let target = Arc::from(link.to.as_str());
                let defined = if runs_here(&link.to) {
                    let slot = slots;
                    slots += 1;
                    links::define_local(&mut linker, engine, &link.import, ty, slot, target)
                } else if let Some(lattice) = &options.lattice {
                    let timeout = link.timeout_ms.map(Duration::from_millis);
                    links::remote::define_remote(&mut linker, engine, &link.import, ty, target, lattice, timeout)
                } else {
                    problems.push(format!(
                        "links[{i}]: `{}` does not run on this host (placement {:?}) and there is no lattice: pass --nats URL",
                        link.to, manifest.components[&link.to].placement
                    ));
                    continue;
                };
                if let Err(e) = defined {
                    problems.push(format!("links[{i}]: {e}"));
                }
            }
            for (import, item) in types[&name].imports(engine) {
                let linked = manifest.links.iter().any(|l| l.from == name && l.import == import);
                if !linked && !import.starts_with("wasi:") && links::is_type_only(engine, &item.ty) {
                    // An interface of types only (like `types`): nothing to
                    // call, so an empty instance satisfies it.
                    if let Err(e) = linker.root().instance(import) {
                        problems.push(format!("components.{name}: import `{import}`: {e}"));
                    }
                } else if !linked && !import.starts_with("wasi:") {
                    problems.push(format!(
                        "components.{name}: imports `{import}` but no [[links]] entry serves it \
                         (add one with from = \"{name}\", import = \"{import}\")"
                    ));
                } else if import.starts_with("wasi:http/outgoing-handler") && !spec.wasi.outbound_http {
                    problems.push(format!(
                        "components.{name}: imports `{import}`; grant it with `wasi.outbound_http = true`"
                    ));
                }
            }
            let pre = match linker.instantiate_pre(&compiled.component) {
                Ok(pre) => pre,
                Err(e) => {
                    problems.push(format!("components.{name}: cannot be instantiated: {e}"));
                    continue;
                }
            };
            let proxy = ProxyPre::new(pre.clone()).ok();
            let proxy_indices = proxy.as_ref().and_then(|_| ProxyIndices::new(&pre).ok());
            let functions = exported_functions(engine, &types[&name]);
            let config = spec
                .config
                .iter()
                .map(|(k, v)| (k.clone(), v.as_config_string()))
                .collect::<WasiConfigVariables>();
            let name: Arc<str> = Arc::from(name.as_str());
            loaded.insert(
                name.clone(),
                Arc::new(Loaded {
                    name,
                    digest: compiled.digest,
                    component: compiled.component,
                    pre,
                    proxy,
                    proxy_indices,
                    idle: idle::IdlePool::new(spec.reuse),
                    functions,
                    timeout: Duration::from_millis(spec.limits.timeout_ms),
                    memory_mib: spec.limits.memory_mib,
                    max_instances: spec.limits.max_instances,
                    grants: spec.wasi.clone(),
                    config: Arc::new(config),
                    permits: Arc::new(Semaphore::new(spec.limits.max_instances as usize)),
                    links: slots,
                }),
            );
        }

        for (i, binding) in manifest.bindings.iter().enumerate() {
            // Bindings of components placed elsewhere are served elsewhere.
            let Some(c) = loaded.get(binding.component()) else {
                continue;
            };
            match binding {
                BindingSpec::Http(http) if c.proxy.is_none() => {
                    let exports: Vec<_> = types[&http.component]
                        .exports(engine)
                        .map(|(n, _)| n.to_string())
                        .collect();
                    problems.push(format!(
                        "bindings[{i}]: medium `http` needs component `{}` to export `wasi:http/incoming-handler@0.2.x`; it exports: {}",
                        http.component,
                        exports.join(", ")
                    ));
                }
                _ => {
                    if let Some((iface, func)) = binding.export().and_then(split_export)
                        && let Err(problem) = c.check_function(iface, func)
                    {
                        problems.push(format!("bindings[{i}].export: {problem}"));
                    }
                }
            }
        }

        // An update must keep the type of every function a medium calls:
        // clients of the binding rely on it.
        let current = self.generation();
        for (i, binding) in manifest.bindings.iter().enumerate() {
            let (Some(new), Some(old)) = (loaded.get(binding.component()), current.get(binding.component())) else {
                continue;
            };
            if let Some((iface, func)) = binding.export().and_then(split_export)
                && let (Some(n), Some(o)) = (new.function(iface, func), old.function(iface, func))
                && let Some(why) = links::typecheck::diff_func(o, n)
            {
                problems.push(format!(
                    "bindings[{i}].export: the new version of `{}` changes `{iface}#{func}`: {why}",
                    binding.component()
                ));
            }
        }

        if problems.is_empty() {
            Ok(loaded)
        } else {
            Err(LoadError { problems })
        }
    }

    /// Starts an instance of component `name` (current generation) that lives
    /// until `cx`'s deadline and can be called many times
    /// ([`links::Callee::invoke`]).
    pub async fn start_instance(&self, name: &str, cx: &CallContext) -> Result<links::Callee, Fault> {
        start_callee(self.engine(), &self.generation(), name, cx, 0).await
    }

    /// Reads (or fetches) and compiles every component, on the blocking pool,
    /// reusing versions compiled before. All unreadable or non-component
    /// sources are reported together.
    async fn compile_all(&self, manifest: &Manifest) -> Result<BTreeMap<String, cache::Compiled>, LoadError> {
        let mut problems = Vec::new();
        let mut tasks = Vec::new();
        let mut compiled = BTreeMap::new();
        for (name, spec) in &manifest.components {
            let source = spec.source.display().to_string();
            let bytes = match spec.digest_source() {
                Some(digest) => {
                    if let Some(component) = self.compiled_version(digest) {
                        compiled.insert(name.clone(), cache::Compiled::reused(component, digest));
                        continue;
                    }
                    let Some(artifacts) = &self.options.artifacts else {
                        problems.push(format!(
                            "components.{name}.source: {source} names an artifact, but this host has no lattice (pass --nats URL)"
                        ));
                        continue;
                    };
                    match artifacts.fetch(digest, self.options.cache_dir.as_deref()).await {
                        Ok(bytes) => bytes,
                        Err(e) => {
                            problems.push(format!("components.{name}.source: {e:#}"));
                            continue;
                        }
                    }
                }
                None => match std::fs::read(&spec.source) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        problems.push(format!("components.{name}.source: {source}: {e}"));
                        continue;
                    }
                },
            };
            let digest = cache::digest(&bytes);
            if let Some(component) = self.compiled_version(&digest) {
                compiled.insert(name.clone(), cache::Compiled::reused(component, &digest));
                continue;
            }
            if let Err(why) = cache::check_component_header(&bytes) {
                problems.push(format!("components.{name}.source: {source} {why}"));
                continue;
            }
            let (engine, cache_dir, name) = (self.engine().clone(), self.options.cache_dir.clone(), name.clone());
            tasks.push(tokio::task::spawn_blocking(move || {
                let result = cache::compile(&engine, &name, &bytes, cache_dir.as_deref());
                (name, source, result)
            }));
        }
        for task in tasks {
            let (name, source, result) = match task.await {
                Ok(done) => done,
                Err(e) => {
                    problems.push(format!("a compile task failed: {e}"));
                    continue;
                }
            };
            match result {
                Ok(c) => {
                    let how = if c.cached { "loaded from cache" } else { "compiled" };
                    tracing::info!("{how} {name} in {:.0?} ({})", c.elapsed, &c.digest[..19]);
                    self.compiled
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(c.digest.clone(), c.component.clone());
                    compiled.insert(name, c);
                }
                Err(e) => problems.push(format!(
                    "components.{name}.source: {source}: not a valid component: {e:#}"
                )),
            }
        }
        if problems.is_empty() {
            Ok(compiled)
        } else {
            Err(LoadError { problems })
        }
    }

    fn compiled_version(&self, digest: &str) -> Option<Component> {
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned()
    }
}

/// A fresh store for one instance of `loaded`, which must finish by
/// `deadline`. At `max_instances` live instances it fails at once (load
/// shedding) rather than queueing: a queue bounded only by deadlines
/// turns overload into timeouts for everyone.
pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    generation: &Arc<Generation>,
    loaded: &Arc<Loaded>,
    cx: &CallContext,
) -> Result<Store<HostState>, Fault> {
    let permit = match loaded.permits.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            return Err(Fault {
                component: loaded.name.clone(),
                kind: FaultKind::AtCapacity {
                    max_instances: loaded.max_instances,
                },
            });
        }
    };
    let wasi = state::wasi_ctx(&loaded.grants).map_err(|e| loaded.fault_host(format!("WASI setup: {e}")))?;
    let data = HostState::new(loaded, wasi, cx.clone(), permit, generation.clone());
    let mut store = Store::new(engine, data);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        if Instant::now() >= ctx.data().cx.deadline {
            Err(DeadlineExceeded.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
    Ok(store)
}

/// Starts an instance of `target` from `generation` for a call whose
/// context is `parent`: an idle one when the component reuses instances,
/// else a fresh one.
pub(crate) async fn start_callee(
    engine: &wasmtime::Engine,
    generation: &Arc<Generation>,
    target: &str,
    parent: &CallContext,
    functions: usize,
) -> Result<links::Callee, Fault> {
    let loaded = generation.get(target).cloned().ok_or_else(|| Fault {
        component: Arc::from(target),
        kind: FaultKind::Host("not running on this host".into()),
    })?;
    let cx = parent.until(Instant::now() + loaded.timeout);
    if let Some(idle) = loaded.idle.take(generation, &cx) {
        return Ok(links::Callee::new(idle, loaded, functions));
    }
    let mut store = new_store(engine, generation, &loaded, &cx)?;
    let instance = loaded
        .pre
        .instantiate_async(&mut store)
        .await
        .map_err(|e| loaded.classify(e))?;
    let fresh = idle::Idle {
        store,
        instance,
        uses: 0,
    };
    Ok(links::Callee::new(fresh, loaded, functions))
}

/// Every function exported inside an interface, by interface and name.
fn exported_functions(
    engine: &wasmtime::Engine,
    ty: &wasmtime::component::types::Component,
) -> HashMap<String, HashMap<String, ComponentFunc>> {
    let mut out = HashMap::new();
    for (iface, item) in ty.exports(engine) {
        if let ComponentItem::ComponentInstance(instance) = item.ty {
            let functions = instance
                .exports(engine)
                .filter_map(|(name, item)| match item.ty {
                    ComponentItem::ComponentFunc(f) => Some((name.to_string(), f)),
                    _ => None,
                })
                .collect();
            out.insert(iface.to_string(), functions);
        }
    }
    out
}
