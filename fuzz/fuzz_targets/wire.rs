//! The binary wire codec's decoder: bytes from a peer host, decoded against
//! a value of every WIT type. A value that decodes encodes back to the
//! same bytes' meaning (decoded again, it is equal).
#![no_main]
use libfuzzer_sys::fuzz_target;
use membrane::codec::wire;

fuzz_target!(|data: &[u8]| {
    let (_, types) = membrane_fuzz::roundtrip();
    if let Ok(values) = wire::decode(types, data) {
        let again = wire::encode(types, &values).expect("a decoded value encodes");
        assert_eq!(wire::decode(types, &again).expect("re-decodes"), values);
    }
});
