//! A wasmCloud HTTP component, written as wasmCloud's own examples are:
//! the `wasmcloud-component` 0.2 SDK's `http::Server`, and its
//! `wasi:keyvalue@0.2.0-draft` bindings for a counter and a small store.
//!
//! - `GET /count/NAME`: increments counter NAME, answers `NAME = N`;
//! - `PUT /kv/KEY` (body) sets it, `GET /kv/KEY` reads it (404 when missing);
//! - `GET /keys`: every key, one per line, paged by the draft's `u64` cursor;
//! - `GET /many/A,B,...`: `get-many`, one `KEY = VALUE` or `KEY missing` per line;
//! - `GET /denied`: opens a bucket it was not granted, answers the error.
#![cfg(target_family = "wasm")]

use std::io::Read as _;
use wasmcloud_component::http;
use wasmcloud_component::wasi::keyvalue::{atomics, batch, store};

struct Component;

http::export!(Component);

fn fail(what: &str, e: store::Error) -> http::ErrorCode {
    http::ErrorCode::InternalError(Some(format!("{what}: {e:?}")))
}

fn text(status: u16, body: String) -> http::Result<http::Response<String>> {
    let mut response = http::Response::new(body);
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    Ok(response)
}

impl http::Server for Component {
    fn handle(request: http::IncomingRequest) -> http::Result<http::Response<impl http::OutgoingBody>> {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        if path == "/denied" {
            return match store::open("not-granted") {
                Ok(_) => text(200, "opened\n".into()),
                Err(e) => text(403, format!("{e:?}\n")),
            };
        }
        let bucket = store::open("default").map_err(|e| fail("open", e))?;
        let segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
        match (method.as_str(), segments.as_slice()) {
            ("GET", ["count", name]) => {
                let n = atomics::increment(&bucket, name, 1).map_err(|e| fail("increment", e))?;
                text(200, format!("{name} = {n}\n"))
            }
            ("PUT", ["kv", key]) => {
                let mut body = Vec::new();
                request
                    .into_body()
                    .read_to_end(&mut body)
                    .map_err(|e| http::ErrorCode::InternalError(Some(format!("body: {e}"))))?;
                bucket.set(key, &body).map_err(|e| fail("set", e))?;
                text(200, format!("{key} set\n"))
            }
            ("GET", ["kv", key]) => match bucket.get(key).map_err(|e| fail("get", e))? {
                Some(value) => text(200, String::from_utf8_lossy(&value).into_owned()),
                None => text(404, format!("{key} missing\n")),
            },
            ("GET", ["keys"]) => {
                let (mut out, mut cursor) = (String::new(), None);
                loop {
                    let page = bucket.list_keys(cursor).map_err(|e| fail("list-keys", e))?;
                    for key in page.keys {
                        out.push_str(&key);
                        out.push('\n');
                    }
                    match page.cursor {
                        Some(next) => cursor = Some(next),
                        None => break,
                    }
                }
                text(200, out)
            }
            ("GET", ["many", keys]) => {
                let keys: Vec<String> = keys.split(',').map(str::to_string).collect();
                let found = batch::get_many(&bucket, &keys).map_err(|e| fail("get-many", e))?;
                let lines = keys.iter().zip(found).map(|(key, entry)| match entry {
                    Some((k, v)) => format!("{k} = {}\n", String::from_utf8_lossy(&v)),
                    None => format!("{key} missing\n"),
                });
                text(200, lines.collect())
            }
            _ => text(404, format!("no route for {method} {path}\n")),
        }
    }
}
