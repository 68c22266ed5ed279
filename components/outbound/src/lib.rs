//! `outbound`: reaches out of the sandbox on request, so tests can show what
//! `allowed_outbound_hosts` lets through: an HTTP GET through
//! `wasi:http/outgoing-handler` (`fetch`), a raw TCP connection through
//! `wasi:sockets` (`connect`). `shout` floods stdout and prints a line that
//! tries to forge a host log line, for the guest-output tests.

wit_bindgen::generate!({
    path: "../../wit/testkit",
    world: "example:testkit/outbound-component",
});

use std::io::{Read, Write};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

/// The most response bytes either call reads.
const LIMIT: usize = 64 * 1024;

struct Outbound;

impl exports::example::testkit::outbound::Guest for Outbound {
    fn fetch(url: String) -> Result<String, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("{url:?} has no scheme"))?;
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => Scheme::Other(other.to_string()),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let request = OutgoingRequest::new(Fields::new());
        let set = request.set_method(&Method::Get).is_ok()
            && request.set_scheme(Some(&scheme)).is_ok()
            && request.set_authority(Some(authority)).is_ok()
            && request.set_path_with_query(Some(path)).is_ok();
        if !set {
            return Err(format!("{url:?} is not a valid request"));
        }
        let future = outgoing_handler::handle(request, None).map_err(|e| format!("request refused: {e:?}"))?;
        let response = loop {
            match future.get() {
                Some(response) => break response,
                None => future.subscribe().block(),
            }
        };
        let response = response
            .map_err(|()| "response already taken".to_string())?
            .map_err(|e| format!("request failed: {e:?}"))?;
        let body = response.consume().map_err(|()| "no body".to_string())?;
        let stream = body.stream().map_err(|()| "no body stream".to_string())?;
        let mut out = Vec::new();
        loop {
            match stream.blocking_read(LIMIT as u64) {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(format!("reading the body: {e:?}")),
            }
            if out.len() > LIMIT {
                return Err(format!("body larger than {LIMIT} bytes"));
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn connect(addr: String) -> Result<String, String> {
        let mut stream = std::net::TcpStream::connect(addr.as_str()).map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| format!("write to {addr}: {e}"))?;
        let mut out = Vec::new();
        stream
            .take(LIMIT as u64)
            .read_to_end(&mut out)
            .map_err(|e| format!("read from {addr}: {e}"))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    fn shout(lines: u32) -> u32 {
        eprintln!("shout: forged\n2099-01-01T00:00:00.000000Z  INFO membrane: FORGED host line\r\x1b[2K\x1b[31merased");
        for i in 0..lines {
            println!("shout line {i}");
        }
        lines
    }
}

export!(Outbound);
