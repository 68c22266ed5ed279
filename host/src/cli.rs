//! The command line: `membrane up` runs a host, `membrane ctl` steers a
//! lattice, `membrane dev` builds, serves and hot-swaps an app as its
//! sources change, `membrane new` writes a new component.
//!
//! `up` with a manifest does everything that can fail before it listens: it
//! parses and checks the manifest, compiles and validates every component
//! (types of links, shapes of bindings) and binds every socket. Only then does
//! it serve, until Ctrl-C or SIGTERM, after which in-flight requests finish.
//! `up` without a manifest joins a lattice and runs its share of the apps
//! applied there (`membrane ctl apply`), following every later change.
//! `up --otlp URL` also exports the spans of every call ([`otlp`]).

pub mod otlp;

mod args;
mod ctl;
mod host;
mod logging;

pub use args::{AdminAddress, DevArgs, NatsArgs, NewArgs, PushArgs, RegistryArgs, UpArgs};
pub use ctl::{CtlArgs, ctl};
pub use host::{dev, up, up_as};

use logging::{init_logging, log_dependency_panics};

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Membrane: run WebAssembly components, bound to any medium by a manifest.
#[derive(Parser, Debug)]
#[command(name = "membrane", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a host: the app of a manifest, or (without one) the apps applied to its lattice.
    Up(Box<UpArgs>),
    /// Steer and inspect a running lattice over NATS.
    Ctl(CtlArgs),
    /// Print a completion script for a shell, e.g.
    /// `membrane completions bash > ~/.local/share/bash-completion/completions/membrane`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Build an app's components, serve it, and rebuild and hot-swap each
    /// component when its sources change (its `build` tables).
    Dev(DevArgs),
    /// Write a new component (crate, WIT, manifest) that `membrane dev` runs.
    New(NewArgs),
    /// Publish a component to an OCI registry (the Wasm artifact layout
    /// `wkg` and `oci-wasm` use); prints its manifest digest.
    Push(PushArgs),
}

/// Entry point of the binary: parses arguments, sets up logging (and span
/// export), runs.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory as _;
        clap_complete::generate(shell, &mut Cli::command(), "membrane", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let host = match &cli.command {
        Command::Up(args) => args.host_id.clone().unwrap_or_else(new_host_id),
        _ => new_host_id(),
    };
    let export = match &cli.command {
        Command::Up(args) => match otlp::endpoint(args.otlp.as_deref()) {
            Some(url) => match otlp::start(&url, &identity(args, &host), runtime.handle().clone()) {
                Ok(export) => Some((url, export)),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::FAILURE;
                }
            },
            None => None,
        },
        Command::Ctl(_) | Command::Dev(_) | Command::New(_) | Command::Push(_) | Command::Completions { .. } => None,
    };
    // `ctl` and `new` print their own short output; only problems go to the log.
    let default_filter = if matches!(cli.command, Command::Ctl(_) | Command::New(_) | Command::Push(_)) {
        "warn"
    } else {
        "membrane=info,warn"
    };
    let (layer, export) = match export {
        Some((url, (layer, export))) => (Some((url, layer)), Some(export)),
        None => (None, None),
    };
    let logging = init_logging(default_filter, layer);
    log_dependency_panics();
    let result = match cli.command {
        Command::Up(args) => runtime.block_on(up_as(*args, host, shutdown_signal())),
        Command::Ctl(args) => runtime.block_on(ctl(args)),
        Command::Completions { .. } => Ok(()),
        Command::Dev(args) => runtime.block_on(dev(args, shutdown_signal())),
        Command::New(args) => new(&args),
        Command::Push(args) => runtime.block_on(push(&args)),
    };
    // Calls have finished: flush their spans (the runtime still runs the
    // posts), then the log, so that the last word comes last.
    if let Some(export) = export {
        export.shutdown();
    }
    drop(logging);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A new host id, one for the life of the process.
pub(super) fn new_host_id() -> String {
    format!("host-{}", &crate::runtime::context::random_hex(1)[..8])
}

/// What the spans of host `host` run with `args` say about it.
fn identity(args: &UpArgs, host: &str) -> otlp::Identity {
    otlp::Identity {
        host: host.to_string(),
        // A host joins its lattice when it has NATS, or has no manifest.
        lattice: (args.nats.nats.is_some() || args.manifest.is_none()).then(|| args.lattice.clone()),
        labels: args.labels.clone(),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
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

/// `membrane push`: publishes a component to a registry; prints the
/// manifest digest on stdout, and the pinned reference on stderr.
pub async fn push(args: &PushArgs) -> anyhow::Result<()> {
    let reference = crate::registry::Reference::parse(&args.reference)
        .map_err(|why| anyhow::anyhow!("{}: {why}", args.reference))?;
    let bytes = crate::runtime::cache::read_component(&args.file).await?;
    eprintln!(
        "pushing {} ({:.1} MiB) to {reference}...",
        args.file.display(),
        bytes.len() as f64 / f64::from(1 << 20)
    );
    let digest = args.registry.client().push(&reference, &bytes).await?;
    eprintln!("pushed {}", reference.pinned(&digest));
    println!("{digest}");
    Ok(())
}

/// `membrane new`: writes the component and says what to type next.
pub fn new(args: &NewArgs) -> anyhow::Result<()> {
    let dir = crate::dev::scaffold::create(&args.name, args.template, &args.dir)?;
    print!("{}", crate::dev::scaffold::next_steps(&args.name, args.template, &dir));
    Ok(())
}
