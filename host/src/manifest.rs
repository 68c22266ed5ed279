//! The application manifest: TOML in, a checked [`Manifest`] out.
//!
//! This module owns the manifest's schema, its parsing (syntax errors point at
//! `file:line:column`, schema errors name the field's dotted path) and the checks
//! that need nothing but the manifest itself: names, references between
//! components, links and bindings, duplicate addresses. Checks that need the
//! components' own types (do the link's two sides agree?) live in
//! [`crate::runtime`] and [`crate::links`]. See `docs/manifest.md`.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default per-call deadline of a component, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default memory cap of one component instance, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 64;
/// Default cap on live instances of one component on one host.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// A parsed and checked application manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `[app]`: the application's identity.
    pub app: AppSection,
    /// `[components.<name>]`: every component of the app, by name.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentSpec>,
    /// `[[links]]`: which component serves which import of which other component.
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    /// `[[bindings]]`: which medium delivers calls to which export.
    #[serde(default)]
    pub bindings: Vec<BindingSpec>,
}

/// `[app]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// The app's name: letters, digits, `-` and `_`.
    pub name: String,
}

/// `[components.<name>]`: one component and how it may run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Path of the `.wasm` component, relative to the manifest's directory.
    pub source: PathBuf,
    /// Values the component reads through `wasi:config/store`.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// Label selector: the component runs on hosts whose labels include all of these.
    #[serde(default)]
    pub placement: BTreeMap<String, String>,
    /// Replicas across matching hosts (used by the lattice; one host runs one).
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// Per-call limits.
    #[serde(default)]
    pub limits: Limits,
    /// WASI capabilities granted beyond the defaults (clocks, random, stdio).
    #[serde(default)]
    pub wasi: WasiGrants,
}

fn default_instances() -> u32 {
    1
}

/// A config value: strings as they are; numbers and booleans are accepted and
/// turned into their TOML text, since `wasi:config` only carries strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// A string value.
    String(String),
    /// An integer, stored as its decimal text.
    Integer(i64),
    /// A float, stored as its text.
    Float(f64),
    /// A boolean, stored as `true` / `false`.
    Bool(bool),
}

impl ConfigValue {
    /// The value as `wasi:config` hands it to the guest.
    pub fn as_config_string(&self) -> String {
        match self {
            ConfigValue::String(s) => s.clone(),
            ConfigValue::Integer(i) => i.to_string(),
            ConfigValue::Float(f) => f.to_string(),
            ConfigValue::Bool(b) => b.to_string(),
        }
    }
}

/// `[components.<name>.limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Deadline of one call into the component, in milliseconds.
    pub timeout_ms: u64,
    /// Linear-memory cap of one instance, in MiB.
    pub memory_mib: u64,
    /// Most instances of this component alive at once on this host; a call
    /// beyond it fails at once as "at capacity" (HTTP 503).
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            memory_mib: DEFAULT_MEMORY_MIB,
            max_instances: DEFAULT_MAX_INSTANCES,
        }
    }
}

/// `[components.<name>.wasi]`: grants. Everything here is off by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WasiGrants {
    /// Environment variables the guest sees.
    pub env: BTreeMap<String, String>,
    /// Preopened directories: guest path = host path (relative to the manifest).
    pub dirs: BTreeMap<String, PathBuf>,
    /// Outgoing TCP/UDP sockets and name lookups.
    pub network: bool,
    /// Outgoing HTTP requests through `wasi:http/outgoing-handler`.
    pub outbound_http: bool,
}

/// `[[links]]`: `from`'s import `import` is served by component `to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// The importing component.
    pub from: String,
    /// The imported interface, e.g. `example:insurance/rater@0.1.0`.
    pub import: String,
    /// The component that exports `import`.
    pub to: String,
}

/// `[[bindings]]`: a medium delivering calls to a component.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "medium", rename_all = "kebab-case")]
pub enum BindingSpec {
    /// `medium = "http"`: the component's `wasi:http/incoming-handler` on a socket.
    Http(HttpBinding),
}

impl BindingSpec {
    /// The component the binding delivers to.
    pub fn component(&self) -> &str {
        match self {
            BindingSpec::Http(b) => &b.component,
        }
    }
}

/// `medium = "http"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBinding {
    /// Socket address to listen on; port 0 picks a free port (printed at start).
    #[serde(deserialize_with = "socket_addr")]
    pub address: SocketAddr,
    /// The component whose `wasi:http/incoming-handler` serves requests.
    pub component: String,
}

