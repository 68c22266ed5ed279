//! `{{name}}`: an HTTP component for WASI 0.3. It exports
//! `wasi:http/handler@0.3.0` through the `wasip3` crate, and handles plain
//! `http` crate requests and responses.

use wasip3::http::types::{ErrorCode, Request, Response};
use wasip3::http_compat::{IncomingRequestBody, http_from_wasi_request, http_into_wasi_response};

wasip3::http::service::export!(Component);

struct Component;

impl wasip3::exports::http::handler::Guest for Component {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        http_into_wasi_response(hello(http_from_wasi_request(request)?).await)
    }
}

/// The handler: edit it and save; `membrane dev` swaps the new version in.
async fn hello(request: http::Request<IncomingRequestBody>) -> http::Response<String> {
    http::Response::new(format!("Hello from {{name}}! You asked for {}\n", request.uri().path()))
}
