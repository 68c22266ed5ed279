//! The insurance example's business logic as plain Rust, with no WIT and no
//! transport: the domain types ([`model`]), the rating rules ([`rate`]), the
//! price tables ([`price_table`]), the gateway's JSON forms ([`json`]) and
//! the conversions to and from each component's WIT types ([`wit_glue!`]).
//!
//! The `gateway`, `rater` and `pricing` components wrap these functions in
//! their WIT worlds; `benches/` calls the same functions natively, so the
//! native baseline computes byte-for-byte the same quote as the components.

mod glue;
pub mod json;
pub mod model;
mod pricing;
mod rating;

pub use pricing::price_table;
pub use rating::rate;
