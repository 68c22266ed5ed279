//! `outbound`: reaches out of the sandbox on request, so tests can show what
//! `allowed_outbound_hosts` lets through: an HTTP GET through
//! `wasi:http/outgoing-handler` (`fetch`), a raw TCP connection through
//! `wasi:sockets` (`connect`). `shout` floods stdout and prints a line that
//! tries to forge a host log line, for the guest-output tests.

wit_bindgen::generate!({
    path: "../../wit/testkit",
    world: "example:testkit/outbound-component",
});

mod fetch;

use std::io::{Read, Write};

/// The most response bytes either call reads.
const LIMIT: usize = 64 * 1024;

struct Outbound;

impl exports::example::testkit::outbound::Guest for Outbound {
    fn fetch(url: String) -> Result<String, String> {
        fetch::get(&url)
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
