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

mod ctl;

pub use ctl::{CtlArgs, ctl};

use crate::admin::Admin;
use crate::app::HostContext;
use crate::bus::Bus;
use crate::control::permissions::{Role, inbox_prefix};
use crate::lattice::agent::Agent;
use crate::lattice::artifacts::Artifacts;
use crate::lattice::connection;
use crate::lattice::inventory::{AppsView, HEARTBEAT, InventoryService};
use crate::lattice::keyvalue::LatticeBuckets;
use crate::lattice::placement::{self, Member};
use crate::lattice::policy::Policy;
use crate::lattice::status::StatusBoard;
use crate::lattice::trust::{Sequences, Trust};
use crate::links::remote::Lattice;
use crate::manifest::{Manifest, NatsSpec};
use crate::runtime::engine::{DEFAULT_MAX_INSTANCES, EngineOptions, HostEngine};
use crate::runtime::keyvalue::{Stores, default_data_dir};
use crate::runtime::secrets::Secrets;
use crate::runtime::{LoadOptions, cache};
use crate::transports::Service;
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
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
}

/// Arguments of `membrane dev`.
#[derive(Parser, Debug, Clone)]
pub struct DevArgs {
    /// The app manifest (TOML); components with a `build` table are built
    /// and watched.
    #[arg(default_value = "app.toml")]
    pub manifest: PathBuf,

    /// Stop a build that runs longer than this, in seconds (it fails; the
    /// previous version keeps serving).
    #[arg(long, default_value_t = crate::dev::DEFAULT_BUILD_TIMEOUT.as_secs())]
    pub build_timeout: u64,

    /// The lattice whose key-value buckets and artifacts the app uses,
    /// with `--nats`.
    #[arg(long, default_value = "default", env = "MEMBRANE_LATTICE")]
    pub lattice: String,

    /// Directory for compiled code, keyed by digest. Without it `dev`
    /// writes no compiled code to disk: every save would add a version.
    #[arg(long, env = "MEMBRANE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// A TOML file of secrets for `{ secret = "NAME" }` values (as for `up`).
    #[arg(long, env = "MEMBRANE_SECRETS")]
    pub secrets: Option<PathBuf>,

    /// NATS, for `nats` and `queue` bindings; without it (or `[nats] urls`)
    /// those bindings are not served.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Arguments of `membrane new`.
#[derive(Parser, Debug, Clone)]
pub struct NewArgs {
    /// The component's name: a crate name (lower-case letters, digits, `-`,
    /// `_`), also its WIT package's and its manifest's.
    pub name: String,

    /// What it does: `http` (a wasi:http handler), `rpc` (an exported
    /// function over http-rpc), `queue` (a JetStream worker, also over http-rpc).
    #[arg(long, value_enum, default_value = "http")]
    pub template: crate::dev::scaffold::Template,

