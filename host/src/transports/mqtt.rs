//! The `mqtt` medium: a subscription to an MQTT topic filter delivers each
//! message to one exported function, and the result (when the function
//! returns one) is published to a reply topic. The client is `rumqttc`
//! (MQTT 3.1.1), which MQTT 3.1.1 and MQTT 5 brokers both accept.
//!
//! - Payloads are JSON, the parameters by name, as for `nats`.
//! - QoS 0 or 1. A QoS 1 message is acknowledged only after its call ends
//!   (successful or not: MQTT has no negative acknowledgement, and a message
//!   that fails once would fail again), so a host that dies mid-call leaves
//!   it to the broker to deliver again.
//! - Replicas share the messages: each host subscribes with the shared
//!   subscription `$share/<group>/<topic>` (default group
//!   `membrane-<app>-<component>`), so the broker gives each message to one
//!   of them.
//! - Bounds: at most `concurrency` calls at once; past that the host stops
//!   reading from the broker until one ends (TCP backpressure, no queue);
//!   messages larger than `max_payload` are refused by the client.
//! - The connection is kept by the event loop: after a broker restart it
//!   connects again (every second), subscribes again, and logs both.

use super::medium::{BindContext, Medium, Service, binding_span, check_function, function_ref, inbound};
use crate::manifest::Manifest;
use crate::metrics::{Calls, Counter, registry};
use crate::runtime::Runtime;
use crate::runtime::component::Loaded;
use crate::runtime::dispatch::FunctionRef;
use crate::runtime::fault::CallError;
use anyhow::Context as _;
use futures::future::BoxFuture;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// How long binding waits for the broker's first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause between two attempts to reach a broker that went away.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// `medium = "mqtt"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttBinding {
    /// The broker: `host:port` (plain TCP).
    pub broker: String,
    /// The topic filter to subscribe to (`+` and `#` allowed).
    pub topic: String,
    /// The component.
    pub component: String,
    /// The function: `pkg:ns/iface@version#function`.
    pub export: String,
    /// 0 (at most once) or 1 (at least once).
    #[serde(default)]
    pub qos: u8,
    /// Where a call's result is published (a topic name, no wildcard).
    /// Without it, results are dropped.
    pub reply_topic: Option<String>,
    /// The shared-subscription group of the replicas; default
    /// `membrane-<app>-<component>`; `""` for a plain subscription (every
    /// host then gets every message).
    pub group: Option<String>,
    /// Calls at once on this host.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// The largest message accepted, in bytes.
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// User name, with the password in the host's environment variable
    /// `password_env`.
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
}

fn default_concurrency() -> u32 {
    16
}
fn default_max_payload() -> usize {
    1 << 20
}

impl MqttBinding {
    fn qos(&self) -> QoS {
        if self.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    /// What the host subscribes to: the shared subscription of the group,
    /// or the filter itself.
    pub fn subscription(&self, app: &str) -> String {
        match self.group.as_deref() {
            Some("") => self.topic.clone(),
            Some(group) => format!("$share/{group}/{}", self.topic),
            None => format!("$share/membrane-{app}-{}/{}", self.component, self.topic),
        }
    }
}

/// What is wrong with topic filter `filter`: empty, a `#` that is not the
/// last level, a wildcard inside a level, or a `$` topic.
fn filter_problem(filter: &str) -> Option<&'static str> {
    let levels: Vec<&str> = filter.split('/').collect();
    if filter.is_empty() || filter.contains('\0') {
        return Some("is empty or holds a NUL");
    }
    if filter.starts_with('$') {
        return Some("starts with `$`, the broker's own topics");
    }
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some("has a `#` that is not the whole last level");
        }
        if level.contains('+') && *level != "+" {
            return Some("has a `+` that is not a whole level");
        }
    }
    None
}

/// A subscribed `mqtt` binding.
pub struct MqttMedium {
    client: AsyncClient,
    events: EventLoop,
    subscription: String,
    broker: String,
    qos: QoS,
    reply_topic: Option<String>,
    concurrency: usize,
    target: Arc<FunctionRef>,
    app: Arc<str>,
    runtime: Arc<Runtime>,
    calls: Calls,
    reconnects: Counter,
}

impl Medium for MqttMedium {
    const NAME: &'static str = "mqtt";
    type Spec = MqttBinding;

