//! Values larger than one NATS message: chunked request/reply.
//!
//! A NATS server refuses messages over its `max_payload` (1 MiB by default).
//! A remote link call whose arguments or results are bigger is split into
//! chunks of at most [`chunk_limit`] bytes, each moved by one plain NATS
//! request, so the receiver pulls at its own pace and every step has the
//! call's deadline. Small calls (nearly all) are one request and one reply,
//! exactly as before; only the large ones pay one extra round trip per chunk.
//!
//! - A chunked **request** carries `Membrane-Chunked: <total bytes>` and the
//!   first chunk. The replica that takes it (queue groups pick one) answers
//!   `Membrane-Continue: <inbox>`; the caller sends every further chunk as a
//!   request to that inbox. Intermediate chunks are acknowledged with an empty
//!   reply; the answer to the last chunk is the call's reply.
//! - A chunked **reply** carries `Membrane-Chunked`, `Membrane-Continue` and
//!   the first chunk; the caller sends empty requests to the inbox, and each
//!   answer is the next chunk.
//!
//! The receiver refuses a total over [`MAX_VALUE_BYTES`] before allocating,
//! and all reassemblies of a host together hold at most
//! [`REASSEMBLY_BUDGET_KIB`]: past it a chunked request is refused at once.
//! The protocol is specified in `docs/wire.md`.

use crate::manifest::subject::{ReplyRule, allow_reply};
use async_nats::client::RequestErrorKind;
use async_nats::{HeaderMap, Subject};
use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use std::time::Instant;

/// Header of the first message of a chunked value: its total size in bytes.
pub const CHUNKED_HEADER: &str = "Membrane-Chunked";
/// Header naming the inbox the rest of a chunked value moves through.
pub const CONTINUE_HEADER: &str = "Membrane-Continue";
/// The largest value a host accepts in chunks (64 MiB).
pub const MAX_VALUE_BYTES: usize = 64 << 20;
/// The bytes (in KiB) all chunked requests being reassembled on this host may
/// hold together: 256 MiB.
pub const REASSEMBLY_BUDGET_KIB: usize = 256 << 10;
static REASSEMBLY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(REASSEMBLY_BUDGET_KIB);

/// Room left in each message for headers.
const HEADER_ROOM: usize = 8 << 10;

/// The largest chunk the connected server accepts, with room for headers.
pub fn chunk_limit(client: &async_nats::Client) -> usize {
    client.server_info().max_payload.saturating_sub(HEADER_ROOM).max(1024)
}

/// A reassembled reply.
pub struct Reply {
    /// The headers of the first message of the reply.
    pub headers: Option<HeaderMap>,
    /// The whole payload.
    pub payload: Bytes,
}

/// Why a chunked exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// Nobody subscribes to the subject.
    NoResponders,
    /// The deadline passed.
    TimedOut,
    /// NATS refused or the other side broke the protocol.
    Other(String),
}

/// Sends `payload` to `subject` as a request (in chunks when it is large) and
/// returns the whole reply, pulling the rest of a chunked one.
pub async fn request(
    client: &async_nats::Client,
    subject: String,
    mut headers: HeaderMap,
    payload: Bytes,
    deadline: Instant,
) -> Result<Reply, Failure> {
    let limit = chunk_limit(client);
    let total = payload.len();
    if total > limit {
        headers.insert(CHUNKED_HEADER, total.to_string().as_str());
    }
    let mut reply = send(
        client,
        subject,
        Some(headers),
        payload.slice(..total.min(limit)),
        deadline,
    )
    .await?;
    if total > limit {
        let inbox = match header(&reply, CONTINUE_HEADER) {
            Some(inbox) => checked_inbox(inbox)?,
            // An error reply (at capacity, say) ends the call at once.
            None if reply.headers.is_some() => return Ok(reply),
            None => {
                return Err(Failure::Other(
                    "chunked request: no continue inbox in the answer".into(),
                ));
            }
        };
        let mut offset = limit;
        while offset < total {
            let end = (offset + limit).min(total);
            reply = send(client, inbox.clone(), None, payload.slice(offset..end), deadline).await?;
            offset = end;
        }
    }
    let Some(total) = header(&reply, CHUNKED_HEADER) else {
        return Ok(reply);
    };
    let mut whole =
        Reassembly::start(&total, &reply.payload).map_err(|e| Failure::Other(format!("chunked reply: {e}")))?;
    let inbox =
        header(&reply, CONTINUE_HEADER).ok_or_else(|| Failure::Other("chunked reply: no continue inbox".into()))?;
    let inbox = checked_inbox(inbox)?;
    while !whole.is_complete() {
        let part = send(client, inbox.clone(), None, Bytes::new(), deadline).await?;
        whole
            .push(&part.payload)
            .map_err(|e| Failure::Other(format!("chunked reply: {e}")))?;
    }
    Ok(Reply {
        headers: reply.headers,
        payload: whole.finish(),
    })
}

