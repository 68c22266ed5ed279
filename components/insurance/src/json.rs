//! The JSON forms of `POST /quote`: the policy a client sends and the quote
//! or error it gets back. The `gateway` component and the native baseline
//! both answer through [`quote_response`], so they answer the same bytes.

use crate::model::{Coverage, Driver, Dwelling, Policy, Quote, RatingError, Risk, Subject, Vehicle, VehicleKind};
use serde::{Deserialize, Serialize};

/// Answers a `POST /quote` body: 400 for a body that is not a policy, 200
/// with the quote, or 422 with the rating error. `rate` rates the policy.
pub fn quote_response(body: &[u8], rate: impl FnOnce(Policy) -> Result<Quote, RatingError>) -> (u16, String) {
    let policy: PolicyJson = match serde_json::from_slice(body) {
        Ok(policy) => policy,
        Err(e) => return (400, error_json(&format!("invalid policy: {e}"))),
    };
    match rate(policy.into()) {
        Ok(quote) => (200, to_json(&QuoteJson::from(quote))),
        Err(e) => (422, to_json(&RatingErrorJson::from(e))),
    }
}

/// `{"error": message}`.
pub fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
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

/// Each JSON extra with its flag, in bit order.
const COVERAGES: [(CoverageJson, Coverage); 5] = [
    (CoverageJson::Collision, Coverage::COLLISION),
    (CoverageJson::Theft, Coverage::THEFT),
    (CoverageJson::Glass, Coverage::GLASS),
    (CoverageJson::Roadside, Coverage::ROADSIDE),
    (CoverageJson::Flood, Coverage::FLOOD),
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

impl From<PolicyJson> for Policy {
    fn from(p: PolicyJson) -> Self {
        let subject = match p.subject {
            SubjectJson::Vehicle {
                kind,
                year,
                value_cents,
            } => Subject::Vehicle(Vehicle {
                kind: match kind {
                    VehicleKindJson::Car => VehicleKind::Car,
                    VehicleKindJson::Motorcycle => VehicleKind::Motorcycle,
                    VehicleKindJson::Van => VehicleKind::Van,
                },
                year,
                value_cents,
            }),
            SubjectJson::Dwelling {
                square_meters,
                postcode,
                floor,
            } => Subject::Dwelling(Dwelling {
                square_meters,
                postcode,
                floor,
            }),
            SubjectJson::Person { age } => Subject::Person(age),
        };
        let coverage = p.coverage.iter().fold(Coverage::empty(), |acc, c| {
            acc | COVERAGES
                .iter()
                .find(|(j, _)| *j as u8 == *c as u8)
                .map_or(Coverage::empty(), |(_, f)| *f)
        });
        Policy {
            id: p.id,
            holder: p.holder,
            region: p.region,
            subject,
            coverage,
            deductible: p.deductible,
            drivers: p
                .drivers
                .into_iter()
                .map(|d| Driver {
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

fn coverage_names(flags: Coverage) -> Vec<CoverageJson> {
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

impl From<Risk> for RiskJson {
    fn from(r: Risk) -> Self {
        match r {
            Risk::Low => RiskJson::Low,
            Risk::Medium => RiskJson::Medium,
            Risk::High => RiskJson::High,
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

impl From<Quote> for QuoteJson {
    fn from(q: Quote) -> Self {
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

impl From<RatingError> for RatingErrorJson {
    fn from(e: RatingError) -> Self {
        match e {
            RatingError::Invalid(message) => RatingErrorJson::Invalid { message },
            RatingError::UnsupportedCoverage(c) => RatingErrorJson::UnsupportedCoverage {
                coverage: coverage_names(c),
            },
            RatingError::Declined(risk, reason) => RatingErrorJson::Declined {
                risk: risk.into(),
                reason,
            },
        }
    }
}
