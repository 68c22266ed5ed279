//! `version-relay`: exports `example:testkit/version` by calling its own
//! `version` import, so a hot swap of the component behind a link (composed
//! into this one or not) shows in its answers.

wit_bindgen::generate!({
    path: "../../wit/testkit",
    world: "example:testkit/version-relay-component",
});

struct Relay;

impl exports::example::testkit::version::Guest for Relay {
    fn get() -> u32 {
        example::testkit::version::get()
    }
}

export!(Relay);
