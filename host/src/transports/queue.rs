//! The `queue` medium: a JetStream durable pull consumer calls one exported
//! function, at least once.
//!
//! - The stream, its dead-letter stream and the consumer are created from the
//!   manifest if missing (an existing consumer is used as it is).
//! - A message is acked only after the call succeeds. A failed call is nak'ed
//!   with a delay that doubles per attempt (`backoff_ms`, capped at 30 s).
//! - On the `max_deliver`-th failure, or at once when the payload cannot be
//!   decoded (no retry can fix it), the message is published to the dead-letter
//!   subject with its original headers plus `Membrane-Error-*` headers, and
//!   only then terminated.
//! - If the message carries a `Membrane-Reply-To` header, the result's JSON is
//!   published there before the ack.
//! - Shutdown stops pulling and lets in-flight calls finish (ack or nak).
//!   Messages a dead host held are redelivered after `ack_wait`.
//! - A `traceparent` header continues its trace (each delivery's `binding`
//!   span is its child).

use super::medium::{
    BindContext, DRAIN_TIMEOUT, Medium, Rights, Service, call_error_reply, check_function, function_ref,
};
use super::nats::message_context;
use crate::links::queue::{QueueTarget, dead_letter_config, stream_config};
use crate::links::remote::ERROR_KIND_HEADER;
use crate::manifest::subject::{self, ReplyRule};
use crate::manifest::{Delivery, Manifest, split_export};
use crate::metrics::{Calls, Counter, registry};
use crate::runtime::Runtime;
use crate::runtime::component::Loaded;
use crate::runtime::dispatch::FunctionRef;
use crate::runtime::fault::CallError;
use crate::runtime::trace;
use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, stream};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Header naming where to publish a queued call's result.
pub const REPLY_HEADER: &str = "Membrane-Reply-To";
/// Longest redelivery delay.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `medium = "queue"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueBinding {
    /// The JetStream stream; created if missing.
    pub stream: String,
    /// The subject the stream captures, where producers publish.
    pub subject: String,
    /// Durable consumer name; default `<app>-<component>`.
    pub consumer: Option<String>,
    /// The component.
    pub component: String,
    /// The function: `pkg:ns/iface@version#function`.
    pub export: String,
    /// Messages processed at once by this host.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Attempts before a message is dead-lettered.
    #[serde(default = "default_max_deliver")]
    pub max_deliver: u32,
    /// First redelivery delay; doubles per attempt up to 30 s.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// How long the server waits for an ack before redelivering (e.g. when a
    /// host died holding the message); default: the call deadline plus 5 s.
    pub ack_wait_ms: Option<u64>,
    /// Where dead letters go; default `<subject>.dead`. Captured by the stream
    /// `<stream>_DEAD`, created if missing.
    pub dead_letter: Option<String>,
    /// The subjects a producer may name in `Membrane-Reply-To`: this subject
    /// and those under it. Without it, no reply is sent anywhere.
    pub reply_prefix: Option<String>,
    /// The most bytes the queue's stream keeps (default 256 MiB); a full
    /// queue refuses new messages (JetStream's `discard = new`), so a
    /// caller cannot fill the server's storage, and nothing accepted is
    /// dropped. Its dead-letter stream keeps as much, dropping the oldest.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

/// The default [`QueueBinding::max_bytes`].
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 256 << 20;

fn default_max_bytes() -> u64 {
    DEFAULT_QUEUE_MAX_BYTES
}

fn default_concurrency() -> u32 {
    4
}
fn default_max_deliver() -> u32 {
    5
}
fn default_backoff_ms() -> u64 {
    250
}

impl QueueBinding {
    /// The durable consumer's name.
    pub fn consumer_name(&self, app: &str) -> String {
        self.consumer
            .clone()
            .unwrap_or_else(|| format!("{app}-{}", self.component))
    }

    /// The dead-letter subject.
    pub fn dead_letter_subject(&self) -> String {
        self.dead_letter
            .clone()
            .unwrap_or_else(|| format!("{}.dead", self.subject))
    }

