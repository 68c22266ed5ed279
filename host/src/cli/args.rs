//! The arguments of `membrane up`, `dev` and `new`, and the NATS options
//! that hosts and `ctl` share: what clap parses, and the few checks of a
//! single flag's value.

use crate::lattice::inventory::HEARTBEAT;
use crate::manifest::NatsSpec;
use crate::runtime::engine::DEFAULT_MAX_INSTANCES;
use anyhow::Context as _;
use clap::{Args, Parser};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

    /// Where a Spin manifest's HTTP triggers listen, as `spin up --listen`
    /// (default: `$SPIN_HTTP_LISTEN_ADDR`, else an overlay's `listen`, else
    /// `127.0.0.1:3000`). A Membrane manifest names its own addresses.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// How to reach OCI registries: the same options for `up`, `dev`, `push`
/// and `ctl`. Credentials come from Docker's config.json or
/// `MEMBRANE_REGISTRY_AUTH` (`docs/registries.md`), never from a flag.
#[derive(Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// A registry (`HOST:PORT`) spoken to in plain HTTP instead of TLS, as
    /// Docker's `insecure-registries`; repeat for more. Loopback is no
    /// exception.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST:PORT",
        global = true,
        env = "MEMBRANE_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_parser = parse_registry
    )]
    pub insecure: Vec<String>,
}

impl RegistryArgs {
    /// The registry client these options describe.
    pub fn client(&self) -> crate::registry::Registry {
        crate::registry::Registry::new(self.insecure.iter().cloned(), crate::registry::MAX_COMPONENT_BYTES)
    }
}

/// `--insecure-registry`: a registry name as an OCI reference writes it.
fn parse_registry(s: &str) -> Result<String, String> {
    crate::registry::reference::check_registry(s)?;
    Ok(s.to_string())
}

/// Arguments of `membrane push`.
#[derive(Parser, Debug, Clone)]
pub struct PushArgs {
    /// The component (.wasm).
    pub file: PathBuf,
    /// Where to: `oci://REGISTRY/REPOSITORY:TAG`.
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Arguments of `membrane new`.
#[derive(Parser, Debug, Clone)]
pub struct NewArgs {
    /// The component's name: a crate name (lower-case letters, digits, `-`,
    /// `_`), also its WIT package's and its manifest's.
    pub name: String,

    /// What it does: `http` (a wasi:http 0.2 handler), `http-p3` (a WASI 0.3
    /// handler, through the `wasip3` crate), `rpc` (an exported
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
    /// A file holding a NATS user NKey seed (`SU...`).
    #[arg(long, global = true, env = "MEMBRANE_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// Servers each stream created from here is kept on: the lattice's KV
    /// buckets, object store, event log and queue streams (3 on a
    /// three-node cluster; docs/operations.md).
    #[arg(long, global = true, env = "MEMBRANE_NATS_REPLICAS", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_replicas: Option<u8>,
    /// The JetStream domain to use: on a leaf-node server, the hub's
    /// (`jetstream { domain: hub }` there; docs/operations.md).
    #[arg(long, global = true, env = "MEMBRANE_NATS_JETSTREAM_DOMAIN")]
    pub nats_jetstream_domain: Option<String>,
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
            (&self.nats_nkey, &mut spec.nkey),
            (&self.nats_tls_ca, &mut spec.tls_ca),
            (&self.nats_tls_cert, &mut spec.tls_cert),
            (&self.nats_tls_key, &mut spec.tls_key),
        ] {
            if flag.is_some() {
                field.clone_from(flag);
            }
        }
        spec.require_tls |= self.nats_require_tls;
        pick(&self.nats_jetstream_domain, &mut spec.jetstream_domain);
        if let Some(replicas) = self.nats_replicas {
            spec.replicas = Some(usize::from(replicas));
        }
        Ok(spec)
    }
}

/// Warns when a secret was given on the command line, where `ps` shows it.
pub(super) fn warn_secrets_on_command_line() {
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

    /// Where a Spin manifest's HTTP triggers listen, as `spin up --listen`
    /// (default: `$SPIN_HTTP_LISTEN_ADDR`, else an overlay's `listen`, else
    /// `127.0.0.1:3000`). A Membrane manifest names its own addresses.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

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

    #[command(flatten)]
    pub registry: RegistryArgs,

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

/// Parses `--host-id`.
fn parse_host_id(s: &str) -> Result<String, String> {
    if crate::lattice::events::is_host_id(s) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?}: a host id is 1 to 64 letters, digits, `-` or `_`"))
    }
}
