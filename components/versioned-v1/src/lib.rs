//! `versioned-v1`: answers `version: 1`, over HTTP (`GET /`) and as
//! `example:testkit/version#get`. Swapped for `versioned-v2` in hot-swap tests.

const VERSION: u32 = 1;
include!("version.rs");
