//! Desired state: the applied apps of a lattice, in a JetStream KV bucket.
//!
//! Bucket `membrane-<lattice>-apps` holds one key per app, `app.<name>`,
//! whose value is the app's manifest (TOML) with every source a `sha256:`
//! artifact. `ctl apply` writes it, `ctl delete` deletes it, `ctl update` and
//! `ctl scale` rewrite one field of it with compare-and-set on the revision,
//! so two concurrent changes cannot both win. Every host watches the bucket
//! and reconciles what it runs to the newest revision; there is no scheduler
//! process.

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::kv::{self, Operation, Store};
use async_nats::jetstream::stream;

/// Revisions kept per app.
const HISTORY: i64 = 5;
use futures::StreamExt as _;

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
}

/// The desired state of one lattice.
#[derive(Clone)]
pub struct Desired {
    jetstream: jetstream::Context,
    bucket: String,
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
            jetstream: jetstream::new(client),
            bucket: bucket_name(lattice),
        }
    }

    /// The bucket, created on first use.
    ///
    /// The bucket's stream is created directly, with the settings the KV
    /// convention prescribes (`KV_<bucket>`, `$KV.<bucket>.>`, rollups,
    /// direct gets): async-nats's own `create_key_value` first queries the
    /// account, whose answer from a 2.9 server it cannot parse.
    pub async fn store(&self) -> anyhow::Result<Store> {
        if let Ok(store) = self.jetstream.get_key_value(&self.bucket).await {
            return Ok(store);
        }
        self.jetstream
            .get_or_create_stream(stream::Config {
                name: format!("KV_{}", self.bucket),
                description: Some("Membrane applied apps".into()),
                subjects: vec![format!("$KV.{}.>", self.bucket)],
                max_messages_per_subject: HISTORY,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create KV bucket `{}` (is JetStream enabled?)", self.bucket))?;
        self.jetstream
            .get_key_value(&self.bucket)
            .await
            .with_context(|| format!("cannot open KV bucket `{}`", self.bucket))
    }

    /// Every app, at its newest revision.
    pub async fn apps(&self) -> anyhow::Result<Vec<AppRevision>> {
        let store = self.store().await?;
        let mut keys = store.keys().await?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            if let Some(name) = key?.strip_prefix("app.") {
                names.push(name.to_string());
            }
        }
        let mut apps = Vec::new();
        for name in names {
            if let Some(entry) = store.entry(app_key(&name)).await?
                && entry.operation == Operation::Put
            {
                apps.push(AppRevision {
                    app: name,
                    revision: entry.revision,
                    manifest: Some(String::from_utf8_lossy(&entry.value).into_owned()),
                });
            }
        }
        Ok(apps)
    }

    /// Stores `manifest` as the desired state of `app`; its new revision.
    pub async fn put(&self, app: &str, manifest: &str) -> anyhow::Result<u64> {
        let store = self.store().await?;
        Ok(store.put(app_key(app), manifest.to_string().into()).await?)
    }

    /// Replaces revision `expected` of `app` with `manifest`; fails with
    /// [`Conflict`] when the app has changed since.
    pub async fn replace(&self, app: &str, manifest: &str, expected: u64) -> anyhow::Result<u64> {
        let store = self.store().await?;
        match store.update(app_key(app), manifest.to_string().into(), expected).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let now = store.entry(app_key(app)).await.ok().flatten().map_or(0, |e| e.revision);
                Err(Conflict { app: app.into(), now }.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `app`; whether it existed.
    pub async fn delete(&self, app: &str) -> anyhow::Result<bool> {
        let store = self.store().await?;
        let existed = store
            .entry(app_key(app))
            .await?
            .is_some_and(|e| e.operation == Operation::Put);
        if existed {
            store.delete(app_key(app)).await?;
        }
        Ok(existed)
    }

    /// Every change from now on, after the current state of every app: the
    /// stream a host reconciles from.
    pub async fn watch(&self) -> anyhow::Result<impl futures::Stream<Item = AppRevision> + Send + use<>> {
        let store = self.store().await?;
        let watch = store.watch_with_history("app.>").await?;
        Ok(watch.filter_map(|entry| async move {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!("desired state watch: {e}");
                    return None;
                }
            };
            let app = entry.key.strip_prefix("app.")?.to_string();
            Some(AppRevision {
                app,
                revision: entry.revision,
                manifest: (entry.operation == Operation::Put)
                    .then(|| String::from_utf8_lossy(&entry.value).into_owned()),
            })
        }))
    }
}
