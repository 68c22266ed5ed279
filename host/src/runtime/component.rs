//! Component versions and their instances.
//!
//! A [`Loaded`] is one version of one component, ready to instantiate; a
//! [`Generation`] is one consistent set of versions on this host. A
//! [`Callee`] is a live instance with its store, fresh or reused, and
//! [`acquire`] is the one path that hands one out (for media, links and
//! host-side users alike); dropping a healthy `Callee` gives it back to its
//! version's idle pool.

use super::capabilities::Granted;
use super::context::CallContext;
use super::engine::HostEngine;
use super::fault::{DeadlineExceeded, Fault, FaultKind};
use super::idle::IdlePool;
use super::state::{HostState, Permits};
use super::trace;
use crate::manifest::ComponentSpec;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tracing::Instrument as _;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Func, Instance, InstancePre, Linker, Val};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::{ProxyIndices, ProxyPre};
use wasmtime_wasi_http::p3::bindings::ServiceIndices;

/// What one call chain shares across its local links.
pub struct Chain {
    /// The generation the call runs in: local links start their targets
    /// from it, so one call sees one consistent set of versions. `None`
    /// while the instance is parked.
    pub(crate) generation: Option<Arc<Generation>>,
    /// Instances of linked components started by this instance, one slot per link.
    pub(crate) callees: Vec<Option<Box<Callee>>>,
}

/// The data of a store that runs a component.
pub type Host = HostState<Chain>;

/// An instance with its store, as parked between calls.
pub(crate) struct Idle {
    store: Store<Host>,
    instance: Instance,
}

/// A component ready to instantiate: one version of it.
pub struct Loaded {
    /// Its name in the manifest.
    pub name: Arc<str>,
    /// `sha256:<hex>` of its bytes.
    pub digest: String,
    /// The compiled component.
    pub component: Component,
    pre: InstancePre<Host>,
    /// Present when the component exports `wasi:http/incoming-handler`.
    pub(crate) proxy: Option<ProxyPre<Host>>,
    /// Where `proxy`'s exports sit in an instance, for reused instances.
    pub(crate) proxy_indices: Option<ProxyIndices>,
    /// Present when it exports `wasi:http/handler@0.3.x` (WASI 0.3): where
    /// the handler sits in an instance.
    pub(crate) service: Option<ServiceIndices>,
    idle: IdlePool<Idle>,
    /// Exported functions by interface and name, with where each sits in an
    /// instance, for function-level media and link calls.
    functions: Exports,
    /// Deadline of one call.
    pub timeout: Duration,
    memory_mib: u64,
    max_instances: u32,
    granted: Granted,
    permits: Arc<Semaphore>,
    links: usize,
    /// Requests one instance may serve at once (`concurrency`).
    concurrency: u32,
    /// Calls one instance may serve in all (`reuse`).
    reuse: u32,
    /// Its busy shared instances, with `concurrency` > 1.
    pub(crate) workers: super::workers::Workers,
    /// Set when this is its group's composition: the members fused in.
    pub fused: Option<Fused>,
    /// How each of its links is made on this host.
    pub links_made: Vec<LinkReport>,
    /// The counters of the links fused into it, each counted once per call
    /// into it (`links::composed_counter`).
    composed_calls: Vec<crate::metrics::Counter>,
}

/// How one link of a component is made on this host: what inventories,
/// `ctl apps` and the status page show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkReport {
    /// The callee.
    pub to: String,
    /// `composed`, `dynamic`, `remote` or `queued`.
    pub made: String,
    /// Why a link the manifest wanted composed is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// What a composed component was built from (`links/compose.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fused {
    /// `sha256:<hex>` of the composition's bytes.
    pub digest: String,
    /// The members fused into the root, with their digests.
    pub members: Vec<(String, String)>,
    /// Each member's core module name (its name section), root included,
    /// where it is unique: what tells whose code a trap was in.
    pub modules: Vec<(String, Arc<str>)>,
}

