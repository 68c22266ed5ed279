//! The dispatcher: where a call from a medium meets a component instance.
//!
//! Transports hand requests here and get back responses or a [`Fault`]; they
//! never touch wasmtime. Every call gets a fresh instance (Spin's model): its
//! own store, a deadline of the component's `timeout_ms`, the memory cap and
//! an instance permit; or, for a component with `reuse`, a healthy instance
//! parked by an earlier call (see `idle.rs`).

use super::Runtime;
use super::context::CallContext;
use super::fault::{CallError, Fault, FaultKind};
use super::idle::Idle;
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

impl Runtime {
    /// Serves one HTTP request with component `name`'s
    /// `wasi:http/incoming-handler`. The response may still be streaming its
    /// body from the guest when this returns.
    pub async fn handle_http(
        &self,
        name: &str,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Fault> {
        let generation = self.generation();
        let loaded = generation.get(name).cloned().ok_or_else(|| not_running(name))?;
        let Some(proxy) = loaded.proxy.clone() else {
            return Err(loaded.fault_host("does not export wasi:http/incoming-handler".into()));
        };
        let deadline = Instant::now() + loaded.timeout;
        let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok());
        let cx = CallContext::from_traceparent(deadline, traceparent);
        let span = tracing::info_span!("http", component = name, trace_id = %cx.trace_id);
        tracing::debug!(parent: &span, "{} {}", request.method(), request.uri().path());
        let (mut store, parked) = match loaded.idle.take(&generation, &cx) {
            Some(idle) => (idle.store, Some((idle.instance, idle.uses))),
            None => (super::new_store(self.engine(), &generation, &loaded, &cx)?, None),
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let resources = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .and_then(|request| Ok((request, store.data_mut().http().new_response_outparam(sender)?)));
        let (request, out) = match resources {
            Ok(resources) => resources,
            Err(e) => {
                // The request was refused before the guest ran (e.g. no
                // host): a parked instance is as good as it was.
                if let Some((instance, uses)) = parked {
                    loaded.idle.give_back(Idle { store, instance, uses });
                }
                return Err(loaded.fault_host(e.to_string()));
            }
        };

        // The guest runs in this task until it has set the response and
        // then until it next waits: a handler that writes its body and
        // returns (the usual case) is finished by then, and its instance is
        // back in the idle pool (with `reuse`) before the client has the
        // response. A guest that keeps streaming its body, or whose client
        // went away, finishes in a task of its own (see `GuestRun`).
        let guest = loaded.clone();
        let mut run = GuestRun::new(
            loaded.name.clone(),
            deadline,
            Box::pin(async move {
                let (instance, uses) = match parked {
                    Some(parked) => parked,
                    None => (proxy.instance_pre().instantiate_async(&mut store).await?, 0),
                };
                let handler = match &guest.proxy_indices {
                    Some(indices) => indices.load(&mut store, &instance)?,
                    None => wasmtime_wasi_http::p2::bindings::Proxy::new(&mut store, &instance)?,
                };
                handler
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await?;
                guest.idle.give_back(Idle {
                    store,
                    instance,
                    uses: uses + 1,
                });
                Ok(())
            }),
        );
        let mut receiver = receiver;
        let first = tokio::time::timeout_at(deadline.into(), async {
            tokio::select! {
                response = &mut receiver => Ok(response),
                finished = &mut run => Err(finished),
            }
        });
        let deadline_fault = || Fault {
            component: loaded.name.clone(),
            kind: FaultKind::Deadline(loaded.timeout),
        };
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
                        deadline_fault()
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
                return Err(deadline_fault());
            }
        };
        if let std::task::Poll::Ready(finished) = futures::poll!(&mut run) {
            run.report(finished);
        }
        match response {
            Ok(response) => Ok(response),
            Err(code) => Err(loaded.fault_host(format!("responded with error code {code:?}"))),
        }
    }

    /// Calls `function` of exported `interface` on an instance of component
    /// `name` (fresh, or a parked one with `reuse`) with dynamic values. Used
    /// by function-level media and benchmarks.
    pub async fn call(&self, name: &str, interface: &str, function: &str, params: &[Val]) -> Result<Vec<Val>, Fault> {
        self.call_until(name, interface, function, params, None).await
    }

    /// [`Runtime::call`] as part of a call chain `cx` (a remote caller's
    /// deadline and trace); the component's own timeout still applies.
    pub async fn call_until(
        &self,
        name: &str,
        interface: &str,
        function: &str,
        params: &[Val],
        cx: Option<CallContext>,
    ) -> Result<Vec<Val>, Fault> {
        let (results, _instance) = self.call_keeping(name, interface, function, params, cx).await?;
        Ok(results)
    }

    /// [`Runtime::call_until`], handing back the used instance. A caller that
    /// drops it only after it has sent its answer keeps the teardown
    /// (returning the instance's memory to the pool: madvise, TLB
    /// shootdowns) off the answer's path.
    pub async fn call_keeping(
        &self,
        name: &str,
        interface: &str,
        function: &str,
        params: &[Val],
        cx: Option<CallContext>,
    ) -> Result<(Vec<Val>, crate::links::Callee), Fault> {
        let generation = self.generation();
        let loaded = generation.get(name).cloned().ok_or_else(|| not_running(name))?;
        let own = Instant::now() + loaded.timeout;
        let cx = cx.map_or_else(|| CallContext::new(own), |cx| cx.until(own));
        let deadline = cx.deadline;
        let span = tracing::info_span!("call", component = name, trace_id = %cx.trace_id);
        let call = async {
            let mut instance = super::start_callee(self.engine(), &generation, name, &cx, 0).await?;
            let results = instance.invoke(interface, function, params).await?;
            Ok((results, instance))
        }
        .instrument(span);
        // The epoch deadline stops running wasm; this also stops a guest
        // parked in a host call.
        tokio::time::timeout_at(deadline.into(), call)
            .await
            .unwrap_or_else(|_| {
                Err(Fault {
                    component: loaded.name.clone(),
                    kind: FaultKind::Deadline(loaded.timeout),
                })
            })
    }
}

