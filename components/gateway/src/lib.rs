//! `gateway`: the HTTP face of the example app. It parses a JSON policy, calls
//! the imported `rater` and answers JSON. Whether `rater` runs in the same
//! process or on another host is the host's business, not this crate's.
//!
//! Routes: `POST /quote` (a policy) and `GET /health`.

wit_bindgen::generate!({
    path: "../../wit/insurance",
    world: "example:insurance/gateway-component",
});

use example::insurance::rater;
use example::insurance::types as wit;
use serde::{Deserialize, Serialize};
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
    (status, serde_json::json!({ "error": message }).to_string())
}

fn quote(request: &IncomingRequest) -> (u16, String) {
    let body = match guest_http::read_body(request, MAX_BODY) {
        Ok(body) => body,
        Err(e) => return error(400, &e),
    };
    let policy: PolicyJson = match serde_json::from_slice(&body) {
        Ok(policy) => policy,
        Err(e) => return error(400, &format!("invalid policy: {e}")),
    };
    match rater::rate(&policy.into()) {
        Ok(quote) => (200, to_json(&QuoteJson::from(quote))),
        Err(e) => (422, to_json(&RatingErrorJson::from(e))),
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyJson {
    id: u64,
    holder: String,
    region: char,
    subject: SubjectJson,
    #[serde(default)]
    coverage: Vec<CoverageJson>,
    deductible: Option<u32>,
    #[serde(default)]
    drivers: Vec<DriverJson>,
    start_day: i32,
    discount_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum SubjectJson {
    Vehicle {
        kind: VehicleKindJson,
        year: u16,
        value_cents: u64,
    },
    Dwelling {
        square_meters: f32,
        postcode: String,
        floor: i8,
    },
    Person {
        age: u8,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum VehicleKindJson {
    Car,
    Motorcycle,
    Van,
}

#[derive(Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum CoverageJson {
    Collision,
    Theft,
    Glass,
    Roadside,
    Flood,
}

const COVERAGES: [(CoverageJson, wit::Coverage); 5] = [
    (CoverageJson::Collision, wit::Coverage::COLLISION),
    (CoverageJson::Theft, wit::Coverage::THEFT),
    (CoverageJson::Glass, wit::Coverage::GLASS),
    (CoverageJson::Roadside, wit::Coverage::ROADSIDE),
    (CoverageJson::Flood, wit::Coverage::FLOOD),
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DriverJson {
    name: String,
    age: u8,
    #[serde(default)]
    claims: Vec<(u16, f64)>,
    #[serde(default)]
    bonus_malus: i16,
}

impl From<PolicyJson> for wit::Policy {
    fn from(p: PolicyJson) -> Self {
        let subject = match p.subject {
            SubjectJson::Vehicle {
                kind,
                year,
                value_cents,
            } => wit::Subject::Vehicle(wit::Vehicle {
                kind: match kind {
                    VehicleKindJson::Car => wit::VehicleKind::Car,
                    VehicleKindJson::Motorcycle => wit::VehicleKind::Motorcycle,
                    VehicleKindJson::Van => wit::VehicleKind::Van,
                },
                year,
                value_cents,
            }),
            SubjectJson::Dwelling {
                square_meters,
                postcode,
                floor,
            } => wit::Subject::Dwelling(wit::Dwelling {
                square_meters,
                postcode,
                floor,
            }),
            SubjectJson::Person { age } => wit::Subject::Person(age),
        };
        let coverage = p.coverage.iter().fold(wit::Coverage::empty(), |acc, c| {
            acc | COVERAGES
                .iter()
                .find(|(j, _)| *j as u8 == *c as u8)
                .map_or(wit::Coverage::empty(), |(_, f)| *f)
        });
        wit::Policy {
            id: p.id,
            holder: p.holder,
            region: p.region,
            subject,
            coverage,
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
}

fn coverage_names(flags: wit::Coverage) -> Vec<CoverageJson> {
    COVERAGES
        .iter()
        .filter(|(_, f)| flags.contains(*f))
        .map(|(j, _)| *j)
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum RiskJson {
    Low,
    Medium,
    High,
}

impl From<wit::Risk> for RiskJson {
    fn from(r: wit::Risk) -> Self {
        match r {
            wit::Risk::Low => RiskJson::Low,
            wit::Risk::Medium => RiskJson::Medium,
            wit::Risk::High => RiskJson::High,
        }
    }
}

#[derive(Serialize)]
struct QuoteJson {
    policy_id: u64,
    premium: f64,
    currency: String,
    breakdown: Vec<(String, f64)>,
    risk: RiskJson,
    valid_days: u16,
    reference: i64,
    warnings: Vec<String>,
}

impl From<wit::Quote> for QuoteJson {
    fn from(q: wit::Quote) -> Self {
        QuoteJson {
            policy_id: q.policy_id,
            premium: q.premium,
            currency: q.currency,
            breakdown: q.breakdown,
            risk: q.risk.into(),
            valid_days: q.valid_days,
            reference: q.reference,
            warnings: q.warnings,
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
enum RatingErrorJson {
    Invalid { message: String },
    UnsupportedCoverage { coverage: Vec<CoverageJson> },
    Declined { risk: RiskJson, reason: String },
}

impl From<wit::RatingError> for RatingErrorJson {
    fn from(e: wit::RatingError) -> Self {
        match e {
            wit::RatingError::Invalid(message) => RatingErrorJson::Invalid { message },
            wit::RatingError::UnsupportedCoverage(c) => RatingErrorJson::UnsupportedCoverage {
                coverage: coverage_names(c),
            },
            wit::RatingError::Declined((risk, reason)) => RatingErrorJson::Declined {
                risk: risk.into(),
                reason,
            },
        }
    }
}