/// A manifest that failed to load, with the culprit named.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The manifest path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax or schema error, located in the file.
    #[error("{location}: {message}")]
    Parse {
        /// `file:line:column`, or `file` when the position is unknown.
        location: String,
        /// What went wrong, prefixed with the field path when known.
        message: String,
    },
    /// One or more consistency problems, each naming its field.
    #[error("{path}: invalid manifest:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// The manifest path.
        path: String,
        /// One line per problem.
        problems: Vec<String>,
    },
}

impl Manifest {
    /// Reads, parses and checks the manifest at `path`. Relative `source` and
    /// `dirs` paths are resolved against the manifest's directory.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut manifest = Self::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        manifest.resolve_paths(base);
        Ok(manifest)
    }

    /// Parses and checks manifest text; `origin` names it in errors. Paths stay
    /// as written.
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        let manifest = parse_toml(text, origin)?;
        let problems = manifest.problems();
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(ManifestError::Invalid {
                path: origin.to_string(),
                problems,
            })
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        for spec in self.components.values_mut() {
            if spec.source.is_relative() {
                spec.source = base.join(&spec.source);
            }
            for host in spec.wasi.dirs.values_mut() {
                if host.is_relative() {
                    *host = base.join(&*host);
                }
            }
        }
    }

    /// Consistency checks that need only the manifest.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !is_name(&self.app.name) {
            problems.push(format!(
                "app.name: {:?} must be non-empty letters, digits, `-` or `_`",
                self.app.name
            ));
        }
        if self.components.is_empty() {
            problems.push("components: the app has no components".to_string());
        }
        let known = || {
            self.components
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (name, spec) in &self.components {
            if !is_name(name) {
                problems.push(format!(
                    "components.{name}: a component name must be letters, digits, `-` or `_`"
                ));
            }
            if spec.limits.timeout_ms == 0 {
                problems.push(format!(
                    "components.{name}.limits.timeout_ms: must be at least 1"
                ));
            }
            if spec.limits.memory_mib == 0 || spec.limits.memory_mib > 4096 {
                problems.push(format!(
                    "components.{name}.limits.memory_mib: must be 1..=4096"
                ));
            }
            if spec.limits.max_instances == 0 {
                problems.push(format!(
                    "components.{name}.limits.max_instances: must be at least 1"
                ));
            }
            if spec.instances == 0 {
                problems.push(format!("components.{name}.instances: must be at least 1"));
            }
        }
        let mut seen_links = BTreeMap::new();
        for (i, link) in self.links.iter().enumerate() {
            for (field, value) in [("from", &link.from), ("to", &link.to)] {
                if !self.components.contains_key(value) {
                    problems.push(format!(
                        "links[{i}].{field}: unknown component `{value}` (known: {})",
                        known()
                    ));
                }
            }
            if !is_interface_name(&link.import) {
                problems.push(format!(
                    "links[{i}].import: {:?} is not an interface name like `pkg:ns/iface@1.0.0`",
                    link.import
                ));
            }
            if link.from == link.to {
                problems.push(format!(
                    "links[{i}]: component `{}` cannot link to itself",
                    link.from
                ));
            }
            if let Some(first) = seen_links.insert((&link.from, &link.import), i) {
                problems.push(format!(
                    "links[{i}]: `{}` import `{}` is already linked by links[{first}]",
                    link.from, link.import
                ));
            }
        }
        let mut addresses = BTreeMap::new();
        for (i, binding) in self.bindings.iter().enumerate() {
            let component = binding.component();
            if !self.components.contains_key(component) {
                problems.push(format!(
                    "bindings[{i}].component: unknown component `{component}` (known: {})",
                    known()
                ));
            }
            let BindingSpec::Http(http) = binding;
            if http.address.port() != 0
                && let Some(first) = addresses.insert(http.address, i)
            {
                problems.push(format!(
                    "bindings[{i}].address: {} is already bound by bindings[{first}]",
                    http.address
                ));
            }
        }
        problems
    }
}

/// A socket address whose error names the field: serde's internally tagged
/// enums (`medium = ...`) lose the inner field's path.
fn socket_addr<'de, D: serde::Deserializer<'de>>(de: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(de)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "address: {text:?} is not an ip:port socket address"
        ))
    })
}

