//! The dispatcher: where a call from a medium or a remote link meets a
//! component instance.
//!
//! Every call goes the same way: `Runtime::enter` takes the current
//! generation, bounds the caller's [`CallContext`] by the component's own
//! timeout and opens the call's span (`call`, with the trace id, a child of
//! the span the context runs under: see [`super::trace`]); the instance comes
//! from [`acquire`] (fresh, or parked with `reuse`) and goes back when its
//! [`Callee`] is dropped. [`Runtime::call`] runs a function with dynamic
//! values, [`Runtime::call_json`] wraps it for the JSON media, and
//! [`Runtime::handle_http`] runs `wasi:http/incoming-handler` (WASI 0.2) or
//! `wasi:http/handler` (WASI 0.3), whichever the component exports; a 0.3
//! component with `concurrency` shares its instances between requests
//! (see [`super::shared`]).
//! Transports never touch wasmtime.

use super::Runtime;
use super::component::{Callee, Generation, Loaded, acquire};
use super::context::CallContext;
use super::fault::{CallError, Fault};
use super::trace;
use super::verdict::{Finishing, Verdict};
use crate::codec::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument as _;
use wasmtime::component::Val;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3;
use wasmtime_wasi_http::p3::bindings::http::types as p3_types;

/// One exported function of one component: what function-level media and
/// remote links call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionRef {
    /// The component, by manifest name.
    pub component: Arc<str>,
    /// The exported interface, `pkg:ns/iface@version`.
    pub interface: String,
    /// The function.
    pub function: String,
}

impl FunctionRef {
    /// `export` (`interface#function`) of `component`.
    pub fn parse(component: &str, export: &str) -> Option<FunctionRef> {
        let (interface, function) = crate::manifest::split_export(export)?;
        Some(FunctionRef::new(component, interface, function))
    }

    /// `interface#function` of `component`.
    pub fn new(component: &str, interface: &str, function: &str) -> FunctionRef {
        FunctionRef {
            component: Arc::from(component),
            interface: interface.to_string(),
            function: function.to_string(),
        }
    }
}

impl std::fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}#{}", self.component, self.interface, self.function)
    }
}

/// A call on its way in: the versions it runs on, its bounded context and span.
struct Entry {
    generation: Arc<Generation>,
    loaded: Arc<Loaded>,
    cx: CallContext,
    span: tracing::Span,
}

impl Entry {
    /// An instance for this call, fresh or reused.
    async fn instance(&self) -> Result<Callee, Fault> {
        acquire(&self.generation, &self.loaded.name, &self.cx, 0).await
    }
}

impl Runtime {
    /// The start of every call into component `name`: `cx` bounded by the
    /// component's timeout, in the current generation.
    /// `interface` and `function` name what is called.
    fn enter(
        &self,
        name: &str,
        cx: CallContext,
        medium: &'static str,
        (interface, function): (&str, &str),
    ) -> Result<Entry, Fault> {
        let generation = self.generation();
        let loaded = generation.get(name).cloned().ok_or_else(|| Fault::not_running(name))?;
        let bounded = cx.until(Instant::now() + loaded.timeout);
        let (span, cx) = super::context::open_call(&bounded, medium, name, (interface, function, &loaded.digest));
        Ok(Entry {
            generation,
            loaded,
            cx,
            span,
        })
    }

    /// Calls `target` with dynamic values as part of call chain `cx` (a
    /// caller's deadline and trace; the component's own timeout still
    /// applies). Hands back the used instance too: a caller that drops it
    /// only after it has sent its answer keeps the teardown (returning the
    /// instance's memory to the pool) off the answer's path.
    pub async fn call(
        &self,
        target: &FunctionRef,
        params: &[Val],
        cx: CallContext,
    ) -> Result<(Vec<Val>, Callee), Fault> {
        let entry = self.enter(&target.component, cx, "call", (&target.interface, &target.function))?;
        tracing::debug!(parent: &entry.span, "{}#{}", target.interface, target.function);
        let call = async {
            let mut instance = entry.instance().await?;
            let results = instance.invoke(&target.interface, &target.function, params).await?;
            Ok((results, instance))
        }
        .instrument(entry.span.clone());
        // The epoch deadline stops running wasm; this also stops a guest
        // parked in a host call.
        let result = tokio::time::timeout_at(entry.cx.deadline.into(), call)
            .await
            .unwrap_or_else(|_| Err(entry.loaded.fault_deadline()));
        if let Err(fault) = &result {
            trace::set_failed(&entry.span, fault);
        }
        result
    }

