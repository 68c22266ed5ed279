//! `membrane ctl`: the operator's commands. Each prints a short table, or
//! with `--output json` one JSON document (`watch`: one per line) for
//! scripts. A component is named `app/component` wherever ctl prints one,
//! and accepted that way wherever it takes one.

use super::args::warn_secrets_on_command_line;
use super::{NatsArgs, shutdown_signal};
use crate::control::UpdateOutcome;
use crate::control::apps::{AppSummary, HistoryEntry};
use crate::control::ctl::{Ctl, print_update};
use crate::control::permissions::{self, Role, inbox_prefix};
use crate::lattice::connection;
use crate::lattice::inventory::HostInventory;
use crate::lattice::trust;
use crate::manifest::NatsSpec;
use crate::runtime::output::escape;
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How ctl prints its results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Short tables for people.
    Text,
    /// One JSON document per command (per event for `watch`).
    Json,
}

/// `membrane ctl ...`.
#[derive(Parser, Debug)]
pub struct CtlArgs {
    #[command(flatten)]
    nats: NatsArgs,

    #[command(flatten)]
    registry: super::RegistryArgs,

    /// The lattice to steer.
    #[arg(long, global = true, default_value = "default", env = "MEMBRANE_LATTICE")]
    lattice: String,

    /// The operator key (an nkeys seed file, `membrane ctl keygen`) that
    /// signs every change; without it changes are unsigned, and hosts
    /// started with --trust ignore them.
    #[arg(long, global = true, env = "MEMBRANE_OPERATOR_KEY")]
    key: Option<PathBuf>,

    /// How to print results: `text` tables or `json` documents.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "text")]
    output: Output,

    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// List the hosts of a lattice: labels, components, digests, instances.
    #[command(alias = "hosts")]
    Inventory {
        /// How long to wait for more hosts after the last answer, in milliseconds.
        #[arg(long, default_value_t = 500)]
        settle_ms: u64,
    },
    /// Put a component into the lattice's artifact store; prints its digest.
    Push {
        /// The component (.wasm).
        file: PathBuf,
    },
    /// Store an app as the lattice's desired state (pushing its components);
    /// every host runs its share.
    Apply {
        /// The manifest.
        manifest: PathBuf,
    },
    /// Remove an app: every host stops its share.
    Delete {
        /// The app's name.
        app: String,
    },
    /// List the applied apps: revision, where each component runs against
    /// what is wanted, and the last events.
    Apps,
    /// List the revisions of an app the lattice keeps.
    History {
        /// The app's name.
        app: String,
    },
    /// Store an earlier revision of an app as its newest (default: the one
    /// before the current).
    Rollback {
        /// The app's name.
        app: String,
        /// The revision to go back to (`ctl history APP` lists them).
        revision: Option<u64>,
    },
    /// Swap a component to another version on every host that runs it.
    Update {
        /// The component: `app/component`, or its name alone when only one
        /// app has it.
        component: String,
        /// The new version: a .wasm file (pushed first), `sha256:<hex>`, or
        /// `oci://...` (its tag resolved to a digest here).
        version: String,
        /// The app, when several have a component of that name.
        #[arg(long)]
        app: Option<String>,
    },
    /// Run a component on this many of its matching hosts.
    Scale {
        /// The component: `app/component`, or its name alone.
        component: String,
        /// Replicas wanted.
        instances: u32,
        /// The app, when several have a component of that name.
        #[arg(long)]
        app: Option<String>,
        /// Return once the change is stored, without waiting for the hosts.
        #[arg(long)]
        no_wait: bool,
    },
    /// Print the lattice's events as they happen.
    Watch {
        /// Also print every heartbeat.
        #[arg(long)]
        heartbeats: bool,
    },
    /// Serve a read-only web page of the whole lattice (hosts, placement,
    /// links and their traffic, events, health), updated live. Needs only
    /// the viewer role.
    Console {
        /// Where to serve it. Only loopback unless --listen-any.
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: std::net::SocketAddr,
        /// Allow a --listen address other than loopback. The page has no
        /// login: anyone who reaches it sees the lattice.
        #[arg(long)]
        listen_any: bool,
    },
    /// Make a new operator key: writes its seed to FILE (mode 0600), prints
    /// its public key for the hosts' --trust.
    Keygen {
        /// Where to write the seed; must not exist.
        file: PathBuf,
    },
    /// Print the nats-server authorization block of the lattice's roles
    /// (host, operator, caller, viewer), with the binding subjects of the
    /// manifests.
    Permissions {
        /// The apps' manifests.
        manifests: Vec<PathBuf>,
        /// Also a NATS user of its own for the host started with
        /// `--host-id ID`, which may publish heartbeats and events only
        /// under that id (repeat for each host). Its password is read from
        /// `MEMBRANE_HOST_<ID>_PASSWORD`.
        #[arg(long = "host", value_name = "ID")]
        hosts: Vec<String>,
    },
}