impl Fused {
    /// The member whose code `err` trapped in: the innermost frame of its
    /// backtrace that belongs to a known module.
    fn culprit(&self, err: &wasmtime::Error) -> Option<&Arc<str>> {
        let trace = err.downcast_ref::<wasmtime::WasmBacktrace>()?;
        trace.frames().iter().find_map(|frame| {
            let module = frame.module().name()?;
            self.modules.iter().find(|(m, _)| m == module).map(|(_, member)| member)
        })
    }
}

impl Loaded {
    /// Pre-instantiates `component` (compiled from `digest`) with `linker`,
    /// which has its capabilities and its `links` local link slots defined.
    pub fn new(
        name: &str,
        spec: &ComponentSpec,
        (component, digest): (Component, String),
        linker: &Linker<Host>,
        granted: Granted,
        links: usize,
    ) -> Result<Loaded, String> {
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| format!("components.{name}: cannot be instantiated: {e}"))?;
        let proxy = ProxyPre::new(pre.clone()).ok();
        let proxy_indices = proxy.as_ref().and_then(|_| ProxyIndices::new(&pre).ok());
        let service = ServiceIndices::new(&pre).ok();
        if spec.concurrency > 1 && service.is_none() {
            return Err(format!(
                "components.{name}.concurrency: {} requests at once need a WASI 0.3 HTTP handler (an async `wasi:http/handler@0.3` export); this component exports {}",
                spec.concurrency,
                if proxy.is_some() {
                    "the WASI 0.2 `wasi:http/incoming-handler`, which serves one request at a time"
                } else {
                    "no HTTP handler"
                }
            ));
        }
        Ok(Loaded {
            name: Arc::from(name),
            digest,
            functions: exported_functions(component.engine(), &component),
            component,
            pre,
            proxy,
            proxy_indices,
            service,
            idle: IdlePool::new(spec.reuse),
            timeout: Duration::from_millis(spec.limits.timeout_ms),
            memory_mib: spec.limits.memory_mib,
            max_instances: spec.limits.max_instances,
            granted,
            permits: Arc::new(Semaphore::new(spec.limits.max_instances as usize)),
            links,
            concurrency: spec.concurrency,
            reuse: spec.reuse,
            workers: Default::default(),
            fused: None,
            links_made: Vec::new(),
            composed_calls: Vec::new(),
        })
    }

    /// This version, with how its links are made here.
    pub fn with_links(mut self, links: Vec<LinkReport>) -> Loaded {
        self.links_made = links;
        self
    }

    /// This version, marked as the composition `fused`, whose links count
    /// their calls in `counters`.
    pub fn with_fused(mut self, fused: Fused, counters: Vec<crate::metrics::Counter>) -> Loaded {
        self.fused = Some(fused);
        self.composed_calls = counters;
        self
    }

    /// Classifies an error from a call into this component.
    pub(crate) fn classify(&self, err: wasmtime::Error) -> Fault {
        let culprit = self.fused.as_ref().and_then(|fused| fused.culprit(&err));
        Fault::classify(culprit.unwrap_or(&self.name), self.timeout, err)
    }

    /// A host-side failure attributed to this component.
    pub fn fault_host(&self, message: String) -> Fault {
        Fault::new(self.name.clone(), FaultKind::Host { message })
    }

    /// This component's deadline fault.
    pub(crate) fn fault_deadline(&self) -> Fault {
        Fault::new(self.name.clone(), FaultKind::deadline(self.timeout))
    }

    /// Instances of this version serving a call right now.
    pub fn instances_in_use(&self) -> u32 {
        let alive = self.max_instances - self.permits.available_permits() as u32;
        alive.saturating_sub(self.idle.len() as u32)
    }

    /// Instances of this version parked between calls (`reuse`).
    pub fn instances_parked(&self) -> u32 {
        self.idle.len() as u32
    }

    /// Requests one of its instances may serve at once (`concurrency`).
    pub fn concurrency(&self) -> u32 {
        self.concurrency
    }

    /// Calls one of its instances may serve in all (`reuse`).
    pub fn reuse(&self) -> u32 {
        self.reuse
    }

    /// Its `max_instances` limit.
    pub fn max_instances(&self) -> u32 {
        self.max_instances
    }

    /// Whether it exports an HTTP handler the `http` medium serves:
    /// `wasi:http/incoming-handler@0.2.x` or `wasi:http/handler@0.3.x`.
    pub fn is_proxy(&self) -> bool {
        self.proxy.is_some() || self.service.is_some()
    }

    /// Whether it exports both HTTP handlers (0.2's and 0.3's): the
    /// `http` medium refuses it rather than guess which one to call.
    pub fn exports_both_http(&self) -> bool {
        self.proxy.is_some() && self.service.is_some()
    }

    /// Whether its HTTP handler is WASI 0.3's `wasi:http/handler`.
    pub fn is_p3_handler(&self) -> bool {
        self.service.is_some()
    }

    /// The type of exported `interface#function`, if there is one.
    pub fn function(&self, interface: &str, function: &str) -> Option<&ComponentFunc> {
        self.functions.get(interface)?.get(function).map(|(f, _)| f)
    }

    /// The functions of exported `interface`.
    pub fn function_names(&self, interface: &str) -> Vec<String> {
        self.functions
            .get(interface)
            .map_or_else(Vec::new, |fs| fs.keys().cloned().collect())
    }

    /// Every exported function as `interface#function`, sorted.
    pub fn exported(&self) -> Vec<String> {
        let mut known: Vec<String> = self
            .functions
            .iter()
            .flat_map(|(i, fs)| fs.keys().map(move |f| format!("{i}#{f}")))
            .collect();
        known.sort();
        known
    }

    /// Closes the idle pool: this version has been replaced.
    pub(crate) fn retire(&self) {
        self.idle.close();
    }

    /// Takes back an instance whose `uses`-th call succeeded. It is dropped
    /// instead when reuse is off, it has served its share, its version was
    /// replaced, or its resource table grew since it was first parked (a
    /// guest that leaks handles, e.g. keeps the previous request alive).
    fn give_back(&self, mut idle: Idle, uses: u32) {
        if !self.idle.accepts(uses) {
            return;
        }
        // What belongs to the call goes now: the instances it started over
        // local links (each returns to its own pool) and its generation,
        // which holds this version and would otherwise keep itself alive.
        let state = idle.store.data_mut();
        let callees = std::mem::take(&mut state.chain.callees);
        state.chain.callees = (0..callees.len()).map(|_| None).collect();
        state.chain.generation = None;
        state.tasks.clear();
        drop(callees);
        let entries = state.table_entries();
        if *state.parked_entries.get_or_insert(entries) < entries {
            tracing::debug!(component = &*self.name, "not reused: it kept {entries} resources");
            return;
        }
        self.idle.park(idle, uses);
    }

    /// A fresh store for one instance, which must finish by `cx`'s deadline.
    /// At `max_instances` live instances (or the host's budget) it fails at
    /// once (load shedding) rather than queueing: a queue bounded only by
    /// deadlines turns overload into timeouts for everyone.
    fn new_store(&self, generation: &Arc<Generation>, cx: &CallContext) -> Result<Store<Host>, Fault> {
        let capacity = |kind| Fault::new(self.name.clone(), kind);
        let component = self.permits.clone().try_acquire_owned().map_err(|_| {
            capacity(FaultKind::Capacity {
                max_instances: self.max_instances,
            })
        })?;
        let engine = &generation.engine;
        let host = engine.instance_permit().ok_or_else(|| {
            capacity(FaultKind::HostCapacity {
                max_instances: engine.options.max_instances,
            })
        })?;
        let caps = self
            .granted
            .instance()
            .map_err(|e| self.fault_host(format!("capability setup: {e}")))?;
        let chain = Chain {
            generation: Some(generation.clone()),
            callees: (0..self.links).map(|_| None).collect(),
        };
        let permits = Permits { component, host };
        let data = HostState::new(self.name.clone(), caps, self.memory_mib, cx.clone(), chain, permits);
        let mut store = Store::new(self.component.engine(), data);
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
}

