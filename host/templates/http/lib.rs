//! `{{name}}`: an HTTP component. It answers every request with a greeting;
//! the greeting's first word comes from the manifest (`config`).
//!
//! Run `membrane dev` in this directory: it builds the component, serves it
//! on http://127.0.0.1:8080 and swaps a new build in every time you save.

wit_bindgen::generate!({
    path: "wit",
    world: "local:{{wit}}/{{wit}}-component",
    generate_all,
});

use wasi::config::store;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Component;

impl wasip2::exports::http::incoming_handler::Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let greeting = store::get("greeting")
            .ok()
            .flatten()
            .unwrap_or_else(|| "Hello".to_string());
        let path = request.path_with_query().unwrap_or_default();
        let body = format!("{greeting} from {{name}}! You asked for {path}\n");
        respond(out, 200, body.as_bytes());
    }
}

/// Sends a whole response: `status` and a text `body`.
fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain; charset=utf-8".to_vec()]);
    let _ = headers.set("content-length", &[body.len().to_string().into_bytes()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

wasip2::http::proxy::export!(Component);
