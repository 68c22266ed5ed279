//! The operator's changes to a lattice: apply, delete, update, scale.
//!
//! They run in the operator's own process (`membrane ctl`), under the
//! operator's NATS credentials: only the operator role may write the desired
//! state ([`crate::lattice::desired`]), and what it writes is signed with the
//! operator's key ([`crate::lattice::trust`]). Hosts never write it; they
//! watch it and reconcile ([`crate::lattice::agent`]).
//!
//! Each change checks its input, writes the desired state with
//! compare-and-set, and an update waits for the affected hosts' events, so
//! the operator learns what happened everywhere. If any host refused the new
//! version, the update restores the previous desired state: the old version
//! never stopped serving.

use super::{
    ApplyReply, ApplyRequest, ControlError, DeleteReply, DeleteRequest, HostOutcome, HostOutcomeKind, RollbackReply,
    ScaleReply, ScaleRequest, UpdateOutcome, UpdateReply, UpdateRequest,
};
use crate::lattice::artifacts::Artifacts;
use crate::lattice::desired::{AppRevision, Desired};
use crate::lattice::events::{Event, EventKind, ensure_log, vouched};
use crate::lattice::inventory::gather;
use crate::manifest::{ArtifactsFrom, ComponentSpec, Manifest, is_digest};
use crate::registry::Reference;
use futures::StreamExt as _;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long an update waits for the hosts' answers unless told otherwise.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an update waits for more inventory answers.
const INVENTORY_SETTLE: Duration = Duration::from_millis(250);

/// Makes changes to one lattice's desired state.
pub struct Operator {
    client: async_nats::Client,
    lattice: String,
    desired: Desired,
    artifacts: Artifacts,
}

impl Operator {
    /// The operator of `lattice` over `client`, signing with `key` (none:
    /// unsigned entries, which only hosts without `--trust` run).
    pub fn new(client: async_nats::Client, lattice: &str, key: Option<Arc<nkeys::KeyPair>>) -> Operator {
        Operator {
            desired: Desired::new(client.clone(), lattice).signed_by(key),
            artifacts: Artifacts::new(crate::bus::Bus::new(client.clone()), lattice),
            client,
            lattice: lattice.to_string(),
        }
    }

    /// Stores `request.manifest` as the desired state of its app.
    pub async fn apply(&self, request: ApplyRequest) -> Result<ApplyReply, ControlError> {
        let manifest = crate::transports::parse(&request.manifest, "manifest")
            .map_err(|e| ControlError::field("manifest", e.to_string()))?;
        for (name, spec) in &manifest.components {
            self.require_source(&manifest, spec, &format!("manifest: components.{name}.source"))
                .await?;
        }
        let revision = self.desired.put(&manifest.app.name, &request.manifest).await?;
        // The event log `ctl apps` reads; the app runs without it.
        if let Err(e) = ensure_log(&self.client, &self.lattice).await {
            tracing::warn!("{e:#}");
        }
        Ok(ApplyReply {
            app: manifest.app.name,
            revision,
        })
    }

    /// Deletes an app: every host stops its share.
    pub async fn delete(&self, request: DeleteRequest) -> Result<DeleteReply, ControlError> {
        if self.desired.delete(&request.app).await? {
            Ok(DeleteReply { app: request.app })
        } else {
            let known: Vec<String> = self.desired.apps().await?.into_iter().map(|a| a.app).collect();
            Err(ControlError::field(
                "app",
                format!("unknown app `{}` (applied: {})", request.app, list(&known)),
            ))
        }
    }

