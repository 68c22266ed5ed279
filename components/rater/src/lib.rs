//! `rater`: the business rules that turn a policy into a quote (the rules
//! themselves are `insurance::rate`, shared with the native baseline). Prices
//! come from the imported `pricing` interface; it logs through `wasi:logging`.
//! It knows nothing of HTTP, NATS or where `pricing` runs.

wit_bindgen::generate!({
    path: "../../wit/insurance",
    world: "example:insurance/rater-component",
    generate_all,
});

use example::insurance::pricing;
use example::insurance::types as wit;
use exports::example::insurance::rater::Guest;
use wasi::logging::logging::{Level, log};

struct Rater;

impl Guest for Rater {
    fn rate(policy: wit::Policy) -> Result<wit::Quote, wit::RatingError> {
        let policy = from_wit_policy(policy);
        let quote = insurance::rate(&policy, |line| pricing::table(to_wit_line(line)).map(from_wit_table))
            .map_err(to_wit_error)?;
        log(
            Level::Info,
            "rater",
            &format!("policy {} rated at {} {}", policy.id, quote.premium, quote.currency),
        );
        Ok(to_wit_quote(quote))
    }
}

export!(Rater);

insurance::wit_glue!();
