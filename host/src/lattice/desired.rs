//! Desired state: the applied apps of a lattice, in a JetStream KV bucket.
//!
//! Bucket `membrane-<lattice>-apps` holds one key per app, `app.<name>`,
//! whose value is a sealed document ([`super::trust::Sealed`]): the app's
//! manifest (TOML) with every source a `sha256:` artifact, or its deletion,
//! signed by the operator who wrote it. `ctl apply` writes it, `ctl delete`
//! writes the deletion, `ctl update` and `ctl scale` rewrite one field of it
//! with compare-and-set on the revision, so two concurrent changes cannot
//! both win. Every host watches the bucket and reconciles what it runs to the
//! newest revision it trusts; there is no scheduler process.

use super::trust::{self, Seal};
use async_nats::jetstream;
use async_nats::jetstream::kv::{self, Operation, Store};

use futures::StreamExt as _;
use std::time::Duration;

/// Revisions kept per app.
const HISTORY: i64 = 5;

/// How often a host compares what its watch delivered with the bucket's
/// newest revision ([`behind`]).
pub const WATCH_CHECK: Duration = Duration::from_secs(10);

/// The KV bucket of `lattice`.
pub fn bucket_name(lattice: &str) -> String {
    format!("membrane-{lattice}-apps")
}

/// The key of app `name`.
pub fn app_key(name: &str) -> String {
    format!("app.{name}")
}

/// One revision of one app.
#[derive(Debug, Clone)]
pub struct AppRevision {
    /// The app's name.
    pub app: String,
    /// The KV revision (a lattice-wide sequence number).
    pub revision: u64,
    /// The manifest text, or `None` when the app was deleted.
    pub manifest: Option<String>,
    /// The entry's signed sequence number (see [`trust::in_order`]).
    pub seq: u64,
    /// Who vouches for this revision.
    pub seal: Seal,
}

impl AppRevision {
    /// Revision `revision` of `app` from its stored entry.
    fn open(lattice: &str, app: String, revision: u64, operation: Operation, value: &[u8]) -> AppRevision {
        let (manifest, seq, seal) = match operation {
            Operation::Put => trust::open(lattice, &app, value),
            // A bare KV delete or purge carries no signature.
            Operation::Delete | Operation::Purge => (None, 0, Seal::Unsigned),
        };
        AppRevision {
            app,
            revision,
            manifest,
            seq,
            seal,
        }
    }
}

/// The desired state of one lattice.
#[derive(Clone)]
pub struct Desired {
    jetstream: jetstream::Context,
    lattice: String,
    bucket: String,
    /// The operator key that signs what this writes.
    key: Option<std::sync::Arc<nkeys::KeyPair>>,
}

/// A compare-and-set lost to a concurrent change.
#[derive(Debug, thiserror::Error)]
#[error("app `{app}` changed while this change was being made (now at revision {now}); nothing was changed")]
pub struct Conflict {
    /// The app.
    pub app: String,
    /// Its revision now.
    pub now: u64,
}

impl Desired {
    /// The desired state of `lattice` on `client`'s JetStream.
    pub fn new(client: async_nats::Client, lattice: &str) -> Desired {
        Desired {
            jetstream: crate::bus::jetstream(client),
            lattice: lattice.to_string(),
            bucket: bucket_name(lattice),
            key: None,
        }
    }

    /// The same desired state, writing entries signed with `key`.
    pub fn signed_by(mut self, key: Option<std::sync::Arc<nkeys::KeyPair>>) -> Desired {
        self.key = key;
        self
    }

    /// The stored value of `manifest` (or of the deletion) of `app`, as the
    /// entry after the one stored now in `store`.
    async fn sealed(&self, store: &Store, app: &str, manifest: Option<&str>) -> anyhow::Result<bytes::Bytes> {
        let previous = match store
            .entry(app_key(app))
            .await
            .map_err(|e| crate::bus::explain("cannot read the desired state", e))?
        {
            Some(entry) if entry.operation == Operation::Put => trust::open(&self.lattice, app, &entry.value).1,
            _ => 0,
        };
        Ok(trust::seal(
            &self.lattice,
            app,
            trust::next_seq(previous),
            manifest,
            self.key.as_deref(),
        )?
        .into())
    }

    /// The bucket, created on first use ([`crate::bus::open_kv`]).
    pub async fn store(&self) -> anyhow::Result<Store> {
        crate::bus::open_kv(&self.jetstream, &self.bucket, "Membrane applied apps", (HISTORY, None)).await
    }

    /// Every app not deleted, at its newest revision.
    pub async fn apps(&self) -> anyhow::Result<Vec<AppRevision>> {
        let store = self.store().await?;
        let names = self.names().await?;
        let mut apps = Vec::new();
        for name in names {
            if let Some(entry) = store
                .entry(app_key(&name))
                .await
                .map_err(|e| crate::bus::explain("cannot read the desired state", e))?
            {
                let app = AppRevision::open(&self.lattice, name, entry.revision, entry.operation, &entry.value);
                if app.manifest.is_some() {
                    apps.push(app);
                }
            }
        }
        Ok(apps)
    }

