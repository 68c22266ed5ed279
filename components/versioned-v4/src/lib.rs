//! `versioned-v4`: `versioned-v1` answering `version: 4`, a third compatible
//! version for concurrent-update tests.

const VERSION: u32 = 4;
include!("../../versioned-v1/src/version.rs");
