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
//! a deadline or a cancelled call drops it. So does one whose resource table
//! grew since it was first parked (a guest that leaks handles, e.g. keeps the
//! previous request alive). The pool belongs to one [`super::Loaded`] (one
//! version): a commit closes the pools of the versions it replaces, so a hot
//! swap starts empty and old instances do not outlive it. Instances parked
//! longer than [`IDLE_TTL`] are dropped at the pool's next use.

use super::Generation;
use super::context::CallContext;
use super::state::HostState;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime::component::Instance;

/// How long an instance may stay parked before it is dropped.
pub const IDLE_TTL: Duration = Duration::from_secs(30);

/// An instance with its store, fresh or taken from the pool.
pub(crate) struct Idle {
    pub(crate) store: Store<HostState>,
    pub(crate) instance: Instance,
    /// Calls it has served.
    pub(crate) uses: u32,
}

struct Parked {
    idle: Idle,
    since: Instant,
}

/// The idle instances of one component version.
pub(crate) struct IdlePool {
    /// Calls one instance may serve; 0 turns reuse off.
    max_uses: u32,
    /// Set when this version is replaced: nothing is parked any more.
    closed: AtomicBool,
    /// Oldest first; calls take the newest (its pages are the warmest).
    idle: Mutex<VecDeque<Parked>>,
}

impl IdlePool {
    /// A pool whose instances serve up to `max_uses` calls each (0: none kept).
    pub(crate) fn new(max_uses: u32) -> IdlePool {
        IdlePool {
            max_uses,
            closed: AtomicBool::new(false),
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// An idle instance made ready for a call in `generation` with context
    /// `cx`, if there is one.
    pub(crate) fn take(&self, generation: &Arc<Generation>, cx: &CallContext) -> Option<Idle> {
        if self.max_uses == 0 {
            return None;
        }
        let (taken, expired) = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let expired = expire(&mut idle);
            (idle.pop_back(), expired)
        };
        drop(expired);
        let mut idle = taken?.idle;
        let state = idle.store.data_mut();
        state.cx = cx.clone();
        state.generation = generation.clone();
        idle.store.set_epoch_deadline(1);
        Some(idle)
    }

    /// Takes back an instance whose call (its `uses`-th) succeeded. It is
    /// dropped instead when reuse is off, it has served its share, its
    /// version was replaced, or its resource table grew since it was first
    /// parked.
    pub(crate) fn give_back(&self, idle: Idle) {
        let Idle {
            mut store,
            instance,
            uses,
        } = idle;
        if uses >= self.max_uses || self.closed.load(Ordering::Acquire) {
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
        let entries = state.table_entries();
        if *state.parked_entries.get_or_insert(entries) < entries {
            tracing::debug!(component = &*state.component, "not reused: it kept {entries} resources");
            return;
        }
        let expired = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push_back(Parked {
                idle: Idle { store, instance, uses },
                since: Instant::now(),
            });
            expire(&mut idle)
        };
        drop(expired);
    }

    /// Drops every parked instance and parks none from now on: this version
    /// has been replaced.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let parked = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        drop(parked);
    }

    /// Instances parked right now.
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Removes the instances parked longer than [`IDLE_TTL`], for the caller to
/// drop outside the lock.
fn expire(idle: &mut VecDeque<Parked>) -> Vec<Parked> {
    let now = Instant::now();
    let stale = idle
        .iter()
        .take_while(|p| now.duration_since(p.since) > IDLE_TTL)
        .count();
    idle.drain(..stale).collect()
}
