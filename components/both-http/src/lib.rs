//! `both-http`: exports WASI 0.2's `wasi:http/incoming-handler` and WASI
//! 0.3's `wasi:http/handler` at once. Which one a host should call is a
//! guess, so the `http` medium refuses it at load, naming both (a test).
#![cfg(target_family = "wasm")]

use wasip2::http::types::{IncomingRequest, ResponseOutparam};
use wasip3::http::types::{ErrorCode, Request, Response};

struct Both;

impl wasip2::exports::http::incoming_handler::Guest for Both {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        guest_http::respond(out, 200, "text/plain", b"0.2\n");
    }
}

impl wasip3::exports::http::handler::Guest for Both {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        Err(ErrorCode::InternalError(Some("0.3".into())))
    }
}

wasip2::http::proxy::export!(Both);
wasip3::http::service::export!(Both);