    /// Where to create its directory (default: here).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// How to reach NATS: the same options for hosts and `ctl`.
#[derive(Args, Debug, Clone, Default)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated; overrides the manifest's `[nats] urls`.
    #[arg(long, global = true, env = "MEMBRANE_NATS")]
    pub nats: Option<String>,
    /// NATS user (with --nats-password).
    #[arg(long, global = true, env = "MEMBRANE_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password. Prefer the environment variable or --nats-password-file:
    /// a command line is visible to every user of the machine.
    #[arg(long, global = true, env = "MEMBRANE_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// A file holding the NATS password.
    #[arg(long, global = true, env = "MEMBRANE_NATS_PASSWORD_FILE")]
    pub nats_password_file: Option<PathBuf>,
    /// NATS token (prefer the environment variable or --nats-token-file).
    #[arg(long, global = true, env = "MEMBRANE_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// A file holding the NATS token.
    #[arg(long, global = true, env = "MEMBRANE_NATS_TOKEN_FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// NATS credentials file (JWT and NKey).
    #[arg(long, global = true, env = "MEMBRANE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS server.
    #[arg(long, global = true, env = "MEMBRANE_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --nats-tls-key.
    #[arg(long, global = true, env = "MEMBRANE_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, global = true, env = "MEMBRANE_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse a connection without TLS.
    #[arg(long, global = true)]
    pub nats_require_tls: bool,
}

impl NatsArgs {
    /// `base` (the manifest's `[nats]`) with every option given here on top;
    /// secrets named by file are read here.
    pub fn over(&self, base: &NatsSpec) -> anyhow::Result<NatsSpec> {
        let mut spec = base.clone();
        let secret = |path: &Path| -> anyhow::Result<String> {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        };
        if let Some(path) = &self.nats_password_file {
            spec.password = Some(secret(path)?);
        }
        if let Some(path) = &self.nats_token_file {
            spec.token = Some(secret(path)?);
        }
        let pick = |flag: &Option<String>, field: &mut Option<String>| {
            if flag.is_some() {
                field.clone_from(flag);
            }
        };
        pick(&self.nats_user, &mut spec.user);
        pick(&self.nats_password, &mut spec.password);
        pick(&self.nats_token, &mut spec.token);
        for (flag, field) in [
            (&self.nats_creds, &mut spec.creds),
            (&self.nats_tls_ca, &mut spec.tls_ca),
            (&self.nats_tls_cert, &mut spec.tls_cert),
            (&self.nats_tls_key, &mut spec.tls_key),
        ] {
            if flag.is_some() {
                field.clone_from(flag);
            }
        }
        spec.require_tls |= self.nats_require_tls;
        Ok(spec)
    }
}

/// Warns when a secret was given on the command line, where `ps` shows it.
fn warn_secrets_on_command_line() {
    for arg in std::env::args() {
        for flag in ["--nats-password", "--nats-token"] {
            if arg == flag || arg.starts_with(&format!("{flag}=")) {
                tracing::warn!(
                    "{flag} on the command line is visible to every user of this machine; use {} or {flag}-file",
                    if flag == "--nats-password" {
                        "MEMBRANE_NATS_PASSWORD"
                    } else {
                        "MEMBRANE_NATS_TOKEN"
                    }
                );
            }
        }
    }
}

/// Arguments of `membrane up`.
#[derive(Parser, Debug, Clone)]
pub struct UpArgs {
    /// The app manifest (TOML). Relative component paths resolve against its
    /// directory. Without it, the host runs the apps applied to its lattice.
    pub manifest: Option<PathBuf>,

    /// Directory for compiled code and fetched artifacts, keyed by digest.
    /// Default: `$MEMBRANE_CACHE_DIR`, else `$XDG_CACHE_HOME/membrane`, else
    /// `~/.cache/membrane`.
    #[arg(long, env = "MEMBRANE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile every component afresh and write nothing to disk.
    #[arg(long)]
    pub no_cache: bool,

    /// Directory for data that outlives the host: the embedded key-value
    /// buckets (`keyvalue/<app>.redb`). Default: `$MEMBRANE_DATA_DIR`, else
    /// `$XDG_DATA_HOME/membrane`, else `~/.local/share/membrane`. One host
    /// per directory: a second host on it fails to open the buckets.
    #[arg(long, env = "MEMBRANE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(flatten)]
    pub nats: NatsArgs,

    /// The admin endpoint (status page, `/metrics`, `/healthz`, `/readyz`):
    /// an address, or `off`. Default: a free loopback port, logged at start.
    #[arg(long, default_value = "127.0.0.1:0", env = "MEMBRANE_ADMIN", value_parser = parse_admin)]
    pub admin: AdminAddress,

    /// A DNS name the admin endpoint may be reached by (repeat for more).
    /// Requests naming any other host than an IP address or `localhost` are
    /// refused, so a web page cannot read the endpoint by DNS rebinding.
    #[arg(long = "admin-host", value_name = "NAME")]
    pub admin_hosts: Vec<String>,

    /// The lattice to join: hosts with the same NATS and lattice name run
    /// apps together.
    #[arg(long, default_value = "default", env = "MEMBRANE_LATTICE")]
    pub lattice: String,

