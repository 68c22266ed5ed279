//! Host policy: what an app that arrives from the lattice may be granted on
//! this host.
//!
//! A manifest file run with `membrane up app.toml` is the user's own and
//! gets what it asks for. An app applied to the lattice is somebody else's:
//! by default it gets no directories, environment or outbound access, and
//! its components must name artifacts by digest, and it may open no
//! key-value bucket. `membrane up --allow-dir`, `--allow-env`,
//! `--allow-outbound`, `--allow-network` and `--allow-keyvalue` widen that. An app
//! that asks for more than the policy allows is refused, and the refusal
//! names the grant.
//!
//! This file owns the flags and what no capability owns (artifact digests,
//! the files that bindings and `[nats]` name); each capability answers for
//! its own grants (`runtime::capabilities::admit`).

use crate::manifest::outbound::AllowedHosts;
use crate::manifest::{ComponentSpec, KvBackend, Manifest};
use crate::runtime::capabilities::{self, HostPolicy};
use crate::transports;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What this host allows apps from the lattice.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// What the capabilities check.
    host: HostPolicy,
    /// The outbound flags as given (`--allow-network` ranges as `CIDR:*`), for the log.
    outbound_text: Vec<String>,
}

impl Policy {
    /// A policy from the `--allow-*` flags: directories, environment
    /// variables, outbound entries (`allowed_outbound_hosts` syntax) and
    /// network ranges (CIDR, any port and protocol).
    pub fn new(dirs: &[PathBuf], env: &[String], outbound: &[String], networks: &[String]) -> anyhow::Result<Policy> {
        let dirs = dirs
            .iter()
            .map(|dir| {
                dir.canonicalize()
                    .map_err(|e| anyhow::anyhow!("--allow-dir {}: {e}", dir.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for name in env {
            anyhow::ensure!(
                !name.is_empty() && !name.contains('=') && name.find('*').is_none_or(|at| at == name.len() - 1),
                "--allow-env {name:?}: a variable name, or a prefix ending in `*`"
            );
        }
        let mut outbound_text = outbound.to_vec();
        for network in networks {
            anyhow::ensure!(
                network.contains('/'),
                "--allow-network {network:?}: a CIDR range like 10.0.0.0/8 (use --allow-outbound for one host)"
            );
            outbound_text.push(if network.contains(':') {
                format!("[{network}]:*")
            } else {
                format!("{network}:*")
            });
        }
        let outbound = AllowedHosts::parse("--allow-outbound/--allow-network", &outbound_text)
            .map_err(|problems| anyhow::anyhow!("{}", problems.join("; ")))?;
        Ok(Policy {
            host: HostPolicy::new(dirs, env.to_vec(), outbound, Vec::new()),
            outbound_text,
        })
    }

    /// The same policy, also letting components open buckets on the
    /// `--allow-keyvalue` backends (`embedded`: this host's disk; `nats`:
    /// the lattice's JetStream).
    pub fn allowing_keyvalue(self, backends: &[String]) -> anyhow::Result<Policy> {
        let mut keyvalue = self.host.keyvalue().to_vec();
        for backend in backends {
            keyvalue.push(match backend.as_str() {
                "embedded" => KvBackend::Embedded,
                "nats" => KvBackend::Nats,
                _ => anyhow::bail!("--allow-keyvalue {backend:?}: `embedded` or `nats`"),
            });
        }
        Ok(Policy {
            host: self.host.with_keyvalue(keyvalue),
            ..self
        })
    }

    /// What the policy allows, for the log line at start-up.
    pub fn describe(&self) -> String {
        let host = &self.host;
        if host.dirs().is_empty()
            && host.env().is_empty()
            && self.outbound_text.is_empty()
            && host.keyvalue().is_empty()
        {
            return "no directories, environment, outbound access or key-value buckets".into();
        }
        let dirs: Vec<String> = host.dirs().iter().map(|d| d.display().to_string()).collect();
        let keyvalue: Vec<&str> = host.keyvalue().iter().map(|b| b.name()).collect();
        format!(
            "directories under [{}], environment [{}], outbound [{}], key-value buckets on [{}]",
            dirs.join(", "),
            host.env().join(", "),
            self.outbound_text.join(", "),
            keyvalue.join(", ")
        )
    }

    /// Checks the components of `manifest` that run `here`: every problem,
    /// each naming its manifest field.
    pub fn admit(&self, manifest: &Manifest, here: &BTreeSet<String>) -> Result<(), Vec<String>> {
        let problems: Vec<String> = manifest
            .components
            .iter()
            .filter(|(name, _)| here.contains(*name))
            .flat_map(|(name, spec)| self.problems(manifest, name, spec))
            .chain(self.file_problems(manifest, here))
            .collect();
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// What component `name` of `manifest` asks for beyond this policy: a
    /// path where a digest belongs, and what each capability refuses.
    fn problems(&self, manifest: &Manifest, name: &str, spec: &ComponentSpec) -> Vec<String> {
        let mut problems = Vec::new();
        if !spec.is_pinned_source() {
            problems.push(format!(
                "components.{name}.source: {} pins no bytes; an app from the lattice names artifacts (`sha256:...` or `oci://...@sha256:...`)",
                spec.source.display()
            ));
        }
        problems.extend(capabilities::admit(&self.host, manifest, name, spec));
        problems
    }

    /// The files outside the components that `manifest` names for `here`
    /// and that are not under an allowed directory: the TLS certificate and
    /// key of an http binding served here, and `[nats]` credentials and
    /// certificates. Decided from the path alone, before anything is read,
    /// so a refusal tells nothing about what exists on this host.
    fn file_problems(&self, manifest: &Manifest, here: &BTreeSet<String>) -> Vec<String> {
        let mut owned: Vec<(String, PathBuf)> = Vec::new();
        for (i, binding) in manifest.bindings.iter().enumerate() {
            if here.contains(binding.component()) {
                owned.extend(
                    transports::files(binding)
                        .into_iter()
                        .map(|(field, path)| (format!("bindings[{i}].{field}"), path)),
                );
            }
        }
        let mut files: Vec<(String, &Path)> = owned.iter().map(|(f, p)| (f.clone(), p.as_path())).collect();
        let nats = &manifest.nats;
        for (field, path) in [
            ("nats.creds", &nats.creds),
            ("nats.tls_ca", &nats.tls_ca),
            ("nats.tls_cert", &nats.tls_cert),
            ("nats.tls_key", &nats.tls_key),
        ] {
            if let Some(path) = path {
                files.push((field.to_string(), path));
            }
        }
        files
            .into_iter()
            .filter(|(_, path)| !self.host.allows_dir(path))
            .map(|(field, path)| format!("{field}: {} is not under any --allow-dir of this host", path.display()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(component: &str) -> Manifest {
        let text = format!(
            "[app]\nname = \"a\"\n[components.c]\nsource = \"sha256:{}\"\n{component}",
            "0".repeat(64)
        );
        Manifest::parse(&text, "test").unwrap()
    }

    fn here() -> BTreeSet<String> {
        ["c".to_string()].into()
    }

    #[test]
    fn nothing_is_granted_by_default_and_each_refusal_names_its_grant() {
        let dir = tempfile::tempdir().unwrap();
        let app = manifest(&format!(
            "[components.c.wasi]\ndirs = {{ \"/data\" = {:?} }}\nenv = {{ TOKEN = \"x\" }}\n",
            dir.path()
        ));
        let problems = Policy::default().admit(&app, &here()).unwrap_err();
        assert!(problems[0].starts_with("components.c.wasi.dirs./data:"), "{problems:?}");
        assert!(problems[1].starts_with("components.c.wasi.env.TOKEN:"), "{problems:?}");
        let policy = Policy::new(&[dir.path().to_path_buf()], &["TOK*".into()], &[], &[]).unwrap();
        assert_eq!(policy.admit(&app, &here()), Ok(()));
        // A component placed elsewhere is not this host's business.
        assert_eq!(Policy::default().admit(&app, &BTreeSet::new()), Ok(()));
    }

    #[test]
    fn outbound_access_is_what_the_host_allows() {
        let app = manifest("allowed_outbound_hosts = [\"https://api.example.com\", \"10.1.2.3:5432\"]\n");
        let problems = Policy::default().admit(&app, &here()).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("https://api.example.com:443 is not allowed"),
            "{problems:?}"
        );
        let policy = Policy::new(&[], &[], &["https://*.example.com".into()], &["10.0.0.0/8".into()]).unwrap();
        assert_eq!(policy.admit(&app, &here()), Ok(()));
        assert!(Policy::new(&[], &[], &[], &["10.0.0.1".into()]).is_err());
    }

    #[test]
    fn key_value_buckets_are_opened_only_on_the_backends_the_host_allows() {
        let app = manifest("keyvalue = { buckets = [\"counts\", \"cache\"] }\n[keyvalue.counts]\nbackend = \"nats\"\n");
        let problems = Policy::default().admit(&app, &here()).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("keyvalue.buckets[0]: bucket `counts` (nats)"),
            "{problems:?}"
        );
        let nats = Policy::default().allowing_keyvalue(&["nats".into()]).unwrap();
        let problems = nats.admit(&app, &here()).unwrap_err();
        assert!(problems[0].contains("--allow-keyvalue embedded"), "{problems:?}");
        let both = nats.allowing_keyvalue(&["embedded".into()]).unwrap();
        assert_eq!(both.admit(&app, &here()), Ok(()));
        assert!(Policy::default().allowing_keyvalue(&["redis".into()]).is_err());
    }

    #[test]
    fn tls_files_are_read_only_from_allowed_directories() {
        let allowed = tempfile::tempdir().unwrap();
        let secret = tempfile::tempdir().unwrap();
        let (cert, key) = (secret.path().join("cert.pem"), secret.path().join("key.pem"));
        std::fs::write(&key, "a private key").unwrap();
        let binding = |cert: &Path, key: &Path| {
            manifest(&format!(
                "[[bindings]]\nmedium = \"http\"\ncomponent = \"c\"\naddress = \"127.0.0.1:0\"\n\
                 tls = {{ cert = {:?}, key = {:?} }}\n",
                cert, key
            ))
        };
        let policy = Policy::new(&[allowed.path().to_path_buf()], &[], &[], &[]).unwrap();
        let problems = policy.admit(&binding(&cert, &key), &here()).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].starts_with("bindings[0].tls.key: "), "{problems:?}");
        // The same words whether the file exists or not.
        let missing = secret.path().join("nothing.pem");
        let other = policy.admit(&binding(&cert, &missing), &here()).unwrap_err();
        assert_eq!(
            other[1].replace("nothing.pem", "key.pem"),
            problems[1],
            "a refusal must not tell whether a path exists"
        );
        let inside = (allowed.path().join("cert.pem"), allowed.path().join("key.pem"));
        std::fs::write(&inside.0, "c").unwrap();
        std::fs::write(&inside.1, "k").unwrap();
        assert_eq!(policy.admit(&binding(&inside.0, &inside.1), &here()), Ok(()));
        // Served elsewhere: not this host's files.
        assert_eq!(policy.admit(&binding(&cert, &key), &BTreeSet::new()), Ok(()));
    }

    #[test]
    fn an_applied_app_names_artifacts() {
        let text = "[app]\nname = \"a\"\n[components.c]\nsource = \"/usr/lib/x.wasm\"\n";
        let app = Manifest::parse(text, "test").unwrap();
        let problems = Policy::default().admit(&app, &here()).unwrap_err();
        assert!(problems[0].contains("components.c.source"), "{problems:?}");
    }
}
