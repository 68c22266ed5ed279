//! Forwarded HTTP: a request that an `http` listener routes to a component
//! placed on another host crosses the lattice and is answered byte for
//! byte, bodies streamed both ways with bounded memory.
//!
//! - The listener's side ([`Forwarder`]) sends the request head as a NATS
//!   request to [`subject`] (every host that runs the component subscribes
//!   in a queue group named after the subject, as for remote links, so NATS
//!   picks one and says at once when there is none), with the deadline and
//!   `traceparent` headers of a link call. The reply is the response head,
//!   or a typed fault as for a link call.
//! - The serving side ([`ForwardServer`]) runs the component's
//!   `wasi:http/incoming-handler` on it, as the `http` medium would.
//! - A body (request or response) that is not empty moves by **pulls**: the
//!   head names an inbox in `Membrane-Body`; the receiver sends an empty
//!   request there for each piece, and the answer is the next piece (at
//!   most [`MAX_PIECE`] bytes), or the end (`Membrane-End`, with the
//!   trailers if any). Each side holds at most one piece per body, and the
//!   sender reads its body only as fast as the receiver pulls.
//!
//! The wire is specified in `docs/wire.md`. This module knows nothing of
//! routes: the listener has already chosen one and set the Spin headers.

use super::medium::{Service, binding_span, fault_reply, publish_error, shed_at_capacity, subscription_limit};
use super::serve::{flush_briefly, serve_subscription};
use crate::links::chunks::chunk_limit;
use crate::links::remote::{
    DEADLINE_HEADER, ERROR_KIND_HEADER, Lattice, TRACEPARENT_HEADER, deadline_from_header, remote_fault, unix_millis,
};
use crate::manifest::subject::{ReplyRule, allow_reply};
use crate::metrics::Calls;
use crate::runtime::Runtime;
use crate::runtime::context::CallContext;
use crate::runtime::fault::{Fault, FaultKind};
use crate::runtime::trace;
use async_nats::client::RequestErrorKind;
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use futures::StreamExt as _;
use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::{Body, Frame};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Header of a head whose body follows by pulls: the inbox to pull from.
pub const BODY_HEADER: &str = "Membrane-Body";
/// Header of the last answer to a body's pulls (its payload: the trailers).
pub const END_HEADER: &str = "Membrane-End";
/// The largest piece of a body one pull answers.
pub const MAX_PIECE: usize = 256 << 10;
/// The version byte of every head.
const VERSION: u8 = 1;

/// Sends requests routed here to a host that runs their component.
#[derive(Clone)]
pub struct Forwarder {
    lattice: Lattice,
    app: String,
}

impl Forwarder {
    /// Forwarding over `lattice`, for `app`.
    pub fn new(lattice: Lattice, app: &str) -> Forwarder {
        Forwarder {
            lattice,
            app: app.to_string(),
        }
    }

