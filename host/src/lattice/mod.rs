//! The lattice: everything a host shares with others through NATS: the
//! connection, and the inventory and heartbeats operators read. Desired state
//! (KV) and artifacts (object store) come with the control plane.

pub mod connection;
pub mod inventory;