    /// Checks that `spec`'s source pins bytes the hosts can get: a digest in
    /// the object store, or a pinned OCI reference (with its manifest in
    /// the object store when the app has `artifacts = "lattice"`).
    async fn require_source(&self, manifest: &Manifest, spec: &ComponentSpec, field: &str) -> Result<(), ControlError> {
        let source = spec.source.display();
        if let Some(digest) = spec.digest_source() {
            return self.require_artifact(digest, field).await;
        }
        let Some(reference) = spec.oci_source() else {
            return Err(ControlError::field(
                field,
                format!(
                    "{source} is a path; an applied app names artifacts (`sha256:...` or `oci://...@sha256:...`); `membrane ctl apply` pushes local files for you"
                ),
            ));
        };
        let Some(digest) = &reference.digest else {
            return Err(ControlError::field(
                field,
                format!(
                    "{source} names a tag, which can move; an applied app pins a digest (`membrane ctl apply` resolves tags for you)"
                ),
            ));
        };
        if manifest.app.artifacts == ArtifactsFrom::Lattice {
            self.require_artifact(digest, field).await?;
        }
        Ok(())
    }

    async fn require_artifact(&self, digest: &str, field: &str) -> Result<(), ControlError> {
        let exists = self
            .artifacts
            .exists(digest)
            .await
            .map_err(|e| ControlError::new(format!("{e:#}")))?;
        if exists {
            Ok(())
        } else {
            Err(ControlError::field(
                field,
                format!("no artifact {digest} in the lattice (push it first: `membrane ctl push FILE`)"),
            ))
        }
    }

    /// Rolls `app` back to the manifest of an earlier `revision` (default:
    /// the one before the newest), stored as a new revision signed by this
    /// operator. Its artifacts must still be in the lattice.
    pub async fn rollback(&self, app: &str, revision: Option<u64>) -> Result<RollbackReply, ControlError> {
        let history = self.desired.history(app).await?;
        let Some((current, _)) = history.last() else {
            return Err(ControlError::field("app", format!("no app `{app}` in the lattice")));
        };
        let kept: Vec<u64> = history.iter().map(|(r, _)| r.revision).collect();
        let target = match revision {
            Some(wanted) => history.iter().find(|(r, _)| r.revision == wanted),
            None => history
                .iter()
                .rev()
                .skip(1)
                .find(|(r, _)| r.manifest.is_some() && r.manifest != current.manifest),
        };
        let Some((target, _)) = target else {
            return Err(ControlError::field(
                "revision",
                format!(
                    "{} is not among the revisions of `{app}` the lattice keeps ({})",
                    revision.map_or("an earlier revision".into(), |r| r.to_string()),
                    list(&kept.iter().map(u64::to_string).collect::<Vec<_>>())
                ),
            ));
        };
        let Some(text) = &target.manifest else {
            return Err(ControlError::field(
                "revision",
                format!("revision {} of `{app}` is its deletion", target.revision),
            ));
        };
        let manifest =
            crate::transports::parse(text, "revision").map_err(|e| ControlError::field("revision", e.to_string()))?;
        for (name, spec) in &manifest.components {
            let field = format!("revision {}: components.{name}.source", target.revision);
            self.require_source(&manifest, spec, &field).await?;
        }
        let stored = match current.manifest {
            Some(_) => self.desired.replace(app, text, current.revision).await?,
            None => self.desired.put(app, text).await?,
        };
        Ok(RollbackReply {
            app: app.to_string(),
            from: target.revision,
            revision: stored,
        })
    }

    /// The applied app that has `component`, and its manifest.
    /// Where the hosts get the OCI components of the app that has `component`.
    pub async fn artifacts_from(&self, component: &str, app: Option<&str>) -> Result<ArtifactsFrom, ControlError> {
        let (app, component) = qualified(app.map(str::to_string), component)?;
        Ok(self.find(&component, app.as_deref()).await?.1.app.artifacts)
    }