    /// A label of this host, `key=value`; repeat for more. A component runs
    /// here when all of its `placement` labels are among these.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// This host's id in the lattice (letters, digits, `-`, `_`): fix it to
    /// give the host its own NATS user (`ctl permissions --host ID`), which
    /// may publish heartbeats and events only under this id. Default: a new
    /// random `host-xxxxxxxx` each start.
    #[arg(long = "host-id", env = "MEMBRANE_HOST_ID", value_parser = parse_host_id)]
    pub host_id: Option<String>,

    /// Heartbeat period in milliseconds; a host silent for three is gone.
    #[arg(long, default_value_t = HEARTBEAT.as_millis() as u64, env = "MEMBRANE_HEARTBEAT_MS")]
    pub heartbeat_ms: u64,

    /// Use on-demand instance allocation instead of the pooling allocator (the
    /// pool reserves much virtual memory up front; it falls back by itself
    /// when the machine refuses).
    #[arg(long)]
    pub no_pooling: bool,

    /// Component instances this host runs at once, all apps together: the
    /// pool's size. A call that would pass it is shed (503, `host-capacity`).
    #[arg(long, default_value_t = DEFAULT_MAX_INSTANCES, env = "MEMBRANE_MAX_INSTANCES")]
    pub max_instances: u32,

    /// The largest `limits.memory_mib` a component on this host may have, in
    /// MiB (the pool's slot size). Default: the largest in the manifest, or
    /// 256 for a host that follows its lattice.
    #[arg(long, env = "MEMBRANE_MAX_MEMORY_MIB")]
    pub max_memory_mib: Option<u64>,

    /// An operator public key whose signed desired state this host runs;
    /// repeat for more. Without any, the host runs whatever is stored.
    #[arg(long = "trust", env = "MEMBRANE_TRUST", value_delimiter = ',')]
    pub trust: Vec<String>,

    /// A host directory under which apps from the lattice may be given
    /// directories; repeat for more. Default: none.
    #[arg(long = "allow-dir", env = "MEMBRANE_ALLOW_DIR", value_delimiter = ',')]
    pub allow_dirs: Vec<PathBuf>,

    /// An environment variable name (or a prefix ending in `*`) apps from the
    /// lattice may be given; repeat for more. Default: none.
    #[arg(long = "allow-env", env = "MEMBRANE_ALLOW_ENV", value_delimiter = ',')]
    pub allow_env: Vec<String>,

    /// A destination apps from the lattice may list in
    /// `allowed_outbound_hosts` (same syntax: `https://*.example.com`,
    /// `db.internal:5432`); repeat for more. Default: none.
    #[arg(long = "allow-outbound", env = "MEMBRANE_ALLOW_OUTBOUND", value_delimiter = ',')]
    pub allow_outbound: Vec<String>,

    /// A network (CIDR) apps from the lattice may connect to, any port and
    /// protocol; repeat for more. Default: none.
    #[arg(long = "allow-network", env = "MEMBRANE_ALLOW_NETWORK", value_delimiter = ',')]
    pub allow_network: Vec<String>,

    /// A key-value backend (`embedded` or `nats`) on which apps from the
    /// lattice may open buckets; repeat for both. Default: none.
    #[arg(long = "allow-keyvalue", env = "MEMBRANE_ALLOW_KEYVALUE", value_delimiter = ',')]
    pub allow_keyvalue: Vec<String>,

    /// A TOML file of secrets, `NAME = "value"`, for manifests' `{ secret =
    /// "NAME" }` values (the environment's `MEMBRANE_SECRET_<NAME>` comes first).
    #[arg(long, env = "MEMBRANE_SECRETS")]
    pub secrets: Option<PathBuf>,

    /// Export the spans of every call over OTLP/HTTP (protobuf) to this
    /// collector, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended).
    /// Without it, `OTEL_EXPORTER_OTLP_ENDPOINT` if set; else nothing is exported.
    #[arg(long, env = "MEMBRANE_OTLP", value_name = "URL")]
    pub otlp: Option<String>,
}

/// Where the admin endpoint listens, if anywhere.
#[derive(Debug, Clone, Copy)]
pub struct AdminAddress(pub Option<SocketAddr>);

/// Parses `--admin ADDRESS|off`.
fn parse_admin(s: &str) -> Result<AdminAddress, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(AdminAddress(None));
    }
    s.parse()
        .map(|a| AdminAddress(Some(a)))
        .map_err(|e| format!("{s:?}: {e}; an address like 127.0.0.1:9090, or `off`"))
}

