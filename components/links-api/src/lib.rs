//! `links-api`: the link shortener's API, under `/api/`.
//!
//! - `POST /api/links` with a URL as the body: stores it in the `links`
//!   bucket under a short code and answers `201` with
//!   `{"code":"…","url":"…"}`. The same URL always gets the same code.
//! - `GET /api/links/<code>`: `{"code":"…","url":"…","clicks":N}`, the
//!   clicks counted so far (the `clicks` bucket), or 404.

wit_bindgen::generate!({
    path: ["../../wit/keyvalue", "../../wit/links"],
    world: "example:links/api-component",
    generate_all,
});

use wasi::keyvalue::store::{self, Bucket};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

/// Longest URL accepted, in bytes.
const MAX_URL: usize = 2048;
/// Characters of a code.
const CODE_LEN: usize = 7;

struct Api;

impl wasip2::exports::http::incoming_handler::Guest for Api {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = route(&request).unwrap_or_else(|(status, message)| (status, error_json(&message)));
        guest_http::respond(out, status, "application/json", body.as_bytes());
    }
}

wasip2::http::proxy::export!(Api);

type Reply = Result<(u16, String), (u16, String)>;

fn route(request: &IncomingRequest) -> Reply {
    let path = guest_http::path(request);
    match (request.method(), path.as_str()) {
        (Method::Post, "/api/links") => create(request),
        (Method::Get, p) if p.starts_with("/api/links/") => show(&p["/api/links/".len()..]),
        (_, "/api/links") => Err((405, "use POST /api/links with a URL as the body".into())),
        _ => Err((404, format!("no route for {path}"))),
    }
}

fn open(name: &str) -> Result<Bucket, (u16, String)> {
    store::open(name).map_err(|e| (503, format!("bucket {name}: {e:?}")))
}

fn create(request: &IncomingRequest) -> Reply {
    let body = guest_http::read_body(request, MAX_URL).map_err(|e| (413, e))?;
    let url = String::from_utf8(body).map_err(|_| (400, "the URL is not UTF-8".to_string()))?;
    let url = url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.chars().any(char::is_whitespace) {
        return Err((400, format!("not an http(s) URL: {url:?}")));
    }
    let links = open("links")?;
    // A code taken by another URL (a hash collision) moves on to the next salt.
    for salt in 0u64.. {
        let code = code_for(url, salt);
        match links.get(&code).map_err(|e| (503, format!("links: {e:?}")))? {
            Some(existing) if existing != url.as_bytes() => continue,
            Some(_) => {}
            None => links
                .set(&code, url.as_bytes())
                .map_err(|e| (503, format!("links: {e:?}")))?,
        }
        return Ok((201, format!(r#"{{"code":"{code}","url":{}}}"#, json_string(url))));
    }
    Err((500, "no free code".into()))
}

fn show(code: &str) -> Reply {
    let links = open("links")?;
    let url = links
        .get(code)
        .map_err(|e| (503, format!("links: {e:?}")))?
        .ok_or_else(|| (404, format!("no link {code}")))?;
    let clicks = open("clicks")?
        .get(code)
        .map_err(|e| (503, format!("clicks: {e:?}")))?
        .map_or(0, |count| decode_count(&count));
    Ok((
        200,
        format!(
            r#"{{"code":{},"url":{},"clicks":{clicks}}}"#,
            json_string(code),
            json_string(&String::from_utf8_lossy(&url))
        ),
    ))
}

/// A count as `atomics::increment` stores it.
fn decode_count(bytes: &[u8]) -> i64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// `CODE_LEN` base-62 digits of the FNV-1a hash of `url` and `salt`.
fn code_for(url: &str, salt: u64) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in url.bytes().chain(salt.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..CODE_LEN)
        .map(|_| {
            let digit = DIGITS[(hash % 62) as usize];
            hash /= 62;
            char::from(digit)
        })
        .collect()
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn error_json(message: &str) -> String {
    format!(r#"{{"error":{}}}"#, json_string(message))
}
