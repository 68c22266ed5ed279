//! The serving side of remote links: a service that answers other hosts'
//! link calls to the components this host runs.
//!
//! For every component here that some link targets, it subscribes to one
//! subject per linked function (`subjects::rpc`), in a queue group
//! named after the subject, so replicas share the load. A request's payload
//! is the wire encoding of the arguments (reassembled if chunked); the call
//! continues the caller's trace, under a `binding` span (medium `rpc`) that
//! is the child of the caller's `link` span, and keeps its deadline. The
//! answer is the
//! wire encoding of the results, or a typed fault (JSON body, error headers).

use super::medium::{Service, binding_span, fault_reply, publish_error, shed_at_capacity, subscription_limit};
use super::serve::{flush_briefly, registered, serve_subscription};
use crate::codec::wire;
use crate::links::chunks;
use crate::links::remote::{Lattice, TRACEPARENT_HEADER, deadline_from_header};
use crate::manifest::subject::{ReplyRule, allow_reply};
use crate::metrics::Calls;
use crate::runtime::Runtime;
use crate::runtime::component::Callee;
use crate::runtime::context::CallContext;
use crate::runtime::dispatch::FunctionRef;
use crate::runtime::fault::{Fault, FaultKind};
use crate::runtime::trace;
use async_nats::HeaderMap;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wasmtime::component::types::Type;

/// One subject's function, and its metrics.
struct Route {
    target: FunctionRef,
    calls: Calls,
}

/// Serves the linked exports of the components on this host.
pub struct LinkServer {
    client: async_nats::Client,
    app: Arc<str>,
    subscribers: Vec<(String, async_nats::Subscriber)>,
    routes: Arc<HashMap<String, Route>>,
    runtime: Arc<Runtime>,
    replies: Arc<ReplyRule>,
}

impl LinkServer {
    /// Subscribes to every `(component, interface)` in `exports` of `app`, one
    /// subject per function, each in a queue group named after its subject.
    pub async fn bind(
        lattice: &Lattice,
        app: &str,
        runtime: Arc<Runtime>,
        exports: &[(String, String)],
    ) -> anyhow::Result<LinkServer> {
        let mut routes = HashMap::new();
        let mut subscribers = Vec::new();
        for (component, interface) in exports {
            let Some(loaded) = runtime.get(component) else { continue };
            for function in loaded.function_names(interface) {
                let subject = crate::subjects::rpc(&lattice.name, app, component, interface, &function);
                if routes.contains_key(&subject) {
                    continue;
                }
                let subscriber = lattice
                    .client()
                    .queue_subscribe(subject.clone(), subject.clone())
                    .await?;
                subscribers.push((subject.clone(), subscriber));
                let route = Route {
                    target: FunctionRef::new(component, interface, &function),
                    calls: Calls::new(app, component, "link"),
                };
                routes.insert(subject, route);
            }
        }
        // The server has the subscriptions before this host says it serves:
        // a caller on another connection that reads "ready" finds a responder.
        if !subscribers.is_empty() {
            registered(&lattice.client(), "link subscriptions").await;
        }
        Ok(LinkServer {
            client: lattice.client(),
            app: Arc::from(app),
            subscribers,
            routes: Arc::new(routes),
            runtime,
            replies: Arc::new(ReplyRule::lattice(&lattice.name)),
        })
    }
}

impl Service for LinkServer {
    fn describe(&self) -> String {
        let mut components: Vec<&str> = self.routes.values().map(|r| &*r.target.component).collect();
        components.sort();
        components.dedup();
        format!(
            "lattice rpc for {} ({} functions)",
            components.join(", "),
            self.routes.len()
        )
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let (client, routes, runtime, app) = (&self.client, &self.routes, &self.runtime, &self.app);
            let replies = &self.replies;
            let serving = self.subscribers.into_iter().map(|(subject, subscriber)| {
                let component = routes
                    .get(&subject)
                    .map_or_else(|| Arc::from("?"), |r| r.target.component.clone());
                let limit = subscription_limit(runtime, &component);
                let handle = move |message| {
                    let (client, routes, runtime, app) = (client.clone(), routes.clone(), runtime.clone(), app.clone());
                    let replies = replies.clone();
                    async move { answer(&client, &routes, &runtime, (&app, &replies), message).await }
                };
                let shed = move |message| {
                    let component = component.clone();
                    async move { shed_at_capacity(client, message, &component, limit, replies).await }
                };
                serve_subscription(
                    subscriber,
                    shutdown.clone(),
                    format!("lattice rpc {subject}"),
                    limit,
                    handle,
                    shed,
                )
            });
            futures::future::join_all(serving).await;
            flush_briefly(&self.client).await;
            Ok(())
        })
    }
}

