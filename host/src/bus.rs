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
//! It also opens the JetStream KV buckets every layer uses ([`open_kv`]).

use anyhow::Context as _;
use async_nats::jetstream::{self, kv::Store, stream};
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

/// Opens KV bucket `bucket`, creating it if missing with `history`
/// revisions per key, entries kept `max_age` (forever: `None`). The bucket's stream is created directly, with the
/// settings the KV convention prescribes (`KV_<bucket>`, `$KV.<bucket>.>`,
/// rollups, direct gets): async-nats's own `create_key_value` first queries
/// the account, whose answer from a 2.9 server it cannot parse.
pub async fn open_kv(
    jetstream: &jetstream::Context,
    bucket: &str,
    description: &str,
    (history, max_age): (i64, Option<std::time::Duration>),
) -> anyhow::Result<Store> {
    if let Ok(store) = jetstream.get_key_value(bucket).await {
        return Ok(store);
    }
    jetstream
        .get_or_create_stream(stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(description.into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: history,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            max_age: max_age.unwrap_or_default(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create KV bucket `{bucket}` (is JetStream enabled?)"))?;
    jetstream
        .get_key_value(bucket)
        .await
        .with_context(|| format!("cannot open KV bucket `{bucket}`"))
}
