//! Inventory: what each host of a lattice runs, for operators.
//!
//! Every host connected to NATS answers requests on
//! `membrane.<lattice>.ctl.v1.inventory` with its [`HostInventory`] (JSON) and
//! publishes the same document without the component list (only their
//! number) as a heartbeat on `membrane.<lattice>.evt.v1.heartbeat` every
//! `--heartbeat-ms` (default [`HEARTBEAT`]).
//! `membrane ctl inventory` publishes one request and gathers every host's
//! answer. The subjects and payloads are in `docs/control.md`.

use crate::bus::Bus;
use crate::manifest::subject::{ReplyRule, allow_reply};
use crate::runtime::Runtime;
use crate::transports::Service;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a host publishes its heartbeat, by default.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// One host's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInventory {
    /// The host's id (unique per process).
    pub host: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// The components it runs; empty in a heartbeat, which carries only
    /// their number (`component_count`).
    #[serde(default)]
    pub components: Vec<ComponentInventory>,
    /// How many components it runs: set in heartbeats, whose fan-out to
    /// every host of the lattice would otherwise carry every list to every host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_count: Option<u32>,
    /// How many live hosts it knows of in the lattice, itself included:
    /// a gatherer that has this many answers need not wait for more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lattice_hosts: Option<u32>,
    /// Its heartbeat period in milliseconds: a host that misses three is
    /// missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
}

/// One component on one host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComponentInventory {
    /// The app it belongs to.
    pub app: String,
    /// Its name in the manifest.
    pub name: String,
    /// `sha256:<hex>` of the running version.
    pub digest: String,
    /// Instances alive right now.
    pub instances: u32,
    /// Its `max_instances`.
    pub max_instances: u32,
    /// How its links are made on this host (composed, dynamic, remote,
    /// queued).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<crate::runtime::component::LinkReport>,
    /// Calls delivered to it since the host started: through its bindings,
    /// remote links and in-process links.
    #[serde(default)]
    pub calls: u64,
    /// Those calls by duration: counts per bucket of
    /// [`crate::metrics::CALL_BUCKETS`] (seconds), then `+Inf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<u64>,
    /// Failed calls by fault kind, since the host started.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub faults: BTreeMap<String, u64>,
    /// Its calls over each link it makes (and, for a composition, its
    /// members make), since the host started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<LinkTraffic>,
    /// The components composed into it (name and digest), when it is a
    /// composition: they run here, inside it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fused: Vec<(String, String)>,
}

/// The calls of one link, caller side, on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkTraffic {
    /// The caller: the component, or a member of its composition.
    pub from: String,
    /// The callee.
    pub to: String,
    /// `local` (in process), `remote` (over the lattice) or `composed`
    /// (inside a composition: calls into it, an upper bound).
    #[serde(rename = "where")]
    pub place: String,
    /// Calls made.
    pub calls: u64,
    /// Their durations, per bucket as [`ComponentInventory::latency`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<u64>,
}

/// What the metrics registry has counted, read once per inventory.
struct Counted {
    calls: BTreeMap<Vec<String>, u64>,
    latency: BTreeMap<Vec<String>, Vec<u64>>,
    faults: BTreeMap<Vec<String>, u64>,
    link_calls: BTreeMap<Vec<String>, u64>,
    link_latency: BTreeMap<Vec<String>, Vec<u64>>,
}

impl Counted {
    fn read() -> Counted {
        use crate::metrics::{CALL_BUCKETS, registry};
        let r = registry();
        let link = ["app", "from", "to", "where"];
        Counted {
            calls: r.totals("membrane_calls_total", &["app", "component"]),
            latency: r.histogram_totals("membrane_call_duration_seconds", &["app", "component"], CALL_BUCKETS),
            faults: r.totals("membrane_call_faults_total", &["app", "component", "kind"]),
            link_calls: r.totals(crate::links::LINK_CALLS, &link),
            link_latency: r.histogram_totals(crate::links::LINK_SECONDS, &link, CALL_BUCKETS),
        }
    }

