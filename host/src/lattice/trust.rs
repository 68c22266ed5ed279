//! Signed desired state: who may say what a lattice runs.
//!
//! An operator holds an nkeys ed25519 operator key (`membrane ctl keygen`).
//! Every desired-state entry `ctl` writes is a [`Sealed`] document: the app's
//! manifest (or its deletion) with the operator's public key and a signature
//! over the lattice, the app, a per-app sequence number and the manifest, so
//! an entry cannot be moved to another lattice or app, nor stored again
//! later: a host refuses an entry whose sequence is below one it has run
//! (a rollback is a new entry, with a higher sequence, that names the old
//! manifest). A host started with `--trust <public key>` runs
//! only entries signed by one of its trusted keys ([`Trust::admit`]); without
//! `--trust` it runs anything a writer of the KV bucket stores, and says so.

use anyhow::Context as _;
use nkeys::KeyPair;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The version of the sealed document: 2 signs a sequence number; 1 (no
/// sequence, read as 0) is still read.
const VERSION: u8 = 2;

/// One desired-state entry as stored in KV (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sealed {
    /// Document version, 1.
    pub v: u8,
    /// The app.
    pub app: String,
    /// This entry's place among the app's entries: above every earlier one.
    #[serde(default)]
    pub seq: u64,
    /// The manifest (TOML); `None`: the app is deleted.
    pub manifest: Option<String>,
    /// The signer's public key (an operator key, `O...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// ed25519 signature of [`signed_bytes`], in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// Who vouches for an entry, once its signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seal {
    /// Signed by this public key, and the signature holds.
    Signed(String),
    /// No signature.
    Unsigned,
    /// A signature that does not hold, or an entry that does not decode.
    Broken(String),
}

/// The bytes a signature covers: a domain tag, the lattice, the app, the
/// sequence (from version 2) and the manifest (or the deletion mark).
fn signed_bytes(version: u8, lattice: &str, app: &str, seq: u64, manifest: Option<&str>) -> Vec<u8> {
    let mut bytes = format!("membrane.desired.v{version}\0{lattice}\0{app}\0").into_bytes();
    if version >= 2 {
        bytes.extend_from_slice(format!("{seq}\0").as_bytes());
    }
    match manifest {
        Some(text) => {
            bytes.push(b'M');
            bytes.extend_from_slice(text.as_bytes());
        }
        None => bytes.push(b'D'),
    }
    bytes
}

/// Seals `manifest` (or the deletion of `app`) for `lattice` as the app's
/// entry number `seq`, signed with `key` when there is one.
pub fn seal(
    lattice: &str,
    app: &str,
    seq: u64,
    manifest: Option<&str>,
    key: Option<&KeyPair>,
) -> anyhow::Result<Vec<u8>> {
    let (signer, signature) = match key {
        Some(key) => {
            let signature = key
                .sign(&signed_bytes(VERSION, lattice, app, seq, manifest))
                .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
            (Some(key.public_key()), Some(hex::encode(signature)))
        }
        None => (None, None),
    };
    let sealed = Sealed {
        v: VERSION,
        app: app.to_string(),
        seq,
        manifest: manifest.map(str::to_string),
        signer,
        signature,
    };
    Ok(serde_json::to_vec(&sealed)?)
}

/// An opened entry: its manifest (`None`: deleted), sequence and seal.
pub type Opened = (Option<String>, u64, Seal);

