//! `membrane ctl`: the operator's client of the control plane.
//!
//! Each command is a thin wrapper around one [`Operator`] change, the
//! object store (`push`), the inventory request or the event stream,
//! printing a short table. `docs/control.md` documents what each does on the
//! wire.

use super::apps::{self, AppSummary, HistoryEntry};
use super::operator::Operator;
use super::{
    ApplyReply, ApplyRequest, DeleteReply, DeleteRequest, RollbackReply, ScaleReply, ScaleRequest, UpdateReply,
    UpdateRequest,
};
use crate::lattice::artifacts::Artifacts;
use crate::lattice::desired::Desired;
use crate::lattice::events::{Event, vouched};
use crate::lattice::inventory::{HostInventory, gather};
use crate::manifest::{ArtifactsFrom, is_digest};
use crate::registry::{Reference, Registry};
use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// A connection to one lattice's control plane.
pub struct Ctl {
    client: async_nats::Client,
    lattice: String,
    operator: Operator,
    registry: Registry,
}

impl Ctl {
    /// Control of `lattice` over `client`; changes are signed with `key`.
    pub fn new(client: async_nats::Client, lattice: &str, key: Option<std::sync::Arc<nkeys::KeyPair>>) -> Ctl {
        Ctl {
            operator: Operator::new(client.clone(), lattice, key),
            client,
            lattice: lattice.to_string(),
            registry: Registry::default(),
        }
    }

    /// The same, resolving and copying `oci://` components with `registry`.
    pub fn with_registry(mut self, registry: Registry) -> Ctl {
        self.registry = registry;
        self
    }

    /// Pins `reference` to the digest its tag names now, checking that it
    /// is a Wasm component artifact; with `artifacts = "lattice"`, also
    /// copies its manifest and component into the object store.
    pub async fn pin(&self, reference: &Reference, from: ArtifactsFrom) -> anyhow::Result<Reference> {
        let (digest, manifest, _) = self.registry.resolve(reference).await?;
        let pinned = reference.pinned(&digest);
        if reference.digest.is_none() {
            eprintln!("{} is {digest}", reference.unpinned());
        }
        if from == ArtifactsFrom::Lattice {
            let pulled = self.registry.pull(&pinned, None).await?;
            let artifacts = Artifacts::new(crate::bus::Bus::new(self.client.clone()), &self.lattice);
            artifacts.push(&manifest).await?;
            eprintln!(
                "copying {} ({:.1} MiB) into the lattice...",
                pinned,
                pulled.bytes.len() as f64 / f64::from(1 << 20)
            );
            artifacts.push(&pulled.bytes).await?;
        }
        Ok(pinned)
    }

