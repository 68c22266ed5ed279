//! Remote links: an import served by a component on another host, over NATS.
//!
//! Caller side ([`define_remote`]): the import's host function encodes the
//! arguments with the wire codec, sends a NATS request to the function's
//! subject with the caller's deadline in a header, and decodes the reply.
//! No responders is an immediate [`FaultKind::NoResponders`]; a slow target
//! fails at the deadline; a fault on the remote host comes back typed.
//!
//! Serving side ([`RpcServer`]): each host subscribes, for every component it
//! runs that some link targets, to one subject per linked function, in a
//! queue group named after the subject, so replicas share the load.
//!
//! Subjects: `membrane.<lattice>.rpc.v1.<component>.<interface>.<function>`,
//! with `.` in the interface escaped as `%2E` (and `%` as `%25`).

use super::chunks;
use crate::codec::wire;
use crate::runtime::Runtime;
use crate::runtime::context::CallContext;
use crate::runtime::fault::{Fault, FaultKind};
use crate::runtime::state::HostState;
use crate::transports::Medium;
use crate::transports::nats::ERROR_KIND_HEADER;
use async_nats::HeaderMap;
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use wasmtime::component::types::{ComponentInstance, ComponentItem, Type};
use wasmtime::component::{Linker, Val};
use wasmtime::{Engine, Result};

/// Header carrying the caller's deadline, in Unix milliseconds.
pub const DEADLINE_HEADER: &str = "Membrane-Deadline";
/// Header naming the component a remote fault happened in.
pub const COMPONENT_HEADER: &str = "Membrane-Component";

/// The subject of one linked function.
pub fn subject(lattice: &str, component: &str, interface: &str, function: &str) -> String {
    let interface = interface.replace('%', "%25").replace('.', "%2E");
    format!("membrane.{lattice}.rpc.v1.{component}.{interface}.{function}")
}

/// Where a remote link sends its calls.
#[derive(Clone)]
pub struct Lattice {
    /// The host's NATS connection.
    pub client: async_nats::Client,
    /// The lattice name, the subjects' namespace.
    pub name: String,
}

struct RemoteFunc {
    lattice: Lattice,
    /// The link's own deadline (`timeout_ms`), if it sets one.
    timeout: Option<Duration>,
    subject: String,
    target: Arc<str>,
    params: Vec<Type>,
    results: Vec<Type>,
}

/// Defines every function of `interface` (typed `import`) in `linker` as a
/// NATS request to component `target` on whichever host runs it.
pub fn define_remote(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    interface: &str,
    import: &ComponentInstance,
    target: Arc<str>,
    lattice: &Lattice,
    timeout: Option<Duration>,
) -> Result<()> {
    let mut root = linker.root();
    let mut instance = root.instance(interface)?;
    for (name, item) in import.exports(engine) {
        let ComponentItem::ComponentFunc(func) = item.ty else {
            continue;
        };
        let remote = Arc::new(RemoteFunc {
            lattice: lattice.clone(),
            timeout,
            subject: subject(&lattice.name, &target, interface, name),
            target: target.clone(),
            params: func.params().map(|(_, t)| t).collect(),
            results: func.results().collect(),
        });
        instance.func_new_async(name, move |store, _ty, params, results| {
            let remote = remote.clone();
            let cx = store.data().cx.clone();
            Box::new(async move { remote.call(&cx, params, results).await.map_err(wasmtime::Error::from) })
        })?;
    }
    Ok(())
}

impl RemoteFunc {
    async fn call(&self, cx: &CallContext, params: &[Val], results: &mut [Val]) -> Result<(), Fault> {
        let deadline = match self.timeout {
            Some(timeout) => cx.deadline.min(Instant::now() + timeout),
            None => cx.deadline,
        };
        let fault = |kind| Fault {
            component: self.target.clone(),
            kind,
        };
        let payload = wire::encode(&self.params, params).map_err(|e| fault(FaultKind::Decode(e.message)))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(fault(FaultKind::Deadline(Duration::ZERO)));
        }
        let mut headers = HeaderMap::new();
        headers.insert(DEADLINE_HEADER, unix_millis(deadline).to_string().as_str());
        headers.insert("traceparent", cx.traceparent().as_str());
        let reply = chunks::request(
            &self.lattice.client,
            self.subject.clone(),
            headers,
            payload.into(),
            deadline,
        )
        .await
        .map_err(|e| {
            fault(match e {
                chunks::Failure::NoResponders => FaultKind::NoResponders,
                chunks::Failure::TimedOut => FaultKind::Deadline(remaining),
                chunks::Failure::Other(message) => FaultKind::Host(message),
            })
        })?;
        if let Some(headers) = &reply.headers
            && let Some(kind) = headers.get(ERROR_KIND_HEADER)
        {
            let text = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
            return Err(Fault {
                component: text(COMPONENT_HEADER).map_or(self.target.clone(), Arc::from),
                kind: FaultKind::Remote {
                    kind: kind.as_str().to_string(),
                    message: text("Nats-Service-Error").unwrap_or_else(|| "remote error".into()),
                },
            });
        }
        let values =
            wire::decode(&self.results, &reply.payload).map_err(|e| fault(FaultKind::Decode(e.to_string())))?;
        for (slot, value) in results.iter_mut().zip(values) {
            *slot = value;
        }
        Ok(())
    }
}