/// `inbox`, a continue inbox a peer named, if this host may send to it.
fn checked_inbox(inbox: String) -> Result<String, Failure> {
    ReplyRule::internal()
        .check(&inbox, true)
        .map(|()| inbox)
        .map_err(|why| Failure::Other(format!("chunked call: {why}")))
}

async fn send(
    client: &async_nats::Client,
    subject: String,
    headers: Option<HeaderMap>,
    payload: Bytes,
    deadline: Instant,
) -> Result<Reply, Failure> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(Failure::TimedOut);
    }
    let mut request = async_nats::Request::new().payload(payload).timeout(Some(remaining));
    if let Some(headers) = headers {
        request = request.headers(headers);
    }
    match client.send_request(subject, request).await {
        Ok(message) => Ok(Reply {
            headers: message.headers,
            payload: message.payload,
        }),
        Err(e) => Err(match e.kind() {
            RequestErrorKind::NoResponders => Failure::NoResponders,
            RequestErrorKind::TimedOut => Failure::TimedOut,
            _ => Failure::Other(format!("nats request failed: {e}")),
        }),
    }
}

fn header(reply: &Reply, name: &str) -> Option<String> {
    Some(reply.headers.as_ref()?.get(name)?.as_str().to_string())
}

/// A value arriving in chunks, checked against the size its sender
/// announced: it grows as parts arrive (the announced size is the peer's
/// word, never allocated up front), and refuses an empty part or one past
/// the size.
#[derive(Debug)]
pub struct Reassembly {
    total: usize,
    whole: BytesMut,
}

impl Reassembly {
    /// A value announced as `total_header` bytes (the `Membrane-Chunked`
    /// header), whose first part is `first`.
    pub fn start(total_header: &str, first: &[u8]) -> Result<Reassembly, String> {
        let total = parse_total(total_header)?;
        if first.len() > total {
            return Err(format!("a first chunk of {} bytes of {total}", first.len()));
        }
        let mut whole = BytesMut::with_capacity(first.len());
        whole.extend_from_slice(first);
        Ok(Reassembly { total, whole })
    }

    /// Adds the next part.
    pub fn push(&mut self, part: &[u8]) -> Result<(), String> {
        if part.is_empty() || self.whole.len() + part.len() > self.total {
            return Err(format!(
                "a chunk of {} bytes after {} of {}",
                part.len(),
                self.whole.len(),
                self.total
            ));
        }
        self.whole.extend_from_slice(part);
        Ok(())
    }

    /// Whether every announced byte has arrived.
    pub fn is_complete(&self) -> bool {
        self.whole.len() >= self.total
    }

    /// The bytes received so far.
    pub fn received(&self) -> usize {
        self.whole.len()
    }

    /// The whole value.
    pub fn finish(self) -> Bytes {
        self.whole.freeze()
    }
}

/// The size a `Membrane-Chunked` header announces, within the limit.
pub fn parse_total(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(total) if total <= MAX_VALUE_BYTES => Ok(total),
        Ok(total) => Err(format!(
            "a value of {total} bytes exceeds the limit of {MAX_VALUE_BYTES}"
        )),
        Err(_) => Err(format!("`{CHUNKED_HEADER}: {text}` is not a size")),
    }
}

