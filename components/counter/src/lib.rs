//! `counter`: counts the calls its instance has served, in a guest global, so
//! tests can see whether calls share an instance (`reuse` in the manifest).
//! `next` and every HTTP request answer the count; `fail` counts, then traps.

wit_bindgen::generate!({
    path: "../../wit/testkit",
    world: "example:testkit/counter-component",
});

use std::sync::atomic::{AtomicU64, Ordering};
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

static CALLS: AtomicU64 = AtomicU64::new(0);

fn count() -> u64 {
    CALLS.fetch_add(1, Ordering::Relaxed) + 1
}

struct Counter;

impl exports::example::testkit::counter::Guest for Counter {
    fn next() -> u64 {
        count()
    }

    fn fail() {
        count();
        panic!("counter: failing on purpose");
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Counter {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        guest_http::respond(out, 200, "text/plain", count().to_string().as_bytes());
    }
}

export!(Counter);
wasip2::http::proxy::export!(Counter);