    /// Calls `target` with a JSON object of parameters; answers the JSON of
    /// the result. The mapping is driven by the function's own types (see
    /// [`crate::codec::json`]).
    pub async fn call_json(
        &self,
        target: &FunctionRef,
        body: &[u8],
        cx: CallContext,
    ) -> Result<serde_json::Value, CallError> {
        let loaded = self
            .get(&target.component)
            .ok_or_else(|| Fault::not_running(&target.component))?;
        let func = loaded.function(&target.interface, &target.function).ok_or_else(|| {
            loaded.fault_host(format!(
                "no exported function `{}#{}`",
                target.interface, target.function
            ))
        })?;
        let params = json::params_from_json(func, body)?;
        let (results, _instance) = self.call(target, &params, cx).await?;
        Ok(json::results_to_json(&results))
    }

    /// Starts an instance of component `name` that lives until `cx`'s
    /// deadline and can be called many times ([`Callee::invoke`]).
    pub async fn start_instance(&self, name: &str, cx: &CallContext) -> Result<Callee, Fault> {
        acquire(&self.generation(), name, cx, 0).await
    }

    /// Serves one HTTP request with component `name`'s
    /// `wasi:http/incoming-handler`, as part of call chain `cx` (the medium
    /// reads the request's `traceparent`); `tls` says whether it arrived
    /// over TLS (the guest sees scheme `https`). The response may still be
    /// streaming its body from the guest when this returns.
    pub async fn handle_http<B>(
        &self,
        name: &str,
        request: hyper::Request<B>,
        tls: bool,
        cx: CallContext,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Fault>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let entry = self.enter(name, cx, "http", (HTTP_HANDLER, "handle"))?;
        let span = entry.span.clone();
        let scheme = if tls { Scheme::Https } else { Scheme::Http };
        let result = self.run_http(entry, request, scheme).await;
        if let Err(fault) = &result {
            trace::set_failed(&span, fault);
        }
        result
    }

    async fn run_http<B>(
        &self,
        entry: Entry,
        request: hyper::Request<B>,
        scheme: Scheme,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Fault>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let loaded = entry.loaded.clone();
        if !loaded.is_proxy() {
            return Err(loaded.fault_host("does not export wasi:http/incoming-handler".into()));
        }
        tracing::debug!(parent: &entry.span, "{} {}", request.method(), request.uri().path());
        if loaded.concurrency() > 1 {
            use http_body_util::BodyExt as _;
            let request = request.map(|body| body.map_err(Into::into).boxed_unsync());
            let request = with_scheme_and_authority(request, scheme);
            let generation = entry.generation.clone();
            return super::shared::handle(&generation, &loaded, request, (entry.cx, entry.span)).await;
        }
        let deadline = entry.cx.deadline;
        let instance = tokio::time::timeout_at(deadline.into(), entry.instance().instrument(entry.span.clone()))
            .await
            .unwrap_or_else(|_| Err(loaded.fault_deadline()))?;
        if loaded.is_p3_handler() {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            let run = guest_run_p3(instance, (request, scheme), sender, entry.span);
            return await_response(&loaded, deadline, run, receiver).await;
        }
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let run = guest_run(instance, (request, scheme), sender, entry.span)?;
        await_response(&loaded, deadline, run, receiver).await
    }
}

/// The interface the `http` medium calls.
const HTTP_HANDLER: &str = "wasi:http/incoming-handler";

/// What a guest answers: a response, or the error code it failed with
/// (WASI 0.2's or 0.3's type).
type Response<E = wasmtime_wasi_http::p2::bindings::http::types::ErrorCode> =
    Result<hyper::Response<HyperOutgoingBody>, E>;

