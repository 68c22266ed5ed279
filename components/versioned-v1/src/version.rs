// The body shared by `versioned-v1` and `versioned-v2`, which differ only in
// the `VERSION` they define before including it.

wit_bindgen::generate!({
    path: "../../wit/testkit",
    world: "example:testkit/versioned-component",
});

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Versioned;

impl exports::example::testkit::version::Guest for Versioned {
    fn get() -> u32 {
        VERSION
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Versioned {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let body = format!("{{\"version\":{VERSION}}}");
        guest_http::respond(out, 200, "application/json", body.as_bytes());
    }
}

export!(Versioned);
wasip2::http::proxy::export!(Versioned);
