//! `links-redirect`: the link shortener's public face. `GET /<code>` answers
//! `302 Found` with the link's URL (from the `links` bucket) and records a
//! click through the imported `clicks` interface; an unknown code is 404.
//! Whether the click is counted in process, on another host, or queued is
//! the manifest's business.

wit_bindgen::generate!({
    path: ["../../wit/keyvalue", "../../wit/links"],
    world: "example:links/redirect-component",
    generate_all,
});

use example::links::clicks;
use wasi::keyvalue::store;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Redirect;

impl wasip2::exports::http::incoming_handler::Guest for Redirect {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = guest_http::path(&request);
        let code = path.trim_start_matches('/');
        if !matches!(request.method(), Method::Get | Method::Head) {
            return guest_http::respond(out, 405, "text/plain", b"use GET /<code>\n");
        }
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return guest_http::respond(out, 404, "text/plain", format!("no link {path}\n").as_bytes());
        }
        match store::open("links").and_then(|links| links.get(code)) {
            Ok(Some(url)) => {
                let url = String::from_utf8_lossy(&url).into_owned();
                clicks::count(code);
                let body = format!("see {url}\n");
                guest_http::respond_with(
                    out,
                    302,
                    &[("location", &url), ("content-type", "text/plain")],
                    body.as_bytes(),
                );
            }
            Ok(None) => guest_http::respond(out, 404, "text/plain", format!("no link {path}\n").as_bytes()),
            Err(e) => guest_http::respond(out, 503, "text/plain", format!("links store: {e:?}\n").as_bytes()),
        }
    }
}

wasip2::http::proxy::export!(Redirect);
