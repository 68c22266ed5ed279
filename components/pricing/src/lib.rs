//! `pricing`: serves price tables read from the component's manifest config
//! (`wasi:config/store`).
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
use wasi::config::store;

struct Pricing;

const EXTRAS: [(&str, Coverage); 5] = [
    ("collision", Coverage::COLLISION),
    ("theft", Coverage::THEFT),
    ("glass", Coverage::GLASS),
    ("roadside", Coverage::ROADSIDE),
    ("flood", Coverage::FLOOD),
];

fn line_name(line: Line) -> &'static str {
    match line {
        Line::Motor => "motor",
        Line::Home => "home",
        Line::Life => "life",
    }
}

fn get(key: &str) -> Result<Option<String>, String> {
    store::get(key).map_err(|e| format!("config store: {e:?}"))
}

fn number(key: &str, raw: &str) -> Result<f64, String> {
    raw.trim()
        .parse::<f64>()
        .map_err(|_| format!("config `{key}` = {raw:?} is not a number"))
}

impl Guest for Pricing {
    fn table(line: Line) -> Result<PriceTable, String> {
        let name = line_name(line);
        let base_key = format!("{name}.base");
        let base = match get(&base_key)? {
            Some(raw) => number(&base_key, &raw)?,
            None => return Err(format!("no `{base_key}` in the pricing config")),
        };
        let mut loadings = Vec::new();
        for (extra, flag) in EXTRAS {
            let key = format!("{name}.{extra}");
            if let Some(raw) = get(&key)? {
                loadings.push((flag, number(&key, &raw)? as f32));
            }
        }
        let currency = get("currency")?.unwrap_or_else(|| "EUR".to_string());
        Ok(PriceTable {
            base,
            loadings,
            currency,
        })
    }
}

export!(Pricing);
