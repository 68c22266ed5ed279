//! `pricing`: serves price tables read from the component's manifest config
//! (`wasi:config/store`), by the rules of `insurance::price_table`.
//!
//! Config keys: `currency` (default `EUR`), `<line>.base` (required per line),
//! and `<line>.<extra>` for each extra the line offers, as a fraction of base:
//!
//! ```toml
//! config = { currency = "EUR", "motor.base" = "420", "motor.theft" = "0.1" }
//! ```

wit_bindgen::generate!({
    path: "../../wit/insurance",
    world: "example:insurance/pricing-component",
    generate_all,
});

use example::insurance::types as wit;
use exports::example::insurance::pricing::Guest;
use wasi::config::store;

struct Pricing;

impl Guest for Pricing {
    fn table(line: wit::Line) -> Result<wit::PriceTable, String> {
        let get = |key: &str| store::get(key).map_err(|e| format!("config store: {e:?}"));
        insurance::price_table(from_wit_line(line), get).map(to_wit_table)
    }
}

export!(Pricing);

insurance::wit_glue!();
