//! The embedded backend: one redb file per app in the host's data directory
//! (`<data-dir>/keyvalue/<app>.redb`), one table per bucket.
//!
//! Each entry holds the key's revision with its value. Revisions come from
//! one counter per bucket, so a value written, deleted and written again
//! never repeats a revision a `cas` handle saw.
//!
//! Writes go to one writer thread per file, which commits whatever writes
//! are waiting in one durable transaction (group commit): a transaction
//! costs one `fsync`, whether it holds one write or a thousand, and since
//! redb runs one write transaction at a time, `increment` and `swap` are
//! atomic without further locking. Reads run on tokio's blocking pool.
//!
//! A redb file can be open in one process only: two hosts cannot share a
//! data directory's buckets (that is what the `nats` backend is for).

use super::{Bucket, KvError, KvResult, Revision, add_counter, parse_counter};
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition, TableError, WriteTransaction};
use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use tokio::sync::oneshot;

/// The most writes one transaction takes from the queue.
const MAX_GROUP: usize = 1024;

/// The table of each bucket's last revision.
const REVISIONS: TableDefinition<&str, u64> = TableDefinition::new("membrane.revisions");

/// A bucket's table: key to (revision, value).
fn table(bucket: &str) -> TableDefinition<'_, &'static str, (u64, &'static [u8])> {
    TableDefinition::new(bucket)
}

/// One open file and its writer thread.
struct File {
    db: Arc<Database>,
    /// `None` once the file is closing.
    writes: Mutex<Option<Sender<Job>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for File {
    /// Stops the writer (it finishes what is queued) so that the file is
    /// closed, and may be opened again, once this returns.
    fn drop(&mut self) {
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The files open in this process: a file is opened once, whatever number
/// of apps' generations use it (redb refuses a second open).
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<File>>>> = LazyLock::new(Default::default);

/// Bucket `bucket` in the file at `path`, created if missing. Blocking.
pub fn open(path: &Path, bucket: &str) -> anyhow::Result<EmbeddedBucket> {
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    let file = match open.get(path).and_then(Weak::upgrade) {
        Some(file) => file,
        None => {
            let file = Arc::new(File::open(path)?);
            open.insert(path.to_path_buf(), Arc::downgrade(&file));
            file
        }
    };
    Ok(EmbeddedBucket {
        file,
        bucket: bucket.into(),
    })
}

impl File {
    fn open(path: &Path) -> anyhow::Result<File> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let db = match Database::create(path) {
            Ok(db) => Arc::new(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => anyhow::bail!(
                "{} is in use by another process: an embedded store serves one host \
                 (give each host its own --data-dir, or use backend = \"nats\" to share a bucket)",
                path.display()
            ),
            Err(e) => anyhow::bail!("cannot open {}: {e}", path.display()),
        };
        let (writes, jobs) = channel();
        let writer = db.clone();
        let name = path.display().to_string();
        let writer = std::thread::Builder::new()
            .name("membrane-kv-writer".into())
            .spawn(move || write_loop(&writer, &jobs, &name))?;
        Ok(File {
            db,
            writes: Mutex::new(Some(writes)),
            writer: Some(writer),
            path: path.to_path_buf(),
        })
    }
}

/// One bucket in an embedded file.
pub struct EmbeddedBucket {
    file: Arc<File>,
    bucket: Arc<str>,
}

/// A write waiting for the writer thread.
enum Write {
    Set(Vec<(String, Vec<u8>)>),
    Delete(Vec<String>),
    Increment(String, i64),
    Swap(String, Vec<u8>, Revision),
}

/// What a write answers.
enum Answer {
    Done,
    Count(i64),
    Swapped(bool),
}

struct Job {
    bucket: Arc<str>,
    write: Write,
    reply: oneshot::Sender<KvResult<Answer>>,
}

/// The writer thread: takes every write waiting, applies them in one
/// transaction, commits it durably, then answers each. Ends when the file
/// is closed (every sender dropped).
fn write_loop(db: &Database, jobs: &Receiver<Job>, name: &str) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut answers = Vec::with_capacity(group.len());
        let committed = db.begin_write().map_err(redb::Error::from).and_then(|txn| {
            for job in &group {
                answers.push(apply(&txn, &job.bucket, &job.write)?);
            }
            txn.commit().map_err(redb::Error::from)
        });
        match committed {
            Ok(()) => {
                for (job, answer) in group.into_iter().zip(answers) {
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                tracing::error!("keyvalue: writing {name} failed: {e}");
                for job in group {
                    let _ = job
                        .reply
                        .send(Err(KvError::new(format!("the embedded store failed to write: {e}"))));
                }
            }
        }
    }
}

/// Applies one write inside `txn`. The outer error is the store's (the
/// whole transaction fails); the inner one is this write's own (nothing of
/// it was written).
fn apply(txn: &WriteTransaction, bucket: &str, write: &Write) -> Result<KvResult<Answer>, redb::Error> {
    let mut entries = txn.open_table(table(bucket))?;
    let mut revisions = txn.open_table(REVISIONS)?;
    let mut next_revision = || -> Result<u64, redb::Error> {
        let last = revisions.get(bucket)?.map_or(0, |r| r.value());
        revisions.insert(bucket, last + 1)?;
        Ok(last + 1)
    };
    Ok(match write {
        Write::Set(pairs) => {
            for (key, value) in pairs {
                let revision = next_revision()?;
                entries.insert(key.as_str(), (revision, value.as_slice()))?;
            }
            Ok(Answer::Done)
        }
        Write::Delete(keys) => {
            for key in keys {
                entries.remove(key.as_str())?;
            }
            Ok(Answer::Done)
        }
        Write::Increment(key, delta) => {
            let current = match entries.get(key.as_str())? {
                Some(entry) => parse_counter(key, entry.value().1),
                None => Ok(0),
            };
            match current.and_then(|current| add_counter(key, current, *delta)) {
                Ok(next) => {
                    let revision = next_revision()?;
                    entries.insert(key.as_str(), (revision, next.to_string().as_bytes()))?;
                    Ok(Answer::Count(next))
                }
                Err(e) => Err(e),
            }
        }
        Write::Swap(key, value, expected) => {
            let current = entries.get(key.as_str())?.map_or(0, |entry| entry.value().0);
            if current == *expected {
                let revision = next_revision()?;
                entries.insert(key.as_str(), (revision, value.as_slice()))?;
                Ok(Answer::Swapped(true))
            } else {
                Ok(Answer::Swapped(false))
            }
        }
    })
}

impl EmbeddedBucket {
    /// Hands `write` to the writer thread and waits for its commit.
    async fn write(&self, write: Write) -> KvResult<Answer> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            bucket: self.bucket.clone(),
            write,
            reply,
        };
        let sent = match &*self.file.writes.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(writes) => writes.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(KvError::new("the embedded store's writer has stopped"));
        }
        answer
            .await
            .map_err(|_| KvError::new("the embedded store's writer has stopped"))?
    }

    /// Runs `read` on the bucket's table in a read transaction, on the
    /// blocking pool; a table not yet created reads as empty (`None`).
    async fn read_table<T: Send + 'static>(
        &self,
        read: impl FnOnce(&redb::ReadOnlyTable<&'static str, (u64, &'static [u8])>) -> Result<T, redb::Error>
        + Send
        + 'static,
    ) -> KvResult<Option<T>> {
        let (db, bucket) = (self.file.db.clone(), self.bucket.clone());
        let path = self.file.path.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<Option<T>, redb::Error> {
            let txn = db.begin_read()?;
            let table = match txn.open_table(table(&bucket)) {
                Ok(table) => table,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            read(&table).map(Some)
        })
        .await
        .map_err(|e| KvError::new(format!("an embedded store read failed: {e}")))?;
        result.map_err(|e| KvError::new(format!("cannot read {}: {e}", path.display())))
    }
}