fn unix_millis(deadline: Instant) -> u128 {
    let wall = SystemTime::now() + deadline.saturating_duration_since(Instant::now());
    wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn deadline_from_header(headers: Option<&HeaderMap>) -> Option<Instant> {
    let millis: u64 = headers?.get(DEADLINE_HEADER)?.as_str().parse().ok()?;
    let wall = UNIX_EPOCH + Duration::from_millis(millis);
    let left = wall.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    Some(Instant::now() + left)
}

/// One served function.
struct Route {
    component: Arc<str>,
    interface: String,
    function: String,
}

/// Serves the linked exports of the components on this host.
pub struct RpcServer {
    client: async_nats::Client,
    subscribers: Vec<async_nats::Subscriber>,
    routes: Arc<HashMap<String, Route>>,
    runtime: Arc<Runtime>,
}

impl RpcServer {
    /// Subscribes to every `(component, interface)` in `exports`, one subject
    /// per function, each in a queue group named after its subject.
    pub async fn bind(
        lattice: &Lattice,
        runtime: Arc<Runtime>,
        exports: &[(String, String)],
    ) -> anyhow::Result<RpcServer> {
        let mut routes = HashMap::new();
        let mut subscribers = Vec::new();
        for (component, interface) in exports {
            let Some(loaded) = runtime.get(component) else { continue };
            for function in loaded.function_names(interface) {
                let subject = subject(&lattice.name, component, interface, &function);
                if routes.contains_key(&subject) {
                    continue;
                }
                subscribers.push(lattice.client.queue_subscribe(subject.clone(), subject.clone()).await?);
                routes.insert(
                    subject,
                    Route {
                        component: Arc::from(component.as_str()),
                        interface: interface.clone(),
                        function,
                    },
                );
            }
        }
        Ok(RpcServer {
            client: lattice.client.clone(),
            subscribers,
            routes: Arc::new(routes),
            runtime,
        })
    }
}

impl Medium for RpcServer {
    fn describe(&self) -> String {
        let mut components: Vec<&str> = self.routes.values().map(|r| &*r.component).collect();
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
            let serving = self.subscribers.into_iter().map(|subscriber| {
                let (client, routes, runtime) = (self.client.clone(), self.routes.clone(), self.runtime.clone());
                let label = "lattice rpc".to_string();
                crate::transports::serve_subscription(subscriber, shutdown.clone(), label, move |message| {
                    let (client, routes, runtime) = (client.clone(), routes.clone(), runtime.clone());
                    async move { answer(&client, &routes, &runtime, message).await }
                })
            });
            futures::future::join_all(serving).await;
            let _ = self.client.flush().await;
            Ok(())
        })
    }
}

async fn answer(
    client: &async_nats::Client,
    routes: &HashMap<String, Route>,
    runtime: &Runtime,
    message: async_nats::Message,
) {
    let Some(reply) = message.reply.clone() else { return };
    let Some(route) = routes.get(message.subject.as_str()) else {
        return;
    };
    let headers = message.headers.as_ref();
    let timeout = runtime
        .get(&route.component)
        .map_or(Duration::from_secs(30), |c| c.timeout);
    let deadline = deadline_from_header(headers).unwrap_or_else(|| Instant::now() + timeout);
    let (reply, result) = match chunks::receive(client, &message, reply, deadline).await {
        Ok((payload, reply)) => (reply, serve(runtime, route, headers, &payload, deadline).await),
        Err((reply, problem)) => (
            reply,
            Err(Fault {
                component: route.component.clone(),
                kind: FaultKind::Decode(problem),
            }),
        ),
    };
    // The instance is dropped only after the answer is sent.
    let sent = match result {
        Ok((bytes, _instance)) => chunks::respond(client, reply, bytes.into(), deadline).await,
        Err(fault) => {
            tracing::debug!("rpc {}: {fault}", message.subject);
            let (status, body) = crate::transports::fault_reply(&fault);
            let mut headers = crate::transports::nats::error_headers(status, &body);
            headers.insert(COMPONENT_HEADER, &*fault.component);
            client.publish_with_headers(reply, headers, bytes::Bytes::new()).await
        }
    };
    if let Err(e) = sent {
        tracing::warn!("rpc {}: cannot reply: {e}", message.subject);
    }
}

/// Decodes the arguments, calls the routed function, encodes the results;
/// also hands back the instance, to drop after answering.
async fn serve(
    runtime: &Runtime,
    route: &Route,
    headers: Option<&HeaderMap>,
    payload: &[u8],
    deadline: Instant,
) -> Result<(Vec<u8>, crate::links::Callee), Fault> {
    let loaded = runtime.get(&route.component).ok_or_else(|| Fault {
        component: route.component.clone(),
        kind: FaultKind::NoResponders,
    })?;
    let func = loaded
        .function(&route.interface, &route.function)
        .ok_or_else(|| loaded.fault_host(format!("no export `{}#{}`", route.interface, route.function)))?;
    let params: Vec<Type> = func.params().map(|(_, t)| t).collect();
    let results: Vec<Type> = func.results().collect();
    let args = wire::decode(&params, payload).map_err(|e| Fault {
        component: route.component.clone(),
        kind: FaultKind::Decode(e.to_string()),
    })?;
    let traceparent = headers.and_then(|h| h.get("traceparent")).map(|v| v.as_str());
    let cx = CallContext::from_traceparent(deadline, traceparent);
    tracing::debug!(trace_id = %cx.trace_id, "rpc {}#{} called", route.interface, route.function);
    let (values, instance) = runtime
        .call_keeping(&route.component, &route.interface, &route.function, &args, Some(cx))
        .await?;
    let bytes = wire::encode(&results, &values).map_err(|e| loaded.fault_host(e.to_string()))?;
    Ok((bytes, instance))
}
