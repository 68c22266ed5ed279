//! The two shapes of everything that answers calls on this host.
//!
//! - A [`Service`] is bound, then serves until shutdown: the inventory, the
//!   serving side of remote links and of forwarded routes, and every medium.
//! - A [`Medium`] is a service bound from a manifest binding: its spec (the
//!   binding's table), its checks of the manifest and against the component
//!   version that will serve it, its NATS rights and host files, and how it
//!   binds. One file per medium implements it.
//!
//! Also the one mapping from a failed call to what every medium answers:
//! a status ([`status`]), a JSON body, and NATS error headers; and the span
//! every call arriving over a medium opens first ([`binding_span`]).

use crate::codec::types as typecheck;
use crate::links::remote::{COMPONENT_HEADER, ERROR_KIND_HEADER, Lattice};
use crate::manifest::Manifest;
use crate::manifest::subject::{ReplyRule, allow_reply};
use crate::runtime::Runtime;
use crate::runtime::component::Loaded;
use crate::runtime::context::CallContext;
use crate::runtime::dispatch::FunctionRef;
use crate::runtime::fault::{CallError, Fault, FaultKind};
use crate::runtime::trace;
use async_nats::HeaderMap;
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a stopping service waits for calls in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Something bound that answers calls until shutdown.
pub trait Service: Send {
    /// A short description for logs, e.g. `http://127.0.0.1:8080 -> gateway`.
    fn describe(&self) -> String;
    /// Serves until `shutdown` is cancelled, then lets in-flight calls finish.
    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// What binding a medium needs from the host.
pub struct BindContext<'a> {
    /// The app's name (default queue groups and consumer names).
    pub app: &'a str,
    /// The whole manifest (e.g. the timeouts of components placed elsewhere).
    pub manifest: &'a Manifest,
    /// The app's runtime, where calls go.
    pub runtime: &'a Arc<Runtime>,
    /// The host's NATS connection, if it has one.
    pub nats: Option<&'a async_nats::Client>,
    /// The lattice, where calls to components placed elsewhere go.
    pub lattice: Option<&'a Lattice>,
}

impl BindContext<'_> {
    /// The NATS connection, which a NATS medium cannot do without.
    pub fn nats(&self) -> anyhow::Result<async_nats::Client> {
        self.nats
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("a NATS binding needs a NATS connection"))
    }
}

/// The NATS subjects one binding needs, per role: what `ctl permissions`
/// renders for it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rights {
    /// Subjects the hosts that serve it publish to.
    pub host_publish: Vec<String>,
    /// Subjects the hosts that serve it subscribe to.
    pub host_subscribe: Vec<String>,
    /// Subjects its callers publish to.
    pub caller_publish: Vec<String>,
    /// Subjects its callers subscribe to (where their results come back).
    pub caller_subscribe: Vec<String>,
}

