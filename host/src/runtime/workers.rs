//! The open workers of one component version with `concurrency`: the
//! bookkeeping of [`super::shared`], apart from instances. Which worker has
//! a free place, which requests it was given, and which workers are ending;
//! all under one lock, so that requests arriving together open one worker.

use super::context::CallContext;
use super::fault::Fault;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use wasmtime::component::GuestTaskId;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A request body as the worker takes it.
pub(crate) type Body = wasmtime_wasi_http::WasiBody;

/// A response as the dispatcher hands it on.
pub(crate) type Response = hyper::Response<HyperOutgoingBody>;

/// What a worker answers a request.
pub(crate) type Answer = Result<Response, Refused>;

/// Why a worker gave no response.
pub(crate) enum Refused {
    /// The request failed: its fault.
    Fault(Fault),
    /// The worker ended before it took the request, which goes elsewhere.
    Bounced(hyper::Request<Body>),
}

/// The open workers of one component version: those that take requests.
#[derive(Default)]
pub(crate) struct Workers {
    pub(crate) open: Mutex<Vec<Open>>,
    ids: AtomicU64,
    /// Workers out of the open list whose instance is not yet given back.
    ending: AtomicUsize,
    /// Woken when such a worker has given its instance back.
    returned: tokio::sync::Notify,
}

/// One open worker, as requests find it.
pub(crate) struct Open {
    pub(crate) id: u64,
    /// Its free places: `concurrency` less the requests it holds.
    pub(crate) places: Arc<Semaphore>,
    pub(crate) jobs: mpsc::UnboundedSender<Job>,
    pub(crate) done: mpsc::UnboundedSender<Option<GuestTaskId>>,
    /// Requests it may still be given (what is left of `reuse`).
    pub(crate) left: u32,
}

/// A request on its way to a worker.
pub(crate) struct Pending {
    pub(crate) request: hyper::Request<Body>,
    pub(crate) cx: CallContext,
    pub(crate) span: tracing::Span,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// A request a worker was given, with its place.
pub(crate) struct Job {
    pub(crate) pending: Pending,
    pub(crate) held: Held,
}

/// A request's place on its worker's instance. Dropped (with the response
/// body, or with the request when it fails), it frees the place and tells
/// the worker, which forgets the request's task.
pub(crate) struct Held {
    pub(crate) place: Option<OwnedSemaphorePermit>,
    pub(crate) task: Option<GuestTaskId>,
    pub(crate) done: mpsc::UnboundedSender<Option<GuestTaskId>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.place.take());
        let _ = self.done.send(self.task);
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Workers {
    /// Gives `pending` to an open worker with a free place, if there is
    /// one; hands it back if not.
    pub(crate) fn join(&self, open: &mut Vec<Open>, pending: Pending) -> Option<Pending> {
        let mut pending = pending;
        let mut i = 0;
        while i < open.len() {
            let worker = &mut open[i];
            let Ok(place) = worker.places.clone().try_acquire_owned() else {
                i += 1;
                continue;
            };
            let held = Held {
                place: Some(place),
                task: None,
                done: worker.done.clone(),
            };
            match worker.jobs.send(Job { pending, held }) {
                Ok(()) => {
                    worker.left -= 1;
                    if worker.left == 0 {
                        open.remove(i);
                        self.ending.fetch_add(1, Ordering::AcqRel);
                    }
                    return None;
                }
                // The worker has gone without closing: forget it.
                Err(mpsc::error::SendError(job)) => {
                    pending = job.pending;
                    open.remove(i);
                }
            }
        }
        Some(pending)
    }

    /// Takes the `uses` a parked instance had served off worker `id`'s share.
    pub(crate) fn spend(&self, id: u64, uses: u32) {
        let mut open = lock(&self.open);
        if let Some(i) = open.iter().position(|w| w.id == id) {
            open[i].left = open[i].left.saturating_sub(uses);
            if open[i].left == 0 {
                open.remove(i);
                self.ending.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Takes live worker `id` out of the open list: it gets no more
    /// requests, and gives its instance back later ([`Workers::ended`]).
    pub(crate) fn close(&self, id: u64) {
        let mut open = lock(&self.open);
        if let Some(i) = open.iter().position(|w| w.id == id) {
            open.remove(i);
            self.ending.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Worker `id` has given its instance back (or never had one).
    pub(crate) fn ended(&self, id: u64) {
        let mut open = lock(&self.open);
        match open.iter().position(|w| w.id == id) {
            Some(i) => drop(open.remove(i)),
            None => drop(self.ending.fetch_sub(1, Ordering::AcqRel)),
        }
        drop(open);
        self.returned.notify_waiters();
    }

    /// Takes worker `id` out of the open list if all its places are free
    /// (no request holds one, none is on its way): it may end.
    pub(crate) fn retire(&self, id: u64, places: &Semaphore, capacity: usize) -> bool {
        let mut open = lock(&self.open);
        if places.available_permits() < capacity {
            return false;
        }
        if let Some(i) = open.iter().position(|w| w.id == id) {
            open.remove(i);
            self.ending.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    /// Opens a worker with `capacity` places and `left` requests to take,
    /// `pending` its first: open at once, so that the requests arriving
    /// while its instance starts join it rather than start their own.
    pub(crate) fn open(&self, open: &mut Vec<Open>, (capacity, left): (usize, u32), pending: Pending) -> Opened {
        let places = Arc::new(Semaphore::new(capacity));
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (done, done_rx) = mpsc::unbounded_channel();
        let first = Job {
            held: Held {
                place: places.clone().try_acquire_owned().ok(),
                task: None,
                done: done.clone(),
            },
            pending,
        };
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        open.push(Open {
            id,
            places: places.clone(),
            jobs,
            done,
            left,
        });
        Opened {
            id,
            places,
            jobs: jobs_rx,
            done: done_rx,
            first,
        }
    }

    /// Whether a worker is giving its instance back; the wait for one that has.
    pub(crate) fn ending(&self) -> (bool, tokio::sync::futures::Notified<'_>) {
        let returned = self.returned.notified();
        (self.ending.load(Ordering::Acquire) > 0, returned)
    }
}

/// A worker just opened: what its task takes.
pub(crate) struct Opened {
    pub(crate) id: u64,
    pub(crate) places: Arc<Semaphore>,
    pub(crate) jobs: mpsc::UnboundedReceiver<Job>,
    pub(crate) done: mpsc::UnboundedReceiver<Option<GuestTaskId>>,
    pub(crate) first: Job,
}