/// `membrane ctl ...`.
pub async fn ctl(args: CtlArgs) -> anyhow::Result<()> {
    warn_secrets_on_command_line();
    let output = args.output;
    // The commands that need no lattice.
    match &args.command {
        CtlCommand::Keygen { file } => return keygen(file, output),
        CtlCommand::Permissions { manifests, hosts } => {
            return permissions_config(&args.lattice, manifests, hosts, output);
        }
        CtlCommand::Console { listen, listen_any } => return console(&args, *listen, *listen_any).await,
        _ => {}
    }
    let (client, ctl) = connect(&args).await?;
    match args.command {
        CtlCommand::Keygen { .. } | CtlCommand::Permissions { .. } | CtlCommand::Console { .. } => {}
        CtlCommand::Inventory { settle_ms } => {
            let hosts = ctl.inventory(Duration::from_millis(settle_ms)).await?;
            print(output, &hosts, || print_inventory(&args.lattice, &hosts))?;
        }
        CtlCommand::Push { file } => {
            let digest = ctl.push(&file).await?;
            print(output, &serde_json::json!({ "digest": digest }), || {
                println!("{digest}")
            })?;
        }
        CtlCommand::Apply { manifest } => {
            let reply = ctl.apply(&manifest).await?;
            print(output, &reply, || {
                println!("applied app `{}` (revision {})", reply.app, reply.revision)
            })?;
        }
        CtlCommand::Delete { app } => {
            let reply = ctl.delete(&app).await?;
            print(output, &reply, || println!("deleted app `{}`", reply.app))?;
        }
        CtlCommand::Apps => {
            let apps = ctl.apps().await?;
            print(output, &apps, || print_apps(&args.lattice, &apps))?;
        }
        CtlCommand::History { app } => {
            let history = ctl.history(&app).await?;
            print(output, &history, || print_history(&history))?;
        }
        CtlCommand::Rollback { app, revision } => {
            let reply = ctl.rollback(&app, revision).await?;
            print(output, &reply, || {
                println!(
                    "rolled `{}` back to revision {}'s manifest (now revision {})",
                    reply.app, reply.from, reply.revision
                )
            })?;
        }
        CtlCommand::Update {
            component,
            version,
            app,
        } => ctl_update(&ctl, &component, &version, app.as_deref(), output).await?,
        CtlCommand::Scale {
            component,
            instances,
            app,
            no_wait,
        } => ctl_scale(&ctl, &component, instances, app.as_deref(), no_wait, output).await?,
        CtlCommand::Watch { heartbeats } => {
            tokio::select! {
                done = ctl.watch(heartbeats, output == Output::Json) => done?,
                _ = shutdown_signal() => {}
            }
        }
    }
    let _ = client.flush().await;
    Ok(())
}

/// `ctl keygen`: writes a new operator seed to `file`, prints its public key.
fn keygen(file: &Path, output: Output) -> anyhow::Result<()> {
    let key = trust::new_key(file)?;
    eprintln!("wrote the operator seed to {} (keep it secret)", file.display());
    let public = key.public_key();
    #[derive(Serialize)]
    struct Keygen {
        public_key: String,
        seed_file: PathBuf,
    }
    let document = Keygen {
        public_key: public.clone(),
        seed_file: file.to_path_buf(),
    };
    print(output, &document, || println!("{public}"))
}

