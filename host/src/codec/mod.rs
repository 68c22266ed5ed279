//! Codecs between component values and bytes on a medium. Type-directed: the
//! component's own types drive the mapping, so no schema is written by hand.
//! [`types`] compares and describes those types (link checks, messages).

pub mod json;
pub mod types;
pub mod wire;
