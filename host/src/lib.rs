//! Membrane: a medium-agnostic WebAssembly component runtime.
//!
//! Business logic is a Wasm component; a manifest binds its exports to media
//! (HTTP, HTTP-RPC, NATS request/reply, JetStream queues, schedules, MQTT) and
//! links its imports to other components.
//!
//! Layers, each importing only the ones below it (`docs/architecture.md`;
//! checked by `tests/it/layers.rs`):
//!
//! ```text
//! cli → admin → control → lattice → app → transports → links → runtime → manifest → codec, metrics, bus, subjects, registry
//! cli → dev → app              (dev: beside control and lattice, never using them)
//! cli → console → lattice      (console: beside admin, never using control)
//! ```
//!
//! - [`cli`]: `membrane up`, `ctl`, `dev`, `new` and `completions`.
//! - [`admin`]: the host's admin endpoint: status page, metrics, health.
//! - [`console`]: `membrane ctl console`, the lattice's live web page.
//! - [`dev`]: the dev loop (build, serve, watch, rebuild, hot-swap through
//!   [`app`]) and the component templates of `membrane new`.
//! - [`control`]: the control-plane requests and the `ctl` client.
//! - [`lattice`]: NATS, membership, placement, the agent that reconciles,
//!   events, desired state and artifacts.
//! - [`app`]: one app on this host; staging a manifest into a generation.
//! - [`transports`]: the media (one file each, one [`transports::Medium`]
//!   trait) and the services that answer on NATS.
//! - [`links`]: imports served by other components, in process or remote.
//! - [`runtime`]: the host's engine, capabilities, instances, the dispatcher.
//! - [`codec`] and [`manifest`]: values on the wire, the manifest;
//!   [`metrics`]: the counters every layer records; [`bus`]: the host's
//!   NATS connection, replaceable when it dies; [`subjects`]: every NATS
//!   subject of the lattice's protocol; [`registry`]: components as OCI
//!   artifacts (pull, push, the content-addressed cache on disk).
//!
//! A call flows one way: a medium ([`transports`]) → the dispatcher
//! ([`runtime::dispatch`]) → a component instance → its links ([`links`]) →
//! other instances, here or on another host. Start reading at [`cli::up`];
//! an HTTP request enters at [`transports::http`].

pub mod admin;
pub mod app;
pub mod bus;
pub mod cli;
pub mod codec;
pub mod console;
pub mod control;
pub mod dev;
pub mod lattice;
pub mod links;
pub mod manifest;
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod subjects;
pub mod transports;
