//! Several HTTP requests at once on one WASI 0.3 instance: a component's
//! `concurrency` (docs/manifest.md).
//!
//! A 0.3 handler is an async export, so one instance can run several calls
//! of it as tasks of its store's event loop. While such an instance is busy,
//! one *worker* task owns it. A request of the component's version goes to
//! an open worker with a free place ([`Workers::handle`]); only when none
//! has one does it start a worker on an instance from [`acquire`] (fresh, or
//! parked with `reuse`). A worker whose requests are all answered, whose
//! bodies are all sent and whose guest is quiet gives its instance back, as
//! a one-request call does.
//!
//! What holds:
//! - each request keeps its own deadline and trace context: the host calls
//!   of its guest task (links) find them by task
//!   ([`super::state::call_cx`]);
//! - a request that misses its deadline gets its 504 and retires its
//!   instance: it takes no more requests, the others finish, and it is
//!   dropped rather than parked. A guest that spins holds the whole event
//!   loop (wasmtime runs no other task meanwhile), so the instance is
//!   stopped at the latest deadline of the requests it took;
//! - a trap fails every request in flight on the instance, each with the
//!   component's fault, and cuts the bodies still streaming from it;
//! - a response body is cut at its own request's deadline;
//! - `max_instances`, `memory_mib` and the host's budget count instances;
//!   `reuse` counts every request an instance serves.

use super::component::{Callee, Generation, Host, Loaded, acquire};
use super::context::CallContext;
use super::fault::Fault;
use super::verdict::{Finishing, Verdict};
use super::workers::{Answer, Body, Held, Job, Pending, Refused, Response, lock};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use http_body_util::BodyExt as _;
use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument as _;
use wasmtime::AsContextMut as _;
use wasmtime::component::{Accessor, GuestTaskId, Resource, TypedFunc, TypedFuncCallConcurrent};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p3;
use wasmtime_wasi_http::p3::bindings::http::types as p3_types;

/// How long past a request's deadline the dispatcher waits for its
/// worker's answer before it answers the deadline itself.
const ANSWER_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves `request` with `loaded` (from `generation`) on a shared
/// instance, as part of `cx` (already bounded by the component's timeout)
/// under `span`.
pub(crate) async fn handle(
    generation: &Arc<Generation>,
    loaded: &Arc<Loaded>,
    request: hyper::Request<Body>,
    (cx, span): (CallContext, tracing::Span),
) -> Result<Response, Fault> {
    let mut request = request;
    // A request bounces only off a worker that ended before taking it;
    // a few tries find a live one or start one.
    for _ in 0..3 {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            request,
            cx: cx.clone(),
            span: span.clone(),
            reply,
        };
        place(generation, loaded, pending);
        // The worker answers a late request itself, after its instance
        // is gone when it retires; this bound is for a worker that hangs.
        match tokio::time::timeout_at((cx.deadline + ANSWER_GRACE).into(), answer).await {
            Err(_) => return Err(loaded.fault_deadline()),
            Ok(Err(_)) => return Err(loaded.fault_host("its instance ended before it answered".into())),
            Ok(Ok(Ok(response))) => return Ok(response),
            Ok(Ok(Err(Refused::Fault(fault)))) => return Err(fault),
            Ok(Ok(Err(Refused::Bounced(back)))) => request = back,
        }
    }
    Err(loaded.fault_host("no instance took the request".into()))
}

/// Gives `pending` to an open worker of `loaded` with a free place, or
/// opens one (in one hold of the lock) and starts its instance.
fn place(generation: &Arc<Generation>, loaded: &Arc<Loaded>, pending: Pending) {
    let workers = &loaded.workers;
    let mut open = lock(&workers.open);
    let Some(pending) = workers.join(&mut open, pending) else {
        return;
    };
    // What a parked instance has served already is taken off once it is
    // known (`spend`).
    let shape = (loaded.concurrency() as usize, loaded.reuse().saturating_sub(1));
    let opened = workers.open(&mut open, shape, pending);
    drop(open);
    let starting = Starting {
        id: opened.id,
        generation: generation.clone(),
        loaded: loaded.clone(),
        places: opened.places,
        capacity: shape.0,
        jobs: opened.jobs,
        done: opened.done,
    };
    tokio::spawn(starting.run(opened.first));
}