fn parse_toml(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
    let located = |err: &toml::de::Error| match err.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("{origin}:{line}:{column}")
        }
        None => origin.to_string(),
    };
    let de = toml::de::Deserializer::parse(text).map_err(|e| ManifestError::Parse {
        location: located(&e),
        message: format!("syntax error: {}", e.message()),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner();
        let message = if path == "." || path.is_empty() {
            inner.message().to_string()
        } else {
            format!("{path}: {}", inner.message())
        };
        ManifestError::Parse {
            location: located(inner),
            message,
        }
    })
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `ns:pkg/iface` with an optional `@version`.
fn is_interface_name(s: &str) -> bool {
    let bare = s.split('@').next().unwrap_or_default();
    match bare.split_once(':') {
        Some((ns, rest)) => match rest.split_once('/') {
            Some((pkg, iface)) => !ns.is_empty() && !pkg.is_empty() && !iface.is_empty(),
            None => false,
        },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[app]
name = "insurance"

[components.gateway]
source = "gateway.wasm"

[components.rater]
source = "rater.wasm"
config = { currency = "EUR", "motor.base" = 420, ratio = 0.5 }

[[links]]
from = "gateway"
import = "example:insurance/rater@0.1.0"
to = "rater"

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "gateway"
"#;

    fn parse_err(text: &str) -> String {
        Manifest::parse(text, "app.toml").unwrap_err().to_string()
    }

    #[test]
    fn good_manifest_parses_with_defaults() {
        let m = Manifest::parse(GOOD, "app.toml").unwrap();
        assert_eq!(m.app.name, "insurance");
        let rater = &m.components["rater"];
        assert_eq!(rater.limits.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(rater.config["motor.base"].as_config_string(), "420");
        assert_eq!(rater.config["ratio"].as_config_string(), "0.5");
        assert!(!rater.wasi.network);
        assert_eq!(m.links.len(), 1);
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = parse_err("[app]\nname = \"x\"\n[components.a\nsource = 1\n");
        assert!(err.starts_with("app.toml:3:"), "{err}");
        assert!(err.contains("syntax error"), "{err}");
    }

    #[test]
    fn unknown_field_names_its_path_and_line() {
        let text = GOOD.replace(
            "source = \"rater.wasm\"",
            "source = \"rater.wasm\"\npalcement = {}",
        );
        let err = parse_err(&text);
        assert!(err.contains("components.rater"), "{err}");
        assert!(err.contains("unknown field `palcement`"), "{err}");
        assert!(err.starts_with("app.toml:10:"), "{err}");
    }

    #[test]
    fn missing_field_names_its_path() {
        let text = GOOD.replace("source = \"gateway.wasm\"", "");
        let err = parse_err(&text);
        assert!(err.contains("components.gateway"), "{err}");
        assert!(err.contains("missing field `source`"), "{err}");
    }

    #[test]
    fn bad_address_names_the_binding() {
        let err = parse_err(&GOOD.replace("127.0.0.1:0", "localhost:eighty"));
        assert!(
            err.contains("bindings[0]: address: \"localhost:eighty\" is not an ip:port"),
            "{err}"
        );
    }

    #[test]
    fn unknown_medium_is_named() {
        let err = parse_err(&GOOD.replace("medium = \"http\"", "medium = \"carrier-pigeon\""));
        assert!(err.contains("bindings[0]"), "{err}");
        assert!(err.contains("carrier-pigeon"), "{err}");
    }

    #[test]
    fn link_to_unknown_component_names_field_and_known_components() {
        let err = parse_err(&GOOD.replace("to = \"rater\"", "to = \"ratr\""));
        assert!(
            err.contains("links[0].to: unknown component `ratr`"),
            "{err}"
        );
        assert!(err.contains("gateway, rater"), "{err}");
    }

    #[test]
    fn duplicate_link_and_bad_interface_are_reported_together() {
        let text = format!(
            "{GOOD}\n[[links]]\nfrom = \"gateway\"\nimport = \"example:insurance/rater@0.1.0\"\nto = \"rater\"\n\n[[links]]\nfrom = \"rater\"\nimport = \"pricing\"\nto = \"gateway\"\n"
        );
        let err = parse_err(&text);
        assert!(err.contains("links[1]: `gateway` import `example:insurance/rater@0.1.0` is already linked by links[0]"), "{err}");
        assert!(err.contains("links[2].import"), "{err}");
    }

    #[test]
    fn relative_sources_resolve_against_the_manifest_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.toml");
        std::fs::write(&path, GOOD).unwrap();
        let m = Manifest::load(&path).unwrap();
        assert_eq!(
            m.components["gateway"].source,
            dir.path().join("gateway.wasm")
        );
    }
}