    /// Puts a component file into the artifact store; its digest.
    pub async fn push(&self, path: &Path) -> anyhow::Result<String> {
        let bytes = crate::runtime::cache::read_component(path).await?;
        let started = Instant::now();
        eprintln!(
            "pushing {} ({:.1} MiB)...",
            path.display(),
            bytes.len() as f64 / f64::from(1 << 20)
        );
        // Drawn only when stderr is a terminal.
        let bar =
            indicatif::ProgressBar::with_draw_target(Some(bytes.len() as u64), indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template("  {bar:40} {bytes}/{total_bytes} {bytes_per_sec}") {
            bar.set_style(style);
        }
        let digest = Artifacts::new(crate::bus::Bus::new(self.client.clone()), &self.lattice)
            .push_reporting(&bytes, &|sent| bar.set_position(sent))
            .await;
        bar.finish_and_clear();
        let digest = digest?;
        eprintln!("pushed in {:.0?}", started.elapsed());
        Ok(digest)
    }

    /// Pushes every local component of the manifest at `path`, pins every
    /// OCI reference to the digest its tag names now, then stores the app
    /// (with digests for sources) as desired state.
    ///
    /// A Spin manifest (or an overlay on one) is applied translated, its
    /// variables at their defaults: `SPIN_VARIABLE_*` here are not stored in
    /// the lattice, and a variable without a default is each host's secret.
    pub async fn apply(&self, path: &Path) -> anyhow::Result<ApplyReply> {
        let mut settings = crate::manifest::spin::Settings::from_env(std::env::vars(), None);
        let provided = std::mem::take(&mut settings.provided);
        let manifest = crate::transports::load(path, &settings)?;
        let (text, origin) = crate::manifest::Manifest::read_text(path, &settings)?;
        if origin != path.display().to_string() && !provided.is_empty() {
            eprintln!(
                "note: SPIN_VARIABLE_* are not applied: variables keep their defaults, and each host supplies one without a default as its secret (MEMBRANE_SECRET_<NAME>)"
            );
        }
        let mut table: toml::Table = text.parse().with_context(|| origin.clone())?;
        // Hosts use their own connection; credentials never go into the lattice.
        if table.remove("nats").is_some() {
            eprintln!("note: [nats] is not applied: the lattice's hosts use their own connection and credentials");
        }
        if strip_builds(&mut table) {
            eprintln!("note: `build` tables are not applied: they are for `membrane dev` on this machine");
        }
        // Components built from one file are pushed once.
        let mut pushed: std::collections::HashMap<&Path, String> = std::collections::HashMap::new();
        for (name, spec) in &manifest.components {
            let oci = spec.oci_source();
            let digest = match (spec.digest_source(), pushed.get(spec.source.as_path()), oci) {
                (Some(digest), _, _) => digest.to_string(),
                (None, Some(digest), _) => digest.clone(),
                (None, None, Some(reference)) => {
                    let pinned = self
                        .pin(&reference, manifest.app.artifacts)
                        .await
                        .with_context(|| format!("components.{name}.source"))?
                        .to_string();
                    pushed.insert(&spec.source, pinned.clone());
                    pinned
                }
                (None, None, None) => {
                    let digest = self.push(&spec.source).await?;
                    pushed.insert(&spec.source, digest.clone());
                    digest
                }
            };
            if let Some(c) = table
                .get_mut("components")
                .and_then(|c| c.get_mut(name))
                .and_then(|c| c.as_table_mut())
            {
                c.insert("source".into(), digest.into());
            }
        }
        let request = ApplyRequest {
            manifest: toml::to_string(&table)?,
        };
        Ok(self.operator.apply(request).await?)
    }

    /// Removes an app from the desired state.
    pub async fn delete(&self, app: &str) -> anyhow::Result<DeleteReply> {
        let request = DeleteRequest { app: app.to_string() };
        Ok(self.operator.delete(request).await?)
    }

    /// Swaps `component` to `version` (a file, pushed first, a digest, or
    /// an OCI reference, pinned first) on
    /// every host that runs it, and waits for their answers.
    pub async fn update(&self, component: &str, version: &str, app: Option<&str>) -> anyhow::Result<UpdateReply> {
        let digest = if is_digest(version) {
            version.to_string()
        } else if Reference::is_oci(version) {
            let reference = Reference::parse(version).map_err(|why| anyhow::anyhow!("{version}: {why}"))?;
            let from = self.operator.artifacts_from(component, app).await?;
            self.pin(&reference, from).await?.to_string()
        } else if version.starts_with("sha256:") {
            bail!("{version:?} is not `sha256:` and 64 lower-case hex digits");
        } else {
            self.push(Path::new(version)).await?
        };
        let request = UpdateRequest {
            component: component.to_string(),
            digest,
            app: app.map(str::to_string),
            timeout_ms: None,
        };
        Ok(self.operator.update(request).await?)
    }

    /// Sets the replica count of `component`.
    pub async fn scale(&self, component: &str, instances: u32, app: Option<&str>) -> anyhow::Result<ScaleReply> {
        let request = ScaleRequest {
            component: component.to_string(),
            instances,
            app: app.map(str::to_string),
        };
        Ok(self.operator.scale(request).await?)
    }

    /// Waits until `instances` hosts run `component` of `app`; the hosts.
    pub async fn await_replicas(
        &self,
        app: &str,
        component: &str,
        instances: u32,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let hosts: Vec<String> = gather(&self.client, &self.lattice, Duration::from_millis(150))
                .await?
                .into_iter()
                .filter(|h| h.components.iter().any(|c| c.app == app && c.name == component))
                .map(|h| h.host)
                .collect();
            if hosts.len() == instances as usize {
                return Ok(hosts);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{component} runs on {} host(s) ({}), not {instances}, after {timeout:?}",
                    hosts.len(),
                    hosts.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every applied app: revision, where its components run, last events.
    pub async fn apps(&self) -> anyhow::Result<Vec<AppSummary>> {
        let hosts = self.inventory(Duration::from_millis(250)).await?;
        apps::summaries(&self.client, &self.lattice, &self.desired(), &hosts).await
    }

    /// The revisions of `app` the lattice keeps.
    pub async fn history(&self, app: &str) -> anyhow::Result<Vec<HistoryEntry>> {
        apps::history(&self.desired(), app).await
    }

    /// Stores an earlier revision of `app` as its newest.
    pub async fn rollback(&self, app: &str, revision: Option<u64>) -> anyhow::Result<RollbackReply> {
        Ok(self.operator.rollback(app, revision).await?)
    }

    fn desired(&self) -> Desired {
        Desired::new(self.client.clone(), &self.lattice)
    }

    /// Every host's inventory.
    pub async fn inventory(&self, settle: Duration) -> anyhow::Result<Vec<HostInventory>> {
        gather(&self.client, &self.lattice, settle).await
    }

    /// Prints every event of the lattice as it happens, until interrupted:
    /// a line each, or (`json`) each event's JSON document on a line.
    pub async fn watch(&self, heartbeats: bool, json: bool) -> anyhow::Result<()> {
        let mut events = self
            .client
            .subscribe(crate::subjects::event(&self.lattice, ">"))
            .await?;
        self.client.flush().await?;
        eprintln!("watching lattice `{}` (Ctrl-C to stop)", self.lattice);
        let heartbeat = crate::subjects::heartbeat(&self.lattice, "");
        while let Some(message) = events.next().await {
            let is_heartbeat = message.subject.starts_with(&heartbeat);
            // A document naming another host than its subject's is a forgery.
            let claimed = serde_json::from_slice::<serde_json::Value>(&message.payload)
                .ok()
                .and_then(|v| v["host"].as_str().map(String::from));
            if !claimed.is_some_and(|host| vouched(&message.subject, &host)) {
                continue;
            }
            if json {
                if (!is_heartbeat || heartbeats)
                    && serde_json::from_slice::<serde_json::Value>(&message.payload).is_ok()
                {
                    println!("{}", String::from_utf8_lossy(&message.payload));
                }
                continue;
            }
            if is_heartbeat {
                if heartbeats && let Ok(host) = serde_json::from_slice::<HostInventory>(&message.payload) {
                    println!(
                        "heartbeat           {} ({} component(s))",
                        host.host,
                        host.component_count.map_or(host.components.len(), |n| n as usize)
                    );
                }
                continue;
            }
            match serde_json::from_slice::<Event>(&message.payload) {
                Ok(event) => println!("{}", describe(&event)),
                Err(e) => println!("{}: unreadable event: {e}", message.subject),
            }
        }
        Ok(())
    }
}

/// One line for an event.
pub fn describe(event: &Event) -> String {
    let mut line = format!("{:<19} {}", event.kind, event.host);
    if let (Some(app), Some(component)) = (&event.app, &event.component) {
        line += &format!(" {app}/{component}");
    } else if let Some(app) = &event.app {
        line += &format!(" {app}");
    }
    if let Some(previous) = &event.previous {
        line += &format!(" {}", crate::app::short(previous));
        line += " ->";
    }
    if let Some(digest) = &event.digest {
        line += &format!(" {}", crate::app::short(digest));
    }
    if let Some(revision) = event.revision {
        line += &format!(" rev {revision}");
    }
    if let (Some(compile), Some(swap)) = (event.compile_ms, event.swap_ms) {
        line += &format!(" (compile {compile:.1} ms, swap {swap:.1} ms)");
    }
    if !event.labels.is_empty() {
        let labels: Vec<String> = event.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line += &format!(" [{}]", labels.join(","));
    }
    if let Some(reason) = &event.reason {
        line += &format!(": {reason}");
    }
    // Every field is some host's word: nothing in it may forge a line.
    crate::runtime::output::escape(line.as_bytes())
}

/// Prints an update's outcome as a table.
pub fn print_update(reply: &UpdateReply) {
    println!(
        "{:<16} {:<10} {:>11} {:>9}  REASON",
        "HOST", "OUTCOME", "COMPILE ms", "SWAP ms"
    );
    for host in &reply.hosts {
        println!(
            "{:<16} {:<10} {:>11.1} {:>9.1}  {}",
            crate::runtime::output::escape(host.host.as_bytes()),
            host.outcome,
            host.compile_ms,
            host.swap_ms,
            crate::runtime::output::escape(host.reason.as_deref().unwrap_or("-").as_bytes())
        );
    }
    for host in &reply.silent {
        println!("{host:<16} {:<10} {:>11} {:>9}  no answer in time", "silent", "-", "-");
    }
    println!(
        "{} {}/{}: {} (running {}, revision {})",
        reply.outcome,
        reply.app,
        reply.component,
        crate::app::short(&reply.digest),
        crate::app::short(&reply.running),
        reply.revision
    );
}

/// Removes every component's `build` table from a manifest's `table`
/// (local commands and paths: `membrane dev` only); whether there was one.
pub fn strip_builds(table: &mut toml::Table) -> bool {
    let mut stripped = false;
    if let Some(components) = table.get_mut("components").and_then(|c| c.as_table_mut()) {
        for (_, component) in components.iter_mut() {
            if let Some(spec) = component.as_table_mut() {
                stripped |= spec.remove("build").is_some();
            }
        }
    }
    stripped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    #[test]
    fn build_tables_are_not_applied() {
        let text = "[app]\nname = \"a\"\n[components.x]\nsource = \"x.wasm\"\nbuild = { command = \"make\", watch = [\"src/*.c\"] }\n[components.y]\nsource = \"y.wasm\"\n";
        let mut table: toml::Table = text.parse().unwrap();
        assert!(strip_builds(&mut table));
        let applied = toml::to_string(&table).unwrap();
        assert!(!applied.contains("build") && !applied.contains("make"), "{applied}");
        assert!(Manifest::parse(&applied, "applied").is_ok());
        assert!(!strip_builds(&mut table));
    }

    #[test]
    fn an_event_cannot_forge_a_line_of_ctl_output() {
        let mut event = Event::new(crate::lattice::events::EventKind::ComponentFailed, "host-1\u{1b}[2K");
        event.reason = Some("boom\ncomponent.updated   host-2 shop/cart rev 9\r".into());
        let line = describe(&event);
        assert!(!line.contains(['\n', '\r', '\u{1b}']), "{line}");
        assert!(line.contains("\\ncomponent.updated"), "{line}");
    }
}
