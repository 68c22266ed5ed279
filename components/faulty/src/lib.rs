//! `faulty`: misbehaves on purpose so tests can prove the host contains it.
//! Over HTTP: `/trap` traps, `/loop` spins forever, `/hog` allocates without
//! bound, `/sleep` answers after 300 ms, anything else answers `ok`. The same faults are exported as
//! `example:testkit/faults` for the other media, and a slow `echo` for links.

wit_bindgen::generate!({
    path: "../../wit/testkit",
    world: "example:testkit/faulty-component",
});

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Faulty;

impl exports::example::testkit::faults::Guest for Faulty {
    fn trap(message: String) {
        panic!("faulty: {message}");
    }

    fn spin() {
        let mut x: u64 = 0;
        loop {
            // `black_box` keeps the optimiser from proving the loop empty.
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    fn sleep(ms: u32) -> u32 {
        eprintln!("faulty: sleeping");
        wasip2::clocks::monotonic_clock::subscribe_duration(u64::from(ms) * 1_000_000).block();
        ms
    }

    fn hog() -> u64 {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the memory is really committed.
            hoard.push(vec![1u8; 1 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

/// A slow echo, to stand behind a link: a leading number is a sleep in ms.
impl exports::example::testkit::echo::Guest for Faulty {
    fn echo(message: String) -> String {
        use exports::example::testkit::faults::Guest;
        let ms = message.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        Faulty::sleep(ms);
        message
    }

    fn add(a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Faulty {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        use exports::example::testkit::faults::Guest;
        match guest_http::path(&request).as_str() {
            "/trap" => Faulty::trap("trap requested over http".into()),
            "/loop" => {
                eprintln!("faulty: spinning");
                Faulty::spin()
            }
            "/sleep" => {
                Faulty::sleep(300);
                guest_http::respond(out, 200, "text/plain", b"slept");
                return;
            }
            "/hog" => {
                Faulty::hog();
            }
            _ => {}
        }
        guest_http::respond(out, 200, "text/plain", b"ok");
    }
}

export!(Faulty);
wasip2::http::proxy::export!(Faulty);
