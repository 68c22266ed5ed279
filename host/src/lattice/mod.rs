//! The lattice: everything a host shares with others through NATS: the
//! connection, membership and placement, the host agent that reconciles, the
//! lifecycle events it publishes, the inventory and heartbeats, desired state
//! (KV) and who may sign it, artifacts (object store), and the apps'
//! key-value buckets (KV).

pub mod adapt;
pub mod agent;
pub mod apps;
pub mod artifacts;
pub mod connection;
pub mod decide;
pub mod desired;
pub mod events;
pub mod handover;
pub mod inventory;
pub mod keyvalue;
pub mod peers;
pub mod placement;
pub mod policy;
pub mod report;
pub mod status;
pub mod trust;
