//! The serving loops media and services share: HTTP connections on a
//! listener (HTTP/1.1 and HTTP/2, plain or TLS), and messages of a NATS
//! subscription. Both drain on shutdown, so stopping drops no call.

use super::medium::DRAIN_TIMEOUT;
use bytes::Bytes;
use futures::StreamExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// What an HTTP server allows its clients, the same for `http` and
/// `http-rpc` bindings: slow or silent clients hold no connection for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once.
    pub max_connections: u32,
    /// For a request's headers (and an http-rpc body), and for an idle
    /// keep-alive connection's next request.
    pub header_timeout_ms: u64,
}

impl HttpLimits {
    /// What is wrong with the limits of binding `i`.
    pub fn problems(&self, i: usize) -> Vec<String> {
        let mut problems = Vec::new();
        if self.max_connections == 0 {
            problems.push(format!("bindings[{i}].max_connections: must be at least 1"));
        }
        if self.header_timeout_ms == 0 {
            problems.push(format!("bindings[{i}].header_timeout_ms: must be at least 1"));
        }
        problems
    }
}

pub(crate) fn default_max_connections() -> u32 {
    4096
}
pub(crate) fn default_header_timeout_ms() -> u64 {
    10_000
}

/// How long a stopping service waits for NATS to take what it has buffered.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(2);

/// Flushes what `client` has buffered, giving up after [`FLUSH_ON_EXIT`]: a
/// host that stops while NATS is away must not wait for it.
pub async fn flush_briefly(client: &async_nats::Client) {
    if tokio::time::timeout(FLUSH_ON_EXIT, client.flush()).await.is_err() {
        tracing::debug!("nats: gave up flushing before exit");
    }
}

/// Waits (at most [`FLUSH_ON_EXIT`]) until the server has processed what
/// `client` sent, subscriptions included: a medium calls it after it
/// subscribes, so that a caller on another connection who reads "ready"
/// finds a responder. A server that does not answer in time is logged, not
/// an error: the subscriptions are registered when it answers.
pub async fn registered(client: &async_nats::Client, what: &str) {
    match tokio::time::timeout(FLUSH_ON_EXIT, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("nats: {what}: not confirmed by the server: {e}"),
        Err(_) => tracing::warn!("nats: {what}: not confirmed by the server in {FLUSH_ON_EXIT:?}"),
    }
}

/// How many more messages a draining subscription accepts, at least and at
/// most (see [`serve_subscription`]): between these, a tenth of a second of
/// its recent traffic.
const DRAIN_SLACK: (u64, u64) = (16, 1000);
/// A draining subscription idle this long is closed.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// The connection a request arrived on; the serving loop puts it in every
/// request's extensions.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
    /// The same as a header value (`ip:port`), formatted once per connection
    /// rather than once per request.
    pub client: Option<hyper::header::HeaderValue>,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// Accepts connections on `listener` and answers every request with
/// `handler` until `shutdown`; then lets in-flight requests finish. A plain
/// socket speaks HTTP/1.1 (keep-alive) and HTTP/2 with prior knowledge
/// (h2c); with `tls`, the same after a handshake whose ALPN offers `h2`
/// and `http/1.1`. At most `limits.max_connections` are served at once (more
/// wait in the kernel's backlog). A client that sends nothing, or does not
/// finish its TLS handshake, within `limits.header_timeout_ms` is closed; so
/// is an HTTP/1.1 connection that takes that long to send a request's
/// headers or idles that long between requests, and an HTTP/2 connection
/// that does not answer a keep-alive ping within it.
pub async fn serve_http<H, F, B>(
    listener: TcpListener,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    handler: H,
) -> anyhow::Result<()>
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let local = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    let timeout = Duration::from_millis(limits.header_timeout_ms);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeout)
        .keep_alive_timeout(timeout);
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(limits.max_connections as usize));
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit?,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually fd exhaustion: back off instead of spinning.
                    tracing::warn!("http {local}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let info = Connection {
            peer,
            client: hyper::header::HeaderValue::try_from(peer.to_string()).ok(),
            tls: tls.is_some(),
        };
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(info.clone());
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let (builder, watcher, tls) = (builder.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    // The protocol is read from the first bytes, with no
                    // timeout of its own: a silent client must not hold a slot.
                    match tokio::time::timeout(timeout, stream.peek(&mut [0u8; 1])).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!("https connection from {peer}: handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("https connection from {peer}: no handshake within {timeout:?}");
                            return;
                        }
                    };
                    // ALPN offered `h2` and `http/1.1`; the first bytes tell which.
                    watcher
                        .watch(builder.serve_connection(TokioIo::new(stream), service))
                        .await
                }
            };
            if let Err(e) = served {
                tracing::debug!("http connection from {peer}: {e}");
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("http {local}: gave up waiting for in-flight requests");
    }
    Ok(())
}