    /// Fills in `c`'s calls, durations, faults and link traffic.
    fn fill(&self, c: &mut ComponentInventory) {
        let key = vec![c.app.clone(), c.name.clone()];
        c.calls = self.calls.get(&key).copied().unwrap_or(0);
        c.latency = self.latency.get(&key).cloned().unwrap_or_default();
        // In-process link calls into it reach no binding: count them here.
        for (link, n) in &self.link_calls {
            if let [app, _, to, place] = &link[..]
                && (app, to, place.as_str()) == (&c.app, &c.name, "local")
            {
                c.calls += n;
                add(&mut c.latency, self.link_latency.get(link));
            }
        }
        c.faults = self
            .faults
            .iter()
            .filter(|(k, _)| k[..2] == key[..])
            .map(|(k, n)| (k[2].clone(), *n))
            .collect();
        let callers: Vec<&str> = std::iter::once(c.name.as_str())
            .chain(c.fused.iter().map(|(name, _)| name.as_str()))
            .collect();
        c.traffic = self
            .link_calls
            .iter()
            .filter(|(k, _)| k[0] == c.app && callers.contains(&k[1].as_str()))
            .map(|(k, n)| LinkTraffic {
                from: k[1].clone(),
                to: k[2].clone(),
                place: k[3].clone(),
                calls: *n,
                latency: self.link_latency.get(k).cloned().unwrap_or_default(),
            })
            .collect();
    }
}

/// Adds `more`'s buckets to `sum`'s.
fn add(sum: &mut Vec<u64>, more: Option<&Vec<u64>>) {
    let Some(more) = more else { return };
    if sum.len() < more.len() {
        sum.resize(more.len(), 0);
    }
    for (s, m) in sum.iter_mut().zip(more) {
        *s += m;
    }
}

/// The apps running on a host, by name: what its inventory reports.
pub type AppsView = Arc<RwLock<BTreeMap<String, Arc<Runtime>>>>;

/// Answers inventory requests and publishes heartbeats for this host.
pub struct InventoryService {
    bus: Bus,
    lattice: String,
    subscriber: async_nats::Subscriber,
    host: String,
    labels: BTreeMap<String, String>,
    apps: AppsView,
    /// How many other live hosts this host knows of (the agent's membership).
    peers: Arc<AtomicUsize>,
    heartbeat: Duration,
    started: Instant,
}

impl InventoryService {
    /// Subscribes to the inventory subject of `lattice`.
    pub async fn bind(
        bus: Bus,
        lattice: &str,
        host: String,
        labels: BTreeMap<String, String>,
        apps: AppsView,
        peers: Arc<AtomicUsize>,
        heartbeat: Duration,
    ) -> anyhow::Result<InventoryService> {
        let subscriber = bus.client().subscribe(crate::subjects::inventory(lattice)).await?;
        Ok(InventoryService {
            bus,
            lattice: lattice.to_string(),
            subscriber,
            host,
            labels,
            apps,
            peers,
            heartbeat,
            started: Instant::now(),
        })
    }

    /// Subscribes again, on the bus's new connection.
    async fn resubscribe(&mut self) {
        match self
            .bus
            .client()
            .subscribe(crate::subjects::inventory(&self.lattice))
            .await
        {
            Ok(subscriber) => self.subscriber = subscriber,
            Err(e) => tracing::warn!("inventory: cannot subscribe on the new connection: {e}"),
        }
    }

    /// This host's inventory; with `counted`, each component carries its
    /// call figures, read from the metrics registry.
    fn inventory(&self, counted: Option<&Counted>) -> HostInventory {
        let apps = self.apps.read().unwrap_or_else(|e| e.into_inner());
        let mut components: Vec<ComponentInventory> = apps
            .iter()
            .flat_map(|(app, runtime)| runtime.loaded().into_iter().map(move |c| (app, c)))
            .map(|(app, c)| {
                let mut component = ComponentInventory {
                    app: app.clone(),
                    name: c.name.to_string(),
                    digest: c.digest.clone(),
                    instances: c.instances_in_use(),
                    max_instances: c.max_instances(),
                    links: c.links_made.clone(),
                    calls: 0,
                    latency: Vec::new(),
                    faults: BTreeMap::new(),
                    traffic: Vec::new(),
                    fused: c.fused.as_ref().map(|f| f.members.clone()).unwrap_or_default(),
                };
                if let Some(counted) = counted {
                    counted.fill(&mut component);
                }
                component
            })
            .collect();
        components.sort_by(|a, b| (&a.app, &a.name).cmp(&(&b.app, &b.name)));
        HostInventory {
            host: self.host.clone(),
            labels: self.labels.clone(),
            uptime_s: self.started.elapsed().as_secs(),
            components,
            component_count: None,
            lattice_hosts: match self.peers.load(Ordering::Relaxed) {
                crate::lattice::placement::UNKNOWN => None,
                peers => u32::try_from(peers + 1).ok(),
            },
            heartbeat_ms: u64::try_from(self.heartbeat.as_millis()).ok(),
        }
    }