    async fn find(&self, component: &str, app: Option<&str>) -> Result<(AppRevision, Manifest), ControlError> {
        let mut found = Vec::new();
        let mut known = Vec::new();
        for revision in self.desired.apps().await? {
            let Some(text) = &revision.manifest else { continue };
            let Ok(manifest) = crate::transports::parse(text, &revision.app) else {
                continue;
            };
            known.extend(manifest.components.keys().map(|c| format!("{}/{c}", revision.app)));
            if manifest.components.contains_key(component) && app.is_none_or(|a| a == revision.app) {
                found.push((revision, manifest));
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(ControlError::field(
                "component",
                format!(
                    "unknown component `{component}`{}: no applied app has it (applied: {})",
                    app.map(|a| format!(" in app `{a}`")).unwrap_or_default(),
                    list(&known)
                ),
            )),
            _ => Err(ControlError::field(
                "app",
                format!(
                    "component `{component}` is in apps {}: name one with `app`",
                    found.iter().map(|(r, _)| r.app.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// Swaps a component to another version on every host that runs it; goes
    /// back if any host refused it.
    pub async fn update(&self, mut request: UpdateRequest) -> Result<UpdateReply, ControlError> {
        (request.app, request.component) = qualified(request.app, &request.component)?;
        let pinned_oci = Reference::parse(&request.digest).is_ok_and(|r| r.digest.is_some());
        if !is_digest(&request.digest) && !pinned_oci {
            return Err(ControlError::field(
                "digest",
                format!(
                    "{:?} is neither `sha256:` and 64 lower-case hex digits nor a pinned `oci://...@sha256:...`",
                    request.digest
                ),
            ));
        }
        let (current, manifest) = self.find(&request.component, request.app.as_deref()).await?;
        let app = current.app.clone();
        let previous = manifest.components[&request.component].source.display().to_string();
        let mut reply = UpdateReply {
            app: app.clone(),
            component: request.component.clone(),
            running: previous.clone(),
            digest: request.digest.clone(),
            revision: current.revision,
            outcome: UpdateOutcome::Unchanged,
            hosts: Vec::new(),
            silent: Vec::new(),
        };
        if previous == request.digest {
            return Ok(reply);
        }
        let mut wanted = manifest.components[&request.component].clone();
        wanted.source = request.digest.clone().into();
        self.require_source(&manifest, &wanted, "digest").await?;
        let old_text = current.manifest.clone().unwrap_or_default();
        let new_text = edit_component(&old_text, &request.component, "source", request.digest.clone().into())?;

        // The hosts running the component now must each answer.
        let expected = self.hosts_running(&app, &request.component).await?;
        let mut events = self
            .client
            .subscribe(crate::subjects::event(&self.lattice, ">"))
            .await
            .map_err(|e| ControlError::new(format!("cannot watch events: {e}")))?;
        let revision = self.desired.replace(&app, &new_text, current.revision).await?;
        reply.revision = revision;

        let timeout = request.timeout_ms.map_or(UPDATE_TIMEOUT, Duration::from_millis);
        (reply.hosts, reply.silent) =
            await_outcomes(&mut events, expected, (&app, &request.component), revision, timeout).await;
        if reply.hosts.iter().any(|h| !h.outcome.serves_new_version()) {
            // Some host refused it: go back, unless someone changed the app since.
            reply.outcome = UpdateOutcome::Rejected;
            match self.desired.replace(&app, &old_text, revision).await {
                Ok(restored) => reply.revision = restored,
                Err(e) => tracing::warn!(
                    "update of {}: cannot restore the previous version: {e:#}",
                    request.component
                ),
            }
        } else {
            reply.outcome = UpdateOutcome::Updated;
            reply.running = request.digest.clone();
        }
        Ok(reply)
    }

    /// The hosts that run `component` of `app` now, by their inventory.
    async fn hosts_running(&self, app: &str, component: &str) -> Result<BTreeSet<String>, ControlError> {
        let hosts = gather(&self.client, &self.lattice, INVENTORY_SETTLE).await?;
        Ok(hosts
            .iter()
            .filter(|h| h.components.iter().any(|c| c.app == app && c.name == component))
            .map(|h| h.host.clone())
            .collect())
    }

    /// Sets the replicas of a component.
    pub async fn scale(&self, mut request: ScaleRequest) -> Result<ScaleReply, ControlError> {
        (request.app, request.component) = qualified(request.app, &request.component)?;
        if request.instances == 0 {
            return Err(ControlError::field("instances", "must be at least 1"));
        }
        let (current, _) = self.find(&request.component, request.app.as_deref()).await?;
        let text = current.manifest.clone().unwrap_or_default();
        let new_text = edit_component(
            &text,
            &request.component,
            "instances",
            i64::from(request.instances).into(),
        )?;
        let revision = self.desired.replace(&current.app, &new_text, current.revision).await?;
        Ok(ScaleReply {
            app: current.app,
            component: request.component,
            instances: request.instances,
            revision,
        })
    }
}

/// How long an update that no host was known to run listens for answers.
const LISTEN_ANYWAY: Duration = Duration::from_secs(2);

/// Collects from `events` the answers to `revision` of `component` (of
/// `app`) until every `expected` host answered or `timeout` passed: the
/// answers, by host, and the hosts that stayed silent. A host that rejects
/// the whole revision (`app.rejected`) answers too.
async fn await_outcomes(
    events: &mut async_nats::Subscriber,
    mut expected: BTreeSet<String>,
    (app, component): (&str, &str),
    revision: u64,
    timeout: Duration,
) -> (Vec<HostOutcome>, Vec<String>) {
    // No host ran it by the inventory: still hear, for a moment, any host
    // that answers (an inventory answer can lie about who runs what).
    let listen_anyway = expected.is_empty();
    let deadline = tokio::time::Instant::now()
        + if listen_anyway {
            timeout.min(LISTEN_ANYWAY)
        } else {
            timeout
        };
    let mut hosts = Vec::new();
    while listen_anyway || !expected.is_empty() {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, events.next()).await else {
            break;
        };
        // An unreadable event, or one of a kind this host does not know, is
        // no answer.
        let Ok(event) = serde_json::from_slice::<Event>(&message.payload) else {
            continue;
        };
        if !vouched(&message.subject, &event.host) {
            continue;
        }
        let about = match event.component.as_deref() {
            Some(name) => name == component,
            None => event.kind == EventKind::AppRejected,
        };
        if event.revision != Some(revision) || event.app.as_deref() != Some(app) || !about {
            continue;
        }
        let Some(outcome) = HostOutcomeKind::of(event.kind) else {
            continue;
        };
        expected.remove(&event.host);
        hosts.push(HostOutcome {
            host: event.host,
            outcome,
            reason: event.reason,
            compile_ms: event.compile_ms.unwrap_or_default(),
            swap_ms: event.swap_ms.unwrap_or_default(),
        });
    }
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    (hosts, expected.into_iter().collect())
}

/// `items`, comma-separated, or `none`.
fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// `manifest` with `components.<component>.<key>` set to `value`.
pub fn edit_component(manifest: &str, component: &str, key: &str, value: toml::Value) -> Result<String, ControlError> {
    let mut table: toml::Table = manifest
        .parse()
        .map_err(|e| ControlError::new(format!("the stored manifest does not parse: {e}")))?;
    let spec = table
        .get_mut("components")
        .and_then(|c| c.get_mut(component))
        .and_then(|c| c.as_table_mut())
        .ok_or_else(|| ControlError::field("component", format!("no component `{component}` in the manifest")))?;
    spec.insert(key.to_string(), value);
    toml::to_string(&table).map_err(|e| ControlError::new(format!("cannot write the manifest: {e}")))
}

/// `component` as the CLI prints it, `app/component`, or a bare name (with
/// `app` given apart or not); the app and the component. An `app/` prefix
/// that contradicts `app` is an error.
pub fn qualified(app: Option<String>, component: &str) -> Result<(Option<String>, String), ControlError> {
    match component.split_once('/') {
        None => Ok((app, component.to_string())),
        Some((prefix, name)) if app.as_deref().is_none_or(|a| a == prefix) && !name.is_empty() => {
            Ok((Some(prefix.to_string()), name.to_string()))
        }
        Some((prefix, _)) => Err(ControlError::field(
            "component",
            format!(
                "`{component}` names app `{prefix}`, but app {} was given",
                app.map_or("none".into(), |a| format!("`{a}`"))
            ),
        )),
    }
}
