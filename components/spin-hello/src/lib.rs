//! `spin-hello`: a Spin HTTP component written the way Spin's Rust guide
//! shows (`#[http_component]`, the SDK's `Router`), built with the published
//! `spin-sdk` and served by Membrane unmodified. See README.md for what it
//! needs from the host.
//!
//! - `GET <route>/hello/:name` answers `hello, <name>` (the SDK's router
//!   matches on `spin-path-info`, the path below the component's route);
//! - `GET <route>/headers` answers the `spin-*` headers it received, as JSON;
//! - `POST <route>/echo` answers the request body with its content type.

use spin_sdk::http::{IntoResponse, Params, Request, Response, Router};
use spin_sdk::http_component;

/// Routes within the component on the path below its route.
#[http_component]
fn handle_hello(req: Request) -> Response {
    let mut router = Router::suffix();
    router.get("/hello/:name", hello);
    router.get("/headers", spin_headers);
    router.post("/echo", echo);
    router.handle(req)
}

fn hello(_req: Request, params: Params) -> anyhow::Result<impl IntoResponse> {
    let name = params.get("name").unwrap_or("world");
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(format!("hello, {name}"))
        .build())
}

fn spin_headers(req: Request, _params: Params) -> anyhow::Result<impl IntoResponse> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .filter(|(name, _)| name.starts_with("spin-"))
        .map(|(name, value)| (name.to_string(), value.as_str().unwrap_or_default().into()))
        .collect();
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(serde_json::Value::Object(headers).to_string())
        .build())
}

fn echo(req: Request, _params: Params) -> anyhow::Result<impl IntoResponse> {
    let content_type = req
        .header("content-type")
        .and_then(|v| v.as_str())
        .unwrap_or("application/octet-stream")
        .to_string();
    Ok(Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(req.into_body())
        .build())
}
