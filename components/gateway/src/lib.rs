//! `gateway`: the HTTP face of the example app. It parses a JSON policy, calls
//! the imported `rater` and answers JSON (the JSON forms live in the shared
//! `insurance` crate). Whether `rater` runs in the same process or on another
//! host is the host's business, not this crate's.
//!
//! Routes: `POST /quote` (a policy) and `GET /health`.

wit_bindgen::generate!({
    path: "../../wit/insurance",
    world: "example:insurance/gateway-component",
});

use example::insurance::rater;
use example::insurance::types as wit;
use insurance::json::{error_json, quote_response};
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

/// Largest policy document accepted, in bytes.
const MAX_BODY: usize = 256 * 1024;

struct Gateway;

impl wasip2::exports::http::incoming_handler::Guest for Gateway {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = route(&request);
        guest_http::respond(out, status, "application/json", body.as_bytes());
    }
}

wasip2::http::proxy::export!(Gateway);

fn route(request: &IncomingRequest) -> (u16, String) {
    let path = guest_http::path(request);
    match (request.method(), path.as_str()) {
        (Method::Get, "/health") => (200, r#"{"status":"ok"}"#.to_string()),
        (Method::Post, "/quote") => quote(request),
        (_, "/quote") => error(405, "use POST /quote with a JSON policy"),
        _ => error(404, &format!("no route for {path}")),
    }
}

fn error(status: u16, message: &str) -> (u16, String) {
    (status, error_json(message))
}

fn quote(request: &IncomingRequest) -> (u16, String) {
    let body = match guest_http::read_body(request, MAX_BODY) {
        Ok(body) => body,
        Err(e) => return error(400, &e),
    };
    quote_response(&body, |policy| {
        rater::rate(&to_wit_policy(policy))
            .map(from_wit_quote)
            .map_err(from_wit_error)
    })
}

insurance::wit_glue!();