    /// Forwards `request` (which came over TLS if `tls`) to `component` on
    /// another host and returns its response, whose body streams from there.
    pub async fn call(
        &self,
        component: &Arc<str>,
        request: hyper::Request<hyper::body::Incoming>,
        tls: bool,
        cx: CallContext,
    ) -> Result<hyper::Response<HyperOutgoingBody>, Fault> {
        let fault = |kind| Fault::new(component.clone(), kind);
        let client = &self.lattice.client();
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(fault(FaultKind::Unavailable));
        }
        let remaining = cx.deadline.saturating_duration_since(Instant::now());
        let (parts, body) = request.into_parts();
        let head = encode_request(&parts, tls);
        if head.len() > chunk_limit(client) {
            return Err(fault(FaultKind::Host {
                message: format!("a request head of {} bytes is too large to forward", head.len()),
            }));
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(DEADLINE_HEADER, unix_millis(cx.deadline).to_string().as_str());
        headers.insert(TRACEPARENT_HEADER, cx.traceparent().as_str());
        let mut pusher = None;
        if !body.is_end_stream() {
            let inbox = client.new_inbox();
            let pulls = client.subscribe(inbox.clone()).await.map_err(|e| {
                fault(FaultKind::Host {
                    message: format!("cannot offer the request body: {e}"),
                })
            })?;
            headers.insert(BODY_HEADER, inbox.as_str());
            // Ends with the body, or when nothing pulls for `remaining`.
            pusher = Some(tokio::spawn(answer_pulls(client.clone(), pulls, body, remaining)));
        }
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(head.into())
            .timeout(Some(remaining));
        let reply = client
            .send_request(crate::subjects::http(&self.lattice.name, &self.app, component), request)
            .await
            .map_err(|e| {
                // Nobody will pull the request body.
                if let Some(pusher) = &pusher {
                    pusher.abort();
                }
                fault(match e.kind() {
                    RequestErrorKind::NoResponders => FaultKind::NoResponders,
                    RequestErrorKind::TimedOut => FaultKind::deadline(remaining),
                    _ => FaultKind::Host {
                        message: format!("nats request failed: {e}"),
                    },
                })
            })?;
        let reply_headers = reply.headers.as_ref();
        if reply_headers.is_some_and(|h| h.get(ERROR_KIND_HEADER).is_some()) {
            if let Some(pusher) = &pusher {
                pusher.abort();
            }
            return Err(remote_fault(component, &reply.payload));
        }
        let decode = |message: String| fault(FaultKind::Decode { message });
        let (status, fields) = decode_response(&reply.payload).map_err(decode)?;
        let body = match reply_headers.and_then(|h| h.get(BODY_HEADER)) {
            Some(inbox) if !allow_reply(&ReplyRule::internal(), inbox.as_str(), &"forwarded response") => {
                return Err(decode(format!("the response body is offered at {:?}", inbox.as_str())));
            }
            Some(inbox) => pull_body(client.clone(), inbox.to_string(), remaining),
            None => Empty::new().map_err(|never| match never {}).boxed_unsync(),
        };
        let mut response = hyper::Response::new(body);
        *response.status_mut() = hyper::StatusCode::from_u16(status).map_err(|e| decode(e.to_string()))?;
        *response.headers_mut() = fields;
        Ok(response)
    }
}

/// Answers other hosts' forwarded requests to the components here.
pub struct ForwardServer {
    client: async_nats::Client,
    app: Arc<str>,
    subscribers: Vec<(Arc<str>, async_nats::Subscriber)>,
    runtime: Arc<Runtime>,
    replies: Arc<ReplyRule>,
}

impl ForwardServer {
    /// Subscribes to the forwarding subject of each of `components` of
    /// `app`, in a queue group named after the subject.
    pub async fn bind(
        lattice: &Lattice,
        app: &str,
        runtime: Arc<Runtime>,
        components: &[String],
    ) -> anyhow::Result<ForwardServer> {
        let mut subscribers = Vec::new();
        for component in components {
            let subject = crate::subjects::http(&lattice.name, app, component);
            let subscriber = lattice.client().queue_subscribe(subject.clone(), subject).await?;
            subscribers.push((Arc::from(component.as_str()), subscriber));
        }
        Ok(ForwardServer {
            client: lattice.client(),
            app: Arc::from(app),
            subscribers,
            runtime,
            replies: Arc::new(ReplyRule::lattice(&lattice.name)),
        })
    }
}

impl Service for ForwardServer {
    fn describe(&self) -> String {
        let components: Vec<&str> = self.subscribers.iter().map(|(c, _)| &**c).collect();
        format!("lattice http routes for {}", components.join(", "))
    }

    fn serve(self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let (client, runtime, app) = (&self.client, &self.runtime, &self.app);
            let replies = &self.replies;
            let serving = self.subscribers.into_iter().map(|(component, subscriber)| {
                let limit = subscription_limit(runtime, &component);
                let calls = Calls::new(app, &component, "http-forward");
                let label = format!("lattice http {component}");
                let handle = {
                    let component = component.clone();
                    move |message| {
                        let (client, runtime, app) = (client.clone(), runtime.clone(), app.clone());
                        let (component, calls, replies) = (component.clone(), calls.clone(), replies.clone());
                        async move { answer(&client, &runtime, (&app, &component, &calls), &replies, message).await }
                    }
                };
                let shed = move |message| {
                    let component = component.clone();
                    async move { shed_at_capacity(client, message, &component, limit, replies).await }
                };
                serve_subscription(subscriber, shutdown.clone(), label, limit, handle, shed)
            });
            futures::future::join_all(serving).await;
            flush_briefly(&self.client).await;
            Ok(())
        })
    }
}

