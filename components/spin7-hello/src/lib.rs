//! A Spin 7 HTTP component, as the spin-sdk README writes one: an async
//! function marked `#[http_service]`. Built for Spin; Membrane serves it
//! unmodified. `.../var/NAME` answers the Spin variable `NAME`.

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

/// Greets, naming the method and path it was asked for, or reads a variable.
#[http_service]
async fn hello(request: Request) -> impl IntoResponse {
    let path = request.uri().path().to_string();
    if let Some((_, name)) = path.rsplit_once("/var/") {
        return match spin_sdk::variables::get(name).await {
            Ok(value) => format!("{name} = {value}\n"),
            Err(e) => format!("{name}: {e:?}\n"),
        };
    }
    format!("Hello from Spin 7: {} {path}\n", request.method())
}