/// An instance for a new worker's first request. Refused for capacity
/// while another worker is still giving its instance back, it waits for
/// that (within the deadline) rather than turn the request away.
async fn acquire_waiting(generation: &Arc<Generation>, loaded: &Loaded, cx: &CallContext) -> Result<Callee, Fault> {
    loop {
        let (_, returned) = loaded.workers.ending();
        let mut returned = pin!(returned);
        returned.as_mut().enable();
        match acquire(generation, &loaded.name, cx, 0).await {
            Err(fault) if fault.is_capacity() && loaded.workers.ending().0 => {
                if tokio::time::timeout_at(cx.deadline.into(), returned).await.is_err() {
                    return Err(fault);
                }
            }
            acquired => return acquired,
        }
    }
}

/// A worker whose instance is starting.
struct Starting {
    id: u64,
    generation: Arc<Generation>,
    loaded: Arc<Loaded>,
    places: Arc<Semaphore>,
    capacity: usize,
    jobs: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedReceiver<Option<GuestTaskId>>,
}

impl Starting {
    /// Starts the instance (fresh, or parked) and runs the worker; when
    /// none can start, its requests fail as the start did.
    async fn run(mut self, first: Job) {
        let (loaded, cx) = (&self.loaded, &first.pending.cx);
        let acquired = acquire_waiting(&self.generation, loaded, cx).instrument(first.pending.span.clone());
        let acquired = tokio::time::timeout_at(cx.deadline.into(), acquired)
            .await
            .unwrap_or_else(|_| Err(loaded.fault_deadline()));
        tracing::debug!(worker = self.id, ok = acquired.is_ok(), "worker start");
        let callee = match acquired {
            Ok(callee) => callee,
            Err(fault) => {
                loaded.workers.ended(self.id);
                self.jobs.close();
                // Workers opened together race for the last instance; the
                // one that lost hands its requests back to find the
                // winner's free places instead of refusing them.
                let elsewhere = fault.is_capacity()
                    && lock(&loaded.workers.open)
                        .iter()
                        .any(|w| w.places.available_permits() > 0);
                let refuse = |pending: Pending| {
                    let answer = match elsewhere {
                        true => Refused::Bounced(pending.request),
                        false => Refused::Fault(fault.clone()),
                    };
                    let _ = pending.reply.send(Err(answer));
                };
                refuse(first.pending);
                while let Ok(job) = self.jobs.try_recv() {
                    refuse(job.pending);
                }
                return;
            }
        };
        loaded.workers.spend(self.id, callee.uses());
        let worker = Worker {
            id: self.id,
            callee,
            places: self.places,
            capacity: self.capacity,
            jobs: self.jobs,
            done: self.done,
        };
        worker.run(first).await;
    }
}

/// One busy instance and what reaches it.
struct Worker {
    id: u64,
    callee: Callee,
    places: Arc<Semaphore>,
    capacity: usize,
    jobs: mpsc::UnboundedReceiver<Job>,
    done: mpsc::UnboundedReceiver<Option<GuestTaskId>>,
}

/// `wasi:http/handler#handle`'s parameters and results.
type HandleParams = (Resource<p3_types::Request>,);
type HandleResults = (Result<Resource<p3_types::Response>, p3_types::ErrorCode>,);

/// `wasi:http/handler#handle`, as a typed function.
type Handler = TypedFunc<HandleParams, HandleResults>;

/// What carries a request's body to the guest, and reports its errors.
type RequestIo = Pin<Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>>;

/// The requests in flight on one worker, by key: answered from here when
/// the instance fails.
type Replies = Mutex<HashMap<u64, oneshot::Sender<Answer>>>;

/// One request started as a guest task.
struct Started {
    call: TypedFuncCallConcurrent<Host, HandleParams, HandleResults>,
    io: RequestIo,
    key: u64,
    deadline: Instant,
    span: tracing::Span,
    held: Held,
}

/// What every request of one worker shares.
struct Run<'a> {
    loaded: &'a Arc<Loaded>,
    verdict: &'a Arc<Verdict>,
    replies: &'a Replies,
    /// The latest deadline of the requests it took.
    latest: &'a Mutex<Instant>,
}

/// How a worker's event loop ended well.
enum Ended {
    /// Its requests are answered, their bodies sent and its guest quiet:
    /// it served this many.
    Served(u32),
    /// A request missed its deadline: the instance is dropped once the
    /// others are answered and their bodies sent.
    Retired,
}