/// One consistent set of component versions on this host's engine. Calls
/// hold it from start to finish, so a swap never changes the versions under
/// a call.
pub struct Generation {
    /// The host's engines, which compiled these versions.
    pub engine: Arc<HostEngine>,
    pub(crate) components: HashMap<Arc<str>, Arc<Loaded>>,
}

impl Generation {
    /// A generation of no components on `engine`.
    pub fn empty(engine: Arc<HostEngine>) -> Generation {
        Generation {
            engine,
            components: HashMap::new(),
        }
    }

    /// The version of component `name` in this generation.
    pub fn get(&self, name: &str) -> Option<&Arc<Loaded>> {
        self.components.get(name)
    }

    /// Every version in it.
    pub fn components(&self) -> impl Iterator<Item = &Arc<Loaded>> {
        self.components.values()
    }
}

/// An instance of `target` from `generation` for a call whose context is
/// `parent`, bounded by the target's own timeout: an idle one when the
/// component reuses instances, else a fresh one. `functions` sizes the
/// callee's cache of link functions.
pub async fn acquire(
    generation: &Arc<Generation>,
    target: &str,
    parent: &CallContext,
    functions: usize,
) -> Result<Callee, Fault> {
    let loaded = generation
        .get(target)
        .cloned()
        .ok_or_else(|| Fault::not_running(target))?;
    let cx = parent.until(Instant::now() + loaded.timeout);
    for counter in &loaded.composed_calls {
        counter.inc();
    }
    if let Some((mut idle, uses)) = loaded.idle.take() {
        let state = idle.store.data_mut();
        state.cx = cx;
        state.chain.generation = Some(generation.clone());
        idle.store.set_epoch_deadline(1);
        return Ok(Callee::new(idle, uses, loaded, functions));
    }
    let mut store = loaded.new_store(generation, &cx)?;
    // Boxed: instantiation is a large future, and every caller's future
    // would otherwise carry (and copy) its space, parked instances too.
    let instance = Box::pin(loaded.pre.instantiate_async(&mut store))
        .await
        .map_err(|e| loaded.classify(e))?;
    Ok(Callee::new(Idle { store, instance }, 0, loaded, functions))
}

