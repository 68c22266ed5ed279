//! Per-store state: one [`HostState`] lives in each `Store`, i.e. each
//! component instance.
//!
//! It holds one field per capability (what each capability's instance phase
//! built, see `capabilities/`), the instance's limits and permits, its call
//! context, and `chain`: what the call chain shares (its generation, the
//! instances of linked components this one started). The chain's type is a
//! parameter so that this file knows nothing of components or links.

use crate::runtime::context::CallContext;
use crate::runtime::fault::MemoryLimitExceeded;
use crate::runtime::keyvalue;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::{GuestTaskId, ResourceTable};
use wasmtime::{ResourceLimiter, Result, StoreContextMut};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// What the capabilities give one instance: one field per capability of
/// the list in `capabilities/mod.rs`, `()` where it keeps nothing.
pub struct CapabilityStates {
    /// Outbound networking: read through the prepared list, nothing per instance.
    pub outbound: (),
    /// WASI cli, clocks, random, filesystem, sockets.
    pub wasi: WasiCtx,
    /// wasi:http (types, and outgoing requests to the allowed hosts).
    pub http: HttpState,
    /// wasi:config values.
    pub config: ConfigValues,
    /// wasi:keyvalue: the buckets it may open.
    pub keyvalue: Arc<keyvalue::Grant>,
    /// wasi:logging: nothing per instance.
    pub logging: (),
}

/// A component's wasi:config values, key → value, shared by its instances.
pub type ConfigValues = Arc<std::collections::BTreeMap<String, String>>;

/// One instance's wasi:http state: wasmtime-wasi-http's context and the
/// hooks that check its outgoing requests (built by `capabilities/http.rs`).
pub struct HttpState {
    /// wasmtime-wasi-http's per-instance context.
    pub ctx: WasiHttpCtx,
    /// The outgoing-request check.
    pub hooks: Box<dyn WasiHttpHooks + Send>,
}

/// The instance permits a store holds: its component's and the host's.
pub struct Permits {
    /// One of the component's `max_instances`.
    pub component: OwnedSemaphorePermit,
    /// One of the host's instance budget.
    pub host: OwnedSemaphorePermit,
}

/// The data of one store: one component instance.
pub struct HostState<C> {
    /// The component this store runs.
    pub(crate) component: Arc<str>,
    pub(crate) caps: CapabilityStates,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    /// The call's deadline and trace.
    pub(crate) cx: CallContext,
    /// When the instance serves several requests at once (WASI 0.3
    /// `concurrency`): each one's context, by the guest task that runs it.
    /// Empty otherwise.
    pub(crate) tasks: HashMap<GuestTaskId, CallContext>,
    /// What the call chain shares.
    pub(crate) chain: C,
    /// Resource-table entries when the instance was first parked (`reuse`).
    pub(crate) parked_entries: Option<usize>,
    _permits: Permits,
}

impl<C> HostState<C> {
    /// State for a new instance of `component`.
    pub(crate) fn new(
        component: Arc<str>,
        caps: CapabilityStates,
        memory_mib: u64,
        cx: CallContext,
        chain: C,
        permits: Permits,
    ) -> HostState<C> {
        HostState {
            component,
            caps,
            table: ResourceTable::new(),
            limiter: Limiter { memory_mib },
            cx,
            tasks: HashMap::new(),
            chain,
            parked_entries: None,
            _permits: permits,
        }
    }

    /// The instance's resource table (for capabilities' resources).
    pub(crate) fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// The capabilities' state and the resource table, borrowed apart.
    pub(crate) fn caps_and_table(&mut self) -> (&CapabilityStates, &mut ResourceTable) {
        (&self.caps, &mut self.table)
    }

    /// Entries in the resource table (WASI preopens, live handles).
    pub(crate) fn table_entries(&mut self) -> usize {
        self.table.iter_mut().count()
    }
}

impl<C: Send> WasiView for HostState<C> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.caps.wasi,
            table: &mut self.table,
        }
    }
}

impl<C: Send> WasiHttpView for HostState<C> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.caps.http.ctx,
            table: &mut self.table,
            hooks: &mut *self.caps.http.hooks,
        }
    }
}

/// The context of the call running in `store` right now: the request's
/// whose guest task made the host call when the instance serves several at
/// once, else the instance's own.
pub(crate) fn call_cx<C: 'static>(store: &mut StoreContextMut<'_, HostState<C>>) -> CallContext {
    if !store.data().tasks.is_empty() {
        // The oldest task of the async call stack is the export call the
        // host started: the request's.
        let root = store.async_call_stack().ok().and_then(|stack| stack.last());
        if let Some(cx) = root.and_then(|task| store.data().tasks.get(&task)) {
            return cx.clone();
        }
    }
    store.data().cx.clone()
}

/// Caps one instance's memory; growth past the cap traps with a typed error.
pub(crate) struct Limiter {
    memory_mib: u64,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> Result<bool> {
        if desired as u64 > self.memory_mib << 20 {
            return Err(MemoryLimitExceeded {
                limit_mib: self.memory_mib,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> Result<bool> {
        Ok(desired <= 1 << 20)
    }
}
