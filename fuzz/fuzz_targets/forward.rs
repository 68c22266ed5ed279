//! The forwarded-HTTP framing: a request head from another host (decoded
//! into a request for a component), a response head, and trailers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use membrane::transports::forward;

fuzz_target!(|data: &[u8]| {
    let _ = forward::decode_request(data);
    let _ = forward::decode_response(data);
    let mut input = data;
    let _ = forward::decode_fields(&mut input);
});
