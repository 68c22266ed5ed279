//! `membrane dev`: the inner loop. Build, serve, watch, rebuild, hot-swap.
//!
//! This module owns the dev session of one manifest on one host. It runs
//! every component's `build.command` once, serves the app like `membrane up`
//! (every component on this host; NATS only if one is configured), then
//! watches each component's `build.watch` globs ([`watch`]). A change
//! rebuilds only the components it touches ([`build`]; one build at a time
//! per component, changes during a build coalesced into one more) and swaps
//! the new version in through [`AppRunner::reconcile`], the same in-place
//! swap a lattice host makes for `membrane ctl update`: the new version is
//! compiled and type-checked against the manifest's links and bindings
//! while the old one serves, calls in flight finish on the old one, and a
//! version that fails the check is refused with its reason. A failed build
//! prints the compiler's output and changes nothing. The process never
//! restarts, so no request fails.
//!
//! [`scaffold`] writes new components (`membrane new`). Layer: `dev` sits
//! beside `control` under `cli`, and imports `app` and below only.

pub mod build;
pub mod scaffold;
pub mod watch;

use crate::app::{AppRunner, HostContext};
use crate::manifest::Manifest;
use build::{BuildError, BuildJob, Builder, Report};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use watch::{Watch, Watched};

/// Default deadline of one build.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// How `membrane dev` runs.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// After this long a build is stopped and counts as failed.
    pub build_timeout: Duration,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            build_timeout: DEFAULT_BUILD_TIMEOUT,
        }
    }
}

/// A directory of built components' snapshots, removed when dropped.
struct Snapshots(PathBuf);