    fn document(&self) -> bytes::Bytes {
        serde_json::to_vec(&self.inventory(Some(&Counted::read())))
            .unwrap_or_default()
            .into()
    }

    /// The heartbeat: the inventory without the component list. Every host
    /// receives every heartbeat, so its size counts once per pair of hosts.
    fn heartbeat(&self) -> bytes::Bytes {
        // No figures: a heartbeat drops the component list anyway.
        let mut brief = self.inventory(None);
        brief.component_count = u32::try_from(brief.components.len()).ok();
        brief.components.clear();
        serde_json::to_vec(&brief).unwrap_or_default().into()
    }
}

impl Service for InventoryService {
    fn describe(&self) -> String {
        format!("inventory of host {} on lattice {}", self.host, self.lattice)
    }

    fn serve(mut self: Box<Self>, shutdown: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            let mut ticker = tokio::time::interval(self.heartbeat);
            let heartbeat = crate::subjects::heartbeat(&self.lattice, &self.host);
            let mut generation = self.bus.generation();
            loop {
                tokio::select! {
                    request = self.subscriber.next() => match request {
                        Some(request) => {
                            if let Some(reply) = request.reply
                                && allow_reply(&ReplyRule::lattice(&self.lattice), &reply, &"inventory")
                                && let Err(e) = self.bus.client().publish(reply, self.document()).await
                            {
                                tracing::warn!("inventory: cannot reply: {e}");
                            }
                        }
                        // The connection died: subscribe again on the next one.
                        None => {
                            tokio::select! {
                                changed = generation.changed() => if changed.is_err() { break },
                                _ = shutdown.cancelled() => break,
                            }
                            self.resubscribe().await;
                        }
                    },
                    changed = generation.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        self.resubscribe().await;
                    }
                    _ = ticker.tick() => {
                        if let Err(e) = self.bus.client().publish(heartbeat.clone(), self.heartbeat()).await {
                            tracing::debug!("heartbeat not sent: {e}");
                        }
                    }
                    _ = shutdown.cancelled() => break,
                }
            }
            let _ = self.subscriber.unsubscribe().await;
            Ok(())
        })
    }
}

/// The shortest gathering that stops on the answerers' claims.
pub const GATHER_FLOOR: Duration = Duration::from_millis(25);

/// Whether a gathering may stop (see [`enough`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enough {
    /// It has every answer the claims promise, and the floor has passed.
    Yes,
    /// Not before this much longer, whatever the claims say.
    Floor(Duration),
    /// When no answer comes for a `settle`.
    AfterQuiet,
}

/// Whether a gathering that has `answers` answers, the largest claim
/// `known` of the lattice's size, `elapsed` since it asked and its first
/// answer after `first` may stop.
///
/// A claim is one answerer's word: a host-role client that answers first
/// claiming a lattice of one would otherwise end the gathering before any
/// real host spoke (and `ctl update` would then wait for nobody). So an
/// early stop waits at least four times as long as the first answer took,
/// and at least [`GATHER_FLOOR`], during which every real host's own,
/// larger, claim arrives; a lie can then only make the gathering wait
/// longer, never shorter.
pub fn enough(answers: usize, known: usize, elapsed: Duration, first: Option<Duration>, settle: Duration) -> Enough {
    if known == 0 || answers < known {
        return Enough::AfterQuiet;
    }
    let floor = first.map_or(settle, |f| (f * 4).max(GATHER_FLOOR).min(settle));
    if elapsed >= floor {
        Enough::Yes
    } else {
        Enough::Floor(floor - elapsed)
    }
}