/// A live instance kept for several calls: a linked component started by a
/// caller during one call and reused for that caller's further calls to it,
/// the instance a medium's call runs in, or one a host-side user keeps warm.
pub struct Callee {
    /// Always `Some` until dropped; taken by `Drop` to park the instance.
    idle: Option<Idle>,
    target: Arc<Loaded>,
    funcs: Vec<Option<Func>>,
    /// Calls served before this one (a caller's call, however many link
    /// calls it makes, counts once).
    uses: u32,
    /// Whether every call so far returned normally (and none was cancelled),
    /// so that the instance may serve another.
    healthy: bool,
}

impl Drop for Callee {
    fn drop(&mut self) {
        if let Some(idle) = self.idle.take()
            && self.healthy
        {
            self.target.give_back(idle, self.uses + 1);
        }
    }
}

impl Callee {
    fn new(idle: Idle, uses: u32, target: Arc<Loaded>, functions: usize) -> Callee {
        Callee {
            idle: Some(idle),
            target,
            funcs: vec![None; functions],
            uses,
            healthy: true,
        }
    }

    /// The version this instance runs.
    pub fn target(&self) -> &Arc<Loaded> {
        &self.target
    }

    fn parts(&mut self) -> (&mut Store<Host>, Instance) {
        let idle = self.idle.as_mut().expect("a callee's store is only taken on drop");
        (&mut idle.store, idle.instance)
    }

    /// Calls this instance served before the current one.
    pub(crate) fn uses(&self) -> u32 {
        self.uses
    }

    /// The current call was `n` requests (a shared instance's busy spell):
    /// they all count against `reuse`.
    pub(crate) fn served(&mut self, n: u32) {
        self.uses += n.saturating_sub(1);
    }

