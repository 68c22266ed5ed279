//! `relay`: exports `example:testkit/echo` by calling its own `echo` import.
//! Linked to `echo`, one call into it crosses exactly one link.

wit_bindgen::generate!({
    path: "../../wit/testkit",
    world: "example:testkit/relay-component",
});

struct Relay;

impl exports::example::testkit::echo::Guest for Relay {
    fn echo(message: String) -> String {
        example::testkit::echo::echo(&message)
    }

    fn add(a: u64, b: u64) -> u64 {
        example::testkit::echo::add(a, b)
    }
}

export!(Relay);