/// Serves a NATS subscription: each message to `handle` in its own task,
/// at most `limit` at once, until `shutdown`. A message past the limit goes
/// to `shed` instead, at once and before anything of it is decoded (its
/// sender gets a typed `capacity` answer, not a queue). Then it drains, so that stopping drops no call: NATS
/// stops routing to it (other members of the queue group take over), it
/// handles every message already sent to it, and it waits for the calls in
/// flight.
///
/// The drain is `UNSUB <sid> <received + slack>`: the server stops after
/// that many messages in all, and the client keeps the subscription until
/// it has them all, so none that is already on the wire is lost. (async-nats's
/// own `drain` drops the subscription before such messages arrive.) The slack
/// covers what can be on the wire: a tenth of a second of the subscription's
/// traffic in the last second, within [`DRAIN_SLACK`]. It fills in about that
/// long under load, whatever the rate, so a stop never waits on a slow
/// trickle; when traffic stops first, the subscription is closed after
/// `DRAIN_IDLE` of silence.
pub async fn serve_subscription<F, Fut, S, SFut>(
    mut subscriber: async_nats::Subscriber,
    shutdown: CancellationToken,
    label: String,
    limit: usize,
    handle: F,
    shed: S,
) where
    F: Fn(async_nats::Message) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
    S: Fn(async_nats::Message) -> SFut,
    SFut: Future<Output = ()>,
{
    let mut in_flight = tokio::task::JoinSet::new();
    let mut received: u64 = 0;
    let mut rate = Rate::default();
    loop {
        tokio::select! {
            message = subscriber.next() => match message {
                Some(message) => {
                    received += 1;
                    rate.tick();
                    while in_flight.try_join_next().is_some() {}
                    if in_flight.len() < limit {
                        in_flight.spawn(handle(message));
                    } else {
                        shed(message).await;
                    }
                }
                None => break,
            },
            _ = shutdown.cancelled() => {
                let slack = (rate.per_second() / 10).clamp(DRAIN_SLACK.0, DRAIN_SLACK.1);
                drain(&mut subscriber, received + slack, |message| {
                    in_flight.spawn(handle(message));
                })
                .await;
                break;
            }
        }
    }
    let drain = async { while in_flight.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!("{label}: gave up waiting for calls in flight");
    }
}

/// Messages per second over the last whole second.
#[derive(Default)]
struct Rate {
    second: Option<std::time::Instant>,
    this: u64,
    last: u64,
}

impl Rate {
    fn tick(&mut self) {
        let now = std::time::Instant::now();
        match self.second {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => self.this += 1,
            Some(start) if now.duration_since(start) < Duration::from_secs(2) => {
                (self.last, self.this) = (self.this, 1);
                self.second = Some(start + Duration::from_secs(1));
            }
            _ => {
                (self.last, self.this) = (0, 1);
                self.second = Some(now);
            }
        }
    }

    /// The last whole second's count, or the current one's if it is larger.
    fn per_second(&self) -> u64 {
        self.last.max(self.this)
    }
}

/// Unsubscribes after `max` messages in all (the ones already on their way),
/// handing each to `take`.
async fn drain(subscriber: &mut async_nats::Subscriber, max: u64, mut take: impl FnMut(async_nats::Message)) {
    if subscriber.unsubscribe_after(max).await.is_err() {
        return;
    }
    loop {
        match tokio::time::timeout(DRAIN_IDLE, subscriber.next()).await {
            Ok(Some(message)) => take(message),
            Ok(None) => break,
            Err(_) => {
                let _ = subscriber.unsubscribe().await;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_subscription_counts_its_current_second() {
        let mut rate = Rate::default();
        assert_eq!(rate.per_second(), 0);
        for _ in 0..50 {
            rate.tick();
        }
        // Drained now, it would accept the minimum slack: 50 / 10 < 16.
        assert_eq!(rate.per_second(), 50);
        assert_eq!((rate.per_second() / 10).clamp(DRAIN_SLACK.0, DRAIN_SLACK.1), 16);
    }

    #[test]
    fn a_quiet_second_resets_the_rate() {
        let mut rate = Rate {
            second: Some(std::time::Instant::now() - Duration::from_secs(5)),
            this: 20_000,
            last: 20_000,
        };
        rate.tick();
        assert_eq!(rate.per_second(), 1, "traffic of seconds ago does not count");
    }
}
