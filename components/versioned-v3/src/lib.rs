//! `versioned-v3`: an incompatible successor of `versioned-v2`. Its
//! `example:testkit/version#get` returns a string instead of a `u32`, so a
//! host must refuse to swap it in where a binding calls that function.

wit_bindgen::generate!({
    inline: r#"
        package example:testkit@0.1.0;

        interface version {
            get: func() -> string;
        }

        world versioned-v3 {
            export version;
        }
    "#,
});

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Versioned;

impl exports::example::testkit::version::Guest for Versioned {
    fn get() -> String {
        "three".into()
    }
}

impl wasip2::exports::http::incoming_handler::Guest for Versioned {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        guest_http::respond(out, 200, "application/json", br#"{"version":"three"}"#);
    }
}

export!(Versioned);
wasip2::http::proxy::export!(Versioned);