impl Worker {
    async fn run(mut self, first: Job) {
        let loaded = self.callee.target().clone();
        let verdict = Arc::new(Verdict::default());
        let replies = Replies::default();
        let latest = Mutex::new(first.pending.cx.deadline);
        let run = Run {
            loaded: &loaded,
            verdict: &verdict,
            replies: &replies,
            latest: &latest,
        };
        let ended = self.serve(first, &run).await;
        tracing::debug!(worker = self.id, ?ended, "worker end");
        let failed = match ended {
            Ok(served) => {
                verdict.settle(true);
                self.callee.served(served);
                None
            }
            Err(fault) => {
                // Settled before the instance is dropped (see `verdict.rs`).
                verdict.settle(false);
                tracing::warn!(component = &*loaded.name, "shared instance ended: {fault}");
                Some(fault)
            }
        };
        // Parks the instance (healthy, with `reuse` left) or drops it, before
        // anyone hears of its end, so that the next request finds its place
        // free; one that reaches this worker meanwhile is bounced to another.
        drop(self.callee);
        loaded.workers.ended(self.id);
        self.jobs.close();
        if let Some(fault) = failed {
            for (_, reply) in lock(&replies).drain() {
                let _ = reply.send(Err(Refused::Fault(fault.clone())));
            }
        }
        while let Ok(Job { pending, held }) = self.jobs.try_recv() {
            drop(held);
            let _ = pending.reply.send(Err(Refused::Bounced(pending.request)));
        }
    }

