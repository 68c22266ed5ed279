//! Membrane's integration tests, in one binary: each module is one area as a
//! user meets it (real `membrane` processes, nats-server, HTTP clients). One
//! binary rather than one per file: each test binary links the whole host,
//! and linking twenty of them was most of CI's build time.

mod support;

mod adaptive;
mod admin;
mod attack;
mod bad_input;
mod churn;
mod cluster;
mod compose;
mod config;
mod console;
mod control;
mod dev;
mod docs_examples;
mod faults;
mod fuzz_manifest;
mod hostile;
mod insurance_app;
mod json_codec;
mod keyvalue;
mod lattice;
mod layers;
mod leaf;
mod links_app;
mod media;
mod mqtt;
mod outbound;
mod partition;
mod registry;
mod reuse;
mod routes;
mod schedule;
mod security;
mod spin_app;
mod trace;
mod traces;
mod wasi_p3;
mod wire_codec;
