//! The command line: `membrane up <manifest>`.
//!
//! `up` does everything that can fail before it listens: it parses and checks
//! the manifest, compiles and validates every component (types of links,
//! shapes of bindings) and binds every socket. Only then does it serve, until
//! Ctrl-C or SIGTERM, after which in-flight requests finish.

use crate::lattice::connection;
use crate::manifest::Manifest;
use crate::runtime::{LoadOptions, Runtime, cache};
use crate::transports;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
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

    /// Use on-demand instance allocation instead of the pooling allocator (the
    /// pool reserves much virtual memory up front; it falls back by itself
    /// when the machine refuses).
    #[arg(long)]
    pub no_pooling: bool,
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
    let options = LoadOptions {
        cache_dir: if args.no_cache {
            None
        } else {
            args.cache_dir.clone().or_else(cache::default_cache_dir)
        },
        pooling: !args.no_pooling,
    };
    let runtime = Runtime::load(&manifest, &options).await?;
    let nats = if manifest.bindings.iter().any(|b| b.needs_nats()) {
        let name = format!("membrane {}", manifest.app.name);
        Some(connection::connect(&manifest.nats, args.nats.as_deref(), &name).await?)
    } else {
        None
    };
    let media = transports::bind_all(&manifest, &runtime, nats.as_ref()).await?;

    let token = CancellationToken::new();
    let mut serving = tokio::task::JoinSet::new();
    for medium in media {
        tracing::info!("serving {}", medium.describe());
        serving.spawn(medium.serve(token.clone()));
    }
    tracing::info!(
        "app `{}` ready: {} component(s), {} binding(s), in {:.0?}",
        manifest.app.name,
        manifest.components.len(),
        manifest.bindings.len(),
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
