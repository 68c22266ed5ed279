//! The rating rules: a policy and a price table in, a quote or a named
//! rating error out.

use crate::model::{Coverage, Line, Policy, PriceTable, Quote, RatingError, Risk, Subject, VehicleKind};

/// Rounds to cents so that quotes are stable across layouts and platforms.
fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Checks the policy and names its line of business.
fn validate(policy: &Policy) -> Result<Line, RatingError> {
    if policy.holder.trim().is_empty() {
        return Err(RatingError::Invalid("holder must not be empty".into()));
    }
    if !policy.region.is_ascii_uppercase() {
        return Err(RatingError::Invalid(format!(
            "region must be one uppercase letter, got {:?}",
            policy.region
        )));
    }
    let line = match &policy.subject {
        Subject::Vehicle(_) => Line::Motor,
        Subject::Dwelling(_) => Line::Home,
        Subject::Person(_) => Line::Life,
    };
    if line == Line::Motor && policy.drivers.is_empty() {
        return Err(RatingError::Invalid("a motor policy needs at least one driver".into()));
    }
    Ok(line)
}

/// Rates `policy`. `pricing` is asked once for the price table of the
/// policy's line (in the components, a call over the `pricing` link); its
/// error becomes [`RatingError::Invalid`].
pub fn rate(policy: &Policy, pricing: impl FnOnce(Line) -> Result<PriceTable, String>) -> Result<Quote, RatingError> {
    let line = validate(policy)?;
    let table = pricing(line).map_err(|e| RatingError::Invalid(format!("pricing: {e}")))?;

    let offered = table
        .loadings
        .iter()
        .fold(Coverage::empty(), |acc, (flag, _)| acc | *flag);
    let unsupported = policy.coverage - offered;
    if !unsupported.is_empty() {
        return Err(RatingError::UnsupportedCoverage(unsupported));
    }

    let mut warnings = Vec::new();
    let mut breakdown = vec![("base".to_string(), table.base)];
    let mut risk = Risk::Low;

    let subject = match &policy.subject {
        Subject::Vehicle(v) => {
            let kind = match v.kind {
                VehicleKind::Car => 1.0,
                VehicleKind::Motorcycle => 1.4,
                VehicleKind::Van => 1.2,
            };
            if v.year < 2000 {
                warnings.push(format!("vehicle from {} is rated as a classic", v.year));
            }
            (v.value_cents as f64 / 100.0) * 0.02 * kind
        }
        Subject::Dwelling(d) => {
            let basement = if d.floor < 0 { 1.1 } else { 1.0 };
            f64::from(d.square_meters) * 1.5 * basement
        }
        Subject::Person(age) => {
            if *age > 85 {
                return Err(RatingError::Declined(Risk::High, format!("age {age} is above 85")));
            }
            if *age > 60 {
                risk = Risk::Medium;
            }
            f64::from(*age) * 4.0
        }
    };
    breakdown.push(("subject".to_string(), cents(subject)));

    let mut drivers = 0.0;
    for d in &policy.drivers {
        let young = if d.age < 25 { 0.3 } else { 0.0 };
        let claims: f64 = d.claims.iter().map(|(_, amount)| amount).sum();
        if d.claims.len() >= 3 {
            risk = Risk::High;
        } else if !d.claims.is_empty() && risk == Risk::Low {
            risk = Risk::Medium;
        }
        let malus = -f64::from(d.bonus_malus) * 0.02;
        drivers += table.base * (young + malus + d.claims.len() as f64 * 0.08) + claims * 0.01;
    }
    if !policy.drivers.is_empty() {
        breakdown.push(("drivers".to_string(), cents(drivers)));
    }

    for (flag, loading) in &table.loadings {
        if policy.coverage.contains(*flag) {
            breakdown.push((flag.name().to_string(), cents(table.base * f64::from(*loading))));
        }
    }

    let mut premium: f64 = breakdown.iter().map(|(_, x)| x).sum();
    if let Some(deductible) = policy.deductible {
        let discount = -premium * (f64::from(deductible) / 10_000.0).min(0.2);
        breakdown.push(("deductible".to_string(), cents(discount)));
        premium += discount;
    }
    match policy.discount_code.as_deref() {
        Some("WELCOME10") => {
            let discount = -premium * 0.1;
            breakdown.push(("welcome".to_string(), cents(discount)));
            premium += discount;
        }
        Some(other) => warnings.push(format!("unknown discount code {other:?} ignored")),
        None => {}
    }

    Ok(Quote {
        policy_id: policy.id,
        premium: cents(premium),
        currency: table.currency,
        breakdown,
        risk,
        valid_days: if risk == Risk::High { 7 } else { 30 },
        reference: ((policy.id as i64) << 20) ^ i64::from(policy.start_day),
        warnings,
    })
}