/// The guest's run of one HTTP request, as a [`GuestRun`]. A request refused
/// before the guest runs (e.g. no host) fails here, and the instance goes
/// back as good as it was.
fn guest_run<B>(
    mut instance: Callee,
    (request, scheme): (hyper::Request<B>, Scheme),
    sender: tokio::sync::oneshot::Sender<Response>,
    span: tracing::Span,
) -> Result<GuestRun, Fault>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let loaded = instance.target().clone();
    let (store, _) = instance.begin();
    let resources = store
        .data_mut()
        .http()
        .new_incoming_request(scheme, request)
        .and_then(|request| Ok((request, store.data_mut().http().new_response_outparam(sender)?)));
    let (request, out) = match resources {
        Ok(resources) => resources,
        Err(e) => {
            instance.finished();
            return Err(loaded.fault_host(e.to_string()));
        }
    };
    let component = loaded.name.clone();
    let run = async move {
        let (store, handle) = instance.begin();
        let handler = match &loaded.proxy_indices {
            Some(indices) => indices.load(&mut *store, &handle)?,
            None => wasmtime_wasi_http::p2::bindings::Proxy::new(&mut *store, &handle)?,
        };
        handler
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, request, out)
            .await?;
        instance.finished();
        // Dropping the instance here parks it (with `reuse`) before the
        // client has the response, when the guest returned first.
        drop(instance);
        Ok(())
    };
    Ok(GuestRun::new(component, Box::pin(run.instrument(span))))
}

/// The guest's run of one HTTP request through WASI 0.3's
/// `wasi:http/handler`, as a [`GuestRun`]: the handler's call is a task of
/// the store's event loop, which keeps running (in this run) until the
/// guest has written its whole body, as the 0.2 run does.
fn guest_run_p3<B>(
    mut instance: Callee,
    (request, scheme): (hyper::Request<B>, Scheme),
    sender: tokio::sync::oneshot::Sender<Response<p3_types::ErrorCode>>,
    span: tracing::Span,
) -> GuestRun
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let loaded = instance.target().clone();
    let component = loaded.name.clone();
    let request = with_scheme_and_authority(request, scheme);
    let run = async move {
        let (store, handle) = instance.begin();
        let Some(indices) = &loaded.service else {
            wasmtime::bail!("does not export wasi:http/handler@0.3");
        };
        let service = indices.load(&mut *store, &handle)?;
        store
            .run_concurrent(async move |guest| -> wasmtime::Result<()> {
                let (request, request_io) = guest.with(|mut store| {
                    let hooks = store.data_mut().http().hooks;
                    let (request, io) = p3::Request::from_http(hooks, request);
                    // Boxed: the future is 'static, but its type names the hooks' borrow.
                    let io: RequestIo = Box::pin(io);
                    (request, io)
                });
                let answer = match service.handle(guest, request).await? {
                    Ok(response) => Ok(guest.with(|mut store| response.into_http(&mut store, request_io))?),
                    Err(code) => Err(code),
                };
                let _ = sender.send(answer);
                // The body streams from tasks the guest left running.
                std::future::poll_fn(|cx| guest.poll_no_interesting_tasks(cx)).await;
                Ok(())
            })
            .await??;
        instance.finished();
        drop(instance);
        Ok(())
    };
    GuestRun::new(component, Box::pin(run.instrument(span)))
}

/// What carries a WASI 0.3 request's body to the guest, and reports its errors.
type RequestIo = Pin<Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>>;

/// `request` with an absolute URI, as WASI 0.3 reads scheme and authority
/// from it: the scheme it arrived by, and the authority of its URI (HTTP/2)
/// or `Host` header (HTTP/1.1), when that is a valid one.
fn with_scheme_and_authority<B>(request: hyper::Request<B>, scheme: Scheme) -> hyper::Request<B> {
    let (mut parts, body) = request.into_parts();
    let authority = parts.uri.authority().cloned().or_else(|| {
        let host = parts.headers.get(hyper::header::HOST)?.to_str().ok()?;
        host.parse::<hyper::http::uri::Authority>().ok()
    });
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    if let Some(authority) = authority {
        uri.scheme = Some(match scheme {
            Scheme::Https => hyper::http::uri::Scheme::HTTPS,
            _ => hyper::http::uri::Scheme::HTTP,
        });
        uri.authority = Some(authority);
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(hyper::http::uri::PathAndQuery::from_static("/"));
        }
    }
    parts.uri = hyper::Uri::from_parts(uri).unwrap_or_default();
    hyper::Request::from_parts(parts, body)
}