/// Most answers [`gather`] takes: a lattice's hosts, with room to spare.
const MAX_ANSWERS: usize = 10_000;

/// Asks every host of `lattice` for its inventory. Hosts answer at once;
/// since nobody knows in advance how many there are, the gathering stops as
/// soon as it has as many answers as the largest `lattice_hosts` any answer
/// reports (the hosts' own membership), but never before [`enough`]'s
/// floor; or else `settle` after the last answer (or after `settle` if none
/// comes). It never takes more than ten `settle`s in all or
/// [`MAX_ANSWERS`] answers, whatever responders do.
pub async fn gather(
    client: &async_nats::Client,
    lattice: &str,
    settle: Duration,
) -> anyhow::Result<Vec<HostInventory>> {
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(crate::subjects::inventory(lattice), inbox, bytes::Bytes::new())
        .await?;
    tokio::time::timeout(settle * 10, client.flush())
        .await
        .map_err(|_| anyhow::anyhow!("nats: the inventory request was not sent in {:?}", settle * 10))??;
    let asked = tokio::time::Instant::now();
    let end = asked + settle * 10;
    let mut hosts: BTreeMap<String, HostInventory> = BTreeMap::new();
    let (mut seen, mut known, mut first) = (0, 0, None);
    while seen < MAX_ANSWERS {
        let now = tokio::time::Instant::now();
        let wait = match enough(hosts.len(), known, now - asked, first, settle) {
            Enough::Yes => break,
            Enough::AfterQuiet => settle,
            Enough::Floor(floor) => floor,
        };
        let message = match tokio::time::timeout_at(end.min(now + wait), answers.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            // The floor passed: check again.
            Err(_) if matches!(enough(hosts.len(), known, asked.elapsed(), first, settle), Enough::Yes) => break,
            Err(_) if tokio::time::Instant::now() < end && known > 0 && hosts.len() >= known => continue,
            Err(_) => break,
        };
        seen += 1;
        if message.status.is_some() {
            // NATS's "no responders" notice: no host is up, so none will answer.
            break;
        }
        match serde_json::from_slice::<HostInventory>(&message.payload) {
            Ok(inventory) => {
                let claimed = inventory.lattice_hosts.unwrap_or(0) as usize;
                known = known.max(claimed.min(MAX_ANSWERS));
                first.get_or_insert(asked.elapsed());
                hosts.insert(inventory.host.clone(), inventory);
            }
            Err(e) => tracing::warn!("ignoring a malformed inventory answer: {e}"),
        }
    }
    let mut hosts: Vec<HostInventory> = hosts.into_values().collect();
    hosts.sort_by(|a, b| a.labels.cmp(&b.labels).then(a.host.cmp(&b.host)));
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gathering_stops_early_only_after_its_floor() {
        let ms = Duration::from_millis;
        let settle = ms(500);
        let table = [
            // answers, largest claim, elapsed, first answer after: verdict
            (0, 0, ms(0), None, Enough::AfterQuiet),
            (1, 3, ms(5), Some(ms(1)), Enough::AfterQuiet),
            // A liar answers first, claiming a lattice of one: wait.
            (1, 1, ms(1), Some(ms(1)), Enough::Floor(ms(24))),
            (1, 1, ms(25), Some(ms(1)), Enough::Yes),
            (3, 3, ms(20), Some(ms(2)), Enough::Floor(ms(5))),
            (3, 3, ms(40), Some(ms(10)), Enough::Yes),
            // A slow first answer: the floor is at most one settle.
            (2, 2, ms(100), Some(ms(400)), Enough::Floor(ms(400))),
            (2, 2, ms(500), Some(ms(400)), Enough::Yes),
        ];
        for (answers, known, elapsed, first, verdict) in table {
            assert_eq!(
                enough(answers, known, elapsed, first, settle),
                verdict,
                "{answers} {known} {elapsed:?}"
            );
        }
    }
}
