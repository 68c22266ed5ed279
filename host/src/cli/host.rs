//! `membrane up` and `membrane dev`: wiring one host (engine, NATS, admin
//! endpoint, agent, lattice services) from its arguments, then serving until
//! shutdown.

use super::args::*;
use crate::admin::Admin;
use crate::app::HostContext;
use crate::bus::Bus;
use crate::control::permissions::{Role, inbox_prefix};
use crate::lattice::agent::Agent;
use crate::lattice::artifacts::Artifacts;
use crate::lattice::connection;
use crate::lattice::inventory::{AppsView, InventoryService};
use crate::lattice::keyvalue::LatticeBuckets;
use crate::lattice::placement::{self, Member};
use crate::lattice::policy::Policy;
use crate::lattice::status::StatusBoard;
use crate::lattice::trust::{Sequences, Trust};
use crate::links::remote::Lattice;
use crate::manifest::spin::Settings as SpinSettings;
use crate::manifest::{Manifest, NatsSpec};
use crate::runtime::engine::{DEFAULT_MAX_INSTANCES, EngineOptions, HostEngine};
use crate::runtime::keyvalue::{Stores, default_data_dir};
use crate::runtime::secrets::Secrets;
use crate::runtime::{LoadOptions, cache};
use crate::transports::Service;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// `membrane up`: load, validate, bind, serve until `shutdown` resolves.
///
/// If the host's NATS connection dies for good while it serves (see
/// [`connection::keep_connected`]), the host connects afresh and binds
/// again only what subscribes on NATS; apps, instances and HTTP listeners
/// carry on.
pub async fn up(args: UpArgs, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let id = args.host_id.clone().unwrap_or_else(super::new_host_id);
    up_as(args, id, shutdown).await
}

/// [`up`] as host `id`.
pub async fn up_as(args: UpArgs, id: String, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    warn_secrets_on_command_line();
    tokio::pin!(shutdown);
    // The admin endpoint serves for the whole process.
    let admin = Admin::new(Arc::new(StatusBoard::default()), AppsView::default()).answering_to(&args.admin_hosts);
    let admin_stop = CancellationToken::new();
    let _stop_admin = admin_stop.clone().drop_guard();
    if let Some(address) = args.admin.0 {
        let (local, _task) = admin.clone().serve(address, admin_stop.clone()).await?;
        if !local.ip().is_loopback() {
            tracing::warn!("the admin endpoint on {local} is reachable from other machines and has no authentication");
        }
        tracing::info!("admin http://{local}/ (status page, /metrics, /healthz, /readyz)");
    }
    // What the host has run survives for the life of the process.
    let sequences = Sequences::default();
    serve_host(&args, &id, (&admin, &sequences), shutdown.as_mut()).await
}

