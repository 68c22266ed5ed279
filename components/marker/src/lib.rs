//! `marker`: the component the density bench copies. `marker#get` answers
//! [`MARKER`], a string of its data segment; the bench overwrites the
//! string's last 8 bytes in each copy (the same length, so every copy stays
//! a valid component), which gives a thousand distinct components of the
//! same code, each of which says which copy answered. Also exports
//! `example:testkit/echo` and an HTTP handler that answers the marker, so
//! that it is the size and shape of `echo`.

wit_bindgen::generate!({
    path: "../../wit/testkit",
    world: "example:testkit/marker-component",
});

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

/// The string the bench looks for and overwrites: exactly once in the
/// binary. Read through `black_box`, so that the compiler keeps it as data
/// instead of folding it into the code that copies it.
static MARKER: &str = "membrane-density-marker:########";

struct Marker;

fn marker() -> String {
    std::hint::black_box(MARKER).to_string()
}

impl exports::example::testkit::marker::Guest for Marker {
    fn get() -> String {
        marker()
    }
}

impl exports::example::testkit::echo::Guest for Marker {
    fn echo(message: String) -> String {
        message
    }

    fn add(a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Marker {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        guest_http::respond(out, 200, "text/plain", marker().as_bytes());
    }
}

export!(Marker);
wasip2::http::proxy::export!(Marker);