/// `ctl console`: serves the lattice's page on `listen` (loopback unless
/// `any`) as a viewer, until interrupted.
async fn console(args: &CtlArgs, listen: std::net::SocketAddr, any: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        any || listen.ip().is_loopback(),
        "--listen {listen}: not a loopback address; the page has no login, so pass --listen-any to serve it there"
    );
    let spec = args.nats.over(&NatsSpec::default())?;
    let url = args.nats.nats.clone().unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let inbox = inbox_prefix(&args.lattice, Role::Viewer);
    let client = connection::connect(&spec, Some(&url), "membrane ctl console", &inbox).await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    let lattice = args.lattice.clone();
    crate::console::run(client, &args.lattice, (listen, any), shutdown, move |bound| {
        eprintln!("console of lattice `{lattice}` at http://{bound}/ (Ctrl-C to stop)");
    })
    .await
}

/// `ctl permissions`: the nats-server configuration of `lattice`'s roles,
/// for the apps of `manifests` and the host ids `hosts`.
fn permissions_config(lattice: &str, manifests: &[PathBuf], hosts: &[String], output: Output) -> anyhow::Result<()> {
    let apps = manifests
        .iter()
        .map(|path| crate::transports::load(path, &crate::manifest::spin::Settings::default()))
        .collect::<Result<Vec<_>, _>>()?;
    for host in hosts {
        anyhow::ensure!(
            crate::lattice::events::is_host_id(host),
            "--host {host:?}: a host id is 1 to 64 letters, digits, `-` or `_`"
        );
        anyhow::ensure!(
            !permissions::Role::ALL.iter().any(|r| r.as_str() == host),
            "--host {host:?}: the name of a role; pick another id"
        );
    }
    let config = permissions::render(lattice, &apps, hosts);
    #[derive(Serialize)]
    struct Config<'a> {
        lattice: &'a str,
        nats_server_config: &'a str,
    }
    let document = Config {
        lattice,
        nats_server_config: &config,
    };
    print(output, &document, || print!("{config}"))
}

/// Connects to the lattice as its operator, with the signing key if one is
/// given (a change without one is warned about: trusting hosts ignore it).
async fn connect(args: &CtlArgs) -> anyhow::Result<(async_nats::Client, Ctl)> {
    let key = match &args.key {
        Some(path) => Some(std::sync::Arc::new(trust::read_key(path)?)),
        None => None,
    };
    let changes = matches!(
        &args.command,
        CtlCommand::Apply { .. }
            | CtlCommand::Delete { .. }
            | CtlCommand::Update { .. }
            | CtlCommand::Scale { .. }
            | CtlCommand::Rollback { .. }
    );
    if changes && key.is_none() {
        eprintln!("warning: no operator key (--key): this change is unsigned; hosts started with --trust ignore it");
    }
    let spec = args.nats.over(&NatsSpec::default())?;
    let url = args.nats.nats.clone().unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let inbox = inbox_prefix(&args.lattice, Role::Operator);
    let client = connection::connect(&spec, Some(&url), "membrane ctl", &inbox).await?;
    let ctl = Ctl::new(client.clone(), &args.lattice, key).with_registry(args.registry.client());
    Ok((client, ctl))
}

/// Prints `document` as JSON, or runs `text`.
fn print<T: Serialize>(output: Output, document: &T, text: impl FnOnce()) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(document)?),
        Output::Text => text(),
    }
    Ok(())
}

/// `membrane ctl update`: prints each host's outcome; an error unless every
/// host swapped.
async fn ctl_update(
    ctl: &Ctl,
    component: &str,
    version: &str,
    app: Option<&str>,
    output: Output,
) -> anyhow::Result<()> {
    let reply = ctl.update(component, version, app).await?;
    print(output, &reply, || print_update(&reply))?;
    let rejected = reply.outcome == UpdateOutcome::Rejected;
    anyhow::ensure!(
        !rejected && reply.silent.is_empty(),
        "update of `{}/{}` {}",
        reply.app,
        reply.component,
        if rejected { "rejected" } else { "incomplete" }
    );
    Ok(())
}

