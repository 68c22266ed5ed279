//! `reach`: tries to reach the network, a directory and a key-value bucket
//! on request (`probe.rs`), so tests can show what its grants allow, alone
//! or composed into a caller with other grants.

wit_bindgen::generate!({
    path: ["../../wit/keyvalue", "../../wit/reach"],
    world: "example:reach/reach-component",
    generate_all,
});

#[macro_use]
mod probe;

struct Reach;

export_reach!(Reach, "reach");

export!(Reach);
