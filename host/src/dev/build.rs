//! Running one component's `build.command` for `membrane dev`.
//!
//! This file owns a build from start to snapshot: the command runs with
//! `sh -c` in the component's workdir, in a process group of its own so
//! that a deadline, Ctrl-C or a dropped build kills all of it (cargo and its
//! rustc children too); its output (stdout and stderr, interleaved) is kept,
//! only the last lines, for when it fails; and on success the built `.wasm`
//! is copied to a snapshot named by its digest, so the runtime never reads a
//! file that a later build is rewriting. [`Builder`] runs the builds of one
//! component one at a time: a change during a build queues exactly one more.

use crate::runtime::cache;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;

/// Lines of build output kept for a failure report.
pub const TAIL_LINES: usize = 60;
/// Longest output line kept, in bytes; the rest is cut.
const MAX_LINE: usize = 2048;

/// How to build one component.
#[derive(Debug, Clone)]
pub struct BuildJob {
    /// The component's name in the manifest.
    pub name: String,
    /// The shell command.
    pub command: String,
    /// Where it runs (absolute).
    pub workdir: PathBuf,
    /// The `.wasm` it must write: the component's `source`.
    pub source: PathBuf,
    /// After this long the build is killed and fails.
    pub timeout: Duration,
}

/// A successful build: the snapshot of its output.
#[derive(Debug, Clone)]
pub struct Built {
    /// The copy of the built component that the runtime loads.
    pub snapshot: PathBuf,
    /// Its digest (`sha256:...`).
    pub digest: String,
}

/// Why a build gave no component.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The command could not be started.
    #[error("cannot run `{command}` in {workdir}: {error}")]
    Spawn {
        /// The command.
        command: String,
        /// Its workdir.
        workdir: String,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The command failed.
    #[error("`{command}` failed ({status}):\n{output}")]
    Failed {
        /// The command.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its output.
        output: String,
    },
    /// The command ran past its deadline and was killed.
    #[error("`{command}` did not finish in {:.1} s and was stopped (membrane dev --build-timeout):\n{output}", .after.as_secs_f64())]
    TimedOut {
        /// The command.
        command: String,
        /// The deadline.
        after: Duration,
        /// The last lines of its output.
        output: String,
    },
    /// The command succeeded but the component is not where `source` says.
    #[error("components.{name}.source: {} does not exist after `{command}` succeeded{hint}", .path.display())]
    Missing {
        /// The component.
        name: String,
        /// The command.
        command: String,
        /// Where the component should be.
        path: PathBuf,
        /// A guess at why.
        hint: String,
    },
    /// The component could not be read or snapshotted.
    #[error("components.{name}.source: {}: {error}", .path.display())]
    Snapshot {
        /// The component.
        name: String,
        /// Its source.
        path: PathBuf,
        /// What went wrong.
        error: std::io::Error,
    },
}

/// Runs `job` once; on success snapshots its output into `snapshots`.
pub async fn build(job: &BuildJob, snapshots: &Path) -> Result<Built, BuildError> {
    run_command(job).await?;
    snapshot(job, snapshots).await
}

/// Copies `job`'s current source into `snapshots` under its digest.
pub async fn snapshot(job: &BuildJob, snapshots: &Path) -> Result<Built, BuildError> {
    let failed = |error| BuildError::Snapshot {
        name: job.name.clone(),
        path: job.source.clone(),
        error,
    };
    let meta = match tokio::fs::metadata(&job.source).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hint = if job.command.contains("cargo") && std::env::var_os("CARGO_TARGET_DIR").is_some() {
                " (CARGO_TARGET_DIR is set: cargo writes there, not under the workdir's target/)".to_string()
            } else {
                " (does the build write it there? check `source` and `build.command`)".to_string()
            };
            return Err(BuildError::Missing {
                name: job.name.clone(),
                command: job.command.clone(),
                path: job.source.clone(),
                hint,
            });
        }
        Err(e) => return Err(failed(e)),
    };
    if !meta.is_file() || meta.len() > cache::MAX_COMPONENT_BYTES {
        return Err(failed(std::io::Error::other(format!(
            "not a regular file of at most {} MiB",
            cache::MAX_COMPONENT_BYTES >> 20
        ))));
    }
    let bytes = tokio::fs::read(&job.source).await.map_err(failed)?;
    let digest = cache::digest(&bytes);
    let hex = digest.trim_start_matches("sha256:");
    let path = snapshots.join(format!("{}-{}.wasm", job.name, &hex[..hex.len().min(16)]));
    if !path.exists() {
        tokio::fs::write(&path, &bytes).await.map_err(failed)?;
    }
    Ok(Built { snapshot: path, digest })
}

