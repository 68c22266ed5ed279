//! `echo`: the smallest useful component, for tests and benchmarks. Exports
//! `example:testkit/echo`, `example:testkit/values` (identity on a value of
//! every type) and an HTTP handler that echoes the request body.

wit_bindgen::generate!({
    path: "../../wit/testkit",
    world: "example:testkit/echo-component",
});

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Echo;

impl exports::example::testkit::echo::Guest for Echo {
    fn echo(message: String) -> String {
        message
    }

    fn add(a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

impl exports::example::testkit::values::Guest for Echo {
    fn roundtrip(v: exports::example::testkit::values::Everything) -> exports::example::testkit::values::Everything {
        v
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        match guest_http::read_body(&request, 1 << 20) {
            Ok(body) => guest_http::respond(out, 200, "application/octet-stream", &body),
            Err(e) => guest_http::respond(out, 400, "text/plain", e.as_bytes()),
        }
    }
}

export!(Echo);
wasip2::http::proxy::export!(Echo);