    fn problems(bindings: &[(usize, &MqttBinding)], _manifest: &Manifest) -> Vec<String> {
        let mut problems = Vec::new();
        for &(i, spec) in bindings {
            if let Some(why) = filter_problem(&spec.topic) {
                problems.push(format!("bindings[{i}].topic: {:?} {why}", spec.topic));
            }
            if let Some(reply) = &spec.reply_topic
                && (reply.is_empty() || reply.contains(['+', '#', '\0']) || reply.starts_with('$'))
            {
                problems.push(format!(
                    "bindings[{i}].reply_topic: {reply:?} must be a topic name (no `+`, `#` or leading `$`)"
                ));
            }
            if spec.qos > 1 {
                problems.push(format!("bindings[{i}].qos: must be 0 or 1"));
            }
            if spec.concurrency == 0 || spec.max_payload == 0 {
                problems.push(format!("bindings[{i}]: concurrency and max_payload must be at least 1"));
            }
            if let Some(group) = &spec.group
                && group.contains(['/', '+', '#'])
            {
                problems.push(format!("bindings[{i}].group: {group:?} may not hold `/`, `+` or `#`"));
            }
            if spec
                .broker
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                problems.push(format!("bindings[{i}].broker: {:?} is not `host:port`", spec.broker));
            }
            if spec.username.is_some() != spec.password_env.is_some() {
                problems.push(format!(
                    "bindings[{i}]: set both `username` and `password_env`, or neither"
                ));
            }
        }
        problems
    }

    fn check(index: usize, spec: &MqttBinding, new: &Loaded, old: Option<&Loaded>) -> Vec<String> {
        check_function(index, &spec.export, new, old)
    }

    /// Connects and subscribes, so that an unreachable broker or a refused
    /// subscription fails the binding before anything serves.
    async fn bind(bindings: &[(usize, &MqttBinding)], cx: &BindContext<'_>) -> anyhow::Result<MqttMedium> {
        let &[(index, spec)] = bindings else {
            anyhow::bail!("an mqtt binding is bound alone");
        };
        let (host, port) = spec
            .broker
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .with_context(|| format!("bindings[{index}].broker: {:?} is not `host:port`", spec.broker))?;
        let mut options = MqttOptions::new(client_id(cx.app, &spec.component), host, port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_manual_acks(true)
            .set_max_packet_size(
                spec.max_payload.saturating_add(1024),
                spec.max_payload.saturating_add(1024),
            );
        if let (Some(user), Some(variable)) = (&spec.username, &spec.password_env) {
            let password = std::env::var(variable).with_context(|| {
                format!("bindings[{index}].password_env: the host has no environment variable {variable}")
            })?;
            options.set_credentials(user, password);
        }
        let concurrency = spec.concurrency as usize;
        let (client, mut events) = AsyncClient::new(options, 2 * concurrency + 8);
        let subscription = spec.subscription(cx.app);
        let context = || format!("bindings[{index}]: mqtt broker {}", spec.broker);
        client
            .subscribe(subscription.clone(), spec.qos())
            .await
            .with_context(context)?;
        tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        let refused = ack
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                        anyhow::ensure!(!refused, "refused the subscription to {subscription}");
                        return Ok(());
                    }
                    Ok(_) => {}
                    Err(e) => anyhow::bail!("cannot connect: {e}"),
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("no answer in {CONNECT_TIMEOUT:?}"))
        .and_then(|r| r)
        .with_context(context)?;
        Ok(MqttMedium {
            client,
            events,
            subscription,
            broker: spec.broker.clone(),
            qos: spec.qos(),
            reply_topic: spec.reply_topic.clone(),
            concurrency,
            target: Arc::new(function_ref(index, &spec.component, &spec.export)?),
            app: Arc::from(cx.app),
            runtime: cx.runtime.clone(),
            calls: Calls::new(cx.app, &spec.component, "mqtt"),
            reconnects: registry().counter(
                "membrane_mqtt_reconnects_total",
                "Times an mqtt binding lost its broker and connected again.",
                &[("app", cx.app), ("component", spec.component.as_str())],
            ),
        })
    }
}

/// A client id no other host or binding uses at the same time.
fn client_id(app: &str, component: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("membrane-{app}-{component}-{:x}{:x}", std::process::id(), nanos)
}

