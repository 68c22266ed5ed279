//! `gateway`: the HTTP face of the example app. It parses a JSON policy, calls
//! the imported `rater` and answers JSON (the JSON forms live in the shared
//! `insurance` crate). Whether `rater` runs in the same process or on another
//! host is the host's business, not this crate's.
//!
//! Routes: `POST /quote` (a policy) and `GET /health`.

wit_bindgen::generate!({
    path: "../../wit/insurance",
    world: "example:insurance/gateway-component",
});

use example::insurance::rater;
use example::insurance::types as wit;
use insurance::json::{error_json, quote_response};
use insurance::model;
use wasip2::http::types::{IncomingRequest, Method, ResponseOutparam};

/// Largest policy document accepted, in bytes.
const MAX_BODY: usize = 256 * 1024;

struct Gateway;

impl wasip2::exports::http::incoming_handler::Guest for Gateway {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let (status, body) = route(&request);
        guest_http::respond(out, status, "application/json", body.as_bytes());
    }
}

wasip2::http::proxy::export!(Gateway);

fn route(request: &IncomingRequest) -> (u16, String) {
    let path = guest_http::path(request);
    match (request.method(), path.as_str()) {
        (Method::Get, "/health") => (200, r#"{"status":"ok"}"#.to_string()),
        (Method::Post, "/quote") => quote(request),
        (_, "/quote") => error(405, "use POST /quote with a JSON policy"),
        _ => error(404, &format!("no route for {path}")),
    }
}

fn error(status: u16, message: &str) -> (u16, String) {
    (status, error_json(message))
}

fn quote(request: &IncomingRequest) -> (u16, String) {
    let body = match guest_http::read_body(request, MAX_BODY) {
        Ok(body) => body,
        Err(e) => return error(400, &e),
    };
    quote_response(&body, |policy| {
        rater::rate(&to_wit(policy)).map(from_wit_quote).map_err(from_wit_error)
    })
}

fn to_wit(p: model::Policy) -> wit::Policy {
    let subject = match p.subject {
        model::Subject::Vehicle(v) => wit::Subject::Vehicle(wit::Vehicle {
            kind: match v.kind {
                model::VehicleKind::Car => wit::VehicleKind::Car,
                model::VehicleKind::Motorcycle => wit::VehicleKind::Motorcycle,
                model::VehicleKind::Van => wit::VehicleKind::Van,
            },
            year: v.year,
            value_cents: v.value_cents,
        }),
        model::Subject::Dwelling(d) => wit::Subject::Dwelling(wit::Dwelling {
            square_meters: d.square_meters,
            postcode: d.postcode,
            floor: d.floor,
        }),
        model::Subject::Person(age) => wit::Subject::Person(age),
    };
    wit::Policy {
        id: p.id,
        holder: p.holder,
        region: p.region,
        subject,
        coverage: wit::Coverage::from_bits_retain(p.coverage.bits()),
        deductible: p.deductible,
        drivers: p
            .drivers
            .into_iter()
            .map(|d| wit::Driver {
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

fn from_wit_risk(r: wit::Risk) -> model::Risk {
    match r {
        wit::Risk::Low => model::Risk::Low,
        wit::Risk::Medium => model::Risk::Medium,
        wit::Risk::High => model::Risk::High,
    }
}

fn from_wit_quote(q: wit::Quote) -> model::Quote {
    model::Quote {
        policy_id: q.policy_id,
        premium: q.premium,
        currency: q.currency,
        breakdown: q.breakdown,
        risk: from_wit_risk(q.risk),
        valid_days: q.valid_days,
        reference: q.reference,
        warnings: q.warnings,
    }
}

fn from_wit_error(e: wit::RatingError) -> model::RatingError {
    match e {
        wit::RatingError::Invalid(message) => model::RatingError::Invalid(message),
        wit::RatingError::UnsupportedCoverage(c) => {
            model::RatingError::UnsupportedCoverage(model::Coverage::from_bits(c.bits()))
        }
        wit::RatingError::Declined((risk, reason)) => model::RatingError::Declined(from_wit_risk(risk), reason),
    }
}