    /// Where a queue link delivers the calls this binding serves.
    pub fn target(&self) -> QueueTarget {
        QueueTarget {
            stream: self.stream.clone(),
            subject: self.subject.clone(),
            dead_letter: self.dead_letter_subject(),
            max_bytes: self.max_bytes,
        }
    }

    /// Whether `subject` may receive a queued call's result: a plain
    /// subject (no wildcard, not a `$` system subject) equal to or under
    /// `reply_prefix`.
    pub fn reply_allowed(&self, subject: &str) -> bool {
        self.reply_prefix
            .as_deref()
            .is_some_and(|prefix| ReplyRule::only(prefix).check(subject, false).is_ok())
    }
}

/// The `queue` bindings of component `to` for functions of `interface`,
/// by function name: where a queue link delivers.
pub fn targets(manifest: &Manifest, to: &str, interface: &str) -> BTreeMap<String, QueueTarget> {
    crate::transports::specs::<QueueMedium>(manifest)
        .into_iter()
        .filter(|(_, q)| q.component == to)
        .filter_map(|(_, q)| {
            let (iface, function) = split_export(&q.export)?;
            (iface == interface).then(|| (function.to_string(), q.target()))
        })
        .collect()
}

/// A message to dead-letter: from a delivery, or read from the stream.
struct Letter<'a> {
    subject: &'a str,
    headers: Option<&'a async_nats::HeaderMap>,
    payload: bytes::Bytes,
}

/// A bound `queue` binding.
pub struct QueueMedium {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    consumer_name: String,
    consumer: PullConsumer,
    spec: QueueBinding,
    target: FunctionRef,
    app: Arc<str>,
    runtime: Arc<Runtime>,
    metrics: QueueMetrics,
}

/// A queue binding's series.
struct QueueMetrics {
    calls: Calls,
    deliveries: Counter,
    redeliveries: Counter,
    dead_letters: Counter,
}

impl QueueMetrics {
    fn new(app: &str, spec: &QueueBinding) -> QueueMetrics {
        let labels = [("app", app), ("component", &*spec.component), ("stream", &*spec.stream)];
        let r = registry();
        QueueMetrics {
            calls: Calls::new(app, &spec.component, "queue"),
            deliveries: r.counter(
                "membrane_queue_deliveries_total",
                "Queue messages taken for a call.",
                &labels,
            ),
            redeliveries: r.counter(
                "membrane_queue_redeliveries_total",
                "Queue messages taken again after a failed or lost attempt.",
                &labels,
            ),
            dead_letters: r.counter(
                "membrane_queue_dead_letters_total",
                "Queue messages moved to the dead-letter stream.",
                &labels,
            ),
        }
    }
}

impl Medium for QueueMedium {
    const NAME: &'static str = "queue";
    type Spec = QueueBinding;
    const NEEDS_NATS: bool = true;

    /// Each binding's subjects, stream and bounds; and every queue link
    /// has a queue binding to deliver to.
    fn problems(bindings: &[(usize, &QueueBinding)], manifest: &Manifest) -> Vec<String> {
        let mut problems = Vec::new();
        for &(i, queue) in bindings {
            subject::problems(&format!("bindings[{i}].subject"), &queue.subject, &mut problems);
            if !is_stream_name(&queue.stream) {
                problems.push(format!(
                    "bindings[{i}].stream: {:?} must be letters, digits, `-` or `_`",
                    queue.stream
                ));
            }
            let dead = queue.dead_letter_subject();
            if !subject::is_plain_subject(&dead) {
                problems.push(format!(
                    "bindings[{i}].dead_letter: {dead:?} must be a plain subject (no `*` or `>`); set `dead_letter`",
                ));
            } else if let Some(why) = subject::reserved(&dead) {
                problems.push(format!("bindings[{i}].dead_letter: {why}"));
            }
            if let Some(prefix) = &queue.reply_prefix {
                subject::plain_problems(&format!("bindings[{i}].reply_prefix"), prefix, &mut problems);
            }
            if queue.max_bytes == 0 || i64::try_from(queue.max_bytes).is_err() {
                problems.push(format!("bindings[{i}].max_bytes: must be between 1 and {}", i64::MAX));
            }
            if queue.concurrency == 0 || queue.max_deliver == 0 {
                problems.push(format!("bindings[{i}]: concurrency and max_deliver must be at least 1"));
            }
        }
        for (i, link) in manifest.links.iter().enumerate() {
            if link.delivery == Delivery::Queue && targets(manifest, &link.to, &link.import).is_empty() {
                problems.push(format!(
                    "links[{i}].delivery: \"queue\" needs a `queue` binding of `{}` for a function of `{}`",
                    link.to, link.import
                ));
            }
        }
        problems
    }