impl Runtime {
    /// Calls `interface#function` of component `name` with a JSON object of
    /// parameters; answers the JSON of the result. The JSON mapping is driven
    /// by the function's own types (see [`crate::codec::json`]).
    pub async fn call_json(
        &self,
        name: &str,
        interface: &str,
        function: &str,
        body: &[u8],
    ) -> Result<serde_json::Value, CallError> {
        let loaded = self.get(name).ok_or_else(|| not_running(name))?;
        let func = loaded
            .function(interface, function)
            .ok_or_else(|| loaded.fault_host(format!("no exported function `{interface}#{function}`")))?;
        let params = json::params_from_json(func, body)?;
        let results = self.call(name, interface, function, &params).await?;
        Ok(json::results_to_json(&results))
    }
}

fn not_running(name: &str) -> Fault {
    Fault {
        component: name.into(),
        kind: FaultKind::Host("is not running on this host".into()),
    }
}

type BoxedRun = Pin<Box<dyn Future<Output = wasmtime::Result<()>> + Send>>;

/// A guest's run of one HTTP request. Polled, it runs the guest; dropped
/// before the guest is done (it still streams its body, or the client went
/// away), it finishes in a task of its own, within the request's deadline,
/// as the guest would have had it run to the end. [`GuestRun::cancel`] stops
/// it instead.
struct GuestRun {
    component: Arc<str>,
    deadline: Instant,
    run: Option<BoxedRun>,
}

impl GuestRun {
    fn new(component: Arc<str>, deadline: Instant, run: BoxedRun) -> GuestRun {
        GuestRun {
            component,
            deadline,
            run: Some(run),
        }
    }

    /// Drops the guest where it is.
    fn cancel(&mut self) {
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
        std::task::Poll::Ready(finished)
    }
}

impl Drop for GuestRun {
    fn drop(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        let Ok(tokio) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (component, deadline) = (self.component.clone(), self.deadline);
        tokio.spawn(async move {
            match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(component = &*component, "failed after its response: {e:#}"),
                Err(_) => tracing::warn!(component = &*component, "stopped at its deadline after its response"),
            }
        });
    }
}