/// Waits for the guest to set its response (or fail, or reach `deadline`).
///
/// The guest runs in this task until it has set the response and then until
/// it next waits: a handler that writes its body and returns (the usual case)
/// is finished by then. A guest that keeps streaming its body, or whose
/// client went away, finishes in a task of its own (see [`GuestRun`]).
async fn await_response<E: std::fmt::Debug>(
    loaded: &Loaded,
    deadline: Instant,
    mut run: GuestRun,
    mut receiver: tokio::sync::oneshot::Receiver<Response<E>>,
) -> Result<hyper::Response<HyperOutgoingBody>, Fault> {
    run.deadline = deadline;
    let first = tokio::time::timeout_at(deadline.into(), async {
        tokio::select! {
            response = &mut receiver => Ok(response),
            finished = &mut run => Err(finished),
        }
    });
    let no_response = |finished: wasmtime::Result<()>| match finished {
        Ok(()) => loaded.fault_host("returned without setting a response".into()),
        Err(e) => loaded.classify(e),
    };
    let response = match first.await {
        Ok(Ok(Ok(response))) => response,
        // The response outparam was dropped unset: the guest says why.
        Ok(Ok(Err(_))) => {
            return Err(match tokio::time::timeout_at(deadline.into(), &mut run).await {
                Ok(finished) => no_response(finished),
                Err(_) => {
                    run.cancel();
                    loaded.fault_deadline()
                }
            });
        }
        // The guest returned: it set the response first, or failed.
        Ok(Err(finished)) => match receiver.try_recv() {
            Ok(response) => {
                run.report(finished);
                response
            }
            Err(_) => return Err(no_response(finished)),
        },
        // The epoch deadline stops running wasm; this also stops a guest
        // parked in a host call (e.g. waiting on a request body). The
        // guest is dropped here, so its instance slot is free by the
        // time the client sees the 504.
        Err(_) => {
            run.cancel();
            return Err(loaded.fault_deadline());
        }
    };
    if let std::task::Poll::Ready(finished) = futures::poll!(&mut run) {
        run.report(finished);
    }
    let verdict = run.verdict.clone();
    response
        .map(|response| response.map(|body| http_body_util::BodyExt::boxed_unsync(Finishing::new(body, verdict))))
        .map_err(|code| loaded.fault_host(format!("responded with error code {code:?}")))
}

type BoxedRun = Pin<Box<dyn Future<Output = wasmtime::Result<()>> + Send>>;

/// A guest's run of one HTTP request. Polled, it runs the guest; dropped
/// before the guest is done (it still streams its body, or the client went
/// away), it finishes in a task of its own, within the request's deadline,
/// as the guest would have had it run to the end. [`GuestRun::cancel`] stops
/// it instead. How it ended is its [`Verdict`], which the response body
/// waits for at its end.
struct GuestRun {
    component: Arc<str>,
    deadline: Instant,
    run: Option<BoxedRun>,
    verdict: Arc<Verdict>,
}

impl GuestRun {
    fn new(component: Arc<str>, run: BoxedRun) -> GuestRun {
        GuestRun {
            component,
            deadline: Instant::now(),
            run: Some(run),
            verdict: Arc::default(),
        }
    }

    /// Drops the guest where it is.
    fn cancel(&mut self) {
        self.verdict.settle(false);
        self.run = None;
    }

    /// Logs a failure that came after the response was set: the client has
    /// its status already, and perhaps a cut body.
    fn report(&self, finished: wasmtime::Result<()>) {
        if let Err(e) = finished {
            tracing::warn!(component = &*self.component, "failed after its response: {e:#}");
        }
    }
}

impl Future for GuestRun {
    type Output = wasmtime::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let Some(run) = self.run.as_mut() else {
            return std::task::Poll::Ready(Ok(()));
        };
        let finished = std::task::ready!(run.as_mut().poll(cx));
        self.run = None;
        self.verdict.settle(finished.is_ok());
        std::task::Poll::Ready(finished)
    }
}

impl Drop for GuestRun {
    fn drop(&mut self) {
        let Some(mut run) = self.run.take() else {
            return;
        };
        let Ok(tokio) = tokio::runtime::Handle::try_current() else {
            self.verdict.settle(false);
            return;
        };
        let (component, deadline, verdict) = (self.component.clone(), self.deadline, self.verdict.clone());
        tokio.spawn(async move {
            let ended = tokio::time::timeout_at(deadline.into(), &mut run).await;
            // Settled before the guest is dropped: dropping it closes its
            // body stream, which must not read as the body's end.
            verdict.settle(matches!(ended, Ok(Ok(()))));
            drop(run);
            let cut = match ended {
                Ok(Ok(())) => return,
                Ok(Err(e)) => {
                    tracing::warn!(component = &*component, "failed after its response: {e:#}");
                    "fault"
                }
                Err(_) => {
                    tracing::warn!(component = &*component, "stopped at its deadline after its response");
                    "deadline"
                }
            };
            super::verdict::count_cut(&component, cut);
        });
    }
}
