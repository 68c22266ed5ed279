//! Guest-side helpers for `wasi:http/incoming-handler` components: read a whole
//! request body, send a whole response. Used by the example and test components;
//! the host never links this crate.

use wasip2::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// Reads the request body to the end, refusing more than `limit` bytes.
pub fn read_body(request: &IncomingRequest, limit: usize) -> Result<Vec<u8>, String> {
    let body = request
        .consume()
        .map_err(|()| "request body already consumed".to_string())?;
    let stream = body
        .stream()
        .map_err(|()| "request body stream unavailable".to_string())?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                out.extend_from_slice(&chunk);
                if out.len() > limit {
                    return Err(format!("request body larger than {limit} bytes"));
                }
            }
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(format!("reading request body: {e:?}")),
        }
    }
    Ok(out)
}

/// Sends a complete response with `status`, a `content-type` and `body`.
pub fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    respond_with(out, status, &[("content-type", content_type)], body);
}

/// Sends a complete response with `status`, `headers` and `body` (and its
/// `content-length`).
pub fn respond_with(out: ResponseOutparam, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let fields = Fields::new();
    // A header the guest got wrong is left out rather than trapping.
    for (name, value) in headers {
        let _ = fields.set(name, &[value.as_bytes().to_vec()]);
    }
    let _ = fields.set("content-length", &[body.len().to_string().into_bytes()]);
    let response = OutgoingResponse::new(fields);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

/// The request's path, without the query string.
pub fn path(request: &IncomingRequest) -> String {
    let full = request.path_with_query().unwrap_or_default();
    full.split('?').next().unwrap_or_default().to_string()
}
