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
//! It also opens the JetStream KV buckets every layer uses ([`open_kv`]),
//! holds the replica count every stream the host creates gets
//! ([`replicas`]), and names JetStream's failures for people
//! ([`jetstream_failure`]).

use async_nats::jetstream::{self, kv::Store, stream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// The replica count of the streams this process creates (`--nats-replicas`).
static REPLICAS: AtomicUsize = AtomicUsize::new(1);

/// Sets the replica count of every KV bucket, object store, event log and
/// queue stream this process creates from now on. One setting per process,
/// like its lattice: the flag is read once at start. Existing streams keep
/// theirs (`nats stream edit` changes them).
pub fn set_replicas(replicas: usize) {
    REPLICAS.store(replicas.clamp(1, 5), Ordering::Relaxed);
}

/// The replica count for streams created now: 1 unless `--nats-replicas`.
pub fn replicas() -> usize {
    REPLICAS.load(Ordering::Relaxed)
}

/// The JetStream domain this process uses (`--nats-jetstream-domain`).
static DOMAIN: RwLock<Option<String>> = RwLock::new(None);

/// Sets the JetStream domain of every JetStream call from now on: a host
/// on a leaf-node server reaches the hub's JetStream as `$JS.<domain>.API`.
/// One setting per process, read once at start.
pub fn set_jetstream_domain(domain: Option<String>) {
    *DOMAIN.write().unwrap_or_else(|e| e.into_inner()) = domain;
}

/// A JetStream context on `client`, in the process's domain if it has one.
pub fn jetstream(client: async_nats::Client) -> jetstream::Context {
    match DOMAIN.read().unwrap_or_else(|e| e.into_inner()).as_deref() {
        Some(domain) => jetstream::with_domain(client, domain),
        None => jetstream::new(client),
    }
}

/// What a failed JetStream call means, for the error a person reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The cluster cannot act: no metadata leader or no stream leader
    /// (a majority of its servers is gone), or no answer at all.
    NoQuorum,
    /// The server has JetStream off (or the account has none).
    NotEnabled,
    /// More replicas asked for than the cluster has servers for.
    TooFewServers,
    /// The server refused this connection's user a publish or subscribe
    /// just before the call timed out: the rights are missing, not a leader.
    Denied,
    /// Anything else: the error says what.
    Other,
}

/// Classifies a JetStream error by its text (async-nats folds the API's
/// error codes into its messages): 10008 JSClusterNotAvailErr, 10118 and
/// 10194 stream offline, a 503 with no responders to `$JS.API` on a cluster
/// that lost its leader, and request timeouts, which is how a cluster
/// without a metadata leader answers.
pub fn jetstream_failure(error: &str) -> Failure {
    let error = error.to_ascii_lowercase();
    let no_quorum = [
        "10008",
        "10118",
        "10194",
        "jetstream cluster not available",
        "jetstream system temporarily unavailable",
        "stream is offline",
        "timed out",
        "timeout",
    ];
    let too_few = [
        "10074",
        "replicas > 1 not supported",
        "no suitable peers",
        "insufficient resources",
    ];
    if ["10039", "10076", "jetstream not enabled"]
        .iter()
        .any(|n| error.contains(n))
    {
        Failure::NotEnabled
    } else if too_few.iter().any(|n| error.contains(n)) {
        Failure::TooFewServers
    } else if no_quorum.iter().any(|n| error.contains(n)) {
        Failure::NoQuorum
    } else {
        Failure::Other
    }
}

/// [`jetstream_failure`] of a write to a stream that was found a moment
/// before (a KV bucket or object store just opened): "no stream found for
/// given subject" is then no missing stream but a publish that no leader
/// answered (a server cut off from its cluster's majority; the first
/// seconds after a quorum returns).
pub fn write_failure(error: &str) -> Failure {
    if error.to_ascii_lowercase().contains("no stream found for given subject") {
        Failure::NoQuorum
    } else {
        jetstream_failure(error)
    }
}

/// How long a permission violation the server reported may explain a
/// timeout that follows it.
const DENIAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(30);

/// The newest permission violation the server reported on this process's
/// connection, and when.
static DENIAL: std::sync::Mutex<Option<(std::time::Instant, String)>> = std::sync::Mutex::new(None);

/// Notes an error the server sent on the connection (`-ERR`); a permission
/// violation among them may explain a JetStream timeout that follows.
pub fn note_server_error(error: &str) {
    if error.to_ascii_lowercase().contains("permissions violation") {
        *DENIAL.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), error.to_string()));
    }
}

/// The permission violation noted within [`DENIAL_WINDOW`], if any.
fn recent_denial() -> Option<String> {
    DENIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .filter(|(at, _)| at.elapsed() <= DENIAL_WINDOW)
        .map(|(_, denial)| denial.clone())
}

/// What a failure means given whether the server refused this connection
/// something just before: a JetStream request whose publish the server
/// drops for permissions gets no answer and times out, which alone reads as
/// no quorum. A named no-quorum answer (10008 and the like) stays one.
pub fn blame(failure: Failure, error: &str, denied: bool) -> Failure {
    let error = error.to_ascii_lowercase();
    let timed_out = error.contains("timed out") || error.contains("timeout");
    if failure == Failure::NoQuorum && timed_out && denied {
        Failure::Denied
    } else {
        failure
    }
}

