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
//! This file only keeps instances; what makes one fit to keep (its call
//! returned normally, its resource table did not grow) is decided by the
//! version that owns the pool (`component.rs`). A commit closes the pools
//! of the versions it replaces, so a hot swap starts empty and old instances
//! do not outlive it. Instances parked longer than [`IDLE_TTL`] are dropped
//! at the pool's next use.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long an instance may stay parked before it is dropped.
pub const IDLE_TTL: Duration = Duration::from_secs(30);

struct Parked<T> {
    item: T,
    uses: u32,
    since: Instant,
}

/// The idle instances (`T`) of one component version.
pub(crate) struct IdlePool<T> {
    /// Calls one instance may serve; 0 turns reuse off.
    max_uses: u32,
    /// Set when this version is replaced: nothing is parked any more.
    closed: AtomicBool,
    /// Oldest first; calls take the newest (its pages are the warmest).
    idle: Mutex<VecDeque<Parked<T>>>,
}

impl<T> IdlePool<T> {
    /// A pool whose instances serve up to `max_uses` calls each (0: none kept).
    pub(crate) fn new(max_uses: u32) -> IdlePool<T> {
        IdlePool {
            max_uses,
            closed: AtomicBool::new(false),
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// The newest idle instance and the calls it has served, if there is one.
    pub(crate) fn take(&self) -> Option<(T, u32)> {
        if self.max_uses == 0 {
            return None;
        }
        let (taken, expired) = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let expired = expire(&mut idle);
            (idle.pop_back(), expired)
        };
        drop(expired);
        taken.map(|p| (p.item, p.uses))
    }

    /// Whether an instance that has served `uses` calls may be parked.
    pub(crate) fn accepts(&self, uses: u32) -> bool {
        uses < self.max_uses && !self.closed.load(Ordering::Acquire)
    }

    /// Parks an instance that has served `uses` calls.
    pub(crate) fn park(&self, item: T, uses: u32) {
        let expired = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push_back(Parked {
                item,
                uses,
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
fn expire<T>(idle: &mut VecDeque<Parked<T>>) -> Vec<Parked<T>> {
    let now = Instant::now();
    let stale = idle
        .iter()
        .take_while(|p| now.duration_since(p.since) > IDLE_TTL)
        .count();
    idle.drain(..stale).collect()
}
