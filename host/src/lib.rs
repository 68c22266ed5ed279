//! Membrane: a medium-agnostic WebAssembly component runtime.
//!
//! Business logic is a Wasm component; a manifest binds its exports to media
//! (HTTP, HTTP-RPC, NATS request/reply, JetStream queues) and links its imports to other components. Data flows one way:
//! [`transports`] → [`runtime::dispatch`] → component instance → [`links`] →
//! other instances. Start reading at [`cli::up`].

pub mod app;
pub mod cli;
pub mod codec;
pub mod control;
pub mod lattice;
pub mod links;
pub mod manifest;
pub mod runtime;
pub mod transports;