/// [`explain`] for a write to a stream that was found a moment before
/// ([`write_failure`]).
pub fn explain_write(what: &str, error: impl std::fmt::Display) -> anyhow::Error {
    let text = error.to_string();
    named(what, write_failure(&text), text)
}

/// `error` from JetStream, with what it means in front when that is known:
/// "JetStream has no quorum" instead of a bare timeout, and "is JetStream
/// enabled?" only when the server said it is not.
pub fn explain(what: &str, error: impl std::fmt::Display) -> anyhow::Error {
    let text = error.to_string();
    named(what, jetstream_failure(&text), text)
}

/// `text` after `what`, with what `failure` means in front.
fn named(what: &str, failure: Failure, text: String) -> anyhow::Error {
    let denial = recent_denial();
    match blame(failure, &text, denial.is_some()) {
        Failure::Denied => anyhow::anyhow!(
            "{what}: permission denied: the NATS server refused this user ({}); check its rights (`membrane ctl permissions`): {text}",
            denial.unwrap_or_default()
        ),
        Failure::NoQuorum => anyhow::anyhow!(
            "{what}: JetStream has no quorum (no leader answered: a majority of the cluster's servers may be down or cut off; core NATS calls still work): {text}"
        ),
        Failure::NotEnabled => {
            anyhow::anyhow!("{what}: JetStream is not enabled on the server (run it with -js): {text}")
        }
        Failure::TooFewServers => anyhow::anyhow!(
            "{what}: the cluster has too few JetStream servers for {} replicas (--nats-replicas): {text}",
            replicas()
        ),
        Failure::Other => anyhow::anyhow!("{what}: {text}"),
    }
}

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
/// revisions per key, entries kept `max_age` (forever: `None`), on
/// [`replicas`] servers. The bucket's stream is created directly, with the
/// settings the KV convention prescribes (`KV_<bucket>`, `$KV.<bucket>.>`,
/// rollups, direct gets): async-nats's own `create_key_value` first queries
/// the account, whose answer from a 2.9 server it cannot parse.
pub async fn open_kv(
    jetstream: &jetstream::Context,
    bucket: &str,
    description: &str,
    (history, max_age): (i64, Option<std::time::Duration>),
) -> anyhow::Result<Store> {
    let missing = match jetstream.get_key_value(bucket).await {
        Ok(store) => return Ok(store),
        Err(e) => e,
    };
    if jetstream_failure(&missing.to_string()) == Failure::NoQuorum {
        return Err(explain(&format!("cannot open KV bucket `{bucket}`"), missing));
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
            num_replicas: replicas(),
            ..Default::default()
        })
        .await
        .map_err(|e| explain(&format!("cannot create KV bucket `{bucket}`"), e))?;
    jetstream
        .get_key_value(bucket)
        .await
        .map_err(|e| explain(&format!("cannot open KV bucket `{bucket}`"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetstream_failures_are_named_by_what_they_mean() {
        for (error, failure) in [
            ("jetstream request timed out", Failure::NoQuorum),
            (
                "JetStream error: JetStream system temporarily unavailable (code 503, error code 10008)",
                Failure::NoQuorum,
            ),
            ("stream is offline (code 500, error code 10118)", Failure::NoQuorum),
            (
                "insufficient resources (code 503, error code 10023)",
                Failure::TooFewServers,
            ),
            (
                "replicas > 1 not supported in non-clustered mode (code 500, error code 10074)",
                Failure::TooFewServers,
            ),
            (
                "jetstream not enabled (code 503, error code 10039)",
                Failure::NotEnabled,
            ),
            ("stream not found (code 404, error code 10059)", Failure::Other),
            ("wrong last sequence: 4", Failure::Other),
        ] {
            assert_eq!(jetstream_failure(error), failure, "{error}");
        }
        assert!(
            explain("cannot read", "request timed out")
                .to_string()
                .contains("JetStream has no quorum")
        );
        for (error, failure) in [
            (
                "failed getting chunk ack: no stream found for given subject",
                Failure::NoQuorum,
            ),
            ("jetstream request timed out", Failure::NoQuorum),
            ("wrong last sequence: 4", Failure::Other),
        ] {
            assert_eq!(write_failure(error), failure, "a write: {error}");
        }
        assert_eq!(
            blame(Failure::NoQuorum, "jetstream request timed out", true),
            Failure::Denied,
            "a timeout right after a permissions violation"
        );
        assert_eq!(
            blame(Failure::NoQuorum, "jetstream request timed out", false),
            Failure::NoQuorum
        );
        assert_eq!(
            blame(Failure::NoQuorum, "temporarily unavailable (error code 10008)", true),
            Failure::NoQuorum,
            "the server named no quorum itself"
        );
        assert_eq!(blame(Failure::Other, "timed out", true), Failure::Other);
        assert_eq!(
            jetstream_failure("no stream found for given subject"),
            Failure::Other,
            "a read or a first publish: the stream may really be missing"
        );
        assert!(
            !explain("cannot read", "stream not found")
                .to_string()
                .contains("quorum")
        );
    }
}
