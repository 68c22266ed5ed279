//! Links: a component's import served by another component's export.
//!
//! This module owns two things: checking a link against both components' types
//! before anything serves ([`check`]), and satisfying the import at run time
//! ([`define_local`]). A local link is a host function that starts the target
//! in its own store on first use within the caller's call, and forwards
//! component values (`Val`s) to it: no serialisation, no network. Each target
//! instance gets its own store, so WASI grants, config, memory caps and
//! deadlines stay per component; the callee inherits the caller's deadline
//! when it is the sooner one.

pub mod chunks;
pub mod remote;
pub mod typecheck;

use crate::manifest::LinkSpec;
use crate::runtime::fault::Fault;
use crate::runtime::idle::Idle;
use crate::runtime::state::HostState;
use crate::runtime::{Loaded, start_callee};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime::component::types::{Component as ComponentTy, ComponentInstance, ComponentItem};
use wasmtime::component::{Func, Instance, Linker, Val};
use wasmtime::{Engine, Result};

/// A live instance kept for several calls: a linked component started by a
/// caller during one call and reused for that caller's further calls to it,
/// or an instance a host-side user keeps warm ([`Runtime::start_instance`]).
pub struct Callee {
    /// Always `Some` until dropped; taken by `Drop` to park the instance.
    store: Option<Store<HostState>>,
    instance: Instance,
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
        if let Some(store) = self.store.take()
            && self.healthy
        {
            self.target.idle.give_back(Idle {
                store,
                instance: self.instance,
                uses: self.uses + 1,
            });
        }
    }
}

impl Callee {
    /// Wraps an instance of `target`, fresh or reused.
    pub(crate) fn new(idle: Idle, target: Arc<Loaded>, functions: usize) -> Callee {
        Callee {
            store: Some(idle.store),
            instance: idle.instance,
            target,
            funcs: vec![None; functions],
            uses: idle.uses,
            healthy: true,
        }
    }

    fn store(&mut self) -> &mut Store<HostState> {
        self.store.as_mut().expect("a callee's store is only taken on drop")
    }

    /// Calls `function` of exported `interface` by name, keeping the instance
    /// (and any callees it started) for further calls.
    pub async fn invoke(&mut self, interface: &str, function: &str, params: &[Val]) -> Result<Vec<Val>, Fault> {
        let func = self.lookup(interface, function)?;
        let mut results = vec![Val::Bool(false); func.ty(self.store()).results().len()];
        self.call_func(func, params, &mut results).await?;
        Ok(results)
    }

    /// A link call: like `invoke`, with the function cached in slot `index`.
    async fn call(
        &mut self,
        index: usize,
        interface: &str,
        function: &str,
        params: &[Val],
        results: &mut [Val],
    ) -> Result<(), Fault> {
        let func = match self.funcs[index] {
            Some(func) => func,
            None => {
                let func = self.lookup(interface, function)?;
                self.funcs[index] = Some(func);
                func
            }
        };
        self.call_func(func, params, results).await
    }

    fn lookup(&mut self, interface: &str, function: &str) -> Result<Func, Fault> {
        let instance = self.instance;
        let store = self.store();
        instance
            .get_export_index(&mut *store, None, interface)
            .and_then(|iface| instance.get_export_index(&mut *store, Some(&iface), function))
            .and_then(|f| instance.get_func(&mut *store, f))
            .ok_or_else(|| self.target.fault_host(format!("no export `{interface}#{function}`")))
    }

    async fn call_func(&mut self, func: Func, params: &[Val], results: &mut [Val]) -> Result<(), Fault> {
        // Unhealthy until the call returns normally: a trap, a fault or a
        // cancelled call leaves the instance out of the idle pool.
        self.healthy = false;
        func.call_async(self.store(), params, results)
            .await
            .map_err(|e| self.target.classify(e))?;
        self.healthy = true;
        Ok(())
    }
}