/// Runs `job.command` to its end (or its deadline), keeping its output's tail.
async fn run_command(job: &BuildJob) -> Result<(), BuildError> {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(&job.command)
        .current_dir(&job.workdir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);
    let mut child = command.spawn().map_err(|error| BuildError::Spawn {
        command: job.command.clone(),
        workdir: job.workdir.display().to_string(),
        error,
    })?;
    // Whatever ends this build (its end, the deadline, a dropped future)
    // ends its whole process group.
    let _group = child.id().map(ProcessGroup);
    let tail = Tail::default();
    let mut readers = JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(tail.clone().collect(out));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(tail.clone().collect(err));
    }
    let status = match tokio::time::timeout(job.timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(error)) => {
            return Err(BuildError::Spawn {
                command: job.command.clone(),
                workdir: job.workdir.display().to_string(),
                error,
            });
        }
        Err(_) => {
            return Err(BuildError::TimedOut {
                command: job.command.clone(),
                after: job.timeout,
                output: tail.text(),
            });
        }
    };
    // A child the command left behind may hold the pipes open: do not wait
    // for it long (the readers are aborted when the set drops).
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed {
            command: job.command.clone(),
            status,
            output: tail.text(),
        })
    }
}

/// A build's process group, killed when this is dropped.
struct ProcessGroup(u32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Ok(pgid) = libc::pid_t::try_from(self.0) {
            // SAFETY: killpg takes plain integers and touches no memory of
            // ours. The group is the build's own (`process_group(0)` made the
            // child its leader); if it is gone already this fails harmlessly.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

/// The last [`TAIL_LINES`] lines of a build's output.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    /// Reads `stream` to its end, line by line, into the tail.
    async fn collect(self, stream: impl AsyncRead + Unpin) {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    line.truncate(MAX_LINE);
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
                    if lines.len() == TAIL_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(text);
                }
            }
        }
    }

    /// The lines kept, indented for the log.
    fn text(&self) -> String {
        let lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if lines.is_empty() {
            return "    (no output)".to_string();
        }
        lines.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
    }
}

/// What a [`Builder`] reports after each build.
pub struct Report {
    /// The component.
    pub name: String,
    /// How long the build took.
    pub elapsed: Duration,
    /// Its outcome.
    pub result: Result<Built, BuildError>,
}

/// Builds one component whenever asked, one build at a time: asking while a
/// build runs queues one more (any number of asks, one more build).
pub struct Builder {
    wake: Arc<Notify>,
    busy: Arc<AtomicBool>,
}

impl Builder {
    /// Starts the builder of `job` in `tasks`; it sends a [`Report`] to
    /// `reports` after every build and snapshots into `snapshots`.
    pub fn spawn(
        job: BuildJob,
        snapshots: PathBuf,
        reports: mpsc::UnboundedSender<Report>,
        tasks: &mut JoinSet<()>,
    ) -> Builder {
        let wake = Arc::new(Notify::new());
        let busy = Arc::new(AtomicBool::new(false));
        let (woken, running) = (wake.clone(), busy.clone());
        tasks.spawn(async move {
            loop {
                woken.notified().await;
                running.store(true, Ordering::SeqCst);
                let started = Instant::now();
                let result = build(&job, &snapshots).await;
                running.store(false, Ordering::SeqCst);
                let report = Report {
                    name: job.name.clone(),
                    elapsed: started.elapsed(),
                    result,
                };
                if reports.send(report).is_err() {
                    return;
                }
            }
        });
        Builder { wake, busy }
    }

    /// Asks for a build; whether one was running (so this one waits for it).
    pub fn request(&self) -> bool {
        let busy = self.busy.load(Ordering::SeqCst);
        self.wake.notify_one();
        busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dir: &Path, command: &str, timeout: Duration) -> BuildJob {
        BuildJob {
            name: "x".into(),
            command: command.into(),
            workdir: dir.to_path_buf(),
            source: dir.join("out.wasm"),
            timeout,
        }
    }

    #[tokio::test]
    async fn a_failed_build_keeps_the_tail_of_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let command = "for i in $(seq 1 100); do echo line $i; done; echo 'error[E0308]: mismatched types' >&2; exit 3";
        let err = build(&job(dir.path(), command, Duration::from_secs(30)), dir.path())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("error[E0308]: mismatched types"), "{text}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("line 100") && !text.contains("line 10\n"), "{text}");
    }

    #[tokio::test]
    async fn a_hanging_build_is_stopped_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let err = build(
            &job(
                dir.path(),
                "echo starting; sleep 1000 & wait",
                Duration::from_millis(300),
            ),
            dir.path(),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = err.to_string();
        assert!(
            text.contains("did not finish in 0.3 s") && text.contains("starting"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_missing_output_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = build(&job(dir.path(), "true", Duration::from_secs(30)), dir.path())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("components.x.source: "), "{text}");
        assert!(
            text.contains("out.wasm does not exist after `true` succeeded"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_build_snapshots_its_output_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = tempfile::tempdir().unwrap();
        let built = build(
            &job(dir.path(), "printf v1 > out.wasm", Duration::from_secs(30)),
            snapshots.path(),
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(&built.snapshot).unwrap(), b"v1");
        assert!(built.snapshot.starts_with(snapshots.path()));
        assert!(built.digest.starts_with("sha256:"));
    }
}