/// Runs one forwarded request and sends its response head, then its body
/// as it is pulled.
async fn answer(
    client: &async_nats::Client,
    runtime: &Runtime,
    (app, component, calls): (&str, &Arc<str>, &Calls),
    replies: &ReplyRule,
    message: async_nats::Message,
) {
    let Some(reply) = message.reply.clone() else { return };
    if !allow_reply(replies, &reply, &format_args!("lattice http {component}")) {
        return;
    }
    // The request body is pulled from where the header says: the same rule.
    if let Some(inbox) = message.headers.as_ref().and_then(|h| h.get(BODY_HEADER))
        && !allow_reply(replies, inbox.as_str(), &format_args!("lattice http {component}"))
    {
        return;
    }
    let started = Instant::now();
    let headers = message.headers.as_ref();
    let timeout = runtime.get(component).map_or(Duration::from_secs(30), |c| c.timeout);
    // The caller's deadline, never past the component's own timeout.
    let own = Instant::now() + timeout;
    let deadline = deadline_from_header(headers).map_or(own, |theirs| theirs.min(own));
    let span = binding_span("http-forward", app, component, &"wasi:http/incoming-handler");
    let traceparent = headers.and_then(|h| h.get(TRACEPARENT_HEADER)).map(|v| v.as_str());
    let cx = CallContext::from_traceparent(deadline, traceparent);
    let cx = if span.is_disabled() { cx } else { cx.under(&span) };
    let result = match decode_request(&message.payload) {
        Ok((request, tls)) => {
            let wait = deadline.saturating_duration_since(Instant::now());
            let body = match headers.and_then(|h| h.get(BODY_HEADER)) {
                Some(inbox) => pull_body(client.clone(), inbox.to_string(), wait),
                None => Empty::new().map_err(|never| match never {}).boxed_unsync(),
            };
            runtime
                .handle_http(component, request.map(|()| body), tls, cx)
                .instrument(span.clone())
                .await
        }
        Err(message) => Err(Fault::new(component.clone(), FaultKind::Decode { message })),
    };
    calls.record(started, result.as_ref().err().map(|f| f.kind.name()));
    let sent = match result {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let head = encode_response(&parts);
            if body.is_end_stream() {
                client.publish(reply, head.into()).await
            } else {
                let inbox = client.new_inbox();
                match client.subscribe(inbox.clone()).await {
                    Ok(pulls) => {
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert(BODY_HEADER, inbox.as_str());
                        let sent = client.publish_with_headers(reply, headers, head.into()).await;
                        if sent.is_ok() {
                            answer_pulls(client.clone(), pulls, body, timeout).await;
                        }
                        sent
                    }
                    Err(e) => {
                        let fault = Fault::new(component.clone(), FaultKind::Host { message: e.to_string() });
                        publish_error(client, reply, fault_reply(&fault)).await
                    }
                }
            }
        }
        Err(fault) => {
            tracing::debug!("http-forward {component}: {fault}");
            trace::set_failed(&span, &fault);
            publish_error(client, reply, fault_reply(&fault)).await
        }
    };
    if let Err(e) = sent {
        tracing::warn!("http-forward {component}: cannot reply: {e}");
    }
}

/// One answer to a pull.
enum Piece {
    Data(Bytes),
    End(Option<hyper::HeaderMap>),
    Failed(String),
}

/// Answers the pulls arriving on `pulls` with the pieces of `body`, until
/// its end, an error, or no pull (or no piece) within `idle`.
async fn answer_pulls<B>(client: async_nats::Client, mut pulls: async_nats::Subscriber, body: B, idle: Duration)
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let limit = chunk_limit(&client).min(MAX_PIECE);
    let mut body = std::pin::pin!(body);
    let mut pending = Bytes::new();
    loop {
        let Ok(Some(pull)) = tokio::time::timeout(idle, pulls.next()).await else {
            break;
        };
        let Some(to) = pull.reply else { continue };
        if !allow_reply(&ReplyRule::internal(), &to, &"forwarded body") {
            continue;
        }
        let piece = if pending.is_empty() {
            next_piece(&mut body, idle).await
        } else {
            Piece::Data(std::mem::take(&mut pending))
        };
        let sent = match piece {
            Piece::Data(mut data) => {
                if data.len() > limit {
                    pending = data.split_off(limit);
                }
                client.publish(to, data).await.map(|()| true)
            }
            Piece::End(trailers) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(END_HEADER, "1");
                let payload = trailers
                    .map(|t| encode_fields(&mut BytesMut::new(), &t))
                    .unwrap_or_default();
                client.publish_with_headers(to, headers, payload).await.map(|()| false)
            }
            Piece::Failed(message) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(END_HEADER, "1");
                headers.insert(ERROR_KIND_HEADER, "body");
                client
                    .publish_with_headers(to, headers, message.into())
                    .await
                    .map(|()| false)
            }
        };
        if !matches!(sent, Ok(true)) {
            break;
        }
    }
    let _ = pulls.unsubscribe().await;
}

