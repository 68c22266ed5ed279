//! What `ctl apps` and `ctl history` show: each applied app with its
//! revision, where its components run against what is wanted, and its last
//! events; and the revisions of one app the lattice keeps.
//!
//! Built from the desired state (KV), one inventory round and the event log;
//! every type here serializes as the `--output json` document.

use crate::lattice::desired::{AppRevision, Desired};
use crate::lattice::events::{self, Event};
use crate::lattice::inventory::HostInventory;
use crate::lattice::placement;
use crate::lattice::trust::Seal;
use crate::manifest::Manifest;
use serde::Serialize;

/// One applied app.
#[derive(Debug, Clone, Serialize)]
pub struct AppSummary {
    /// Its name.
    pub app: String,
    /// Its newest revision.
    pub revision: u64,
    /// Who signed it: a public key, `unsigned` or `broken: ...`.
    pub signer: String,
    /// Its components.
    pub components: Vec<ComponentSummary>,
    /// Whether every component runs on as many hosts as wanted.
    pub complete: bool,
    /// Its last events (oldest first).
    pub events: Vec<Event>,
}

/// One component of an applied app.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentSummary {
    /// Its name.
    pub name: String,
    /// The version wanted (`sha256:...`).
    pub digest: String,
    /// Hosts wanted: its `instances`, or every matching host.
    pub wanted: usize,
    /// Hosts that run it, with the version each runs.
    pub running: Vec<Running>,
}

/// A host that runs a component.
#[derive(Debug, Clone, Serialize)]
pub struct Running {
    /// The host.
    pub host: String,
    /// The version it runs.
    pub digest: String,
    /// How the component's links are made there.
    pub links: Vec<crate::runtime::component::LinkReport>,
}

/// One kept revision of an app.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// The KV revision.
    pub revision: u64,
    /// When it was stored (Unix milliseconds).
    pub at_ms: u64,
    /// `applied` or `deleted`.
    pub change: &'static str,
    /// Who signed it.
    pub signer: String,
    /// Each component's source (`name` → `sha256:...`).
    pub components: Vec<(String, String)>,
}

/// How many of an app's last events `ctl apps` shows.
const EVENTS_PER_APP: usize = 3;

/// Every applied app, as the lattice runs it now.
pub async fn summaries(
    client: &async_nats::Client,
    lattice: &str,
    desired: &Desired,
    hosts: &[HostInventory],
) -> anyhow::Result<Vec<AppSummary>> {
    let log = events::recent(client, lattice, 500).await.unwrap_or_else(|e| {
        tracing::warn!("{e:#}");
        Vec::new()
    });
    let mut apps = Vec::new();
    for revision in desired.apps().await? {
        let Some(text) = &revision.manifest else { continue };
        let components = match Manifest::parse(text, &revision.app) {
            Ok(manifest) => components(&revision.app, &manifest, hosts),
            Err(_) => Vec::new(),
        };
        let mut last: Vec<Event> = log
            .iter()
            .filter(|e| e.app.as_deref() == Some(&revision.app))
            .cloned()
            .collect();
        last.drain(..last.len().saturating_sub(EVENTS_PER_APP));
        apps.push(AppSummary {
            app: revision.app.clone(),
            revision: revision.revision,
            signer: signer(&revision.seal),
            complete: components
                .iter()
                .all(|c| c.running.iter().filter(|r| r.digest == c.digest).count() >= c.wanted && c.wanted > 0),
            components,
            events: last,
        });
    }
    apps.sort_by(|a, b| a.app.cmp(&b.app));
    Ok(apps)
}

/// The components of `app` against the hosts that run them.
fn components(app: &str, manifest: &Manifest, hosts: &[HostInventory]) -> Vec<ComponentSummary> {
    manifest
        .components
        .iter()
        .map(|(name, spec)| {
            let matching = hosts.iter().filter(|h| placement::matches(spec, &h.labels)).count();
            let running = hosts
                .iter()
                .flat_map(|h| {
                    h.components
                        .iter()
                        .filter(|c| c.app == app && &c.name == name)
                        .map(|c| Running {
                            host: h.host.clone(),
                            digest: c.digest.clone(),
                            links: c.links.clone(),
                        })
                })
                .collect();
            ComponentSummary {
                name: name.clone(),
                digest: spec.source.display().to_string(),
                wanted: spec.instances.map_or(matching, |n| (n as usize).min(matching)),
                running,
            }
        })
        .collect()
}

/// The revisions of `app` the lattice keeps, oldest first.
pub async fn history(desired: &Desired, app: &str) -> anyhow::Result<Vec<HistoryEntry>> {
    let revisions = desired.history(app).await?;
    anyhow::ensure!(!revisions.is_empty(), "no app `{app}` in the lattice");
    Ok(revisions.into_iter().map(|(r, at_ms)| entry(r, at_ms)).collect())
}

fn entry(revision: AppRevision, at_ms: u64) -> HistoryEntry {
    let components = revision
        .manifest
        .as_deref()
        .and_then(|text| Manifest::parse(text, &revision.app).ok())
        .map(|m| {
            m.components
                .iter()
                .map(|(name, spec)| (name.clone(), spec.source.display().to_string()))
                .collect()
        })
        .unwrap_or_default();
    HistoryEntry {
        revision: revision.revision,
        at_ms,
        change: if revision.manifest.is_some() {
            "applied"
        } else {
            "deleted"
        },
        signer: signer(&revision.seal),
        components,
    }
}

fn signer(seal: &Seal) -> String {
    match seal {
        Seal::Signed(key) => key.clone(),
        Seal::Unsigned => "unsigned".into(),
        Seal::Broken(why) => format!("broken: {why}"),
    }
}