    /// The names of the apps the bucket has an entry for, deleted ones
    /// too: from the stream's per-subject counts, which its leader answers
    /// itself. (`Store::keys` creates a consumer, and one placed on a server
    /// that has just died waits out the whole request timeout: one `ctl
    /// apps` in three failed so after a kill, on 2.9 and 2.12 alike.)
    async fn names(&self) -> anyhow::Result<Vec<String>> {
        let read = |e| crate::bus::explain("cannot read the desired state", e);
        let stream = self
            .jetstream
            .get_stream(format!("KV_{}", self.bucket))
            .await
            .map_err(|e| read(e.to_string()))?;
        let prefix = format!("$KV.{}.{}", self.bucket, app_key(""));
        let mut subjects = stream
            .info_with_subjects(format!("{prefix}>"))
            .await
            .map_err(|e| read(e.to_string()))?;
        let mut names = Vec::new();
        while let Some(subject) = subjects.next().await {
            let (subject, _) = subject.map_err(|e| read(e.to_string()))?;
            if let Some(name) = subject.strip_prefix(&prefix) {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Stores `manifest` as the desired state of `app`; its new revision.
    pub async fn put(&self, app: &str, manifest: &str) -> anyhow::Result<u64> {
        let store = self.store().await?;
        let value = self.sealed(&store, app, Some(manifest)).await?;
        store
            .put(app_key(app), value)
            .await
            .map_err(|e| crate::bus::explain("cannot store the desired state", e))
    }

    /// Replaces revision `expected` of `app` with `manifest`; fails with
    /// [`Conflict`] when the app has changed since.
    pub async fn replace(&self, app: &str, manifest: &str, expected: u64) -> anyhow::Result<u64> {
        self.write(app, Some(manifest), expected).await
    }

    /// Writes `manifest` (or the deletion) of `app` over revision `expected`.
    async fn write(&self, app: &str, manifest: Option<&str>, expected: u64) -> anyhow::Result<u64> {
        let store = self.store().await?;
        let value = self.sealed(&store, app, manifest).await?;
        match store.update(app_key(app), value, expected).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let now = store.entry(app_key(app)).await.ok().flatten().map_or(0, |e| e.revision);
                Err(Conflict { app: app.into(), now }.into())
            }
            Err(e) => Err(crate::bus::explain_write("cannot store the desired state", e)),
        }
    }

    /// Deletes `app` (a signed deletion entry, so hosts that trust only
    /// signed entries follow it); whether it existed.
    pub async fn delete(&self, app: &str) -> anyhow::Result<bool> {
        let store = self.store().await?;
        let Some(entry) = store.entry(app_key(app)).await? else {
            return Ok(false);
        };
        // A bare KV delete is no deletion to hosts that trust only signed
        // entries: it is replaced by a signed one.
        let current = AppRevision::open(&self.lattice, app.into(), entry.revision, entry.operation, &entry.value);
        if current.manifest.is_none() && entry.operation == Operation::Put {
            return Ok(false);
        }
        self.write(app, None, entry.revision).await?;
        Ok(true)
    }

    /// The bucket, if an operator has created it (hosts may not).
    async fn existing(&self) -> anyhow::Result<Store> {
        self.jetstream.get_key_value(&self.bucket).await.map_err(|e| {
            if crate::bus::jetstream_failure(&e.to_string()) == crate::bus::Failure::NoQuorum {
                return crate::bus::explain(&format!("cannot open KV bucket `{}`", self.bucket), e);
            }
            anyhow::anyhow!(
                "no KV bucket `{}` yet (nothing applied to the lattice?): {e}",
                self.bucket
            )
        })
    }

    /// The revisions of `app` the bucket keeps (oldest first), each with the
    /// time it was stored (Unix milliseconds).
    pub async fn history(&self, app: &str) -> anyhow::Result<Vec<(AppRevision, u64)>> {
        let read = |e: &dyn std::fmt::Display| crate::bus::explain("cannot read the desired state", e);
        let store = self.existing().await?;
        // The key's revisions, found by sequence from the stream's leader
        // (`Store::history` would create a consumer; see `names`).
        let stream = self
            .jetstream
            .get_stream(format!("KV_{}", self.bucket))
            .await
            .map_err(|e| read(&e))?;
        let subject = format!("$KV.{}.{}", self.bucket, app_key(app));
        let mut revisions = Vec::new();
        let mut next = 1;
        loop {
            let message = match stream.get_first_raw_message_by_subject(&subject, next).await {
                Ok(message) => message,
                Err(e) if e.kind() == async_nats::jetstream::stream::RawMessageErrorKind::NoMessageFound => break,
                Err(e) => return Err(read(&e)),
            };
            next = message.sequence + 1;
            let Some(entry) = store
                .entry_for_revision(app_key(app), message.sequence)
                .await
                .map_err(|e| read(&e))?
            else {
                continue;
            };
            let at_ms = u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            let revision = AppRevision::open(
                &self.lattice,
                app.to_string(),
                entry.revision,
                entry.operation,
                &entry.value,
            );
            revisions.push((revision, at_ms));
        }
        Ok(revisions)
    }

    /// The bucket's newest revision (0 while empty), from its stream's
    /// leader: what a watch that is not behind has delivered.
    pub async fn last_revision(&self) -> anyhow::Result<u64> {
        let stream = self
            .jetstream
            .get_stream(format!("KV_{}", self.bucket))
            .await
            .map_err(|e| crate::bus::explain("cannot read the desired state", e))?;
        Ok(stream.cached_info().state.last_sequence)
    }

    /// [`Desired::last_revision`] every [`WATCH_CHECK`], in a task of its
    /// own (a read that waits out its timeout stalls nothing); failed reads
    /// are skipped. Dropping the stream ends the task.
    pub fn newest_revisions(self) -> impl futures::Stream<Item = u64> + Send + use<> {
        let reads = futures::stream::unfold(self, |desired| async move {
            tokio::time::sleep(WATCH_CHECK).await;
            let last = desired.last_revision().await;
            Some((last, desired))
        });
        contained(reads.filter_map(|last| async move { last.ok() }))
    }

    /// Every change from now on, after the current state of every app: the
    /// stream a host reconciles from. Fails while the bucket does not exist.
    ///
    /// The library's watcher is driven in a task of its own: once its
    /// connection has died it may panic when polled again ("`async fn`
    /// resumed after completion"), and that must end the watch, not the
    /// host. The stream ends when the task does, for whatever reason.
    pub async fn watch(&self) -> anyhow::Result<impl futures::Stream<Item = AppRevision> + Send + use<>> {
        let store = self.existing().await?;
        let watch = store.watch_with_history("app.>").await?;
        let lattice = self.lattice.clone();
        Ok(contained(watch.filter_map(move |entry| {
            let lattice = lattice.clone();
            async move {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        tracing::warn!("desired state watch: {e}");
                        return None;
                    }
                };
                let app = entry.key.strip_prefix("app.")?.to_string();
                Some(AppRevision::open(
                    &lattice,
                    app,
                    entry.revision,
                    entry.operation,
                    &entry.value,
                ))
            }
        })))
    }
}

