//! One HTTP GET through `wasi:http/outgoing-handler` (the `wasip2` crate),
//! its body bounded: `outbound`'s `fetch`, shared as a file with the
//! `reach` components.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

/// The most response bytes a GET reads.
const LIMIT: usize = 64 * 1024;

/// GETs `url`: the body, or what went wrong.
pub fn get(url: &str) -> Result<String, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} has no scheme"))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let set = request.set_method(&Method::Get).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(authority)).is_ok()
        && request.set_path_with_query(Some(path)).is_ok();
    if !set {
        return Err(format!("{url:?} is not a valid request"));
    }
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("request refused: {e:?}"))?;
    let response = loop {
        match future.get() {
            Some(response) => break response,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| "response already taken".to_string())?
        .map_err(|e| format!("request failed: {e:?}"))?;
    let body = response.consume().map_err(|()| "no body".to_string())?;
    let stream = body.stream().map_err(|()| "no body stream".to_string())?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(LIMIT as u64) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the body: {e:?}")),
        }
        if out.len() > LIMIT {
            return Err(format!("body larger than {LIMIT} bytes"));
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
