//! Membrane: a medium-agnostic WebAssembly component runtime.
//!
//! Business logic is a Wasm component; a manifest binds its exports to media
//! (HTTP today) and links its imports to other components. Data flows one way:
//! [`transports`] → [`runtime::dispatch`] → component instance → [`links`] →
//! other instances. Start reading at [`cli::up`].

pub mod cli;
pub mod links;
pub mod manifest;
pub mod runtime;
pub mod transports;
