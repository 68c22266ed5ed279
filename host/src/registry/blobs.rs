//! The content-addressed store on disk: component bytes and OCI manifests
//! under `<cache>/artifacts/sha256-<hex>`, whichever way they came (the
//! lattice's object store or a registry), and the last manifest digest each
//! OCI tag resolved to, under `<cache>/oci/tags/`.
//!
//! A blob is used only if its bytes still hash to its name: a damaged or
//! tampered file is fetched again. A tag's cached digest is only a hint
//! for when the registry cannot be reached; the blobs it names are verified
//! like any other.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("artifacts").join(digest.replace(':', "-"))
}

/// The bytes stored under `digest` in `dir`, if they are there and still
/// hash to it.
pub async fn read(dir: Option<&Path>, digest: &str) -> Option<Vec<u8>> {
    let bytes = tokio::fs::read(blob_path(dir?, digest)).await.ok()?;
    (self::digest(&bytes) == digest).then_some(bytes)
}

/// Keeps `bytes` (which hash to `digest`) in `dir`; a failure is logged,
/// not returned: the cache only saves a fetch.
pub async fn keep(dir: Option<&Path>, digest: &str, bytes: &[u8]) {
    let Some(dir) = dir else { return };
    let path = blob_path(dir, digest);
    if let Err(e) = write_atomically(&path, bytes).await {
        tracing::warn!("cannot keep {digest} at {}: {e}", path.display());
    }
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).await?;
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    tokio::fs::write(&partial, bytes).await?;
    tokio::fs::rename(&partial, path).await
}

/// What a tag resolved to when it was last asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagRecord {
    /// The reference, unpinned (`oci://r/app:1.0`).
    pub reference: String,
    /// The manifest digest it named.
    pub digest: String,
    /// When (RFC 3339).
    pub resolved: String,
}

fn tag_path(dir: &Path, reference: &str) -> PathBuf {
    // The reference is hashed: the file name never carries its text.
    dir.join("oci")
        .join("tags")
        .join(digest(reference.as_bytes()).replace(':', "-"))
}

/// The last resolution of `reference` (unpinned) kept in `dir`.
pub async fn read_tag(dir: Option<&Path>, reference: &str) -> Option<TagRecord> {
    let bytes = tokio::fs::read(tag_path(dir?, reference)).await.ok()?;
    let record: TagRecord = serde_json::from_slice(&bytes).ok()?;
    (record.reference == reference && super::reference::is_sha256(&record.digest)).then_some(record)
}

/// Remembers that `reference` (unpinned) resolved to `digest`.
pub async fn keep_tag(dir: Option<&Path>, reference: &str, digest: &str) {
    let Some(dir) = dir else { return };
    let record = TagRecord {
        reference: reference.to_string(),
        digest: digest.to_string(),
        resolved: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let path = tag_path(dir, reference);
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    if let Err(e) = write_atomically(&path, &bytes).await {
        tracing::warn!("cannot remember {reference} at {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_is_read_back_only_while_it_hashes_to_its_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Some(tmp.path());
        let d = digest(b"component");
        assert!(read(dir, &d).await.is_none());
        keep(dir, &d, b"component").await;
        assert_eq!(read(dir, &d).await.as_deref(), Some(&b"component"[..]));
        std::fs::write(blob_path(tmp.path(), &d), b"tampered").unwrap();
        assert!(read(dir, &d).await.is_none(), "tampered bytes are not used");
        assert!(read(None, &d).await.is_none());

        assert!(read_tag(dir, "oci://r/a:1").await.is_none());
        keep_tag(dir, "oci://r/a:1", &d).await;
        assert_eq!(read_tag(dir, "oci://r/a:1").await.unwrap().digest, d);
        assert!(read_tag(dir, "oci://r/a:2").await.is_none());
    }
}