/// Checks `link` against the two components' own types: the importer imports
/// the interface, the target exports it, every function the importer expects
/// has the identical signature, and nothing passes a resource. `index` is the
/// link's position in the manifest, for messages.
pub fn check(
    engine: &Engine,
    index: usize,
    link: &LinkSpec,
    from: &ComponentTy,
    to: &ComponentTy,
) -> Result<ComponentInstance, String> {
    let names = |items: Vec<&str>| {
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    let import = match from.get_import(engine, &link.import).map(|e| e.ty) {
        Some(ComponentItem::ComponentInstance(i)) => i,
        Some(_) => {
            return Err(format!("links[{index}].import: `{}` is not an interface", link.import));
        }
        None => {
            return Err(format!(
                "links[{index}].import: component `{}` does not import `{}` (it imports: {})",
                link.from,
                link.import,
                names(from.imports(engine).map(|(n, _)| n).collect())
            ));
        }
    };
    let export = match to.get_export(engine, &link.import).map(|e| e.ty) {
        Some(ComponentItem::ComponentInstance(i)) => i,
        _ => {
            return Err(format!(
                "links[{index}].to: component `{}` does not export `{}` (it exports: {})",
                link.to,
                link.import,
                names(to.exports(engine).map(|(n, _)| n).collect())
            ));
        }
    };
    typecheck::check_instance(engine, &import, &export).map_err(|m| {
        format!(
            "links[{index}]: `{}` imports `{}` with a different type than `{}` exports: function `{}`: {}",
            link.from, link.import, link.to, m.function, m.detail
        )
    })?;
    for (name, item) in import.exports(engine) {
        if let ComponentItem::ComponentFunc(f) = item.ty
            && (f.params().any(|(_, t)| typecheck::carries_handle(&t))
                || f.results().any(|t| typecheck::carries_handle(&t)))
        {
            return Err(format!(
                "links[{index}]: function `{name}` of `{}` passes a resource or stream, which cannot cross a link between components",
                link.import
            ));
        }
    }
    Ok(import)
}

/// Whether an imported item is an interface that declares only types, which
/// needs no link.
pub fn is_type_only(engine: &Engine, item: &ComponentItem) -> bool {
    match item {
        ComponentItem::ComponentInstance(i) => i
            .exports(engine)
            .all(|(_, e)| matches!(e.ty, ComponentItem::Type(_) | ComponentItem::Resource(_))),
        _ => false,
    }
}

/// One function of a local link, as its host function sees it.
struct LinkedFunc {
    interface: String,
    function: String,
    target: Arc<str>,
    /// Position of the function in the interface (the callee's cache slot).
    index: usize,
    /// The link's slot among the caller's callees.
    slot: usize,
    /// Functions in the interface.
    count: usize,
}

/// Defines every function of `interface` (whose type is `import`) in
/// `linker` as a call into component `target`, through link slot `slot` of the
/// caller's store.
pub fn define_local(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    interface: &str,
    import: &ComponentInstance,
    slot: usize,
    target: Arc<str>,
) -> Result<()> {
    let functions: Vec<String> = import
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    let count = functions.len();
    let mut root = linker.root();
    let mut instance = root.instance(interface)?;
    for (index, function) in functions.into_iter().enumerate() {
        // Everything the call needs, behind one Arc: one clone per call.
        let link = Arc::new(LinkedFunc {
            interface: interface.to_string(),
            function: function.clone(),
            target: target.clone(),
            index,
            slot,
            count,
        });
        instance.func_new_async(&function, move |mut store, _ty, params, results| {
            let link = link.clone();
            Box::new(async move {
                let mut callee = match store.data_mut().callees[link.slot].take() {
                    Some(callee) => callee,
                    None => {
                        let (cx, generation) = (store.data().cx.clone(), store.data().generation.clone());
                        Box::new(start_callee(store.engine(), &generation, &link.target, &cx, link.count).await?)
                    }
                };
                let result = callee
                    .call(link.index, &link.interface, &link.function, params, results)
                    .await;
                store.data_mut().callees[link.slot] = Some(callee);
                result.map_err(wasmtime::Error::from)
            })
        })?;
    }
    Ok(())
}
