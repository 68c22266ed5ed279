//! [`wit_glue!`]: the conversions between [`crate::model`] and the types that
//! `wit_bindgen::generate!` makes for `example:insurance/types`, written once
//! for every component.

/// Defines, at the call site, a conversion each way for every type of
/// `example:insurance/types` (`to_wit_policy`, `from_wit_policy`,
/// `to_wit_quote`, …). Call it where `wit` names the component's generated
/// `types` module (`use example::insurance::types as wit;`). A component
/// uses only some of them; the rest are compiled out.
#[macro_export]
macro_rules! wit_glue {
    () => {
        #[allow(dead_code)]
        fn to_wit_coverage(c: $crate::model::Coverage) -> wit::Coverage {
            wit::Coverage::from_bits_retain(c.bits())
        }

        #[allow(dead_code)]
        fn from_wit_coverage(c: wit::Coverage) -> $crate::model::Coverage {
            $crate::model::Coverage::from_bits(c.bits())
        }

        #[allow(dead_code)]
        fn to_wit_line(line: $crate::model::Line) -> wit::Line {
            match line {
                $crate::model::Line::Motor => wit::Line::Motor,
                $crate::model::Line::Home => wit::Line::Home,
                $crate::model::Line::Life => wit::Line::Life,
            }
        }

        #[allow(dead_code)]
        fn from_wit_line(line: wit::Line) -> $crate::model::Line {
            match line {
                wit::Line::Motor => $crate::model::Line::Motor,
                wit::Line::Home => $crate::model::Line::Home,
                wit::Line::Life => $crate::model::Line::Life,
            }
        }

        #[allow(dead_code)]
        fn to_wit_risk(r: $crate::model::Risk) -> wit::Risk {
            match r {
                $crate::model::Risk::Low => wit::Risk::Low,
                $crate::model::Risk::Medium => wit::Risk::Medium,
                $crate::model::Risk::High => wit::Risk::High,
            }
        }

        #[allow(dead_code)]
        fn from_wit_risk(r: wit::Risk) -> $crate::model::Risk {
            match r {
                wit::Risk::Low => $crate::model::Risk::Low,
                wit::Risk::Medium => $crate::model::Risk::Medium,
                wit::Risk::High => $crate::model::Risk::High,
            }
        }

        #[allow(dead_code)]
        fn to_wit_policy(p: $crate::model::Policy) -> wit::Policy {
            use $crate::model::{Subject, VehicleKind};
            wit::Policy {
                id: p.id,
                holder: p.holder,
                region: p.region,
                subject: match p.subject {
                    Subject::Vehicle(v) => wit::Subject::Vehicle(wit::Vehicle {
                        kind: match v.kind {
                            VehicleKind::Car => wit::VehicleKind::Car,
                            VehicleKind::Motorcycle => wit::VehicleKind::Motorcycle,
                            VehicleKind::Van => wit::VehicleKind::Van,
                        },
                        year: v.year,
                        value_cents: v.value_cents,
                    }),
                    Subject::Dwelling(d) => wit::Subject::Dwelling(wit::Dwelling {
                        square_meters: d.square_meters,
                        postcode: d.postcode,
                        floor: d.floor,
                    }),
                    Subject::Person(age) => wit::Subject::Person(age),
                },
                coverage: to_wit_coverage(p.coverage),
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

        #[allow(dead_code)]
        fn from_wit_policy(p: wit::Policy) -> $crate::model::Policy {
            use $crate::model::{Driver, Dwelling, Policy, Subject, Vehicle, VehicleKind};
            Policy {
                id: p.id,
                holder: p.holder,
                region: p.region,
                subject: match p.subject {
                    wit::Subject::Vehicle(v) => Subject::Vehicle(Vehicle {
                        kind: match v.kind {
                            wit::VehicleKind::Car => VehicleKind::Car,
                            wit::VehicleKind::Motorcycle => VehicleKind::Motorcycle,
                            wit::VehicleKind::Van => VehicleKind::Van,
                        },
                        year: v.year,
                        value_cents: v.value_cents,
                    }),
                    wit::Subject::Dwelling(d) => Subject::Dwelling(Dwelling {
                        square_meters: d.square_meters,
                        postcode: d.postcode,
                        floor: d.floor,
                    }),
                    wit::Subject::Person(age) => Subject::Person(age),
                },
                coverage: from_wit_coverage(p.coverage),
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

        #[allow(dead_code)]
        fn to_wit_quote(q: $crate::model::Quote) -> wit::Quote {
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

        #[allow(dead_code)]
        fn from_wit_quote(q: wit::Quote) -> $crate::model::Quote {
            $crate::model::Quote {
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

        #[allow(dead_code)]
        fn to_wit_error(e: $crate::model::RatingError) -> wit::RatingError {
            use $crate::model::RatingError;
            match e {
                RatingError::Invalid(message) => wit::RatingError::Invalid(message),
                RatingError::UnsupportedCoverage(c) => wit::RatingError::UnsupportedCoverage(to_wit_coverage(c)),
                RatingError::Declined(risk, reason) => wit::RatingError::Declined((to_wit_risk(risk), reason)),
            }
        }

        #[allow(dead_code)]
        fn from_wit_error(e: wit::RatingError) -> $crate::model::RatingError {
            use $crate::model::RatingError;
            match e {
                wit::RatingError::Invalid(message) => RatingError::Invalid(message),
                wit::RatingError::UnsupportedCoverage(c) => RatingError::UnsupportedCoverage(from_wit_coverage(c)),
                wit::RatingError::Declined((risk, reason)) => RatingError::Declined(from_wit_risk(risk), reason),
            }
        }

        #[allow(dead_code)]
        fn to_wit_table(t: $crate::model::PriceTable) -> wit::PriceTable {
            wit::PriceTable {
                base: t.base,
                loadings: t
                    .loadings
                    .into_iter()
                    .map(|(c, x)| (to_wit_coverage(c), x))
                    .collect(),
                currency: t.currency,
            }
        }

        #[allow(dead_code)]
        fn from_wit_table(t: wit::PriceTable) -> $crate::model::PriceTable {
            $crate::model::PriceTable {
                base: t.base,
                loadings: t
                    .loadings
                    .into_iter()
                    .map(|(c, x)| (from_wit_coverage(c), x))
                    .collect(),
                currency: t.currency,
            }
        }
    };
}