async fn answer(
    client: &async_nats::Client,
    routes: &HashMap<String, Route>,
    runtime: &Runtime,
    (app, replies): (&str, &ReplyRule),
    message: async_nats::Message,
) {
    let Some(reply) = message.reply.clone() else { return };
    if !allow_reply(replies, &reply, &format_args!("lattice rpc {}", message.subject)) {
        return;
    }
    let Some(Route { target, calls }) = routes.get(message.subject.as_str()) else {
        return;
    };
    let span = binding_span(
        "rpc",
        app,
        &target.component,
        &format_args!("{}#{}", target.interface, target.function),
    );
    trace::set_attributes(&span, || {
        [("messaging.destination.name", message.subject.to_string().into())]
    });
    answer_in(client, runtime, (target, calls), message, reply, &span)
        .instrument(span.clone())
        .await;
}

/// [`answer`] under the serving span `span`.
async fn answer_in(
    client: &async_nats::Client,
    runtime: &Runtime,
    (target, calls): (&FunctionRef, &Calls),
    message: async_nats::Message,
    reply: async_nats::Subject,
    span: &tracing::Span,
) {
    let started = Instant::now();
    let headers = message.headers.as_ref();
    let timeout = runtime
        .get(&target.component)
        .map_or(Duration::from_secs(30), |c| c.timeout);
    // The caller's deadline, but never past the component's own timeout: a
    // peer cannot make this host hold a call (or a reassembly) longer.
    let own = Instant::now() + timeout;
    let deadline = deadline_from_header(headers).map_or(own, |theirs| theirs.min(own));
    let (reply, result) = match chunks::receive(client, &message, reply, deadline).await {
        Ok((payload, reply)) => (reply, serve(runtime, target, headers, &payload, (deadline, span)).await),
        Err((reply, message)) => (
            reply,
            Err(Fault::new(target.component.clone(), FaultKind::Decode { message })),
        ),
    };
    // The instance is dropped only after the answer is sent, unless the
    // answer goes in chunks: the caller pulls those at its own pace, and
    // must not hold an instance slot meanwhile.
    calls.record(started, result.as_ref().err().map(|f| f.kind.name()));
    let sent = match result {
        Ok((bytes, instance)) => {
            if bytes.len() > chunks::chunk_limit(client) {
                drop(instance);
            }
            chunks::respond(client, reply, bytes.into(), deadline).await
        }
        Err(fault) => {
            tracing::debug!("rpc {}: {fault}", message.subject);
            trace::set_failed(span, &fault);
            publish_error(client, reply, fault_reply(&fault)).await
        }
    };
    if let Err(e) = sent {
        tracing::warn!("rpc {}: cannot reply: {e}", message.subject);
    }
}

/// Decodes the arguments, calls `target` by `deadline` under the serving
/// `span` (the caller's `traceparent` its parent), encodes the results; also
/// hands back the instance, to drop after answering.
async fn serve(
    runtime: &Runtime,
    target: &FunctionRef,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    (deadline, span): (Instant, &tracing::Span),
) -> Result<(Vec<u8>, Callee), Fault> {
    let loaded = runtime
        .get(&target.component)
        .ok_or_else(|| Fault::new(target.component.clone(), FaultKind::NoResponders))?;
    let func = loaded
        .function(&target.interface, &target.function)
        .ok_or_else(|| loaded.fault_host(format!("no export `{}#{}`", target.interface, target.function)))?;
    let params: Vec<Type> = func.params().map(|(_, t)| t).collect();
    let results: Vec<Type> = func.results().collect();
    let args = wire::decode(&params, payload)
        .map_err(|e| Fault::new(target.component.clone(), FaultKind::Decode { message: e.to_string() }))?;
    let traceparent = headers.and_then(|h| h.get(TRACEPARENT_HEADER)).map(|v| v.as_str());
    let cx = CallContext::from_traceparent(deadline, traceparent);
    let cx = if span.is_disabled() { cx } else { cx.under(span) };
    let (values, instance) = runtime.call(target, &args, cx).await?;
    let bytes = wire::encode(&results, &values).map_err(|e| loaded.fault_host(e.to_string()))?;
    Ok((bytes, instance))
}
