//! The serving loops media and services share: HTTP/1.1 connections on a
//! listener, and messages of a NATS subscription. Both drain on shutdown,
//! so stopping drops no call.

use super::medium::DRAIN_TIMEOUT;
use crate::manifest::HttpLimits;
use bytes::Bytes;
use futures::StreamExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// How long a stopping service waits for NATS to take what it has buffered.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(2);

/// Flushes what `client` has buffered, giving up after [`FLUSH_ON_EXIT`]: a
/// host that stops while NATS is away must not wait for it.
pub async fn flush_briefly(client: &async_nats::Client) {
    if tokio::time::timeout(FLUSH_ON_EXIT, client.flush()).await.is_err() {
        tracing::debug!("nats: gave up flushing before exit");
    }
}

/// How many more messages a draining subscription accepts (see
/// [`serve_subscription`]).
const DRAIN_SLACK: u64 = 1000;
/// A draining subscription idle this long is closed.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// Accepts HTTP/1.1 connections (keep-alive) on `listener` and answers every
/// request with `handler` until `shutdown`; then lets in-flight requests
/// finish. At most `limits.max_connections` are served at once (more wait in
/// the kernel's backlog), and a connection that takes longer than
/// `limits.header_timeout_ms` to send a request's headers, or idles that long
/// between requests, is closed.
pub async fn serve_http<H, F, B>(
    listener: TcpListener,
    limits: HttpLimits,
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
    let http = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms))
        .clone();
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
        let service = hyper::service::service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
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
/// The drain is `UNSUB <sid> <received + DRAIN_SLACK>`: the server stops after
/// that many messages in all, and the client keeps the subscription until
/// it has them all, so none that is already on the wire is lost. (async-nats's
/// own `drain` drops the subscription before such messages arrive.) Under
/// load the slack fills in moments; when traffic stops first, the
/// subscription is closed after `DRAIN_IDLE` of silence.
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
    loop {
        tokio::select! {
            message = subscriber.next() => match message {
                Some(message) => {
                    received += 1;
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
                drain(&mut subscriber, received, |message| {
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

/// Unsubscribes after the messages already on their way, handing each to `take`.
async fn drain(subscriber: &mut async_nats::Subscriber, received: u64, mut take: impl FnMut(async_nats::Message)) {
    if subscriber.unsubscribe_after(received + DRAIN_SLACK).await.is_err() {
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