    /// Hosts create the stream and its dead letters, consume, ack,
    /// dead-letter and reply under `reply_prefix`; callers publish to the
    /// subject and read their results under `reply_prefix`.
    fn rights(spec: &QueueBinding, _app: &str, _lattice: &str) -> Rights {
        let (stream, dead) = (&spec.stream, format!("{}_DEAD", spec.stream));
        let replies: Vec<String> = spec.reply_prefix.iter().map(|r| format!("{r}.>")).collect();
        let mut host_publish = Vec::new();
        for s in [stream, &dead] {
            host_publish.extend([format!("$JS.API.STREAM.CREATE.{s}"), format!("$JS.API.STREAM.INFO.{s}")]);
        }
        host_publish.extend([
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.>"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            // The backstop moves a message past its deliveries to the
            // dead-letter stream.
            format!("$JS.API.STREAM.MSG.DELETE.{stream}"),
            format!("$JS.ACK.{stream}.>"),
            spec.dead_letter_subject(),
        ]);
        host_publish.extend(replies.iter().cloned());
        Rights {
            host_publish,
            host_subscribe: vec![format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.>")],
            caller_publish: vec![spec.subject.clone()],
            caller_subscribe: replies,
        }
    }

    fn check(index: usize, spec: &QueueBinding, new: &Loaded, old: Option<&Loaded>) -> Vec<String> {
        let mut problems = check_function(index, &spec.export, new, old);
        if let Some(ack_wait) = spec.ack_wait_ms
            && u128::from(ack_wait) <= new.timeout.as_millis()
        {
            problems.push(format!(
                "bindings[{index}].ack_wait_ms: {ack_wait} ms is not longer than `{}`'s timeout of {} ms: \
                 a slow call would be delivered again while it runs",
                new.name,
                new.timeout.as_millis()
            ));
        }
        problems
    }

    /// Creates (if missing) the stream, dead-letter stream and durable consumer.
    async fn bind(bindings: &[(usize, &QueueBinding)], cx: &BindContext<'_>) -> anyhow::Result<QueueMedium> {
        let &[(index, spec)] = bindings else {
            anyhow::bail!("a queue binding is bound alone");
        };
        let context = |what: &str| format!("bindings[{index}]: {what}");
        let (runtime, app) = (cx.runtime.clone(), cx.app);
        let timeout = runtime
            .get(&spec.component)
            .map_or(Duration::from_secs(5), |c| c.timeout);
        let client = cx.nats()?;
        let js = crate::bus::jetstream(client.clone());
        let stream = js
            .get_or_create_stream(stream_config(&spec.target()))
            .await
            .with_context(|| context(&format!("cannot create stream {}", spec.stream)))?;
        js.get_or_create_stream(dead_letter_config(&spec.target()))
            .await
            .with_context(|| context(&format!("cannot create dead-letter stream {}_DEAD", spec.stream)))?;
        let name = spec.consumer_name(app);
        // Prefetched messages may wait for one call before theirs starts, so
        // the default ack wait covers two deadlines.
        let ack_wait = spec
            .ack_wait_ms
            .map_or(timeout * 2 + Duration::from_secs(5), Duration::from_millis);
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                &name,
                jetstream::consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: spec.subject.clone(),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait,
                    // Delivery attempts are counted here, so the last failure
                    // can be dead-lettered with its reason. The server's
                    // limit, one more, is a backstop: a message that kills
                    // every host that takes it still stops.
                    max_deliver: i64::from(spec.max_deliver) + 1,
                    max_ack_pending: i64::from(spec.concurrency) * 4,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| context(&format!("cannot create consumer {name} on stream {}", spec.stream)))?;
        Ok(QueueMedium {
            client,
            js,
            stream,
            consumer_name: name,
            consumer,
            spec: spec.clone(),
            target: function_ref(index, &spec.component, &spec.export)?,
            app: Arc::from(app),
            runtime,
            metrics: QueueMetrics::new(app, spec),
        })
    }
}

