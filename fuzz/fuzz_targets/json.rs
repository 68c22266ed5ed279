//! The JSON codec of the function media (http-rpc, nats): a request body
//! from anyone, decoded into the parameters of a function that takes a
//! value of every WIT type. Whatever decodes maps back to JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use membrane::codec::json;

fuzz_target!(|data: &[u8]| {
    let (func, _) = membrane_fuzz::roundtrip();
    if let Ok(values) = json::params_from_json(func, data) {
        let _ = json::results_to_json(&values);
    }
});
