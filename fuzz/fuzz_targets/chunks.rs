//! Chunk reassembly: a peer announces a size (`Membrane-Chunked`) and sends
//! parts. The input is the header's text, then parts, each a length byte
//! and that many bytes. A reassembly never holds more than it announced.
#![no_main]
use libfuzzer_sys::fuzz_target;
use membrane::links::chunks::Reassembly;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let (header, mut rest) = rest.split_at((head as usize).min(rest.len()));
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    let first_len = rest.first().map_or(0, |&n| n as usize);
    rest = rest.get(1..).unwrap_or_default();
    let (first, mut rest) = rest.split_at(first_len.min(rest.len()));
    let Ok(mut whole) = Reassembly::start(header, first) else {
        return;
    };
    while let Some((&n, after)) = rest.split_first() {
        let (part, after) = after.split_at((n as usize).min(after.len()));
        rest = after;
        let before = whole.received();
        match whole.push(part) {
            Ok(()) => assert_eq!(whole.received(), before + part.len()),
            Err(_) => assert_eq!(whole.received(), before),
        }
        if whole.is_complete() {
            break;
        }
    }
    let total = membrane::links::chunks::parse_total(header).expect("it started");
    assert!(whole.received() <= total);
});