/// A medium: a service bound from one (or, when they share it, several)
/// bindings of the manifest. It owns its part of the manifest (`Spec`, the
/// binding's table), its checks, what it needs of the host policy and of
/// NATS, and how it binds. The registry (`transports/mod.rs`) lists it.
pub trait Medium: Service + Sized + 'static {
    /// Its name: `medium = "..."` in a binding.
    const NAME: &'static str;

    /// Its spec: the binding's table (without `medium`), unknown fields
    /// refused.
    type Spec: serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync;

    /// Whether it needs the host's NATS connection.
    const NEEDS_NATS: bool = false;

    /// Whether a shared medium serves all its bindings on every host that
    /// runs any of their components, reaching the others over the lattice
    /// (http routes). Otherwise it serves only the bindings of components
    /// placed here.
    const ROUTES_ELSEWHERE: bool = false;

    /// Resolves the spec's relative paths against the manifest's directory.
    fn resolve(_spec: &mut Self::Spec, _base: &std::path::Path) {}

    /// What is wrong with its bindings (position, spec), each alone and
    /// together (two on one route, say), from the manifest only. Every
    /// problem, each naming its field: `bindings[i].field: ...`.
    fn problems(_bindings: &[(usize, &Self::Spec)], _manifest: &Manifest) -> Vec<String> {
        Vec::new()
    }

    /// The socket address it listens on, if any: two media may not share
    /// one.
    fn address(_spec: &Self::Spec) -> Option<std::net::SocketAddr> {
        None
    }

    /// The host's files it reads, each with its field (`tls.key`): a
    /// lattice host's policy must allow each.
    fn files(_spec: &Self::Spec) -> Vec<(&'static str, std::path::PathBuf)> {
        Vec::new()
    }

    /// The NATS subjects each role needs for it in app `app` of
    /// `lattice`.
    fn rights(_spec: &Self::Spec, _app: &str, _lattice: &str) -> Rights {
        Rights::default()
    }

    /// Bindings whose specs give the same key are bound together, as one
    /// medium (http-rpc: one server per address). `None`: bound alone.
    fn shares(_spec: &Self::Spec) -> Option<String> {
        None
    }

    /// Checks binding `index` against `new`, the version of its component
    /// about to serve it, and `old`, the one serving it now (an update must
    /// keep what the binding's clients rely on). Problems name the field.
    fn check(index: usize, spec: &Self::Spec, new: &Loaded, old: Option<&Loaded>) -> Vec<String>;

    /// Binds its socket, subscription or consumer, so that a failure shows
    /// before anything serves.
    fn bind<'a>(
        bindings: &'a [(usize, &'a Self::Spec)],
        cx: &'a BindContext<'a>,
    ) -> impl Future<Output = anyhow::Result<Self>> + Send + 'a;
}

/// A socket address whose error names the field (for a spec's
/// `#[serde(deserialize_with)]`).
pub(crate) fn socket_addr<'de, D: serde::Deserializer<'de>>(de: D) -> Result<std::net::SocketAddr, D::Error> {
    use serde::Deserialize as _;
    let text = String::deserialize(de)?;
    text.parse()
        .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an ip:port socket address")))
}

/// The span of one call arriving over `medium` (`http`, `http-rpc`, `nats`,
/// `queue`, or `rpc` for another host's link call) for `export` of
/// `component` in `app`. Opened only when spans are exported (else a
/// disabled span, which costs nothing), with `parent: None`: the call's
/// incoming `traceparent` gives it its parent ([`inbound`]).
pub(crate) fn binding_span(
    medium: &'static str,
    app: &str,
    component: &str,
    export: &dyn std::fmt::Display,
) -> tracing::Span {
    if !trace::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "binding",
        otel.name = %format_args!("{medium} {component}"),
        otel.kind = if medium == "queue" { "consumer" } else { "server" },
    );
    trace::set_attributes(&span, || {
        [
            ("membrane.medium", medium.into()),
            ("membrane.app", app.to_string().into()),
            ("membrane.component", component.to_string().into()),
            ("membrane.export", export.to_string().into()),
        ]
    });
    span
}

/// The context of a call arriving with `traceparent` (a header from outside:
/// malformed, it is ignored and a fresh trace starts), under `span`.
pub(crate) fn inbound(traceparent: Option<&str>, span: &tracing::Span) -> CallContext {
    let cx = CallContext::incoming(traceparent);
    if span.is_disabled() { cx } else { cx.under(span) }
}

/// The function `export` of `component`, for a binding's messages.
pub fn function_ref(index: usize, component: &str, export: &str) -> anyhow::Result<FunctionRef> {
    FunctionRef::parse(component, export)
        .ok_or_else(|| anyhow::anyhow!("bindings[{index}].export: {export:?} is not `interface#function`"))
}

