//! `kv-counter`: a key-value counter in the style of wasmCloud's
//! `http-keyvalue-counter` example, written with plain wit-bindgen against
//! `wasi:keyvalue@0.2.0-draft2` and the `wasip2` crate's HTTP types.
//!
//! Routes (all `GET`):
//! - `/counter/<name>`: increments counter `<name>` in bucket `counts` with
//!   `atomics::increment` and answers the new count;
//! - `/cas/<name>`: the same with a compare-and-swap loop (`cas`, `swap`);
//! - `/open/<bucket>`: opens `<bucket>` and answers `ok` or the error;
//! - `/batch/<a>,<b>,...`: sets each key to its own name with `set-many`,
//!   reads them back with `get-many` and answers them, then deletes them.
//!
//! A wasi:keyvalue error answers 500 with the error's case
//! (`access-denied`, `no-such-store`, `other: <message>`).

wit_bindgen::generate!({
    path: ["../../wit/keyvalue", "../../wit/kv-counter"],
    world: "example:kv-counter/kv-counter",
    generate_all,
});

use wasi::keyvalue::{atomics, batch, store};
use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// The bucket the counters live in.
const BUCKET: &str = "counts";

/// How often `/cas` retries a swap that lost a race.
const CAS_ATTEMPTS: usize = 1000;

struct Counter;

impl wasip2::exports::http::incoming_handler::Guest for Counter {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let path = path.split('?').next().unwrap_or_default();
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let answer = match (parts.next(), parts.next()) {
            (Some("counter"), Some(name)) => increment(name).map(|n| n.to_string()),
            (Some("cas"), Some(name)) => increment_with_cas(name),
            (Some("open"), Some(bucket)) => store::open(bucket).map(|_| "ok".to_string()).map_err(describe),
            (Some("batch"), Some(keys)) => round_trip(keys.split(',').map(String::from).collect()),
            _ => {
                send(response_out, 404, "no such route\n");
                return;
            }
        };
        match answer {
            Ok(body) => send(response_out, 200, &body),
            Err(error) => send(response_out, 500, &error),
        }
    }
}

/// Counter `name` plus one.
fn increment(name: &str) -> Result<i64, String> {
    let bucket = store::open(BUCKET).map_err(describe)?;
    atomics::increment(&bucket, name, 1).map_err(describe)
}

/// Counter `name` plus one, read and written with compare-and-swap.
fn increment_with_cas(name: &str) -> Result<String, String> {
    let bucket = store::open(BUCKET).map_err(describe)?;
    let mut cas = atomics::Cas::new(&bucket, name).map_err(describe)?;
    for _ in 0..CAS_ATTEMPTS {
        let current = match cas.current().map_err(describe)? {
            Some(bytes) => String::from_utf8_lossy(&bytes)
                .parse::<i64>()
                .map_err(|e| format!("counter {name} is not a number: {e}"))?,
            None => 0,
        };
        let next = (current + 1).to_string();
        match atomics::swap(cas, next.as_bytes()) {
            Ok(()) => return Ok(next),
            Err(atomics::CasError::CasFailed(fresh)) => cas = fresh,
            Err(atomics::CasError::StoreError(e)) => return Err(describe(e)),
        }
    }
    Err(format!("gave up after {CAS_ATTEMPTS} lost races"))
}

/// Sets, reads back and deletes `keys` with the batch interface.
fn round_trip(keys: Vec<String>) -> Result<String, String> {
    let bucket = store::open(BUCKET).map_err(describe)?;
    let pairs: Vec<(String, Vec<u8>)> = keys.iter().map(|k| (k.clone(), k.clone().into_bytes())).collect();
    batch::set_many(&bucket, &pairs).map_err(describe)?;
    let found = batch::get_many(&bucket, &keys).map_err(describe)?;
    batch::delete_many(&bucket, &keys).map_err(describe)?;
    let gone = keys.iter().all(|k| matches!(bucket.exists(k), Ok(false)));
    let values: Vec<String> = found
        .into_iter()
        .map(|(key, value)| {
            format!(
                "{key}={}",
                value.map_or("-".into(), |v| String::from_utf8_lossy(&v).into_owned())
            )
        })
        .collect();
    Ok(format!("{} deleted={gone}", values.join(",")))
}

/// A wasi:keyvalue error as the HTTP body shows it.
fn describe(error: store::Error) -> String {
    match error {
        store::Error::NoSuchStore => "no-such-store".into(),
        store::Error::AccessDenied => "access-denied".into(),
        store::Error::Other(message) => format!("other: {message}"),
    }
}

/// Sends a whole plain-text response.
fn send(response_out: ResponseOutparam, status: u16, body: &str) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
    let _ = headers.set("content-length", &[body.len().to_string().into_bytes()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else { return };
    ResponseOutparam::set(response_out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.as_bytes().chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

wasip2::http::proxy::export!(Counter);