impl Service for QueueMedium {
    fn describe(&self) -> String {
        format!(
            "queue {} (stream {}, concurrency {}) -> {}:{}",
            self.spec.subject, self.spec.stream, self.spec.concurrency, self.target.component, self.target.function
        )
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let this = Arc::new(*self);
            let mut in_flight = JoinSet::new();
            let backstop = this.clone();
            let backstop_shutdown = shutdown.clone();
            let backstop = tokio::spawn(async move { backstop.backstop(&backstop_shutdown).await });
            this.clone().pull(&shutdown, &mut in_flight).await?;
            let _ = backstop.await;
            let drain = async { while in_flight.join_next().await.is_some() {} };
            if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
                tracing::warn!("queue {}: gave up waiting for in-flight calls", this.spec.subject);
            }
            Ok(())
        })
    }
}

impl QueueMedium {
    /// Pulls messages, `concurrency` at a time, each processed in its own
    /// task in `in_flight`, until `shutdown`.
    async fn pull(self: Arc<Self>, shutdown: &CancellationToken, in_flight: &mut JoinSet<()>) -> anyhow::Result<()> {
        let this = self;
        let slots = Arc::new(Semaphore::new(this.spec.concurrency as usize));
        'pull: while !shutdown.is_cancelled() {
            let messages = this
                .consumer
                .stream()
                .max_messages_per_batch(this.spec.concurrency as usize)
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await;
            let mut messages = match messages {
                Ok(messages) => messages,
                Err(e) => {
                    // Typically the broker is away; the client reconnects.
                    tracing::warn!("queue {}: cannot pull ({e}); retrying", this.spec.subject);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue 'pull,
                        _ = shutdown.cancelled() => break 'pull,
                    }
                }
            };
            loop {
                // Take a slot first, so nothing is pulled that cannot start.
                let slot = tokio::select! {
                    slot = slots.clone().acquire_owned() => slot?,
                    _ = shutdown.cancelled() => break 'pull,
                };
                let message = tokio::select! {
                    message = messages.next() => message,
                    _ = shutdown.cancelled() => break 'pull,
                };
                match message {
                    Some(Ok(message)) => {
                        let this = this.clone();
                        in_flight.spawn(async move {
                            this.process(message).await;
                            drop(slot);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::warn!("queue {}: {e}", this.spec.subject);
                        if matches!(
                            e.kind(),
                            jetstream::consumer::pull::MessagesErrorKind::MissingHeartbeat
                                | jetstream::consumer::pull::MessagesErrorKind::ConsumerDeleted
                        ) {
                            continue 'pull;
                        }
                    }
                    None => continue 'pull,
                }
                while in_flight.try_join_next().is_some() {}
            }
        }
        Ok(())
    }