/// The next non-empty piece of `body`, waiting at most `idle` for it.
async fn next_piece<B>(body: &mut std::pin::Pin<&mut B>, idle: Duration) -> Piece
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Piece::Failed(format!("no body data within {} ms", idle.as_millis())),
            Ok(None) => return Piece::End(None),
            Ok(Some(Err(e))) => return Piece::Failed(e.to_string()),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame.into_data() {
            Ok(data) if data.is_empty() => continue,
            Ok(data) => return Piece::Data(data),
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => return Piece::End(Some(trailers)),
                Err(_) => continue,
            },
        }
    }
}

/// A body that pulls its pieces from `inbox`, each within `idle`.
fn pull_body(client: async_nats::Client, inbox: String, idle: Duration) -> HyperOutgoingBody {
    use wasmtime_wasi_http::Error;
    let pieces = futures::stream::unfold(Some((client, inbox)), move |state| async move {
        let (client, inbox) = state?;
        let pull = async_nats::Request::new().payload(Bytes::new()).timeout(Some(idle));
        let piece = match client.send_request(inbox.clone(), pull).await {
            Err(e) => Err(Error::InternalError(Some(format!("forwarded body: {e}")))),
            Ok(message) => {
                let end = message.headers.as_ref().is_some_and(|h| h.get(END_HEADER).is_some());
                let failed = message
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get(ERROR_KIND_HEADER).is_some());
                if failed {
                    let why = String::from_utf8_lossy(&message.payload).into_owned();
                    Err(Error::InternalError(Some(format!("forwarded body: {why}"))))
                } else if !end {
                    return Some((Ok(Frame::data(message.payload)), Some((client, inbox))));
                } else if message.payload.is_empty() {
                    return None;
                } else {
                    let mut payload = message.payload;
                    match decode_fields(&mut payload) {
                        Ok(trailers) => Ok(Frame::trailers(trailers)),
                        Err(e) => Err(Error::InternalError(Some(format!("forwarded trailers: {e}")))),
                    }
                }
            }
        };
        Some((piece, None))
    });
    StreamBody::new(pieces).boxed_unsync()
}

// The heads. Every string is a u32 (big-endian) length and its bytes.
//
// request:  VERSION | tls (0 or 1) | method | path-and-query | authority | fields
// response: VERSION | status (u16) | fields
// fields:   count (u32) | name | value | name | value ...

fn put(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.put_slice(bytes);
}

fn encode_fields(out: &mut BytesMut, fields: &hyper::HeaderMap) -> Bytes {
    out.put_u32(u32::try_from(fields.len()).unwrap_or(u32::MAX));
    for (name, value) in fields {
        put(out, name.as_str().as_bytes());
        put(out, value.as_bytes());
    }
    out.split().freeze()
}

fn encode_request(parts: &hyper::http::request::Parts, tls: bool) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(VERSION);
    out.put_u8(u8::from(tls));
    put(&mut out, parts.method.as_str().as_bytes());
    put(
        &mut out,
        parts.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes(),
    );
    put(&mut out, parts.uri.authority().map_or("", |a| a.as_str()).as_bytes());
    encode_fields(&mut out, &parts.headers).to_vec()
}

fn encode_response(parts: &hyper::http::response::Parts) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(VERSION);
    out.put_u16(parts.status.as_u16());
    encode_fields(&mut out, &parts.headers).to_vec()
}

fn take<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], String> {
    if input.remaining() < 4 {
        return Err("a head ends inside a length".into());
    }
    let len = input.get_u32() as usize;
    if input.len() < len {
        return Err(format!("a head announces {len} bytes and has {}", input.len()));
    }
    let (bytes, rest) = input.split_at(len);
    *input = rest;
    Ok(bytes)
}

