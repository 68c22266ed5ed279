//! Secrets: values a manifest names (`{ secret = "NAME" }`) but never holds.
//!
//! A host resolves a secret when it prepares a component: from its
//! environment, `MEMBRANE_SECRET_<NAME>`, else from its secrets file
//! (`membrane up --secrets FILE`, TOML `NAME = "value"`). Only the
//! capabilities that hand the value to the guest (config, environment) see
//! it: the manifest, the lattice's desired state, the inventory and the log
//! carry the name alone. Only variables with that prefix can be read, so an
//! app cannot ask for the host's other environment.

use crate::manifest::{ComponentSpec, ConfigValue};
use anyhow::Context as _;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// The prefix of the environment variables that hold secrets.
pub const ENV_PREFIX: &str = "MEMBRANE_SECRET_";

/// Where this host finds secrets.
#[derive(Default, Clone)]
pub struct Secrets {
    file: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only, never values.
        f.debug_struct("Secrets").field("file", &self.file.keys()).finish()
    }
}

impl Secrets {
    /// The environment, and the secrets file at `path` if given.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Secrets> {
        let Some(path) = path else {
            return Ok(Secrets::default());
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("--secrets {}", path.display()))?;
        let file: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "--secrets {}: a table of NAME = \"value\": {}",
                path.display(),
                e.message()
            )
        })?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path)
            && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0
        {
            tracing::warn!("--secrets {}: other users may read it (chmod 600 it)", path.display());
        }
        Ok(Secrets { file })
    }

    /// The value of secret `name`.
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(format!("{ENV_PREFIX}{name}"))
            .ok()
            .or_else(|| self.file.get(name).cloned())
    }
}

/// `spec` with every secret replaced by its value; every secret this host
/// does not hold is a problem naming its field.
pub fn resolve<'a>(
    name: &str,
    spec: &'a ComponentSpec,
    secrets: &Secrets,
) -> Result<Cow<'a, ComponentSpec>, Vec<String>> {
    let has_secrets = spec
        .config
        .values()
        .chain(spec.wasi.env.values())
        .any(|v| matches!(v, ConfigValue::Secret(_)));
    if !has_secrets {
        return Ok(Cow::Borrowed(spec));
    }
    let mut resolved = spec.clone();
    let mut problems = Vec::new();
    let tables = [("config", &mut resolved.config), ("wasi.env", &mut resolved.wasi.env)];
    for (table, values) in tables {
        for (key, value) in values.iter_mut() {
            let ConfigValue::Secret(reference) = value else {
                continue;
            };
            match secrets.get(&reference.secret) {
                Some(secret) => *value = ConfigValue::String(secret),
                None => problems.push(format!(
                    "components.{name}.{table}.{key}: secret `{}` is not on this host (set {ENV_PREFIX}{} or put it in --secrets FILE)",
                    reference.secret, reference.secret
                )),
            }
        }
    }
    if problems.is_empty() {
        Ok(Cow::Owned(resolved))
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    #[test]
    fn a_secret_comes_from_the_file_and_a_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "API_KEY = \"k-123\"\n").unwrap();
        let secrets = Secrets::load(Some(&file)).unwrap();
        assert!(!format!("{secrets:?}").contains("k-123"));
        let text = "[app]\nname = \"a\"\n[components.c]\nsource = \"c.wasm\"\n\
                    config = { key = { secret = \"API_KEY\" }, plain = \"p\" }\n\
                    wasi = { env = { TOKEN = { secret = \"NOT_THERE_ANYWHERE\" } } }\n";
        let manifest = Manifest::parse(text, "test").unwrap();
        let spec = &manifest.components["c"];
        let problems = resolve("c", spec, &secrets).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("components.c.wasi.env.TOKEN: secret `NOT_THERE_ANYWHERE`"),
            "{problems:?}"
        );
        let mut spec = spec.clone();
        spec.wasi.env.clear();
        let resolved = resolve("c", &spec, &secrets).unwrap();
        assert_eq!(resolved.config["key"].as_config_string(), "k-123");
        assert_eq!(resolved.config["plain"].as_config_string(), "p");
    }

    #[test]
    fn a_secret_name_is_checked_in_the_manifest() {
        let text =
            "[app]\nname = \"a\"\n[components.c]\nsource = \"c.wasm\"\nconfig = { k = { secret = \"../etc\" } }\n";
        let error = Manifest::parse(text, "test").unwrap_err().to_string();
        assert!(error.contains("components.c.config.k: secret"), "{error}");
    }
}