/// `membrane ctl scale`: sets the replicas and, unless `no_wait`, waits until
/// they run.
async fn ctl_scale(
    ctl: &Ctl,
    component: &str,
    instances: u32,
    app: Option<&str>,
    no_wait: bool,
    output: Output,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let reply = ctl.scale(component, instances, app).await?;
    let hosts = if no_wait {
        Vec::new()
    } else {
        ctl.await_replicas(&reply.app, &reply.component, instances, Duration::from_secs(30))
            .await?
    };
    #[derive(Serialize)]
    struct Scaled<'a> {
        #[serde(flatten)]
        reply: &'a crate::control::ScaleReply,
        /// The hosts that run it (empty with --no-wait).
        hosts: &'a [String],
    }
    print(
        output,
        &Scaled {
            reply: &reply,
            hosts: &hosts,
        },
        || {
            if no_wait {
                println!(
                    "{}/{}: {} replica(s) wanted (revision {})",
                    reply.app, reply.component, instances, reply.revision
                );
            } else {
                println!(
                    "{}/{}: {instances} replica(s) on {} in {:.0?} (revision {})",
                    reply.app,
                    reply.component,
                    hosts.join(", "),
                    started.elapsed(),
                    reply.revision
                );
            }
        },
    )
}

/// Prints the inventory of `lattice` as a table.
fn print_inventory(lattice: &str, hosts: &[HostInventory]) {
    if hosts.is_empty() {
        println!("no hosts in lattice `{lattice}`");
        return;
    }
    println!(
        "{:<14} {:<20} {:<24} {:<21} INSTANCES",
        "HOST", "LABELS", "COMPONENT", "DIGEST"
    );
    for host in hosts {
        let labels: Vec<String> = host.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let labels = if labels.is_empty() {
            "-".to_string()
        } else {
            labels.join(",")
        };
        // A host's answer is its own word: text that could forge a line of
        // this table (a newline, an escape sequence) is shown escaped.
        let (name, labels) = (escape(host.host.as_bytes()), escape(labels.as_bytes()));
        if host.components.is_empty() {
            println!("{name:<14} {labels:<20} {:<24} {:<21} -", "-", "-");
        }
        for c in &host.components {
            println!(
                "{name:<14} {labels:<20} {:<24} {:<21} {}/{}",
                escape(format!("{}/{}", c.app, c.name).as_bytes()),
                escape(crate::app::short(&c.digest).as_bytes()),
                c.instances,
                c.max_instances
            );
        }
    }
    println!("{} host(s)", hosts.len());
}

/// Prints the applied apps: one block each.
fn print_apps(lattice: &str, apps: &[AppSummary]) {
    if apps.is_empty() {
        println!("no apps applied to lattice `{lattice}`");
        return;
    }
    for app in apps {
        let status = if app.complete { "running" } else { "incomplete" };
        let signer = if app.signer.len() > 12 {
            &app.signer[..12]
        } else {
            &app.signer
        };
        println!("{}  revision {}  {status}  signed by {signer}", app.app, app.revision);
        for c in &app.components {
            let current = c.running.iter().filter(|r| r.digest == c.digest).count();
            let hosts: Vec<&str> = c.running.iter().map(|r| r.host.as_str()).collect();
            println!(
                "  {:<24} {:<21} {current}/{} on {}",
                format!("{}/{}", app.app, c.name),
                crate::app::short(&c.digest),
                c.wanted,
                if hosts.is_empty() {
                    "-".to_string()
                } else {
                    hosts.join(", ")
                }
            );
            for r in &c.running {
                for link in &r.links {
                    let why = link.why.as_ref().map(|w| format!(" ({w})")).unwrap_or_default();
                    let line = format!("    -> {} {} on {}{why}", link.to, link.made, r.host);
                    println!("{}", escape(line.as_bytes()));
                }
            }
        }
        for event in &app.events {
            println!("  last: {}", crate::control::ctl::describe(event));
        }
    }
}

/// Prints an app's kept revisions, oldest first.
fn print_history(history: &[HistoryEntry]) {
    println!(
        "{:<9} {:<24} {:<8} {:<13} COMPONENTS",
        "REVISION", "STORED (UTC)", "CHANGE", "SIGNER"
    );
    for entry in history {
        let components: Vec<String> = entry
            .components
            .iter()
            .map(|(name, source)| format!("{name}={}", crate::app::short(source)))
            .collect();
        let signer = if entry.signer.len() > 12 {
            &entry.signer[..12]
        } else {
            &entry.signer
        };
        println!(
            "{:<9} {:<24} {:<8} {:<13} {}",
            entry.revision,
            utc(entry.at_ms),
            entry.change,
            signer,
            components.join(" ")
        );
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix milliseconds.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_796_117_765_587), "2026-12-01 09:36:05");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}
