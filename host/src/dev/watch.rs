//! Which components' sources changed, for `membrane dev`.
//!
//! This file owns the file-system watch: one `notify` watcher over the
//! directories that the components' `build.watch` globs can match (the
//! literal start of each glob, recursively only where the glob needs it),
//! the matching of each event's path against each component's globs
//! (relative to its workdir; anything under a `target` or `.git` directory
//! is ignored, and so are reads and opens, which every build does), and the
//! debounce: a burst of events (an editor's save, `git checkout`) becomes one
//! batch once the tree has been quiet for [`QUIET`].

use globset::{GlobSet, GlobSetBuilder};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How long the tree must be quiet before a batch of changes is reported.
pub const QUIET: Duration = Duration::from_millis(200);
/// The longest a busy tree delays a batch.
const MOST: Duration = Duration::from_secs(2);

/// The globs of one component.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The component.
    pub name: String,
    /// Its workdir (absolute, canonical).
    pub workdir: PathBuf,
    /// Its `build.watch` globs, as written.
    pub globs: Vec<String>,
}

/// One batch of changes: for each component, the changed paths relative to
/// its workdir.
pub type Batch = BTreeMap<String, BTreeSet<PathBuf>>;

/// The components' globs, compiled.
struct Matcher {
    components: Vec<(String, PathBuf, GlobSet)>,
}

impl Matcher {
    fn new(watched: &[Watched]) -> anyhow::Result<Matcher> {
        let mut components = Vec::new();
        for w in watched {
            let mut set = GlobSetBuilder::new();
            for (i, glob) in w.globs.iter().enumerate() {
                let glob = crate::manifest::check_watch_glob(glob)
                    .map_err(|why| anyhow::anyhow!("components.{}.build.watch[{i}]: {glob:?} {why}", w.name))?;
                set.add(glob);
            }
            components.push((w.name.clone(), w.workdir.clone(), set.build()?));
        }
        Ok(Matcher { components })
    }

    /// The components whose globs match `path`, with the path relative to
    /// each one's workdir.
    fn matches(&self, path: &Path) -> Vec<(String, PathBuf)> {
        self.components
            .iter()
            .filter_map(|(name, workdir, set)| {
                let relative = path.strip_prefix(workdir).ok()?;
                let ignored = relative
                    .components()
                    .any(|c| matches!(c, Component::Normal(n) if n == "target" || n == ".git"));
                (!ignored && set.is_match(relative)).then(|| (name.clone(), relative.to_path_buf()))
            })
            .collect()
    }
}

/// Whether an event of `kind` may mean a changed file. Opens, reads and
/// closes without a write are what every build does to its sources: they
/// would rebuild forever.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The directories to watch for `globs` under `workdir`, and how: the
/// literal directories each glob starts with (the nearest that exists).
fn roots(workdir: &Path, globs: &[String]) -> Vec<(PathBuf, RecursiveMode)> {
    let mut roots = Vec::new();
    for glob in globs {
        let parts: Vec<&str> = glob.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        let literal = parts
            .iter()
            .take(parts.len().saturating_sub(1))
            .take_while(|p| !p.contains(['*', '?', '[', '{', '\\']))
            .count();
        let mut dir = workdir.to_path_buf();
        dir.extend(&parts[..literal]);
        // More than a file name after the literal part: its subdirectories too.
        let mut recursive = parts.len() - literal > 1;
        while !dir.is_dir() && dir != workdir {
            dir.pop();
            recursive = true;
        }
        roots.push((
            dir,
            if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            },
        ));
    }
    // A directory watched recursively covers everything under it.
    let recursive: Vec<PathBuf> = roots
        .iter()
        .filter(|(_, mode)| *mode == RecursiveMode::Recursive)
        .map(|(dir, _)| dir.clone())
        .collect();
    let mut kept: Vec<(PathBuf, RecursiveMode)> = Vec::new();
    for (dir, mode) in roots {
        let covered = recursive
            .iter()
            .any(|r| dir.starts_with(r) && (dir != *r || mode == RecursiveMode::NonRecursive));
        if !covered && !kept.iter().any(|(d, m)| *d == dir && *m == mode) {
            kept.push((dir, mode));
        }
    }
    kept
}

/// A running watch: batches of changes arrive on [`Watch::batches`].
pub struct Watch {
    /// Batches of changes, debounced.
    pub batches: mpsc::UnboundedReceiver<Batch>,
    /// The directories watched, for the log.
    pub roots: Vec<PathBuf>,
    _watcher: notify::RecommendedWatcher,
}