impl Snapshots {
    fn create() -> anyhow::Result<Snapshots> {
        let dir = std::env::temp_dir().join(format!(
            "membrane-dev-{}-{}",
            std::process::id(),
            crate::runtime::context::random_hex(1)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        Ok(Snapshots(dir))
    }
}

impl Drop for Snapshots {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The build jobs of `manifest` (loaded from a file: workdirs are resolved),
/// each workdir made absolute and checked.
pub fn jobs(manifest: &Manifest, options: &DevOptions) -> anyhow::Result<Vec<(BuildJob, Vec<String>)>> {
    let mut jobs = Vec::new();
    for (name, spec) in &manifest.components {
        let Some(build) = &spec.build else { continue };
        let dir = build.workdir.clone().unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let workdir = dir
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("components.{name}.build.workdir: {}: {e}", dir.display()))?;
        anyhow::ensure!(
            workdir.is_dir(),
            "components.{name}.build.workdir: {} is not a directory",
            workdir.display()
        );
        let source = std::path::absolute(&spec.source)
            .map_err(|e| anyhow::anyhow!("components.{name}.source: {}: {e}", spec.source.display()))?;
        jobs.push((
            BuildJob {
                name: name.clone(),
                command: build.command.clone(),
                workdir,
                source,
                timeout: options.build_timeout,
            },
            build.watch.clone(),
        ));
    }
    Ok(jobs)
}

/// Runs the dev session of `manifest` (loaded from `path`) on `host` until
/// `shutdown` resolves.
pub async fn run(
    path: &Path,
    manifest: Manifest,
    host: HostContext,
    options: DevOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let started = Instant::now();
    let snapshots = Snapshots::create()?;
    let jobs = jobs(&manifest, &options)?;
    if jobs.is_empty() {
        tracing::warn!(
            "{}: no component has a `build` table: serving it as it is, nothing to rebuild",
            path.display()
        );
    }
    let mut manifest = without_unreachable_media(manifest, host.nats.is_some());
    // The first builds: nothing serves until they are done (Ctrl-C stops them).
    let first = async {
        for (job, _) in &jobs {
            let snapshot = first_build(job, &snapshots.0).await?;
            set_source(&mut manifest, &job.name, snapshot);
        }
        anyhow::Ok(())
    };
    tokio::select! {
        done = first => done?,
        _ = &mut shutdown => {
            tracing::info!("stopped");
            return Ok(());
        }
    }

    let here: BTreeSet<String> = manifest.components.keys().cloned().collect();
    let mut runner = AppRunner::new(&manifest, &host);
    let done = runner.reconcile(&manifest, here.clone()).await?;
    if !done.failures.is_empty() {
        runner.stop().await;
        anyhow::bail!("{}", done.failures.join("\n"));
    }

    let mut tasks = JoinSet::new();
    let (reports, mut finished) = mpsc::unbounded_channel();
    let mut builders = BTreeMap::new();
    let mut watched = Vec::new();
    for (job, globs) in jobs {
        if globs.is_empty() {
            tracing::info!("{}: no build.watch globs: built once, never rebuilt", job.name);
            continue;
        }
        watched.push(Watched {
            name: job.name.clone(),
            workdir: job.workdir.clone(),
            globs,
        });
        let name = job.name.clone();
        builders.insert(
            name,
            Builder::spawn(job, snapshots.0.clone(), reports.clone(), &mut tasks),
        );
    }
    let mut watch = match Watch::start(&watched, &mut tasks) {
        Ok(watch) => watch,
        Err(e) => {
            runner.stop().await;
            return Err(e);
        }
    };
    tracing::debug!("watching {:?}", watch.roots);
    tracing::info!(
        "app `{}` ready: {} component(s), {} medium/media, in {:.1} s; watching {} for changes (Ctrl-C stops)",
        manifest.app.name,
        here.len(),
        runner.media(),
        started.elapsed().as_secs_f64(),
        if watched.is_empty() {
            "nothing".to_string()
        } else {
            watched.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(", ")
        }
    );

    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(batch) = watch.batches.recv() => {
                for (name, paths) in batch {
                    let Some(builder) = builders.get(&name) else { continue };
                    let what = describe_paths(&paths);
                    if builder.request() {
                        tracing::info!("{what} changed: {name} rebuilds after the build that is running");
                    } else {
                        tracing::info!("{what} changed: rebuilding {name}");
                    }
                }
            }
            Some(report) = finished.recv() => swap(&mut runner, &mut manifest, &here, report).await,
        }
    }
    tracing::info!("shutting down: stopping builds, finishing in-flight requests");
    drop(watch);
    tasks.shutdown().await;
    runner.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// The first build of `job`; when it fails but an earlier build's output
/// exists, that serves (with the failure printed), else the error.
async fn first_build(job: &BuildJob, snapshots: &Path) -> anyhow::Result<PathBuf> {
    tracing::info!("building {}: {}", job.name, job.command);
    let started = Instant::now();
    match build::build(job, snapshots).await {
        Ok(built) => {
            tracing::info!("built {} in {:.1} s", job.name, started.elapsed().as_secs_f64());
            Ok(built.snapshot)
        }
        Err(error @ (BuildError::Failed { .. } | BuildError::TimedOut { .. })) if job.source.is_file() => {
            let previous = build::snapshot(job, snapshots).await?;
            tracing::error!(
                "build of {} failed in {:.1} s; serving its previous build, {}, until a change builds:\n{error}",
                job.name,
                started.elapsed().as_secs_f64(),
                job.source.display()
            );
            Ok(previous.snapshot)
        }
        Err(error) => Err(anyhow::anyhow!("build of {} failed: {error}", job.name)),
    }
}

/// Takes in one finished rebuild: swaps the new version in, or says why not.
async fn swap(runner: &mut AppRunner, manifest: &mut Manifest, here: &BTreeSet<String>, report: Report) {
    let Report { name, elapsed, result } = report;
    let built = match result {
        Ok(built) => built,
        Err(error) => {
            tracing::error!(
                "build of {name} failed in {:.1} s; the previous version keeps serving:\n{error}",
                elapsed.as_secs_f64()
            );
            return;
        }
    };
    let Some(previous) = manifest.components.get(&name).map(|c| c.source.clone()) else {
        return;
    };
    set_source(manifest, &name, built.snapshot);
    let swapping = Instant::now();
    let outcome = runner.reconcile(manifest, here.clone()).await;
    // Only the versions that run stay compiled in memory.
    runner.runtime().forget_unused_versions();
    match outcome {
        Ok(done) if done.changes.is_empty() => {
            tracing::info!(
                "rebuilt {name} in {:.1} s: unchanged ({})",
                elapsed.as_secs_f64(),
                crate::app::short(&built.digest)
            );
        }
        Ok(done) => {
            tracing::info!(
                "rebuilt {name} in {:.1} s, swapped in {} ms",
                elapsed.as_secs_f64(),
                swapping.elapsed().as_millis()
            );
            for failure in done.failures {
                tracing::error!("{failure}");
            }
        }
        Err(error) => {
            set_source(manifest, &name, previous);
            let reason = error.problems.join("\n  - ");
            tracing::error!(
                "rebuilt {name} in {:.1} s, but the new version is refused; the previous version keeps serving:\n  - {reason}",
                elapsed.as_secs_f64()
            );
        }
    }
}

/// Points component `name` of `manifest` at `source`.
fn set_source(manifest: &mut Manifest, name: &str, source: PathBuf) {
    if let Some(spec) = manifest.components.get_mut(name) {
        spec.source = source;
    }
}

/// `manifest` without the bindings whose medium needs NATS, when there is
/// no NATS (each one dropped is logged), so a dev session needs no broker.
pub fn without_unreachable_media(mut manifest: Manifest, nats: bool) -> Manifest {
    if nats {
        return manifest;
    }
    let mut kept = Vec::new();
    for (i, binding) in std::mem::take(&mut manifest.bindings).into_iter().enumerate() {
        if crate::transports::needs_nats(&binding) {
            tracing::warn!(
                "bindings[{i}] ({} of `{}`) is not served: it needs NATS (membrane dev --nats URL, or [nats] urls)",
                binding.medium,
                binding.component()
            );
        } else {
            kept.push(binding);
        }
    }
    manifest.bindings = kept;
    manifest
}

/// `src/lib.rs`, or `src/lib.rs and 2 more`.
fn describe_paths(paths: &BTreeSet<PathBuf>) -> String {
    let mut iter = paths.iter();
    match (iter.next(), paths.len()) {
        (Some(first), 1) => first.display().to_string(),
        (Some(first), n) => format!("{} and {} more", first.display(), n - 1),
        (None, _) => "a watched file".to_string(),
    }
}

/// Whether the manifest needs NATS once in `membrane dev`: some binding's
/// medium does, or a `nats` key-value bucket (links are all in process:
/// every component runs here).
pub fn wants_nats(manifest: &Manifest) -> bool {
    let all: BTreeSet<String> = manifest.components.keys().cloned().collect();
    crate::app::needs_nats(manifest, &all)
}