/// Opens the stored entry `value` of `app` in `lattice`. A value that does
/// not decode is [`Seal::Broken`] with no manifest.
pub fn open(lattice: &str, app: &str, value: &[u8]) -> Opened {
    let sealed: Sealed = match serde_json::from_slice(value) {
        Ok(sealed) => sealed,
        Err(e) => return (None, 0, Seal::Broken(format!("not a sealed desired-state entry: {e}"))),
    };
    if !(1..=VERSION).contains(&sealed.v) || (sealed.v == 1 && sealed.seq != 0) {
        return (None, 0, Seal::Broken(format!("unknown entry version {}", sealed.v)));
    }
    if sealed.app != app {
        return (
            None,
            0,
            Seal::Broken(format!("the entry is for app `{}`, stored under `{app}`", sealed.app)),
        );
    }
    let seal = match (&sealed.signer, &sealed.signature) {
        (None, None) => Seal::Unsigned,
        (Some(signer), Some(signature)) => verify(lattice, &sealed, signer, signature),
        _ => Seal::Broken("a signer without a signature, or a signature without a signer".into()),
    };
    (sealed.manifest, sealed.seq, seal)
}

/// The highest entry number a host has run, by app.
pub type Sequences = std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>;

/// Whether an entry numbered `seq` may follow the highest number this host
/// has run for the app, `highest`; why not, if not. The same entry again
/// (a watch that starts over) is no replay.
pub fn in_order(seq: u64, highest: Option<u64>) -> Result<(), String> {
    match highest {
        Some(highest) if seq < highest => Err(format!(
            "entry {seq} is older than entry {highest}, which this host has run (a replay?)"
        )),
        _ => Ok(()),
    }
}

/// The sequence of the entry that follows one numbered `previous`: above
/// it, and at least the wall clock in milliseconds, so that a new app (or
/// one whose history was purged) starts above anything stored before.
pub fn next_seq(previous: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    previous.saturating_add(1).max(now)
}

/// Checks `sealed`'s signature by `signer`.
fn verify(lattice: &str, sealed: &Sealed, signer: &str, signature: &str) -> Seal {
    let Ok(key) = KeyPair::from_public_key(signer) else {
        return Seal::Broken(format!("signer {signer:?} is not a public nkey"));
    };
    let Ok(signature) = hex::decode(signature) else {
        return Seal::Broken("the signature is not hex".into());
    };
    let bytes = signed_bytes(sealed.v, lattice, &sealed.app, sealed.seq, sealed.manifest.as_deref());
    match key.verify(&bytes, &signature) {
        Ok(()) => Seal::Signed(signer.to_string()),
        Err(_) => Seal::Broken(format!("the signature does not match (signer {})", short_key(signer))),
    }
}

/// The public keys a host takes desired state from.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    keys: Vec<String>,
}

impl Trust {
    /// Trusts `keys` (operator public keys); none: anyone.
    pub fn new(keys: &[String]) -> anyhow::Result<Trust> {
        for key in keys {
            let pair = KeyPair::from_public_key(key).map_err(|e| anyhow::anyhow!("--trust {key:?}: {e}"))?;
            anyhow::ensure!(
                pair.key_pair_type() == nkeys::KeyPairType::Operator,
                "--trust {key:?}: not an operator public key (they start with `O`; `membrane ctl keygen` makes one)"
            );
        }
        Ok(Trust { keys: keys.to_vec() })
    }

    /// Whether this host trusts anyone (no `--trust`).
    pub fn trusts_anyone(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether an entry with `seal` may be run here; why not, if not. A
    /// broken seal is refused even by a host that trusts anyone.
    pub fn admit(&self, seal: &Seal) -> Result<(), String> {
        match seal {
            Seal::Broken(why) => Err(why.clone()),
            Seal::Unsigned if self.trusts_anyone() => Ok(()),
            Seal::Unsigned => Err("the entry is unsigned and this host trusts only signed ones (--trust)".into()),
            Seal::Signed(_) if self.trusts_anyone() => Ok(()),
            Seal::Signed(key) if self.keys.contains(key) => Ok(()),
            Seal::Signed(key) => Err(format!("signed by {}, which this host does not trust", short_key(key))),
        }
    }
}

/// A public key shortened for messages.
pub fn short_key(key: &str) -> String {
    key.chars().take(12).collect::<String>() + "..."
}

/// Reads an operator key (an nkeys seed, `SO...`) from `path`.
pub fn read_key(path: &Path) -> anyhow::Result<KeyPair> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the operator key {}", path.display()))?;
    let key =
        KeyPair::from_seed(text.trim()).map_err(|e| anyhow::anyhow!("{}: not an nkeys seed: {e}", path.display()))?;
    anyhow::ensure!(
        key.key_pair_type() == nkeys::KeyPairType::Operator,
        "{}: not an operator seed (it should start with `SO`)",
        path.display()
    );
    Ok(key)
}