    /// Runs the instance's event loop until it is done (`Ok`: the requests
    /// it served), fails, retires, or its latest request's deadline passes.
    async fn serve(&mut self, first: Job, run: &Run<'_>) -> Result<u32, Fault> {
        let loaded = run.loaded;
        let (store, handle) = self.callee.begin();
        let Some(indices) = &loaded.service else {
            return Err(loaded.fault_host("does not export wasi:http/handler@0.3".into()));
        };
        let service = indices.load(&mut *store, &handle).map_err(|e| loaded.classify(e))?;
        let handler: Handler = service.wasi_http_handler().func_handle();
        let queues = Queues {
            id: self.id,
            places: &self.places,
            capacity: self.capacity,
            jobs: &mut self.jobs,
            done: &mut self.done,
        };
        let ended = {
            let events = store.run_concurrent(async |guest| events(guest, handler, first, queues, run).await);
            // Watched from outside the event loop too: a guest that spins
            // holds the loop (the epoch deadline stops the spin itself).
            let mut events = pin!(events);
            let mut alarm = pin!(tokio::time::sleep_until((*lock(run.latest)).into()));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(ended) = events.as_mut().poll(cx) {
                    return Poll::Ready(Some(ended));
                }
                loop {
                    let until = *lock(run.latest);
                    if alarm.deadline() != until.into() {
                        alarm.as_mut().reset(until.into());
                    }
                    match alarm.as_mut().poll(cx) {
                        Poll::Ready(()) if Instant::now() >= until => return Poll::Ready(None),
                        Poll::Ready(()) => continue,
                        Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await
        };
        match ended {
            Some(Ok(Ok(Ended::Served(served)))) => {
                self.callee.finished();
                Ok(served)
            }
            Some(Ok(Ok(Ended::Retired))) | None => Err(loaded.fault_deadline()),
            Some(Ok(Err(e)) | Err(e)) => Err(loaded.classify(e)),
        }
    }
}

/// What reaches one worker: requests, and word of places given back.
struct Queues<'a> {
    id: u64,
    places: &'a Semaphore,
    capacity: usize,
    jobs: &'a mut mpsc::UnboundedReceiver<Job>,
    done: &'a mut mpsc::UnboundedReceiver<Option<GuestTaskId>>,
}

/// The worker's event loop, inside the store's: takes requests while it
/// is open, answers them, and ends when it is idle (or retires).
async fn events(
    guest: &Accessor<Host>,
    handler: Handler,
    first: Job,
    queues: Queues<'_>,
    run: &Run<'_>,
) -> wasmtime::Result<Ended> {
    let Queues {
        id,
        places,
        capacity,
        jobs,
        done,
    } = queues;
    let workers = &run.loaded.workers;
    let mut running = FuturesUnordered::new();
    let mut served = 1;
    let mut next_key = 0;
    if let Some(started) = take(guest, handler, first, &mut next_key, run) {
        running.push(finish(guest, handler, started, run));
    }
    let mut retiring = false;
    // Set when the guest was quiet with places still held: wait for the
    // next event before asking again.
    let mut asked = false;
    loop {
        if retiring && running.is_empty() && workers.retire(id, places, capacity) {
            return Ok(Ended::Retired);
        }
        tokio::select! {
            biased;
            Some(ended) = running.next(), if !running.is_empty() => {
                if let Some(late) = ended? {
                    // A request missed its deadline: no more for this
                    // instance. It is answered when the instance is gone,
                    // or now if others still run on it.
                    workers.close(id);
                    retiring = true;
                    if (!running.is_empty() || places.available_permits() < capacity)
                        && let Some(reply) = lock(run.replies).remove(&late)
                    {
                        let _ = reply.send(Err(Refused::Fault(run.loaded.fault_deadline())));
                    }
                }
                asked = false;
            }
            Some(task) = done.recv() => {
                if let Some(task) = task {
                    guest.with(|mut store| store.data_mut().tasks.remove(&task));
                }
                asked = false;
            }
            Some(job) = jobs.recv() => {
                served += 1;
                if let Some(started) = take(guest, handler, job, &mut next_key, run) {
                    running.push(finish(guest, handler, started, run));
                }
                asked = false;
            }
            () = std::future::poll_fn(|cx| guest.poll_no_interesting_tasks(cx)), if running.is_empty() && !asked && !retiring => {
                if workers.retire(id, places, capacity) {
                    return Ok(Ended::Served(served));
                }
                asked = true;
            }
            // Nothing can reach it any more: it ends once its guest is quiet.
            else => {
                std::future::poll_fn(|cx| guest.poll_no_interesting_tasks(cx)).await;
                return Ok(if retiring { Ended::Retired } else { Ended::Served(served) });
            }
        }
    }
}

/// Starts `job` as a task of the instance: its request in the guest's
/// table, its context by its task, the instance's deadline raised to its
/// own. A request that cannot start is answered here.
fn take(guest: &Accessor<Host>, handler: Handler, job: Job, next_key: &mut u64, run: &Run<'_>) -> Option<Started> {
    let Job { pending, mut held } = job;
    let Pending {
        request,
        cx,
        span,
        reply,
    } = pending;
    let deadline = cx.deadline;
    let started = guest.with(|mut store| -> wasmtime::Result<_> {
        let hooks = store.data_mut().http().hooks;
        let (request, io) = p3::Request::from_http(hooks, request);
        // Boxed: the future is 'static, but its type names the hooks' borrow.
        let io: RequestIo = Box::pin(io);
        let request = store.data_mut().http().table.push(request)?;
        let call = handler.start_call_concurrent(store.as_context_mut(), (request,))?;
        let data = store.data_mut();
        data.tasks.insert(call.task(), cx);
        // The epoch deadline stops a spinning guest at the latest deadline
        // of the requests it has.
        data.cx.deadline = data.cx.deadline.max(deadline);
        Ok((call, io))
    });
    let (call, io) = match started {
        Ok(started) => started,
        Err(e) => {
            let _ = reply.send(Err(Refused::Fault(
                run.loaded.fault_host(format!("cannot start the request: {e:#}")),
            )));
            return None;
        }
    };
    held.task = Some(call.task());
    let mut until = lock(run.latest);
    *until = (*until).max(deadline);
    drop(until);
    let key = *next_key;
    *next_key += 1;
    lock(run.replies).insert(key, reply);
    Some(Started {
        call,
        io,
        key,
        deadline,
        span,
        held,
    })
}

/// Runs one request until its guest task answers, and sends its answer
/// (`Ok(None)`), or until its deadline passes (`Ok(Some(key))`: the
/// caller answers it). An error is the instance's: it fails every request
/// on it.
async fn finish(
    guest: &Accessor<Host>,
    handler: Handler,
    started: Started,
    run: &Run<'_>,
) -> wasmtime::Result<Option<u64>> {
    let Started {
        call,
        io,
        key,
        deadline,
        span,
        held,
    } = started;
    let response = async {
        let (answer,) = handler.finish_call_concurrent(guest, call).await?;
        wasmtime::error::Ok(match answer {
            Ok(response) => Ok(guest.with(|mut store| -> wasmtime::Result<_> {
                let response = store.data_mut().http().table.delete(response)?;
                response.into_http(&mut store, io)
            })?),
            Err(code) => Err(code),
        })
    };
    let answered = tokio::time::timeout_at(deadline.into(), response.instrument(span)).await;
    let reply = |answer: Answer| {
        if let Some(reply) = lock(run.replies).remove(&key) {
            let _ = reply.send(answer);
        }
    };
    let loaded = run.loaded;
    match answered {
        Err(_) => Ok(Some(key)),
        Ok(Err(e)) => Err(e),
        Ok(Ok(Err(code))) => {
            reply(Err(Refused::Fault(
                loaded.fault_host(format!("responded with error code {code:?}")),
            )));
            Ok(None)
        }
        Ok(Ok(Ok(response))) => {
            let verdict = run.verdict.clone();
            let component = loaded.name.clone();
            let response = response
                .map(|body| Finishing::shared(body, verdict, (component, deadline), Box::new(held)).boxed_unsync());
            reply(Ok(response));
            Ok(None)
        }
    }
}