    async fn process(&self, message: jetstream::Message) {
        let deliveries = message.info().map_or(1, |info| info.delivered.max(1) as u64);
        self.metrics.deliveries.inc();
        if deliveries > 1 {
            self.metrics.redeliveries.inc();
        }
        let reply = match self.reply_to(&message) {
            Ok(reply) => reply,
            // No retry can fix it, and the call must not run for nothing.
            Err(refused) => return self.give_up(&message, refused, deliveries).await,
        };
        let (span, cx) = message_context("queue", &self.app, &self.target, &message.message);
        let started = std::time::Instant::now();
        let result = self
            .runtime
            .call_json(&self.target, &message.payload, cx)
            .instrument(span.clone())
            .await;
        self.metrics
            .calls
            .record(started, result.as_ref().err().map(CallError::kind_name));
        if let Err(error) = &result {
            trace::set_failed(&span, error);
        }
        match result {
            Ok(value) => {
                if let Some(reply) = reply
                    && let Err(e) = self.client.publish(reply, value.to_string().into()).await
                {
                    tracing::warn!(
                        "queue {}: cannot publish the result ({e}); will retry",
                        self.spec.subject
                    );
                    return self.retry(&message, deliveries).await;
                }
                self.acknowledge(&message, AckKind::Ack).await;
            }
            Err(error)
                if matches!(error, CallError::BadRequest(_)) || deliveries >= u64::from(self.spec.max_deliver) =>
            {
                self.give_up(&message, call_error_reply(&error), deliveries).await;
            }
            Err(error) => {
                tracing::debug!("queue {}: attempt {deliveries} failed: {error}", self.spec.subject);
                self.retry(&message, deliveries).await;
            }
        }
    }

