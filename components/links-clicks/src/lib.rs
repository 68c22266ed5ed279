//! `links-clicks`: the link shortener's click counter. Each queued click adds
//! one to the link's count in the `clicks` bucket, atomically, so replicas on
//! several hosts count together. A failure traps, so the queue delivers the
//! click again.

wit_bindgen::generate!({
    path: ["../../wit/keyvalue", "../../wit/links"],
    world: "example:links/clicks-component",
    generate_all,
});

use exports::example::links::clicks::Guest;
use wasi::keyvalue::{atomics, store};

struct Clicks;

impl Guest for Clicks {
    fn count(code: String) {
        let counted = store::open("clicks").and_then(|bucket| atomics::increment(&bucket, &code, 1));
        if let Err(e) = counted {
            // A trap: the queue redelivers the click later.
            panic!("cannot count a click on {code}: {e:?}");
        }
    }
}

export!(Clicks);
