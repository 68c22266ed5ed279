//! Codecs between component values and bytes on a medium. Type-directed: the
//! component's own types drive the mapping, so no schema is written by hand.

pub mod json;
pub mod wire;