    /// The server's backstop: a message delivered `max_deliver + 1` times
    /// without an answer (every host that took it died) is announced by an
    /// advisory; one host (a queue group) moves it to the dead-letter
    /// stream, so it never just sits in the stream.
    async fn backstop(&self, shutdown: &CancellationToken) {
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            self.spec.stream, self.consumer_name
        );
        let group = format!("membrane.dead.{}.{}", self.spec.stream, self.consumer_name);
        let mut advisories = match self.client.queue_subscribe(subject, group).await {
            Ok(advisories) => advisories,
            Err(e) => {
                tracing::warn!(
                    "queue {}: cannot follow max-delivery advisories: {e}",
                    self.spec.subject
                );
                return;
            }
        };
        loop {
            let advisory = tokio::select! {
                advisory = advisories.next() => advisory,
                _ = shutdown.cancelled() => break,
            };
            let Some(advisory) = advisory else { break };
            let fields: serde_json::Value = serde_json::from_slice(&advisory.payload).unwrap_or_default();
            if let Some(sequence) = fields["stream_seq"].as_u64() {
                self.dead_letter_undelivered(sequence, fields["deliveries"].as_u64().unwrap_or(0))
                    .await;
            }
        }
    }

    /// Moves stream message `sequence`, delivered `deliveries` times and never
    /// answered, to the dead-letter stream.
    async fn dead_letter_undelivered(&self, sequence: u64, deliveries: u64) {
        let Ok(message) = self.stream.get_raw_message(sequence).await else {
            return; // gone already: acked or dead-lettered by a host
        };
        let error = format!("delivered {deliveries} times and never answered: every host that took it stopped");
        let body = serde_json::json!({ "error": error, "kind": "undelivered" });
        let letter = Letter {
            subject: message.subject.as_str(),
            headers: Some(&message.headers),
            payload: message.payload.clone(),
        };
        tracing::warn!(
            "queue {}: dead-lettering message {sequence}: {error}",
            self.spec.subject
        );
        match self.publish_dead_letter(letter, 500, &body, deliveries).await {
            Ok(()) => {
                if let Err(e) = self.stream.delete_message(sequence).await {
                    tracing::warn!(
                        "queue {}: dead-lettered {sequence} but cannot delete it: {e}",
                        self.spec.subject
                    );
                }
            }
            Err(e) => tracing::warn!("queue {}: cannot dead-letter {sequence}: {e}", self.spec.subject),
        }
    }

    /// Where the message's result goes: its `Membrane-Reply-To`, if it names
    /// one under the binding's `reply_prefix`. Else the refusal's status and body.
    fn reply_to(&self, message: &jetstream::Message) -> Result<Option<String>, (u16, serde_json::Value)> {
        let Some(reply) = message.headers.as_ref().and_then(|h| h.get(REPLY_HEADER)) else {
            return Ok(None);
        };
        let reply = reply.as_str();
        if self.spec.reply_allowed(reply) {
            return Ok(Some(reply.to_string()));
        }
        let error = match &self.spec.reply_prefix {
            Some(prefix) => format!("{REPLY_HEADER} {reply:?} is not `{prefix}` or under it"),
            None => format!("{REPLY_HEADER} {reply:?}: this binding sends no replies (it sets no `reply_prefix`)"),
        };
        Err((400, serde_json::json!({ "error": error, "kind": "bad-request" })))
    }

    /// Naks the message, to be redelivered after a backoff.
    async fn retry(&self, message: &jetstream::Message, deliveries: u64) {
        self.acknowledge(message, AckKind::Nak(Some(self.backoff(deliveries))))
            .await;
    }

    /// Dead-letters the message with the reason in `(status, body)` and
    /// terminates it; if the dead letter cannot be stored, naks it instead.
    async fn give_up(&self, message: &jetstream::Message, (status, body): (u16, serde_json::Value), deliveries: u64) {
        tracing::warn!(
            "queue {}: dead-lettering after {deliveries} attempt(s): {}",
            self.spec.subject,
            body["error"].as_str().unwrap_or("error")
        );
        match self.dead_letter(message, status, &body, deliveries).await {
            Ok(()) => self.acknowledge(message, AckKind::Term).await,
            Err(e) => {
                tracing::warn!("queue {}: cannot dead-letter ({e}); will retry", self.spec.subject);
                self.retry(message, deliveries).await;
            }
        }
    }

    fn backoff(&self, deliveries: u64) -> Duration {
        let factor = 1u64 << deliveries.saturating_sub(1).min(16);
        Duration::from_millis(self.spec.backoff_ms.saturating_mul(factor)).min(MAX_BACKOFF)
    }

    async fn acknowledge(&self, message: &jetstream::Message, kind: AckKind) {
        if let Err(e) = message.ack_with(kind).await {
            // The server redelivers after ack_wait: at least once still holds.
            tracing::warn!("queue {}: cannot acknowledge: {e}", self.spec.subject);
        }
    }

    /// Publishes the message to the dead-letter subject, with its original
    /// headers and the reason, and waits for the stream's ack.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        status: u16,
        body: &serde_json::Value,
        deliveries: u64,
    ) -> anyhow::Result<()> {
        let letter = Letter {
            subject: message.subject.as_str(),
            headers: message.headers.as_ref(),
            payload: message.payload.clone(),
        };
        self.publish_dead_letter(letter, status, body, deliveries).await
    }

    /// Publishes `letter` to the dead-letter subject, with its headers and
    /// the reason, and waits for the stream's ack.
    async fn publish_dead_letter(
        &self,
        message: Letter<'_>,
        status: u16,
        body: &serde_json::Value,
        deliveries: u64,
    ) -> anyhow::Result<()> {
        // The producer's headers go along, but not NATS's own: copied
        // `Nats-Expected-*` or `Nats-Msg-Id` headers would make the dead
        // letter's publish fail, and the message would loop.
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in message.headers.into_iter().flat_map(|h| h.iter()) {
            if !name.to_string().to_ascii_lowercase().starts_with("nats-") {
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let reason = body["error"].as_str().unwrap_or("error").replace(['\r', '\n'], " ");
        headers.insert("Membrane-Error", reason.as_str());
        headers.insert(ERROR_KIND_HEADER, body["kind"].as_str().unwrap_or("error"));
        headers.insert("Membrane-Error-Code", status.to_string().as_str());
        headers.insert("Membrane-Deliveries", deliveries.to_string().as_str());
        headers.insert("Membrane-Original-Subject", message.subject);
        headers.insert("Membrane-Component", &*self.target.component);
        self.js
            .publish_with_headers(self.spec.dead_letter_subject(), headers, message.payload)
            .await?
            .await?;
        self.metrics.dead_letters.inc();
        Ok(())
    }
}

/// A stream name: letters, digits, `-` or `_`.
fn is_stream_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}
