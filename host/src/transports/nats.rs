//! The `nats` medium: request/reply on a subject calls one exported function.
//!
//! Payloads are JSON (the same mapping as http-rpc), so any NATS client can
//! call a component with no Membrane library: `nats req insurance.rate '{..}'`.
//! A failed call is still a reply, never silence: it carries the NATS service
//! error headers `Nats-Service-Error` / `Nats-Service-Error-Code` (the
//! convention of NATS micro services) and a JSON error body. Replicas share a
//! queue group, so NATS spreads requests across hosts. A `traceparent`
//! header continues its trace (the call's `binding` span is its child).

use super::medium::{
    BindContext, Medium, Rights, Service, binding_span, call_error_reply, check_function, function_ref, inbound,
    publish_error, shed_at_capacity, subscription_limit,
};
use super::serve::{flush_briefly, registered, serve_subscription};
use crate::manifest::Manifest;
use crate::manifest::subject::{self, ReplyRule, allow_reply};
use crate::metrics::Calls;
use crate::runtime::Runtime;
use crate::runtime::component::Loaded;
use crate::runtime::context::CallContext;
use crate::runtime::dispatch::FunctionRef;
use crate::runtime::fault::CallError;
use crate::runtime::trace::{self, TRACEPARENT};
use anyhow::Context as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// `medium = "nats"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsBinding {
    /// The subject to serve requests on.
    pub subject: String,
    /// Queue group shared by replicas; default `membrane.<app>.<component>`.
    pub queue_group: Option<String>,
    /// The component.
    pub component: String,
    /// The function: `pkg:ns/iface@version#function`.
    pub export: String,
}

/// A subscribed `nats` binding.
pub struct NatsMedium {
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
    subject: String,
    group: String,
    target: Arc<FunctionRef>,
    app: Arc<str>,
    runtime: Arc<Runtime>,
    calls: Calls,
    /// Where a reply may go: `_INBOX.` and the lattice's inboxes.
    replies: Arc<ReplyRule>,
}

/// The span and call context of a message arriving over `medium` (`nats` or
/// `queue`) for `target` of `app`: its `traceparent` header, if any and valid,
/// is the span's parent.
pub(crate) fn message_context(
    medium: &'static str,
    app: &str,
    target: &FunctionRef,
    message: &async_nats::Message,
) -> (tracing::Span, CallContext) {
    let span = binding_span(
        medium,
        app,
        &target.component,
        &format_args!("{}#{}", target.interface, target.function),
    );
    trace::set_attributes(&span, || {
        [("messaging.destination.name", message.subject.to_string().into())]
    });
    let traceparent = message
        .headers
        .as_ref()
        .and_then(|h| h.get(TRACEPARENT))
        .map(|v| v.as_str());
    let cx = inbound(traceparent, &span);
    (span, cx)
}

impl Medium for NatsMedium {
    const NAME: &'static str = "nats";
    type Spec = NatsBinding;
    const NEEDS_NATS: bool = true;

    fn problems(bindings: &[(usize, &NatsBinding)], _manifest: &Manifest) -> Vec<String> {
        let mut problems = Vec::new();
        for &(i, nats) in bindings {
            subject::problems(&format!("bindings[{i}].subject"), &nats.subject, &mut problems);
        }
        problems
    }

    /// Hosts subscribe to the subject; callers publish to it (and read
    /// their replies in their own inboxes).
    fn rights(spec: &NatsBinding, _app: &str, _lattice: &str) -> Rights {
        Rights {
            host_subscribe: vec![spec.subject.clone()],
            caller_publish: vec![spec.subject.clone()],
            ..Rights::default()
        }
    }

    fn check(index: usize, spec: &NatsBinding, new: &Loaded, old: Option<&Loaded>) -> Vec<String> {
        check_function(index, &spec.export, new, old)
    }

    async fn bind(bindings: &[(usize, &NatsBinding)], cx: &BindContext<'_>) -> anyhow::Result<NatsMedium> {
        let &[(index, spec)] = bindings else {
            anyhow::bail!("a nats binding is bound alone");
        };
        let client = cx.nats()?;
        let group = spec
            .queue_group
            .clone()
            .unwrap_or_else(|| format!("membrane.{}.{}", cx.app, spec.component));
        let subscriber = client
            .queue_subscribe(spec.subject.clone(), group.clone())
            .await
            .with_context(|| format!("bindings[{index}]: cannot subscribe to {}", spec.subject))?;
        registered(&client, &format!("bindings[{index}]: subscription to {}", spec.subject)).await;
        Ok(NatsMedium {
            client,
            subscriber,
            subject: spec.subject.clone(),
            group,
            target: Arc::new(function_ref(index, &spec.component, &spec.export)?),
            app: Arc::from(cx.app),
            runtime: cx.runtime.clone(),
            calls: Calls::new(cx.app, &spec.component, "nats"),
            replies: Arc::new(cx.lattice.map(|l| ReplyRule::lattice(&l.name)).unwrap_or_default()),
        })
    }
}

impl Service for NatsMedium {
    fn describe(&self) -> String {
        format!(
            "nats {} (queue group {}) -> {}:{}",
            self.subject, self.group, self.target.component, self.target.function
        )
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let (client, target, runtime) = (self.client.clone(), self.target.clone(), self.runtime.clone());
            let (app, calls, replies) = (self.app.clone(), self.calls.clone(), self.replies.clone());
            let label = format!("nats {}", self.subject);
            let limit = subscription_limit(&runtime, &target.component);
            let handle = |message| {
                let (client, target, runtime) = (client.clone(), target.clone(), runtime.clone());
                let (app, calls, replies) = (app.clone(), calls.clone(), replies.clone());
                async move { answer(&client, &runtime, (&app, &calls, &replies), &target, message).await }
            };
            let shed = |message| shed_at_capacity(&client, message, &target.component, limit, &replies);
            serve_subscription(self.subscriber, shutdown, label, limit, handle, shed).await;
            flush_briefly(&self.client).await;
            Ok(())
        })
    }
}

async fn answer(
    client: &async_nats::Client,
    runtime: &Runtime,
    (app, calls, replies): (&str, &Calls, &ReplyRule),
    target: &FunctionRef,
    message: async_nats::Message,
) {
    // A reply that may not be sent is not worth the call.
    if let Some(reply) = &message.reply
        && !allow_reply(replies, reply, &format_args!("nats {}", message.subject))
    {
        return;
    }
    let (span, cx) = message_context("nats", app, target, &message);
    let started = std::time::Instant::now();
    let result = runtime
        .call_json(target, &message.payload, cx)
        .instrument(span.clone())
        .await;
    calls.record(started, result.as_ref().err().map(CallError::kind_name));
    if let Err(error) = &result {
        trace::set_failed(&span, error);
    }
    let Some(reply) = message.reply else {
        if let Err(e) = result {
            tracing::warn!("nats {} (no reply subject): {e}", message.subject);
        }
        return;
    };
    let sent = match result {
        Ok(value) => client.publish(reply, value.to_string().into()).await,
        Err(error) => {
            tracing::debug!("nats {}: {error}", message.subject);
            publish_error(client, reply, call_error_reply(&error)).await
        }
    };
    if let Err(e) = sent {
        tracing::warn!("nats {}: cannot send the reply: {e}", message.subject);
    }
}
