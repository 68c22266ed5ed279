//! Reused instances: the idle pool of one component version.
//!
//! By default every call gets a fresh instance (Spin's model: no state
//! survives a call). A component with `reuse = N` in its manifest entry
//! instead parks a healthy instance here after a call and hands it to the
//! next one, until it has served N calls (`wasmtime serve
//! --max-instance-reuse-count`). That skips instantiation, guest
//! initialisation and the memory teardown of each call, at the price of
//! isolation: guest globals and heap survive from one call to the next.
//!
//! Only an instance whose call returned normally comes back: a trap, a fault,
//! a deadline or a cancelled call drops it. The pool belongs to one
//! [`super::Loaded`] (one version), so a hot swap starts a new, empty pool
//! and the old instances go with the old version.

use super::Generation;
use super::context::CallContext;
use super::state::HostState;
use std::sync::{Arc, Mutex};
use wasmtime::Store;
use wasmtime::component::Instance;

/// A parked instance with its store.
pub(crate) struct Idle {
    pub(crate) store: Store<HostState>,
    pub(crate) instance: Instance,
    /// Calls it has served.
    pub(crate) uses: u32,
}

/// The idle instances of one component version.
pub(crate) struct IdlePool {
    /// Calls one instance may serve; 0 turns reuse off.
    max_uses: u32,
    idle: Mutex<Vec<Idle>>,
}

impl IdlePool {
    /// A pool whose instances serve up to `max_uses` calls each (0: none kept).
    pub(crate) fn new(max_uses: u32) -> IdlePool {
        IdlePool {
            max_uses,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle instance made ready for a call in `generation` with context
    /// `cx`, if there is one.
    pub(crate) fn take(&self, generation: &Arc<Generation>, cx: &CallContext) -> Option<Idle> {
        if self.max_uses == 0 {
            return None;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        let state = idle.store.data_mut();
        state.cx = cx.clone();
        state.generation = generation.clone();
        idle.store.set_epoch_deadline(1);
        Some(idle)
    }

    /// Takes back an instance whose call succeeded, after `uses` calls. It is
    /// dropped instead when reuse is off or it has served its share.
    pub(crate) fn give_back(&self, mut store: Store<HostState>, instance: Instance, uses: u32) {
        if uses >= self.max_uses {
            return;
        }
        // What belongs to the call goes now: the instances it started over
        // local links (each returns to its own pool) and its generation,
        // which holds this version and would otherwise keep itself alive.
        let state = store.data_mut();
        let callees = std::mem::take(&mut state.callees);
        state.callees = (0..callees.len()).map(|_| None).collect();
        state.generation = Arc::default();
        drop(callees);
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Idle { store, instance, uses });
    }
}
