//! A WASI 0.3 HTTP handler (`wasi:http/handler@0.3.0`), written against the
//! published `wasip3` bindings as their own examples are. It names no host.
//!
//! It answers by the last segment of the path, wherever it is mounted:
//! - `GET .../download?mib=N`: N MiB of bytes, written 64 KiB at a time
//!   while the client reads them (the body streams; nothing is buffered
//!   whole);
//! - `POST .../upload`: reads the body as it arrives and answers how many
//!   bytes it counted;
//! - `POST .../echo`: the body back;
//! - `GET .../fetch?authority=HOST:PORT`: sends `GET http://HOST:PORT/`
//!   through `wasi:http/client` and answers `fetched STATUS`, or `refused
//!   CODE` (502) when the request fails;
//! - `GET .../wait?ms=N`: waits N ms (a timer, not a spin), then answers
//!   how many requests this instance had in flight at once at most, and
//!   how many it has served (the host may run several on one instance);
//! - `GET .../trap`: traps; `GET .../loop`: spins without end;
//!   `GET .../hang`: waits without end before it responds; `GET .../stall`:
//!   responds, writes 64 KiB of body and then waits without end (the
//!   host's timeouts end them);
//! - anything else: a greeting naming the method and path.
//!
//! The guest's task runtime exists on wasm only, so the crate is empty when
//! the workspace's tests build it for the host.
#![cfg(target_family = "wasm")]

use std::sync::atomic::{AtomicU32, Ordering};
use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::wit_bindgen::StreamResult;
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(Hello);

struct Hello;

/// The bytes of one body chunk.
const CHUNK: usize = 64 * 1024;

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let method = request.get_method();
        let route = path.split('?').next().unwrap_or_default();
        match (&method, route.rsplit('/').next().unwrap_or_default()) {
            (Method::Get, "download") => {
                let mib: usize = query(&path, "mib").and_then(|v| v.parse().ok()).unwrap_or(1);
                Ok(streamed(mib * 1024 * 1024))
            }
            (Method::Post, "upload") => {
                let counted = read_body(request, |_| {}).await?;
                Ok(text(format!("received {counted} bytes\n")))
            }
            (Method::Post, "echo") => {
                let mut body = Vec::new();
                read_body(request, |chunk| body.extend_from_slice(chunk)).await?;
                Ok(bytes(body))
            }
            (Method::Get, "wait") => {
                let ms: u64 = query(&path, "ms").and_then(|v| v.parse().ok()).unwrap_or(0);
                Ok(text(waited(ms).await))
            }
            (Method::Get, "trap") => panic!("trap requested over http"),
            (Method::Get, "loop") => {
                eprintln!("hello-p3: spinning");
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            (Method::Get, "hang") => {
                eprintln!("hello-p3: hanging");
                never().await;
                Ok(text("unreachable\n".into()))
            }
            (Method::Get, "stall") => Ok(stalled()),
            (Method::Get, "fetch") => {
                let authority = query(&path, "authority").unwrap_or_default().to_string();
                Ok(fetch(authority).await)
            }
            _ => Ok(text(format!("hello from wasi:http 0.3: {} {path}\n", name(&method)))),
        }
    }
}

/// Requests in this instance's `wait` right now, the most at once, and
/// how many it has answered.
static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);
static PEAK: AtomicU32 = AtomicU32::new(0);
static SERVED: AtomicU32 = AtomicU32::new(0);

/// Waits `ms` milliseconds on the host's clock and says what this
/// instance saw meanwhile.
async fn waited(ms: u64) -> String {
    let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    PEAK.fetch_max(now, Ordering::SeqCst);
    wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
    IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    let served = SERVED.fetch_add(1, Ordering::SeqCst) + 1;
    let peak = PEAK.load(Ordering::SeqCst);
    format!("waited {ms} ms; at once: {peak}; served: {served}\n")
}

/// Sends `GET http://{authority}/` and says what came back.
async fn fetch(authority: String) -> Response {
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (request, _sent) = Request::new(Fields::new(), None, trailers_rx, None);
    let built = request
        .set_scheme(Some(&Scheme::Http))
        .and_then(|()| request.set_authority(Some(&authority)))
        .and_then(|()| request.set_path_with_query(Some("/")));
    if built.is_err() {
        return with_status(400, format!("bad authority {authority:?}\n"));
    }
    match wasip3::http::client::send(request).await {
        Ok(response) => text(format!("fetched {}\n", response.get_status_code())),
        Err(code) => with_status(502, format!("refused {code:?}\n")),
    }
}

/// A response with `status` and `body` as text.
fn with_status(status: u16, body: String) -> Response {
    let response = text(body);
    let _ = response.set_status_code(status);
    response
}

/// A method's name as HTTP writes it.
fn name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

/// The value of `key` in `path`'s query.
fn query<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = path.split_once('?')?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// Reads `request`'s body to its end, handing each chunk to `each`; how
/// many bytes it had.
async fn read_body(request: Request, mut each: impl FnMut(&[u8])) -> Result<usize, ErrorCode> {
    let (_done_tx, done_rx) = wit_future::new(|| Ok(()));
    let (mut body, trailers) = Request::consume_body(request, done_rx);
    let mut total = 0;
    let mut buf = Vec::with_capacity(CHUNK);
    loop {
        let (status, chunk) = body.read(buf).await;
        each(&chunk);
        total += chunk.len();
        match status {
            StreamResult::Complete(_) => {}
            StreamResult::Dropped | StreamResult::Cancelled => break,
        }
        buf = chunk;
        buf.clear();
    }
    trailers.await?;
    Ok(total)
}

/// A response whose body is `n` bytes, written as the client reads them.
fn streamed(n: usize) -> Response {
    let (mut tx, rx) = wit_stream::new();
    wasip3::spawn(async move {
        let mut left = n;
        while left > 0 {
            let len = left.min(CHUNK);
            let rest = tx.write_all(vec![b'x'; len]).await;
            if !rest.is_empty() {
                return; // the client went away
            }
            left -= len;
        }
    });
    respond(Some(rx))
}

/// A response with `body` as text.
fn text(body: String) -> Response {
    bytes(body.into_bytes())
}

/// Waits without end: a future whose writer is kept until it resolves.
async fn never() {
    let (tx, rx) = wit_future::new::<Result<(), ErrorCode>>(|| Ok(()));
    let _ = rx.await;
    drop(tx);
}

/// A response that writes one chunk of its body and then waits without end.
fn stalled() -> Response {
    let (mut tx, rx) = wit_stream::new();
    wasip3::spawn(async move {
        tx.write_all(vec![b's'; CHUNK]).await;
        eprintln!("hello-p3: stalled");
        never().await;
        drop(tx);
    });
    respond(Some(rx))
}

/// A response with `body`.
fn bytes(body: Vec<u8>) -> Response {
    let (mut tx, rx) = wit_stream::new();
    wasip3::spawn(async move {
        tx.write_all(body).await;
    });
    respond(Some(rx))
}

/// A 200 response with `body` and no trailers.
fn respond(body: Option<wit_bindgen::StreamReader<u8>>) -> Response {
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (response, _sent) = Response::new(Fields::new(), body, trailers_rx);
    response
}