/// Whether a watch has fallen behind the bucket: one check ago the bucket
/// was at revision `previous`, and the watch has still not delivered it
/// (`seen` is the highest revision it delivered). A watch's consumer on a
/// server that was cut off from the rest can stay silent without ending;
/// one whole check of grace covers revisions written just before a check.
pub fn behind(previous: Option<u64>, seen: u64) -> bool {
    previous.is_some_and(|last| seen < last)
}

/// `stream`, driven by a task of its own: a panic in it ends the stream
/// instead of the task that reads it. Dropping the stream ends the task.
pub fn contained<S>(stream: S) -> impl futures::Stream<Item = S::Item> + Send + use<S>
where
    S: futures::Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    let guard = AbortOnDrop(task.abort_handle());
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let item = rx.recv().await?;
        Some((item, (rx, guard)))
    })
    .fuse()
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The revisions of the lattice's desired state, from [`Desired::watch`].
pub type DesiredStream = std::pin::Pin<Box<dyn futures::Stream<Item = AppRevision> + Send>>;

/// Follows the desired state (again, after its watch ended); `None`, with
/// `retry` reset to a second from now, when that fails. The first of a run
/// of `failures` is a warning, the rest are quiet.
pub async fn rewatch(
    desired: &Desired,
    retry: std::pin::Pin<&mut tokio::time::Sleep>,
    failures: &mut u32,
) -> Option<DesiredStream> {
    match desired.watch().await {
        Ok(stream) => {
            tracing::info!("following the lattice's desired state");
            *failures = 0;
            Some(Box::pin(stream))
        }
        Err(e) => {
            if *failures == 0 {
                tracing::warn!("cannot follow the desired state yet (retrying every second): {e:#}");
            } else {
                tracing::debug!("cannot follow the desired state yet: {e:#}");
            }
            *failures += 1;
            retry.reset(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::behind;

    #[test]
    fn a_watch_is_behind_only_when_a_whole_check_passed_without_the_revision() {
        let cases = [
            // (bucket one check ago, highest delivered, behind)
            (None, 0, false),    // no check yet
            (None, 7, false),    // no check yet
            (Some(0), 0, false), // an empty bucket
            (Some(7), 7, false), // delivered the newest
            (Some(7), 9, false), // and more since
            (Some(7), 6, true),  // a revision written before the check never came
            (Some(7), 0, true),  // nothing came at all
        ];
        for (previous, seen, expected) in cases {
            assert_eq!(behind(previous, seen), expected, "{previous:?} {seen}");
        }
    }
}
