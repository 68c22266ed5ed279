//! The lattice: everything a host shares with others through NATS. Today that
//! is the connection itself; heartbeats, inventory and desired state follow.

pub mod connection;
