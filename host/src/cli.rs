//! The command line: `membrane up <manifest>`.
//!
//! `up` does everything that can fail before it listens: it parses and checks
//! the manifest, compiles and validates every component (types of links,
//! shapes of bindings) and binds every socket. Only then does it serve, until
//! Ctrl-C or SIGTERM, after which in-flight requests finish.

use crate::lattice::connection;
use crate::lattice::inventory::{InventoryService, gather};
use crate::links::remote::{Lattice, RpcServer};
use crate::manifest::Manifest;
use crate::runtime::{LoadOptions, Runtime, cache};
use crate::transports;
use clap::{Parser, Subcommand};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Membrane: run WebAssembly components, bound to any medium by a manifest.
#[derive(Parser, Debug)]
#[command(name = "membrane", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the app described by a manifest on this host.
    Up(UpArgs),
    /// Steer and inspect a running lattice over NATS.
    #[command(subcommand)]
    Ctl(CtlCommand),
}

/// `membrane ctl ...`.
#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// List the hosts of a lattice: labels, components, digests, instances.
    Inventory(CtlArgs),
}

/// What every `ctl` command needs.
#[derive(Parser, Debug, Clone)]
pub struct CtlArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long, env = "MEMBRANE_NATS", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,

    /// The lattice to inspect.
    #[arg(long, default_value = "default", env = "MEMBRANE_LATTICE")]
    pub lattice: String,

    /// How long to wait for more hosts after the last answer, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub settle_ms: u64,
}

/// Arguments of `membrane up`.
#[derive(Parser, Debug, Clone)]
pub struct UpArgs {
    /// The app manifest (TOML). Relative component paths resolve against its directory.
    pub manifest: PathBuf,

    /// Directory for compiled code, keyed by component digest. Default:
    /// `$MEMBRANE_CACHE_DIR`, else `$XDG_CACHE_HOME/membrane`, else `~/.cache/membrane`.
    #[arg(long, env = "MEMBRANE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every component afresh and write nothing to disk.
    #[arg(long)]
    pub no_cache: bool,

    /// NATS server URL(s), comma-separated; overrides `[nats] urls`. A host
    /// connects to NATS only if a binding needs it.
    #[arg(long, env = "MEMBRANE_NATS")]
    pub nats: Option<String>,

    /// The lattice to join: hosts with the same NATS and lattice name run one
    /// app together. Only used when some link crosses hosts.
    #[arg(long, default_value = "default", env = "MEMBRANE_LATTICE")]
    pub lattice: String,

    /// A label of this host, `key=value`; repeat for more. A component runs
    /// here when all of its `placement` labels are among these.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Use on-demand instance allocation instead of the pooling allocator (the
    /// pool reserves much virtual memory up front; it falls back by itself
    /// when the machine refuses).
    #[arg(long)]
    pub no_pooling: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

/// Entry point of the binary: parses arguments, sets up logging, runs.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Up(args) => runtime.block_on(up(args, shutdown_signal())),
        Command::Ctl(CtlCommand::Inventory(args)) => runtime.block_on(inventory(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("membrane=info,warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `membrane up`: load, validate, bind, serve until `shutdown` resolves.
pub async fn up(args: UpArgs, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let started = Instant::now();
    let manifest = Manifest::load(&args.manifest)?;
    let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
    let here: BTreeSet<String> = manifest
        .components
        .iter()
        .filter(|(_, spec)| spec.placement.iter().all(|(k, v)| labels.get(k) == Some(v)))
        .map(|(name, _)| name.clone())
        .collect();
    anyhow::ensure!(
        !here.is_empty(),
        "no component of `{}` is placed on a host labelled {labels:?}",
        manifest.app.name
    );
    // NATS is needed by NATS media and by links that cross hosts.
    let crosses = manifest
        .links
        .iter()
        .any(|l| here.contains(&l.from) != here.contains(&l.to));
    let needs_nats = crosses
        || manifest
            .bindings
            .iter()
            .any(|b| b.needs_nats() && here.contains(b.component()));
    // An explicit --nats also joins the lattice's inventory.
    let nats = if needs_nats || args.nats.is_some() {
        let name = format!("membrane {}", manifest.app.name);
        Some(connection::connect(&manifest.nats, args.nats.as_deref(), &name).await?)
    } else {
        None
    };
    let lattice = nats.clone().filter(|_| crosses).map(|client| Lattice {
        client,
        name: args.lattice.clone(),
    });
    let options = LoadOptions {
        cache_dir: if args.no_cache {
            None
        } else {
            args.cache_dir.clone().or_else(cache::default_cache_dir)
        },
        pooling: !args.no_pooling,
        here: Some(here.clone()),
        lattice: lattice.clone(),
    };
    let runtime = Runtime::load(&manifest, &options).await?;
    let mut media = transports::bind_all(&manifest, &runtime, nats.as_ref()).await?;
    if let Some(lattice) = &lattice {
        // Serve this host's components to the links of the others.
        let exports: Vec<(String, String)> = manifest
            .links
            .iter()
            .filter(|l| here.contains(&l.to))
            .map(|l| (l.to.clone(), l.import.clone()))
            .collect();
        if !exports.is_empty() {
            media.push(Box::new(RpcServer::bind(lattice, runtime.clone(), &exports).await?));
        }
    }

    if let Some(client) = &nats {
        let id = format!("host-{}", &crate::runtime::context::random_hex(1)[..8]);
        media.push(Box::new(
            InventoryService::bind(
                client.clone(),
                &args.lattice,
                id,
                &manifest.app.name,
                labels,
                runtime.clone(),
            )
            .await?,
        ));
    }

    let token = CancellationToken::new();
    let mut serving = tokio::task::JoinSet::new();
    for medium in media {
        tracing::info!("serving {}", medium.describe());
        serving.spawn(medium.serve(token.clone()));
    }
    tracing::info!(
        "app `{}` ready: {} of {} component(s) here, {} medium/media, in {:.0?}",
        manifest.app.name,
        here.len(),
        manifest.components.len(),
        serving.len(),
        started.elapsed()
    );
    shutdown.await;
    tracing::info!("shutting down: finishing in-flight requests");
    token.cancel();
    while let Some(done) = serving.join_next().await {
        done??;
    }
    if let Some(nats) = nats {
        let _ = nats.flush().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `membrane ctl inventory`: one line per component per host.
pub async fn inventory(args: CtlArgs) -> anyhow::Result<()> {
    let client = connection::connect(&Default::default(), Some(&args.nats), "membrane ctl").await?;
    let hosts = gather(&client, &args.lattice, Duration::from_millis(args.settle_ms)).await?;
    if hosts.is_empty() {
        println!("no hosts in lattice `{}`", args.lattice);
        return Ok(());
    }
    println!(
        "{:<14} {:<20} {:<12} {:<12} {:<21} INSTANCES",
        "HOST", "LABELS", "APP", "COMPONENT", "DIGEST"
    );
    for host in &hosts {
        let labels: Vec<String> = host.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let labels = if labels.is_empty() {
            "-".to_string()
        } else {
            labels.join(",")
        };
        for c in &host.components {
            println!(
                "{:<14} {:<20} {:<12} {:<12} {:<21} {}/{}",
                host.host,
                labels,
                host.app,
                c.name,
                &c.digest[..c.digest.len().min(19)],
                c.instances,
                c.max_instances
            );
        }
    }
    println!("{} host(s)", hosts.len());
    Ok(())
}