/// The host's life: from loading to a shutdown.
async fn serve_host(
    args: &UpArgs,
    id: &str,
    (admin, sequences): (&Admin, &Sequences),
    shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
    let settings = SpinSettings::from_env(std::env::vars(), args.listen.as_deref());
    let manifest = read_manifest(args.manifest.as_deref(), &settings)?;
    let joined = join_nats(args, manifest.as_ref().map(|(_, m)| m), &labels).await?;
    let nats = joined.as_ref().map(|(bus, _)| bus.clone());
    let host = HostSettings::up(args).build(manifest.as_ref().map(|(_, m)| m), nats.as_ref())?;
    let me = Member {
        host: id.to_string(),
        labels,
    };
    let heartbeat = Duration::from_millis(args.heartbeat_ms.max(10));
    let view = admin.apps.clone();
    view.write().unwrap_or_else(|e| e.into_inner()).clear();
    let follows_lattice = manifest.is_none();
    let trust = Trust::new(&args.trust)?;
    let policy = Policy::new(
        &args.allow_dirs,
        &args.allow_env,
        &args.allow_outbound,
        &args.allow_network,
    )?
    .allowing_keyvalue(&args.allow_keyvalue)?;
    if follows_lattice {
        if trust.trusts_anyone() {
            tracing::warn!(
                "this host runs any app anyone who can write lattice `{}`'s desired state stores: start it with --trust <operator public key> (membrane ctl keygen)",
                args.lattice
            );
        }
        tracing::info!("apps from the lattice may have: {}", policy.describe());
    }
    let mut agent = Agent::new(me.clone(), &args.lattice, host, view.clone(), heartbeat)
        .guarded(trust, policy)
        .remembering(sequences.clone())
        .reporting(admin.board.clone());
    let app_name = manifest.as_ref().map(|(_, m)| m.app.name.clone());
    start_agent(&mut agent, manifest).await?;

    // Host-level services: inventory and heartbeats; and the watch that
    // replaces a dead connection.
    let token = CancellationToken::new();
    let mut services = match &nats {
        Some(bus) => start_services(bus, &args.lattice, &me, (view, agent.peers()), heartbeat, &token).await?,
        None => JoinSet::new(),
    };
    if let Some((bus, reconnect)) = joined {
        services.spawn(connection::keep_connected(bus, reconnect, token.clone()));
    }
    agent.silence_on_leave(token.clone());
    agent.announce().await;
    log_ready(&agent, &me.host, &args.lattice, app_name.as_deref(), started);
    // A host without a manifest follows the desired state from the start.
    agent.run(follows_lattice, heartbeat, shutdown).await;
    token.cancel();
    while let Some(done) = services.join_next().await {
        done??;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The manifest at `path` and its (Membrane manifest) text, if there is
/// one; a Spin manifest read with `settings`.
fn read_manifest(path: Option<&Path>, settings: &SpinSettings) -> anyhow::Result<Option<(String, Manifest)>> {
    let Some(path) = path else { return Ok(None) };
    let manifest = crate::transports::load(path, settings)?;
    let (text, _) = Manifest::read_text(path, settings)?;
    Ok(Some((text, manifest)))
}

/// Connects to NATS if this host needs it: for NATS media, for links that
/// cross hosts, and to join a lattice (an explicit `--nats` always joins).
/// The bus, and how to connect again.
async fn join_nats(
    args: &UpArgs,
    manifest: Option<&Manifest>,
    labels: &BTreeMap<String, String>,
) -> anyhow::Result<Option<(Bus, connection::Reconnect)>> {
    let nats_spec = args.nats.over(manifest.map_or(&NatsSpec::default(), |m| &m.nats))?;
    let needed = match manifest {
        Some(manifest) => needs_nats(manifest, labels)? || args.nats.nats.is_some(),
        None => {
            anyhow::ensure!(
                args.nats.nats.is_some() || !nats_spec.urls.is_empty(),
                "without a manifest, a host runs the apps applied to its lattice: pass --nats URL"
            );
            true
        }
    };
    if !needed {
        return Ok(None);
    }
    let name = match manifest {
        Some(m) => format!("membrane {}", m.app.name),
        None => format!("membrane host ({})", args.lattice),
    };
    let reconnect = connection::Reconnect {
        spec: nats_spec,
        urls: args.nats.nats.clone(),
        name,
        inbox: inbox_prefix(&args.lattice, Role::Host),
    };
    let client = reconnect.connect().await?;
    Ok(Some((Bus::new(client), reconnect)))
}

/// Whether the components of `manifest` placed on a host labelled `labels`
/// have a NATS medium or a link to a component elsewhere; an error when
/// none is placed there.
fn needs_nats(manifest: &Manifest, labels: &BTreeMap<String, String>) -> anyhow::Result<bool> {
    let here: BTreeSet<String> = manifest
        .components
        .iter()
        .filter(|(_, spec)| placement::matches(spec, labels))
        .map(|(name, _)| name.clone())
        .collect();
    anyhow::ensure!(
        !here.is_empty(),
        "no component of `{}` is placed on a host labelled {labels:?}",
        manifest.app.name
    );
    Ok(crate::app::needs_nats(manifest, &here))
}

/// What a host is built from, whichever command starts it: `up` (from
/// its flags) or `dev` (its defaults and the few flags it has).
struct HostSettings<'a> {
    lattice: &'a str,
    max_memory_mib: Option<u64>,
    max_instances: u32,
    pooling: bool,
    /// The compile cache's directory; `None`: no cache.
    cache_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    secrets: Option<&'a Path>,
    registry: crate::registry::Registry,
}

impl<'a> HostSettings<'a> {
    fn up(args: &'a UpArgs) -> HostSettings<'a> {
        HostSettings {
            lattice: &args.lattice,
            max_memory_mib: args.max_memory_mib,
            max_instances: args.max_instances,
            pooling: !args.no_pooling,
            cache_dir: if args.no_cache {
                None
            } else {
                args.cache_dir.clone().or_else(cache::default_cache_dir)
            },
            data_dir: args.data_dir.clone(),
            secrets: args.secrets.as_deref(),
            registry: args.registry.client(),
        }
    }

    fn dev(args: &'a DevArgs) -> HostSettings<'a> {
        HostSettings {
            lattice: &args.lattice,
            max_memory_mib: None,
            max_instances: DEFAULT_MAX_INSTANCES,
            pooling: true,
            cache_dir: args.cache_dir.clone(),
            data_dir: None,
            secrets: args.secrets.as_deref(),
            registry: args.registry.client(),
        }
    }

    /// What every app on this host shares: its one engine (sized by the
    /// settings, or by `manifest`), the code cache, and the lattice.
    fn build(&self, manifest: Option<&Manifest>, nats: Option<&Bus>) -> anyhow::Result<HostContext> {
        let largest_memory = manifest.and_then(|m| m.components.values().map(|c| c.limits.memory_mib).max());
        let engine = HostEngine::new(EngineOptions {
            max_memory_mib: self.max_memory_mib.or(largest_memory).unwrap_or(256),
            max_instances: self.max_instances,
            pooling: self.pooling,
        })
        .map_err(anyhow::Error::from)?;
        tracing::debug!(pooling = engine.pooling, "engine ready");
        let lattice = self.lattice;
        Ok(HostContext {
            engine,
            load: LoadOptions {
                cache_dir: self.cache_dir.clone(),
                artifacts: nats.map(|bus| std::sync::Arc::new(Artifacts::new(bus.clone(), lattice)) as _),
                secrets: std::sync::Arc::new(Secrets::load(self.secrets)?),
                keyvalue: Stores {
                    data_dir: self.data_dir.clone().or_else(default_data_dir),
                    remote: nats.map(|bus| Arc::new(LatticeBuckets::new(bus.clone(), lattice)) as _),
                },
                registry: Arc::new(self.registry.clone()),
            },
            nats: nats.cloned(),
            lattice: nats.map(|bus| Lattice {
                bus: bus.clone(),
                name: lattice.to_string(),
            }),
        })
    }
}

/// Learns the lattice's membership when placement needs it, then runs the
/// manifest's app, if there is one, until it serves.
async fn start_agent(agent: &mut Agent, manifest: Option<(String, Manifest)>) -> anyhow::Result<()> {
    let follows_lattice = manifest.is_none();
    if follows_lattice
        || manifest
            .as_ref()
            .is_some_and(|(_, m)| m.components.values().any(|c| c.instances.is_some()))
    {
        // Replicas are placed by membership: learn it first.
        agent.discover(Duration::from_millis(300)).await?;
    }
    if let Some((text, manifest)) = manifest {
        agent.start_static(manifest, text).await?;
    }
    Ok(())
}

/// Binds and spawns the host's services (inventory and heartbeats) until
/// `token` is cancelled.
async fn start_services(
    bus: &Bus,
    lattice: &str,
    me: &Member,
    (view, peers): (AppsView, Arc<AtomicUsize>),
    heartbeat: Duration,
    token: &CancellationToken,
) -> anyhow::Result<JoinSet<anyhow::Result<()>>> {
    let inventory = InventoryService::bind(
        bus.clone(),
        lattice,
        me.host.clone(),
        me.labels.clone(),
        view,
        peers,
        heartbeat,
    );
    let media: Vec<Box<dyn Service>> = vec![Box::new(inventory.await?)];
    let mut services = JoinSet::new();
    for medium in media {
        tracing::info!("serving {}", medium.describe());
        services.spawn(medium.serve(token.clone()));
    }
    Ok(services)
}

/// Logs that the host is ready: what the manifest's `app` runs here, or that
/// it follows the lattice.
fn log_ready(agent: &Agent, host: &str, lattice: &str, app: Option<&str>, started: Instant) {
    let (components, total, media) = agent.running();
    match app {
        None => tracing::info!(
            "host {host} ready: lattice `{lattice}`, following its applied apps, in {:.0?}",
            started.elapsed()
        ),
        Some(app_name) => tracing::info!(
            "app `{app_name}` ready: {components} of {total} component(s) here, {media} medium/media, in {:.0?}",
            started.elapsed()
        ),
    }
}

/// `membrane dev`: builds the manifest's components, serves the app on this
/// host (NATS only when one is given), and rebuilds and swaps each component
/// as its sources change, until `shutdown` resolves.
pub async fn dev(args: DevArgs, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    warn_secrets_on_command_line();
    let settings = SpinSettings::from_env(std::env::vars(), args.listen.as_deref());
    let manifest = crate::transports::load(&args.manifest, &settings)?;
    let spec = args.nats.over(&manifest.nats)?;
    let nats = if crate::dev::wants_nats(&manifest) && (args.nats.nats.is_some() || !spec.urls.is_empty()) {
        let inbox = inbox_prefix(&args.lattice, Role::Host);
        let name = format!("membrane dev {}", manifest.app.name);
        Some(Bus::new(
            connection::connect(&spec, args.nats.nats.as_deref(), &name, &inbox).await?,
        ))
    } else {
        None
    };
    let host = HostSettings::dev(&args).build(Some(&manifest), nats.as_ref())?;
    let options = crate::dev::DevOptions {
        build_timeout: Duration::from_secs(args.build_timeout.max(1)),
    };
    crate::dev::run(&args.manifest, manifest, host, options, shutdown).await
}