/// Parses a `--label key=value`.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
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
        Command::Ctl(_) | Command::Dev(_) | Command::New(_) | Command::Completions { .. } => None,
    };
    // `ctl` and `new` print their own short output; only problems go to the log.
    let default_filter = if matches!(cli.command, Command::Ctl(_) | Command::New(_)) {
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

/// Logs to stderr from a thread of its own: workers only queue the line
/// (components may log on every call). Under a backlog of 8192 lines, new
/// lines are dropped rather than stall the host. (The default backlog of
/// 128 000 lines is allocated up front: 4 MiB of resident memory.) The guard
/// flushes on drop.
///
/// With `export` (its collector's URL and layer), spans are also exported:
/// the log keeps its own filter, the export takes `membrane`'s spans at info
/// whatever the log's filter says. Without it no OpenTelemetry layer exists.
fn init_logging(default: &str, export: Option<(String, otlp::Layer)>) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .lossy(true)
        .finish(std::io::stderr());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match export {
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_ansi(ansi)
            .with_writer(writer)
            .init(),
        Some((url, layer)) => {
            let log = tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(ansi)
                .with_writer(writer);
            tracing_subscriber::registry()
                .with(layer)
                .with(tracing_subscriber::Layer::with_filter(log, filter))
                .init();
            crate::runtime::trace::set_exporting(true);
            tracing::info!(
                "exporting spans over OTLP/HTTP to {}",
                otlp::traces_url(&url).unwrap_or(url)
            );
        }
    }
    guard
}

/// Logs a panic inside a dependency as one line through `tracing`, with no
/// backtrace. A peer can make one happen (async-nats panics in its
/// connection task on a lone carriage return in a header, nats.rs#1612),
/// and the default hook's backtrace, with `RUST_BACKTRACE` set, takes tens
/// of milliseconds to symbolise while the dying connection's socket stays
/// open and the server keeps routing messages into it. A panic in this
/// crate's own code keeps the default hook (and its backtrace).
fn log_dependency_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| l.to_string()).unwrap_or_default();
        if !location.contains("/registry/src/") {
            return default(info);
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(
            "a task panicked in a dependency at {location}: {}",
            crate::runtime::capabilities::output::escape(message.as_bytes())
        );
    }));
}

/// A new host id, one for the life of the process.
fn new_host_id() -> String {
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
///
/// If the host's NATS connection dies for good while it serves (see
/// [`connection::keep_connected`]), the host connects afresh and binds
/// again only what subscribes on NATS; apps, instances and HTTP listeners
/// carry on.
pub async fn up(args: UpArgs, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let id = args.host_id.clone().unwrap_or_else(new_host_id);
    up_as(args, id, shutdown).await
}

/// Parses `--host-id`.
fn parse_host_id(s: &str) -> Result<String, String> {
    if crate::lattice::events::is_host_id(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: a host id is 1 to 64 letters, digits, `-` or `_`"))
    }
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
    let manifest = read_manifest(args.manifest.as_deref())?;
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

/// The manifest at `path` and its text, if there is one.
fn read_manifest(path: Option<&Path>) -> anyhow::Result<Option<(String, Manifest)>> {
    let Some(path) = path else { return Ok(None) };
    let manifest = crate::transports::load(path)?;
    Ok(Some((std::fs::read_to_string(path)?, manifest)))
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
    let manifest = crate::transports::load(&args.manifest)?;
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

/// `membrane new`: writes the component and says what to type next.
pub fn new(args: &NewArgs) -> anyhow::Result<()> {
    let dir = crate::dev::scaffold::create(&args.name, args.template, &args.dir)?;
    print!("{}", crate::dev::scaffold::next_steps(&args.name, args.template, &dir));
    Ok(())
}
