//! The `nats` medium: request/reply on a subject calls one exported function.
//!
//! Payloads are JSON (the same mapping as http-rpc), so any NATS client can
//! call a component with no Membrane library: `nats req insurance.rate '{..}'`.
//! A failed call is still a reply, never silence: it carries the NATS service
//! error headers `Nats-Service-Error` / `Nats-Service-Error-Code` (the
//! convention of NATS micro services) and a JSON error body. Replicas share a
//! queue group, so NATS spreads requests across hosts.

use super::Medium;
use crate::manifest::{NatsBinding, split_export};
use crate::runtime::Runtime;
use anyhow::Context as _;
use async_nats::HeaderMap;
use futures::future::BoxFuture;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Header naming the kind of a failure (`trap`, `deadline`, `bad-request`...).
pub const ERROR_KIND_HEADER: &str = "Membrane-Error-Kind";

/// A subscribed `nats` binding.
pub struct NatsMedium {
    client: async_nats::Client,
    subscriber: async_nats::Subscriber,
    subject: String,
    group: String,
    call: Arc<Target>,
}

/// The function a medium calls.
pub(crate) struct Target {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) component: Arc<str>,
    pub(crate) interface: String,
    pub(crate) function: String,
}

impl Target {
    pub(crate) fn new(runtime: Arc<Runtime>, component: &str, export: &str) -> anyhow::Result<Target> {
        let (interface, function) = split_export(export).context("export must be `interface#function`")?;
        Ok(Target {
            runtime,
            component: Arc::from(component),
            interface: interface.to_string(),
            function: function.to_string(),
        })
    }

    pub(crate) async fn call(&self, payload: &[u8]) -> Result<serde_json::Value, crate::runtime::fault::CallError> {
        self.runtime
            .call_json(&self.component, &self.interface, &self.function, payload)
            .await
    }
}

impl NatsMedium {
    /// Subscribes binding number `index`.
    pub async fn bind(
        index: usize,
        spec: &NatsBinding,
        app: &str,
        client: async_nats::Client,
        runtime: Arc<Runtime>,
    ) -> anyhow::Result<NatsMedium> {
        let group = spec
            .queue_group
            .clone()
            .unwrap_or_else(|| format!("membrane.{app}.{}", spec.component));
        let subscriber = client
            .queue_subscribe(spec.subject.clone(), group.clone())
            .await
            .with_context(|| format!("bindings[{index}]: cannot subscribe to {}", spec.subject))?;
        Ok(NatsMedium {
            client,
            subscriber,
            subject: spec.subject.clone(),
            group,
            call: Arc::new(Target::new(runtime, &spec.component, &spec.export)?),
        })
    }
}

impl Medium for NatsMedium {
    fn describe(&self) -> String {
        format!(
            "nats {} (queue group {}) -> {}:{}",
            self.subject, self.group, self.call.component, self.call.function
        )
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let (client, call) = (self.client.clone(), self.call.clone());
            let label = format!("nats {}", self.subject);
            super::serve_subscription(self.subscriber, shutdown, label, |message| {
                let (client, call) = (client.clone(), call.clone());
                async move { answer(&client, &call, message).await }
            })
            .await;
            let _ = self.client.flush().await;
            Ok(())
        })
    }
}

async fn answer(client: &async_nats::Client, call: &Target, message: async_nats::Message) {
    let result = call.call(&message.payload).await;
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
            let (status, body) = super::call_error_reply(&error);
            client
                .publish_with_headers(reply, error_headers(status, &body), body.to_string().into())
                .await
        }
    };
    if let Err(e) = sent {
        tracing::warn!("nats {}: cannot send the reply: {e}", message.subject);
    }
}

/// The error headers of a failed call's reply.
pub(crate) fn error_headers(status: u16, body: &serde_json::Value) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let message = body["error"].as_str().unwrap_or("error").replace(['\r', '\n'], " ");
    headers.insert("Nats-Service-Error", message.as_str());
    headers.insert("Nats-Service-Error-Code", status.to_string().as_str());
    headers.insert(ERROR_KIND_HEADER, body["kind"].as_str().unwrap_or("error"));
    headers
}