/// The checks of every function-level medium: the export exists, passes no
/// resource or stream, and keeps its type across an update.
pub fn check_function(index: usize, export: &str, new: &Loaded, old: Option<&Loaded>) -> Vec<String> {
    let Some(target) = FunctionRef::parse(&new.name, export) else {
        return vec![format!(
            "bindings[{index}].export: {export:?} is not `interface#function`"
        )];
    };
    let (iface, func) = (&target.interface, &target.function);
    let Some(ty) = new.function(iface, func) else {
        let known = new.exported();
        return vec![format!(
            "bindings[{index}].export: component `{}` has no exported function `{iface}#{func}` (it exports: {})",
            new.name,
            if known.is_empty() {
                "no functions".to_string()
            } else {
                known.join(", ")
            }
        )];
    };
    if typecheck::func_carries_handle(ty) {
        return vec![format!(
            "bindings[{index}].export: `{iface}#{func}` of `{}` passes a resource or stream, which no medium can carry",
            new.name
        )];
    }
    match old
        .and_then(|old| old.function(iface, func))
        .and_then(|o| typecheck::diff_func(o, ty))
    {
        Some(why) => vec![format!(
            "bindings[{index}].export: the new version of `{}` changes `{iface}#{func}`: {why}",
            new.name
        )],
        None => Vec::new(),
    }
}

/// The status of a fault, with HTTP's meaning (NATS error replies carry it too).
pub fn status(kind: &FaultKind) -> u16 {
    match kind {
        FaultKind::Deadline { .. } => 504,
        FaultKind::Capacity { .. }
        | FaultKind::HostCapacity { .. }
        | FaultKind::NoResponders
        | FaultKind::Unavailable
        | FaultKind::NotRunning => 503,
        FaultKind::Decode { .. } => 502,
        FaultKind::Trap { .. } | FaultKind::Memory { .. } | FaultKind::Host { .. } => 500,
    }
}

/// The status and JSON body of a fault. Every medium reports faults this way.
pub fn fault_reply(fault: &Fault) -> (u16, serde_json::Value) {
    (status(&fault.kind), fault.to_json())
}

/// [`fault_reply`] for any failed function call: a request that does not fit
/// the function's types is a 400 with `kind: "bad-request"` and the path.
pub fn call_error_reply(error: &CallError) -> (u16, serde_json::Value) {
    match error {
        CallError::BadRequest(e) => {
            let mut body = e.to_json();
            body["kind"] = "bad-request".into();
            (400, body)
        }
        CallError::Fault(f) => fault_reply(f),
    }
}

/// The most calls of `component` a subscription runs at once: its
/// `max_instances` (more could only be shed later, after decoding).
pub fn subscription_limit(runtime: &Runtime, component: &str) -> usize {
    runtime.get(component).map_or(1, |c| c.max_instances() as usize)
}

/// Answers a message that a subscription shed at its limit: a typed
/// `capacity` fault of `component`, at once, before anything is decoded.
pub async fn shed_at_capacity(
    client: &async_nats::Client,
    message: async_nats::Message,
    component: &Arc<str>,
    limit: usize,
    replies: &ReplyRule,
) {
    let Some(reply) = message.reply else { return };
    if !allow_reply(replies, &reply, &format_args!("shedding {}", message.subject)) {
        return;
    }
    let max_instances = u32::try_from(limit).unwrap_or(u32::MAX);
    let fault = Fault::new(component.clone(), FaultKind::Capacity { max_instances });
    if let Err(e) = publish_error(client, reply, fault_reply(&fault)).await {
        tracing::debug!("{}: cannot answer a shed call: {e}", message.subject);
    }
}

/// Sends a failed call's NATS reply: the JSON error `body` with [`error_headers`].
pub async fn publish_error(
    client: &async_nats::Client,
    reply: async_nats::Subject,
    (status, body): (u16, serde_json::Value),
) -> Result<(), async_nats::PublishError> {
    client
        .publish_with_headers(reply, error_headers(status, &body), body.to_string().into())
        .await
}

/// The headers of a failed call's NATS reply: the NATS micro-services
/// convention (`Nats-Service-Error`, `-Code`) plus the kind and component.
pub fn error_headers(status: u16, body: &serde_json::Value) -> HeaderMap {
    let text = |key: &str| body[key].as_str().unwrap_or("error").replace(['\r', '\n'], " ");
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Service-Error", text("error").as_str());
    headers.insert("Nats-Service-Error-Code", status.to_string().as_str());
    headers.insert(ERROR_KIND_HEADER, text("kind").as_str());
    if let Some(component) = body["component"].as_str() {
        headers.insert(COMPONENT_HEADER, component.replace(['\r', '\n'], " ").as_str());
    }
    headers
}