impl Watch {
    /// Starts watching `watched`; the debounce runs in `tasks`.
    pub fn start(watched: &[Watched], tasks: &mut JoinSet<()>) -> anyhow::Result<Watch> {
        let matcher = Matcher::new(watched)?;
        let (events, mut raw) = mpsc::unbounded_channel::<Vec<(String, PathBuf)>>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if is_change(&event.kind) => {
                let hits: Vec<(String, PathBuf)> = event.paths.iter().flat_map(|p| matcher.matches(p)).collect();
                if !hits.is_empty() {
                    let _ = events.send(hits);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching files: {e}"),
        })?;
        let mut watched_roots = Vec::new();
        for w in watched {
            for (dir, mode) in roots(&w.workdir, &w.globs) {
                if watched_roots.contains(&dir) {
                    continue;
                }
                watcher.watch(&dir, mode).map_err(|e| {
                    anyhow::anyhow!("components.{}.build.watch: cannot watch {}: {e}", w.name, dir.display())
                })?;
                watched_roots.push(dir);
            }
        }
        let (batches, receiver) = mpsc::unbounded_channel();
        tasks.spawn(async move {
            while let Some(first) = raw.recv().await {
                let mut batch = Batch::new();
                let mut add = |hits: Vec<(String, PathBuf)>| {
                    for (name, path) in hits {
                        batch.entry(name).or_default().insert(path);
                    }
                };
                add(first);
                let most = tokio::time::Instant::now() + MOST;
                loop {
                    let quiet = (tokio::time::Instant::now() + QUIET).min(most);
                    match tokio::time::timeout_at(quiet, raw.recv()).await {
                        Ok(Some(hits)) => add(hits),
                        Ok(None) | Err(_) => break,
                    }
                }
                if batches.send(batch).is_err() {
                    return;
                }
            }
        });
        Ok(Watch {
            batches: receiver,
            roots: watched_roots,
            _watcher: watcher,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(dir: &Path, globs: &[&str]) -> Vec<Watched> {
        vec![Watched {
            name: "x".into(),
            workdir: dir.to_path_buf(),
            globs: globs.iter().map(|g| g.to_string()).collect(),
        }]
    }

    #[test]
    fn globs_match_relative_paths_and_target_is_ignored() {
        let dir = Path::new("/w");
        let m = Matcher::new(&watched(dir, &["src/**/*.rs", "Cargo.toml", "**/*.wit"])).unwrap();
        assert_eq!(m.matches(Path::new("/w/src/lib.rs")).len(), 1);
        assert_eq!(m.matches(Path::new("/w/src/a/b.rs")).len(), 1);
        assert_eq!(m.matches(Path::new("/w/Cargo.toml")).len(), 1);
        assert_eq!(m.matches(Path::new("/w/wit/deps/x.wit")).len(), 1);
        assert!(m.matches(Path::new("/w/src/lib.rs.swp")).is_empty());
        assert!(
            m.matches(Path::new("/w/sub/Cargo.toml")).is_empty(),
            "`Cargo.toml` is the workdir's only"
        );
        assert!(m.matches(Path::new("/w/target/x.wit")).is_empty());
        assert!(m.matches(Path::new("/w/a/target/x.wit")).is_empty());
        assert!(m.matches(Path::new("/elsewhere/src/lib.rs")).is_empty());
    }

    #[test]
    fn only_the_literal_start_of_each_glob_is_watched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/bin")).unwrap();
        let roots = roots(
            dir.path(),
            &["src/**/*.rs".into(), "src/bin/*.rs".into(), "Cargo.toml".into()],
        );
        assert_eq!(
            roots,
            vec![
                (dir.path().join("src"), RecursiveMode::Recursive),
                (dir.path().to_path_buf(), RecursiveMode::NonRecursive),
            ]
        );
        // A directory that does not exist yet: its nearest parent, recursively.
        let roots = super::roots(dir.path(), &["wit/*.wit".into()]);
        assert_eq!(roots, vec![(dir.path().to_path_buf(), RecursiveMode::Recursive)]);
    }

    #[tokio::test]
    async fn a_burst_of_writes_is_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("src")).unwrap();
        let mut tasks = JoinSet::new();
        let mut watch = Watch::start(&watched(&root, &["src/**/*.rs"]), &mut tasks).unwrap();
        std::fs::write(root.join("src/notes.txt"), "ignored").unwrap();
        for i in 0..5 {
            std::fs::write(root.join("src/lib.rs"), format!("// {i}")).unwrap();
        }
        std::fs::write(root.join("src/new.rs"), "").unwrap();
        let batch = tokio::time::timeout(Duration::from_secs(10), watch.batches.recv())
            .await
            .unwrap()
            .unwrap();
        let paths: Vec<PathBuf> = batch["x"].iter().cloned().collect();
        assert_eq!(paths, vec![PathBuf::from("src/lib.rs"), PathBuf::from("src/new.rs")]);
        // Reading the sources (as a build does) is not a change.
        let _ = std::fs::read(root.join("src/lib.rs")).unwrap();
        assert!(
            tokio::time::timeout(QUIET * 3, watch.batches.recv()).await.is_err(),
            "a read made a batch"
        );
    }
}
