//! The manifest parser and its checks: TOML from a file or from the
//! lattice's desired state (anyone who can write it).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = membrane::transports::parse(text, "fuzz.toml");
    }
});