impl Bucket for EmbeddedBucket {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn get(&self, key: String) -> BoxFuture<'_, KvResult<Option<Vec<u8>>>> {
        Box::pin(async move {
            let value = self
                .read_table(move |t| Ok(t.get(key.as_str())?.map(|e| e.value().1.to_vec())))
                .await?;
            Ok(value.flatten())
        })
    }

    fn set(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, KvResult<()>> {
        Box::pin(async move { self.write(Write::Set(vec![(key, value)])).await.map(|_| ()) })
    }

    fn delete(&self, key: String) -> BoxFuture<'_, KvResult<()>> {
        Box::pin(async move { self.write(Write::Delete(vec![key])).await.map(|_| ()) })
    }

    fn exists(&self, key: String) -> BoxFuture<'_, KvResult<bool>> {
        Box::pin(async move {
            let found = self.read_table(move |t| Ok(t.get(key.as_str())?.is_some())).await?;
            Ok(found.unwrap_or(false))
        })
    }

    fn list_keys(&self, after: Option<String>, limit: usize) -> BoxFuture<'_, KvResult<(Vec<String>, bool)>> {
        Box::pin(async move {
            let page = self
                .read_table(move |t| {
                    let start = match &after {
                        Some(after) => Bound::Excluded(after.as_str()),
                        None => Bound::Unbounded,
                    };
                    let mut keys = Vec::new();
                    for entry in t.range::<&str>((start, Bound::Unbounded))? {
                        let (key, _) = entry?;
                        if keys.len() == limit {
                            return Ok((keys, true));
                        }
                        keys.push(key.value().to_string());
                    }
                    Ok((keys, false))
                })
                .await?;
            Ok(page.unwrap_or_default())
        })
    }

    fn increment(&self, key: String, delta: i64) -> BoxFuture<'_, KvResult<i64>> {
        Box::pin(async move {
            match self.write(Write::Increment(key, delta)).await? {
                Answer::Count(n) => Ok(n),
                _ => Err(KvError::new("the embedded store answered the wrong write")),
            }
        })
    }

    fn read(&self, key: String) -> BoxFuture<'_, KvResult<(Option<Vec<u8>>, Revision)>> {
        Box::pin(async move {
            let entry = self
                .read_table(move |t| {
                    Ok(t.get(key.as_str())?.map(|e| {
                        let (revision, value) = e.value();
                        (Some(value.to_vec()), revision)
                    }))
                })
                .await?;
            Ok(entry.flatten().unwrap_or((None, 0)))
        })
    }

    fn swap(&self, key: String, value: Vec<u8>, revision: Revision) -> BoxFuture<'_, KvResult<bool>> {
        Box::pin(async move {
            match self.write(Write::Swap(key, value, revision)).await? {
                Answer::Swapped(done) => Ok(done),
                _ => Err(KvError::new("the embedded store answered the wrong write")),
            }
        })
    }

    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> BoxFuture<'_, KvResult<()>> {
        Box::pin(async move { self.write(Write::Set(pairs)).await.map(|_| ()) })
    }

    fn delete_many(&self, keys: Vec<String>) -> BoxFuture<'_, KvResult<()>> {
        Box::pin(async move { self.write(Write::Delete(keys)).await.map(|_| ()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(dir: &Path, name: &str) -> EmbeddedBucket {
        open(&dir.join("app.redb"), name).expect("open")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_round_trip_and_buckets_are_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (bucket(dir.path(), "a"), bucket(dir.path(), "b"));
        assert_eq!(a.get("k".into()).await, Ok(None));
        a.set("k".into(), b"v".to_vec()).await.unwrap();
        assert_eq!(a.get("k".into()).await, Ok(Some(b"v".to_vec())));
        assert_eq!(b.get("k".into()).await, Ok(None));
        assert!(a.exists("k".into()).await.unwrap());
        a.delete("k".into()).await.unwrap();
        a.delete("k".into()).await.unwrap();
        assert!(!a.exists("k".into()).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_increments_are_all_counted() {
        let dir = tempfile::tempdir().unwrap();
        let counts = Arc::new(bucket(dir.path(), "counts"));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let counts = counts.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        counts.increment("n".into(), 1).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(counts.get("n".into()).await, Ok(Some(b"800".to_vec())));
        counts.set("text".into(), b"forty".to_vec()).await.unwrap();
        let err = counts.increment("text".into(), 1).await.unwrap_err();
        assert!(err.0.contains("is not a counter"), "{err}");
        assert_eq!(counts.get("text".into()).await, Ok(Some(b"forty".to_vec())));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_swap_fails_once_the_key_has_changed() {
        let dir = tempfile::tempdir().unwrap();
        let b = bucket(dir.path(), "b");
        let (value, first) = b.read("k".into()).await.unwrap();
        assert_eq!((value, first), (None, 0));
        assert!(b.swap("k".into(), b"1".to_vec(), first).await.unwrap());
        assert!(!b.swap("k".into(), b"2".to_vec(), first).await.unwrap());
        let (value, now) = b.read("k".into()).await.unwrap();
        assert_eq!(value, Some(b"1".to_vec()));
        assert!(b.swap("k".into(), b"2".to_vec(), now).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_come_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        let b = bucket(dir.path(), "b");
        let pairs = (0..25).map(|i| (format!("k{i:02}"), vec![1])).collect();
        b.set_many(pairs).await.unwrap();
        let (first, more) = b.list_keys(None, 10).await.unwrap();
        assert_eq!((first.len(), more), (10, true));
        let (second, _) = b.list_keys(first.last().cloned(), 10).await.unwrap();
        assert_eq!(second[0], "k10");
        let (last, more) = b.list_keys(Some("k19".into()), 10).await.unwrap();
        assert_eq!((last.len(), more), (5, false));
        assert_eq!(
            bucket(dir.path(), "empty").list_keys(None, 10).await,
            Ok((vec![], false))
        );
    }

    #[test]
    fn data_survives_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        {
            let b = bucket(dir.path(), "b");
            rt.block_on(b.increment("n".into(), 41)).unwrap();
        }
        let b = bucket(dir.path(), "b");
        assert_eq!(rt.block_on(b.increment("n".into(), 1)), Ok(42));
    }
}
