//! Price tables from flat config keys: `currency` (default `EUR`),
//! `<line>.base` (required) and `<line>.<extra>` for each extra the line
//! offers, as a fraction of base.

use crate::model::{Coverage, Line, PriceTable};

fn number(key: &str, raw: &str) -> Result<f64, String> {
    raw.trim()
        .parse::<f64>()
        .map_err(|_| format!("config `{key}` = {raw:?} is not a number"))
}

/// The price table for `line`, reading keys through `get` (in the `pricing`
/// component, `wasi:config/store`). The error names the missing or
/// malformed key.
pub fn price_table(line: Line, get: impl Fn(&str) -> Result<Option<String>, String>) -> Result<PriceTable, String> {
    let name = line.name();
    let base_key = format!("{name}.base");
    let base = match get(&base_key)? {
        Some(raw) => number(&base_key, &raw)?,
        None => return Err(format!("no `{base_key}` in the pricing config")),
    };
    let mut loadings = Vec::new();
    for (flag, extra) in Coverage::NAMED {
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