/// Header fields (or trailers) as a forwarded head or body end carries them.
pub fn decode_fields(input: &mut impl AsRef<[u8]>) -> Result<hyper::HeaderMap, String> {
    let mut bytes = input.as_ref();
    fields_from(&mut bytes)
}

fn fields_from(input: &mut &[u8]) -> Result<hyper::HeaderMap, String> {
    if input.remaining() < 4 {
        return Err("a head ends before its field count".into());
    }
    let count = input.get_u32() as usize;
    // Each field takes at least 8 bytes: a count past that is a lie.
    let mut fields = hyper::HeaderMap::with_capacity(count.min(input.len() / 8));
    for _ in 0..count {
        let name = hyper::header::HeaderName::from_bytes(take(input)?).map_err(|e| e.to_string())?;
        let value = hyper::header::HeaderValue::from_bytes(take(input)?).map_err(|e| e.to_string())?;
        fields.append(name, value);
    }
    if !input.is_empty() {
        return Err(format!("{} bytes after a head", input.len()));
    }
    Ok(fields)
}

fn version(input: &mut &[u8]) -> Result<(), String> {
    match input.first() {
        Some(&VERSION) => {
            input.advance(1);
            Ok(())
        }
        Some(other) => Err(format!("head version {other}; this host speaks {VERSION}")),
        None => Err("an empty head".into()),
    }
}

/// A forwarded request's head (the body is the caller's to attach), and
/// whether it came over TLS.
pub fn decode_request(payload: &[u8]) -> Result<(hyper::Request<()>, bool), String> {
    let mut input = payload;
    version(&mut input)?;
    if input.is_empty() {
        return Err("a head ends before its scheme".into());
    }
    let tls = input.get_u8() == 1;
    let method = hyper::Method::from_bytes(take(&mut input)?).map_err(|e| e.to_string())?;
    let path = std::str::from_utf8(take(&mut input)?)
        .map_err(|e| e.to_string())?
        .to_string();
    let authority = std::str::from_utf8(take(&mut input)?)
        .map_err(|e| e.to_string())?
        .to_string();
    let fields = fields_from(&mut input)?;
    let mut uri = hyper::Uri::builder().path_and_query(path);
    if !authority.is_empty() {
        uri = uri.scheme(if tls { "https" } else { "http" }).authority(authority);
    }
    let mut request = hyper::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri.build().map_err(|e| e.to_string())?;
    *request.headers_mut() = fields;
    Ok((request, tls))
}

/// A forwarded response's head: its status and header fields.
pub fn decode_response(payload: &[u8]) -> Result<(u16, hyper::HeaderMap), String> {
    let mut input = payload;
    version(&mut input)?;
    if input.remaining() < 2 {
        return Err("a head ends before its status".into());
    }
    let status = input.get_u16();
    Ok((status, fields_from(&mut input)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn by_name(fields: &hyper::HeaderMap) -> HashMap<String, Vec<Vec<u8>>> {
        let mut map: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        for (name, value) in fields {
            map.entry(name.to_string()).or_default().push(value.as_bytes().to_vec());
        }
        map
    }

    #[test]
    fn a_request_head_crosses_unchanged() {
        let request = hyper::Request::builder()
            .method("PATCH")
            .uri("http://example.com:8080/a/b?x=1&y=%20")
            .header("x-one", "1")
            .header("x-two", "a")
            .header("x-two", hyper::header::HeaderValue::from_bytes(b"\xffbinary").unwrap())
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let (back, tls) = decode_request(&encode_request(&parts, true)).unwrap();
        assert!(tls);
        assert_eq!(back.method(), "PATCH");
        assert_eq!(back.uri().to_string(), "https://example.com:8080/a/b?x=1&y=%20");
        assert_eq!(by_name(back.headers()), by_name(&parts.headers));
    }

    proptest! {
        /// Whatever a peer sends as a head is a head or a named refusal,
        /// never a panic or a huge allocation.
        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
            let mut with_version = vec![VERSION];
            with_version.extend_from_slice(&bytes);
            let _ = decode_request(&with_version);
            let _ = decode_response(&with_version);
        }
    }
}