impl Service for MqttMedium {
    fn describe(&self) -> String {
        format!(
            "mqtt {} {} -> {}#{}",
            self.broker, self.subscription, self.target.component, self.target.function
        )
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let describe = self.describe();
            let MqttMedium {
                client,
                mut events,
                subscription,
                qos,
                reply_topic,
                concurrency,
                target,
                app,
                runtime,
                calls,
                reconnects,
                ..
            } = *self;
            let this = Arc::new(Handler {
                client,
                reply_topic,
                target,
                app,
                runtime,
                calls,
            });
            let slots = Arc::new(Semaphore::new(concurrency));
            let mut running = JoinSet::new();
            let mut lost = false;
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    event = events.poll() => event,
                };
                while running.try_join_next().is_some() {}
                match event {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let permit = tokio::select! {
                            _ = shutdown.cancelled() => break,
                            permit = slots.clone().acquire_owned() => permit?,
                        };
                        let handler = this.clone();
                        running.spawn(async move {
                            handler.deliver(publish).await;
                            drop(permit);
                        });
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if lost => {
                        lost = false;
                        reconnects.inc();
                        tracing::info!("{describe}: connected again");
                        if let Err(e) = this.client.subscribe(subscription.clone(), qos).await {
                            tracing::warn!("{describe}: cannot subscribe again: {e}");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if !lost {
                            tracing::warn!(
                                "{describe}: lost the broker ({e}); connecting again every {RECONNECT_PAUSE:?}"
                            );
                        }
                        lost = true;
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
                        }
                    }
                }
            }
            // In-flight calls end (their acks and replies are queued on the
            // client, which the event loop sends while it is polled).
            let drain = async {
                while !running.is_empty() {
                    tokio::select! {
                        _ = running.join_next() => {}
                        _ = events.poll() => {}
                    }
                }
                let _ = this.client.disconnect().await;
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), async { while events.poll().await.is_ok() {} }).await;
            };
            if tokio::time::timeout(super::medium::DRAIN_TIMEOUT, drain).await.is_err() {
                tracing::warn!("{describe}: gave up waiting for in-flight calls");
            }
            Ok(())
        })
    }
}

/// What each message's task needs.
struct Handler {
    client: AsyncClient,
    reply_topic: Option<String>,
    target: Arc<FunctionRef>,
    app: Arc<str>,
    runtime: Arc<Runtime>,
    calls: Calls,
}

impl Handler {
    /// Calls the function with the message, publishes the result, acks.
    async fn deliver(&self, publish: rumqttc::Publish) {
        let target = &self.target;
        let span = binding_span("mqtt", &self.app, &target.component, &target.function);
        let cx = inbound(None, &span);
        let started = std::time::Instant::now();
        let result = self
            .runtime
            .call_json(target, &publish.payload, cx)
            .instrument(span)
            .await;
        self.calls
            .record(started, result.as_ref().err().map(CallError::kind_name));
        match result {
            Ok(value) => {
                if let Some(topic) = &self.reply_topic
                    && !value.is_null()
                    && let Err(e) = self
                        .client
                        .publish(topic.clone(), QoS::AtLeastOnce, false, value.to_string().into_bytes())
                        .await
                {
                    tracing::warn!("mqtt {}: cannot publish the result to {topic}: {e}", publish.topic);
                }
            }
            Err(e) => tracing::warn!("mqtt {}: {e}", publish.topic),
        }
        if let Err(e) = self.client.ack(&publish).await {
            tracing::warn!("mqtt {}: cannot acknowledge: {e}", publish.topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_are_checked_level_by_level() {
        let table = [
            ("sensors/+/temp", None),
            ("sensors/#", None),
            ("#", None),
            ("", Some("empty")),
            ("a/#/b", Some("`#`")),
            ("a/b#", Some("`#`")),
            ("a/x+/b", Some("`+`")),
            ("$SYS/#", Some("`$`")),
        ];
        for (filter, expected) in table {
            match (filter_problem(filter), expected) {
                (None, None) => {}
                (Some(why), Some(wanted)) => assert!(why.contains(wanted), "{filter}: {why}"),
                (got, _) => panic!("{filter}: {got:?}"),
            }
        }
    }

    #[test]
    fn replicas_share_the_subscription_unless_told_not_to() {
        let spec = |group: &str| -> MqttBinding {
            toml::from_str(&format!(
                "broker = \"127.0.0.1:1883\"\ntopic = \"t/+\"\ncomponent = \"c\"\nexport = \"a:b/c@1.0.0#d\"\n{group}"
            ))
            .unwrap()
        };
        assert_eq!(spec("").subscription("shop"), "$share/membrane-shop-c/t/+");
        assert_eq!(spec("group = \"g\"").subscription("shop"), "$share/g/t/+");
        assert_eq!(spec("group = \"\"").subscription("shop"), "t/+");
    }
}