/// Writes a new operator key to `path` (mode 0600; an existing file is never
/// overwritten); the key.
pub fn new_key(path: &Path) -> anyhow::Result<KeyPair> {
    use std::io::Write as _;
    let key = KeyPair::new_operator();
    let seed = key.seed().map_err(|e| anyhow::anyhow!("cannot encode the seed: {e}"))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    file.write_all(format!("{seed}\n").as_bytes())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_holds_only_for_its_lattice_app_and_manifest() {
        let key = KeyPair::new_operator();
        let value = seal("prod", "shop", 7, Some("[app]\nname = \"shop\"\n"), Some(&key)).unwrap();
        let (manifest, seq, seal_) = open("prod", "shop", &value);
        assert_eq!(seq, 7);
        assert_eq!(seal_, Seal::Signed(key.public_key()));
        assert!(manifest.is_some());
        // Moved to another lattice, or another app's key: broken.
        assert!(matches!(open("staging", "shop", &value).2, Seal::Broken(_)));
        assert!(matches!(open("prod", "other", &value).2, Seal::Broken(_)));
        // An edited manifest: broken.
        let mut sealed: Sealed = serde_json::from_slice(&value).unwrap();
        sealed.manifest = Some("[app]\nname = \"shop\"\n[components.x]\nsource = \"/bin\"\n".into());
        let edited = serde_json::to_vec(&sealed).unwrap();
        assert!(matches!(open("prod", "shop", &edited).2, Seal::Broken(_)));
        // A renumbered entry (an old one dressed as new): broken.
        let mut sealed: Sealed = serde_json::from_slice(&value).unwrap();
        sealed.seq = 8;
        let renumbered = serde_json::to_vec(&sealed).unwrap();
        assert!(matches!(open("prod", "shop", &renumbered).2, Seal::Broken(_)));
        // A deletion signed by the key is its own statement.
        let deletion = seal("prod", "shop", 9, None, Some(&key)).unwrap();
        assert_eq!(
            open("prod", "shop", &deletion),
            (None, 9, Seal::Signed(key.public_key()))
        );
    }

    #[test]
    fn an_older_entry_is_refused_once_a_newer_one_ran() {
        let table = [
            (5, None, true),
            (5, Some(5), true),
            (6, Some(5), true),
            (4, Some(5), false),
            (0, Some(1), false),
        ];
        for (seq, highest, ok) in table {
            assert_eq!(in_order(seq, highest).is_ok(), ok, "{seq} after {highest:?}");
        }
        assert!(next_seq(3) > 1_700_000_000_000);
        assert_eq!(next_seq(u64::MAX - 1), u64::MAX);
    }

    #[test]
    fn trust_admits_only_its_keys_and_never_a_broken_seal() {
        let (ours, theirs) = (KeyPair::new_operator(), KeyPair::new_operator());
        let trust = Trust::new(&[ours.public_key()]).unwrap();
        assert!(trust.admit(&Seal::Signed(ours.public_key())).is_ok());
        assert!(trust.admit(&Seal::Signed(theirs.public_key())).is_err());
        assert!(trust.admit(&Seal::Unsigned).is_err());
        let anyone = Trust::default();
        assert!(anyone.admit(&Seal::Unsigned).is_ok());
        assert!(anyone.admit(&Seal::Broken("x".into())).is_err());
        assert!(Trust::new(&[KeyPair::new_user().public_key()]).is_err());
        assert!(Trust::new(&["nonsense".into()]).is_err());
    }
}