/// The serving side of one request: its whole payload, and the subject to
/// send the answer to (for a chunked request, the reply of the last chunk).
pub async fn receive(
    client: &async_nats::Client,
    message: &async_nats::Message,
    reply: Subject,
    deadline: Instant,
) -> Result<(Bytes, Subject), (Subject, String)> {
    let Some(total) = message.headers.as_ref().and_then(|h| h.get(CHUNKED_HEADER)) else {
        return Ok((message.payload.clone(), reply));
    };
    let mut whole = Reassembly::start(total.as_str(), &message.payload).map_err(|e| (reply.clone(), e))?;
    let total = whole.total;
    let kib = u32::try_from(total.div_ceil(1024)).unwrap_or(u32::MAX);
    let Ok(_budget) = REASSEMBLY.try_acquire_many(kib) else {
        return Err((
            reply,
            format!(
                "this host is reassembling {} MiB of chunked requests already; retry",
                REASSEMBLY_BUDGET_KIB >> 10
            ),
        ));
    };
    let inbox = client.new_inbox();
    let fail = |reply: &Subject, e: String| (reply.clone(), e);
    let mut parts = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| fail(&reply, format!("cannot receive chunks: {e}")))?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTINUE_HEADER, inbox.as_str());
    client
        .publish_with_headers(reply.clone(), headers, Bytes::new())
        .await
        .map_err(|e| fail(&reply, format!("cannot ask for chunks: {e}")))?;
    let mut answer_to = reply;
    while !whole.is_complete() {
        let part = match tokio::time::timeout_at(deadline.into(), parts.next()).await {
            Ok(Some(part)) => part,
            _ => {
                return Err(fail(
                    &answer_to,
                    format!("chunked request: {} of {total} bytes by the deadline", whole.received()),
                ));
            }
        };
        let Some(next) = part.reply.clone() else { continue };
        if !allow_reply(&ReplyRule::internal(), &next, &"chunked request") {
            continue;
        }
        answer_to = next;
        if let Err(e) = whole.push(&part.payload) {
            return Err(fail(&answer_to, format!("chunked request: {e}")));
        }
        if !whole.is_complete() {
            let _ = client.publish(answer_to.clone(), Bytes::new()).await;
        }
    }
    let _ = parts.unsubscribe().await;
    Ok((whole.finish(), answer_to))
}

/// Sends a successful answer `payload` to `reply`, in chunks when it is large
/// (the caller pulls them until `deadline`).
pub async fn respond(
    client: &async_nats::Client,
    reply: Subject,
    payload: Bytes,
    deadline: Instant,
) -> Result<(), async_nats::PublishError> {
    let limit = chunk_limit(client);
    if payload.len() <= limit {
        return client.publish(reply, payload).await;
    }
    let inbox = client.new_inbox();
    let Ok(mut pulls) = client.subscribe(inbox.clone()).await else {
        tracing::warn!("cannot offer a chunked reply");
        return Ok(());
    };
    let mut headers = HeaderMap::new();
    headers.insert(CHUNKED_HEADER, payload.len().to_string().as_str());
    headers.insert(CONTINUE_HEADER, inbox.as_str());
    client
        .publish_with_headers(reply, headers, payload.slice(..limit))
        .await?;
    let mut offset = limit;
    while offset < payload.len() {
        let Ok(Some(pull)) = tokio::time::timeout_at(deadline.into(), pulls.next()).await else {
            break;
        };
        let Some(to) = pull.reply else { continue };
        if !allow_reply(&ReplyRule::internal(), &to, &"chunked reply") {
            continue;
        }
        let end = (offset + limit).min(payload.len());
        client.publish(to, payload.slice(offset..end)).await?;
        offset = end;
    }
    let _ = pulls.unsubscribe().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The chunk receiver's fuzz target: the size a peer announces is
        /// a number within bounds, or a named refusal, never a panic.
        #[test]
        fn any_announced_size_is_bounded_or_refused(text in "\\PC{0,40}", n in any::<u64>()) {
            for candidate in [text, n.to_string(), format!("-{n}"), format!("{n}{n}")] {
                if let Ok(total) = parse_total(&candidate) {
                    prop_assert!(total <= MAX_VALUE_BYTES);
                }
            }
        }
    }
}
