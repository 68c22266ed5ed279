//! A Spin 7 HTTP component, as the spin-sdk README writes one: an async
//! function marked `#[http_service]`. Built for Spin; Membrane serves it
//! unmodified.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

/// Greets, naming the method and path it was asked for.
#[http_service]
async fn hello(request: Request) -> impl IntoResponse {
    format!("Hello from Spin 7: {} {}\n", request.method(), request.uri().path())
}
