//! `reach-caller`: `reach` with a peer. `reach` tries things itself;
//! `peer` has the component its `reach` import is linked to try them, so a
//! test compares what a caller and its callee may do in one composition.

wit_bindgen::generate!({
    path: ["../../wit/keyvalue", "../../wit/reach"],
    world: "example:reach/reach-caller-component",
    generate_all,
});

#[path = "../../reach/src/probe.rs"]
#[macro_use]
mod probe;

use example::reach::reach as callee;

struct Caller;

export_reach!(Caller, "reach-caller");

impl exports::example::reach::peer::Guest for Caller {
    fn fetch(url: String) -> Result<String, String> {
        callee::fetch(&url)
    }
    fn read(path: String) -> Result<String, String> {
        callee::read(&path)
    }
    fn store(bucket: String) -> Result<String, String> {
        callee::store(&bucket)
    }
    fn fail(message: String) {
        callee::fail(&message)
    }
}

export!(Caller);
