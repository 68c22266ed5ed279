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

use example::insurance::types::{Coverage, Line, PriceTable};
use exports::example::insurance::pricing::Guest;
use insurance::model;
use wasi::config::store;

struct Pricing;

impl Guest for Pricing {
    fn table(line: Line) -> Result<PriceTable, String> {
        let line = match line {
            Line::Motor => model::Line::Motor,
            Line::Home => model::Line::Home,
            Line::Life => model::Line::Life,
        };
        let table = insurance::price_table(line, |key| store::get(key).map_err(|e| format!("config store: {e:?}")))?;
        Ok(PriceTable {
            base: table.base,
            loadings: table
                .loadings
                .into_iter()
                .map(|(flags, x)| (Coverage::from_bits_retain(flags.bits()), x))
                .collect(),
            currency: table.currency,
        })
    }
}

export!(Pricing);
