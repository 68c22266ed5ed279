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
use insurance::model;
use wasi::logging::logging::{Level, log};

struct Rater;

impl Guest for Rater {
    fn rate(policy: wit::Policy) -> Result<wit::Quote, wit::RatingError> {
        let policy = from_wit(policy);
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

fn coverage(flags: wit::Coverage) -> model::Coverage {
    model::Coverage::from_bits(flags.bits())
}

fn to_wit_coverage(flags: model::Coverage) -> wit::Coverage {
    wit::Coverage::from_bits_retain(flags.bits())
}

fn from_wit(p: wit::Policy) -> model::Policy {
    let subject = match p.subject {
        wit::Subject::Vehicle(v) => model::Subject::Vehicle(model::Vehicle {
            kind: match v.kind {
                wit::VehicleKind::Car => model::VehicleKind::Car,
                wit::VehicleKind::Motorcycle => model::VehicleKind::Motorcycle,
                wit::VehicleKind::Van => model::VehicleKind::Van,
            },
            year: v.year,
            value_cents: v.value_cents,
        }),
        wit::Subject::Dwelling(d) => model::Subject::Dwelling(model::Dwelling {
            square_meters: d.square_meters,
            postcode: d.postcode,
            floor: d.floor,
        }),
        wit::Subject::Person(age) => model::Subject::Person(age),
    };
    model::Policy {
        id: p.id,
        holder: p.holder,
        region: p.region,
        subject,
        coverage: coverage(p.coverage),
        deductible: p.deductible,
        drivers: p
            .drivers
            .into_iter()
            .map(|d| model::Driver {
                name: d.name,
                age: d.age,
                claims: d.claims,
                bonus_malus: d.bonus_malus,
            })
            .collect(),
        start_day: p.start_day,
        discount_code: p.discount_code,
    }
}

fn to_wit_line(line: model::Line) -> wit::Line {
    match line {
        model::Line::Motor => wit::Line::Motor,
        model::Line::Home => wit::Line::Home,
        model::Line::Life => wit::Line::Life,
    }
}

fn from_wit_table(t: wit::PriceTable) -> model::PriceTable {
    model::PriceTable {
        base: t.base,
        loadings: t.loadings.into_iter().map(|(flags, x)| (coverage(flags), x)).collect(),
        currency: t.currency,
    }
}

fn to_wit_risk(r: model::Risk) -> wit::Risk {
    match r {
        model::Risk::Low => wit::Risk::Low,
        model::Risk::Medium => wit::Risk::Medium,
        model::Risk::High => wit::Risk::High,
    }
}

fn to_wit_quote(q: model::Quote) -> wit::Quote {
    wit::Quote {
        policy_id: q.policy_id,
        premium: q.premium,
        currency: q.currency,
        breakdown: q.breakdown,
        risk: to_wit_risk(q.risk),
        valid_days: q.valid_days,
        reference: q.reference,
        warnings: q.warnings,
    }
}

fn to_wit_error(e: model::RatingError) -> wit::RatingError {
    match e {
        model::RatingError::Invalid(message) => wit::RatingError::Invalid(message),
        model::RatingError::UnsupportedCoverage(c) => wit::RatingError::UnsupportedCoverage(to_wit_coverage(c)),
        model::RatingError::Declined(risk, reason) => wit::RatingError::Declined((to_wit_risk(risk), reason)),
    }
}
