//! What a host allows the apps that arrive from the lattice, in the terms
//! the capabilities check ([`super::Capability::admit`]): directories,
//! environment variables, outbound destinations and key-value backends. The
//! flags that fill it are `lattice/policy.rs`'s.

use crate::manifest::KvBackend;
use crate::manifest::outbound::{AllowedHost, AllowedHosts};
use std::path::{Path, PathBuf};

/// What this host allows apps from the lattice. The default allows nothing.
#[derive(Debug, Clone, Default)]
pub struct HostPolicy {
    /// Host directories (canonical) under which a component may be given a
    /// directory, or name a file.
    dirs: Vec<PathBuf>,
    /// Environment variable names a component may be given; a trailing `*`
    /// allows a prefix.
    env: Vec<String>,
    /// Where components may connect.
    outbound: AllowedHosts,
    /// The key-value backends whose buckets a component may open.
    keyvalue: Vec<KvBackend>,
}

impl HostPolicy {
    /// A policy of canonical `dirs`, `env` names or prefixes, `outbound`
    /// destinations and `keyvalue` backends.
    pub fn new(dirs: Vec<PathBuf>, env: Vec<String>, outbound: AllowedHosts, keyvalue: Vec<KvBackend>) -> HostPolicy {
        HostPolicy {
            dirs,
            env,
            outbound,
            keyvalue,
        }
    }

    /// The same policy with the key-value backends `keyvalue`.
    pub fn with_keyvalue(self, keyvalue: Vec<KvBackend>) -> HostPolicy {
        HostPolicy { keyvalue, ..self }
    }

    /// The allowed directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The allowed environment names and prefixes.
    pub fn env(&self) -> &[String] {
        &self.env
    }

    /// The allowed key-value backends.
    pub fn keyvalue(&self) -> &[KvBackend] {
        &self.keyvalue
    }

    /// Whether `path` (absolute; symbolic links resolved) lies under an
    /// allowed directory.
    pub fn allows_dir(&self, path: &Path) -> bool {
        path.is_absolute()
            && path
                .canonicalize()
                .is_ok_and(|real| self.dirs.iter().any(|dir| real.starts_with(dir)))
    }

    /// Whether environment variable `key` may be given.
    pub fn allows_env(&self, key: &str) -> bool {
        self.env.iter().any(|allowed| match allowed.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => allowed == key,
        })
    }

    /// The entries of `wanted` that the allowed destinations do not cover.
    pub fn uncovered_outbound<'a>(&self, wanted: &'a AllowedHosts) -> Vec<&'a AllowedHost> {
        self.outbound.uncovered(wanted)
    }

    /// Whether buckets on `backend` may be opened.
    pub fn allows_keyvalue(&self, backend: KvBackend) -> bool {
        self.keyvalue.contains(&backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_escapes_the_allowed_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("allowed")).unwrap();
        let allowed = root.path().join("allowed").canonicalize().unwrap();
        let policy = HostPolicy::new(vec![allowed.clone()], vec![], AllowedHosts::default(), vec![]);
        assert!(policy.allows_dir(&allowed.join(".")));
        assert!(!policy.allows_dir(&allowed.join("..")));
        assert!(!policy.allows_dir(Path::new("relative")));
        #[cfg(unix)]
        {
            let link = allowed.join("out");
            std::os::unix::fs::symlink(root.path(), &link).unwrap();
            assert!(!policy.allows_dir(&link), "a symbolic link out of it");
        }
    }

    #[test]
    fn environment_names_and_prefixes() {
        let policy = HostPolicy::new(
            vec![],
            vec!["TOK*".into(), "HOME".into()],
            AllowedHosts::default(),
            vec![],
        );
        assert!(policy.allows_env("TOKEN"));
        assert!(policy.allows_env("HOME"));
        assert!(!policy.allows_env("HOMES"));
        assert!(!policy.allows_env("PATH"));
    }
}
