//! The host's NATS connection as one replaceable handle.
//!
//! async-nats ends a client for good when its connection task dies (a panic
//! on a malformed message from a peer, nats.rs#1612). The host then connects
//! again and puts the new client in the [`Bus`]: everything that publishes or
//! requests asks the bus for the current client at the time, so remote links,
//! forwarded routes, key-value buckets, the artifact store and events carry
//! on with no rebinding. What *subscribes* (media, link servers, the agent)
//! subscribes again when [`Bus::generation`] moves. Apps, instances and HTTP
//! listeners are not touched.
//!
//! This module knows nothing of how to connect; `lattice::connection` does.

use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// The current NATS client, shared by every part of the host that uses it.
#[derive(Clone, Debug)]
pub struct Bus {
    client: Arc<RwLock<async_nats::Client>>,
    generation: watch::Sender<u64>,
}

impl Bus {
    /// A bus on `client`, generation 0.
    pub fn new(client: async_nats::Client) -> Bus {
        Bus {
            client: Arc::new(RwLock::new(client)),
            generation: watch::Sender::new(0),
        }
    }

    /// The client to use now.
    pub fn client(&self) -> async_nats::Client {
        self.client.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `client` in place of the dead one and moves the generation on,
    /// so that subscribers subscribe again.
    pub fn replace(&self, client: async_nats::Client) {
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
        self.generation.send_modify(|g| *g += 1);
    }

    /// How many times the client has been replaced.
    pub fn current_generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// How many times the client was replaced; changes when it is.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}
