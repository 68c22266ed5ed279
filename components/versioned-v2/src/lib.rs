//! `versioned-v2`: `versioned-v1` answering `version: 2`.

const VERSION: u32 = 2;
include!("../../versioned-v1/src/version.rs");
