//! What this host hears from its peers: heartbeats and host and component
//! events, turned into membership and hand-over facts, and the wait at
//! leave for peers to take its components over. A claim about a host counts
//! only from that host's own subject ([`vouched`]).

use super::events::{Event, EventKind, vouched};
use super::handover::Handovers;
use super::inventory::HostInventory;
use super::placement::{Member, Members};
use futures::StreamExt as _;
use futures::stream::SelectAll;
use std::collections::BTreeSet;
use std::time::Duration;

/// The longest a leaving host waits for others to take its components over.
pub const LEAVE_WAIT: Duration = Duration::from_secs(10);

/// The member a host's inventory describes.
pub fn member_of(host: &HostInventory) -> Member {
    Member {
        host: host.host.clone(),
        labels: host.labels.clone(),
    }
}

/// Subscribes to the lattice's heartbeats and host and component events.
pub async fn follow(client: &async_nats::Client, lattice: &str) -> SelectAll<async_nats::Subscriber> {
    let subjects = [
        crate::subjects::heartbeat(lattice, "*"),
        crate::subjects::event(lattice, "host.*.*"),
        crate::subjects::event(lattice, "component.*.*"),
    ];
    let mut subscribers = Vec::new();
    for subject in subjects {
        match client.subscribe(subject).await {
            Ok(s) => subscribers.push(s),
            Err(e) => tracing::warn!("cannot follow the lattice's hosts: {e}"),
        }
    }
    futures::stream::select_all(subscribers)
}

/// What host `me` of `lattice` learns from one peer message: records it in
/// `members` and `handovers`; whether membership or a hand-over changed.
pub fn heard(
    lattice: &str,
    me: &str,
    members: &mut Members,
    handovers: &mut Handovers,
    message: &async_nats::Message,
) -> bool {
    if message.subject.starts_with(&crate::subjects::heartbeat(lattice, "")) {
        return match serde_json::from_slice::<HostInventory>(&message.payload) {
            Ok(host) if host.host != me && vouched(&message.subject, &host.host) => members.saw(member_of(&host)),
            _ => false,
        };
    }
    let Ok(event) = serde_json::from_slice::<Event>(&message.payload) else {
        return false;
    };
    if event.host == me || !vouched(&message.subject, &event.host) {
        return false;
    }
    match event.kind {
        EventKind::HostStarted => members.saw(Member {
            host: event.host,
            labels: event.labels,
        }),
        EventKind::HostStopped => {
            handovers.gone(&event.host);
            members.left(&event.host)
        }
        // A component now running elsewhere may complete a hand-over.
        EventKind::ComponentStarted | EventKind::ComponentUpdated => match (&event.app, &event.component) {
            (Some(app), Some(component)) => handovers.started(app, component, &event.host),
            _ => false,
        },
        EventKind::ComponentStopped => {
            if let (Some(app), Some(component)) = (&event.app, &event.component) {
                handovers.stopped(app, component, &event.host);
            }
            false
        }
        EventKind::ComponentRejected
        | EventKind::ComponentFailed
        | EventKind::AppRejected
        | EventKind::PlacementAdapted
        | EventKind::PlacementReverted => false,
    }
}

/// Waits (at most [`LEAVE_WAIT`]) until peers announce on `events` that
/// they run every `(app, component)` of `pending`; warns of those they do
/// not.
pub async fn await_takeover(mut events: async_nats::Subscriber, me: &str, mut pending: BTreeSet<(String, String)>) {
    tracing::info!("handing {} component(s) over before stopping", pending.len());
    let deadline = tokio::time::Instant::now() + LEAVE_WAIT;
    while !pending.is_empty() {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, events.next()).await else {
            break;
        };
        let Ok(event) = serde_json::from_slice::<Event>(&message.payload) else {
            continue;
        };
        if event.host != me
            && vouched(&message.subject, &event.host)
            && matches!(event.kind, EventKind::ComponentStarted | EventKind::ComponentUpdated)
            && let (Some(app), Some(component)) = (event.app, event.component)
        {
            pending.remove(&(app, component));
        }
    }
    if !pending.is_empty() {
        let names: Vec<String> = pending.iter().map(|(a, c)| format!("{a}/{c}")).collect();
        tracing::warn!(
            "stopping after {} s with {} not yet running elsewhere",
            LEAVE_WAIT.as_secs(),
            names.join(", ")
        );
    }
}