    /// The store and instance for a call the caller drives itself. The
    /// instance counts as failed until [`Callee::finished`].
    pub(crate) fn begin(&mut self) -> (&mut Store<Host>, Instance) {
        self.healthy = false;
        self.parts()
    }

    /// The call begun with [`Callee::begin`] returned normally.
    pub(crate) fn finished(&mut self) {
        self.healthy = true;
    }

    /// Calls `function` of exported `interface` by name, keeping the instance
    /// (and any callees it started) for further calls.
    pub async fn invoke(&mut self, interface: &str, function: &str, params: &[Val]) -> Result<Vec<Val>, Fault> {
        let func = self.lookup(interface, function)?;
        let mut results = vec![Val::Bool(false); func.ty(self.parts().0).results().len()];
        self.call_func(func, params, &mut results).await?;
        Ok(results)
    }

    /// A link call: like `invoke`, with the function cached in slot `index`,
    /// as part of `cx` (the caller's context, under its link's span). When
    /// spans are exported it gets a `call` span of its own, under `cx`, and
    /// the instance's own link calls hang under that.
    pub async fn call(
        &mut self,
        (index, interface, function): (usize, &str, &str),
        params: &[Val],
        results: &mut [Val],
        cx: &CallContext,
    ) -> Result<(), Fault> {
        let func = match self.funcs.get(index).copied().flatten() {
            Some(func) => func,
            None => {
                let func = self.lookup(interface, function)?;
                if let Some(slot) = self.funcs.get_mut(index) {
                    *slot = Some(func);
                }
                func
            }
        };
        if !trace::exporting() {
            return self.call_func(func, params, results).await;
        }
        let target = self.target.clone();
        let (span, cx) = super::context::open_call(cx, "link", &target.name, (interface, function, &target.digest));
        self.parts().0.data_mut().cx.trace = cx.trace;
        let result = self.call_func(func, params, results).instrument(span.clone()).await;
        if let Err(fault) = &result {
            trace::set_failed(&span, fault);
        }
        result
    }

    fn lookup(&mut self, interface: &str, function: &str) -> Result<Func, Fault> {
        let target = self.target.clone();
        let index = target
            .functions
            .get(interface)
            .and_then(|fs| fs.get(function))
            .map(|(_, i)| i);
        let (store, instance) = self.parts();
        index
            .and_then(|i| instance.get_func(&mut *store, i))
            .ok_or_else(|| target.fault_host(format!("no export `{interface}#{function}`")))
    }

    async fn call_func(&mut self, func: Func, params: &[Val], results: &mut [Val]) -> Result<(), Fault> {
        // Unhealthy until the call returns normally: a trap, a fault or a
        // cancelled call leaves the instance out of the idle pool.
        let (store, _) = self.begin();
        func.call_async(store, params, results)
            .await
            .map_err(|e| self.target.classify(e))?;
        self.finished();
        Ok(())
    }
}

/// A component's exported functions: interface → function → its type and
/// its index in an instance. Looked up on every call by name, so with
/// foldhash rather than SipHash (the names are the component's own, from
/// the manifest's load, not a peer's).
type Exports = hashbrown::HashMap<String, hashbrown::HashMap<String, (ComponentFunc, ComponentExportIndex)>>;

/// Every function exported inside an interface, by interface and name.
fn exported_functions(engine: &wasmtime::Engine, component: &Component) -> Exports {
    let mut out = Exports::default();
    for (iface, item) in component.component_type().exports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        let Some((_, iface_index)) = component.get_export(None, iface) else {
            continue;
        };
        let functions = instance
            .exports(engine)
            .filter_map(|(name, item)| match item.ty {
                ComponentItem::ComponentFunc(f) => {
                    let (_, index) = component.get_export(Some(&iface_index), name)?;
                    Some((name.to_string(), (f, index)))
                }
                _ => None,
            })
            .collect();
        out.insert(iface.to_string(), functions);
    }
    out
}
