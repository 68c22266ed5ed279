//! The application manifest: TOML in, a checked [`Manifest`] out.
//!
//! This module owns the manifest's schema, its parsing (syntax errors point at
//! `file:line:column`, schema errors name the field's dotted path) and the checks
//! that need nothing but the manifest itself: names, references between
//! components, links and bindings, duplicate addresses. Checks that need the
//! components' own types (do the link's two sides agree?) live in
//! [`crate::runtime`] and [`crate::links`]. See `docs/manifest.md`.

pub mod adaptive;
pub mod outbound;
pub mod route;
pub mod spin;
pub mod subject;

pub use adaptive::AdaptiveSpec;
pub use outbound::AllowedHosts;
pub use route::RoutePattern;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Default per-call deadline of a component, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default memory cap of one component instance, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 64;
/// Default cap on live instances of one component on one host.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;
/// The most requests one instance may serve at once (`concurrency`).
pub const MAX_CONCURRENCY: u32 = 1024;

/// Serde's default for fields that default to 1.
fn one() -> u32 {
    1
}

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
    /// `[nats]`: how to reach NATS, when a binding needs it.
    #[serde(default)]
    pub nats: NatsSpec,
    /// `[keyvalue.<bucket>]`: where each key-value bucket lives. A bucket
    /// granted to a component but not listed here is `embedded`.
    #[serde(default)]
    pub keyvalue: BTreeMap<String, BucketSpec>,
    /// `[adaptive]`: thresholds for starting a callee on a hot caller's host
    /// (components opt in with `may_run`). `None`: placement is static.
    #[serde(default)]
    pub adaptive: Option<AdaptiveSpec>,
}

/// `[keyvalue.<bucket>]`: one key-value bucket of the app.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSpec {
    /// Where its data lives.
    #[serde(default)]
    pub backend: KvBackend,
}

/// Where a key-value bucket's data lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// A redb file in the host's data directory: one host's data.
    #[default]
    Embedded,
    /// The lattice's JetStream KV: every host of the lattice sees it.
    Nats,
}

impl KvBackend {
    /// Its name in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            KvBackend::Embedded => "embedded",
            KvBackend::Nats => "nats",
        }
    }
}

/// `[components.<name>] keyvalue = { buckets = [...] }`: the key-value
/// buckets a component may open (`wasi:keyvalue/store.open`); none by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyValueGrant {
    /// Bucket names: letters, digits, `-` and `_`.
    pub buckets: Vec<String>,
}

/// `[nats]`: connection settings. Each maps onto one `async_nats::ConnectOptions`
/// builder call. `--nats URL` on the command line overrides `urls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSpec {
    /// Server URLs; the client fails over between them.
    pub urls: Vec<String>,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password (with `user`).
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// A `.creds` file (JWT + NKey seed), relative to the manifest.
    pub creds: Option<PathBuf>,
    /// A file holding a user NKey seed (`SU...`), relative to the manifest.
    pub nkey: Option<PathBuf>,
    /// Servers each stream this process creates is kept on: KV buckets,
    /// object store, event log, queue streams (1 to 5; default 1).
    pub replicas: Option<usize>,
    /// The JetStream domain to use (a host on a leaf node reaching the
    /// hub's JetStream, `jetstream { domain: ... }` on the hub).
    pub jetstream_domain: Option<String>,
    /// Require TLS even if the server does not ask for it.
    pub require_tls: bool,
    /// PEM file of root certificates to trust, relative to the manifest.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (with `tls_key`) for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM client key (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
}

/// `[app]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// The app's name: letters, digits, `-` and `_`.
    pub name: String,
    /// Where the hosts of a lattice get the bytes of `oci://` components.
    #[serde(default)]
    pub artifacts: ArtifactsFrom,
    /// How links between components placed on one host are made
    /// (`[[links]] mode` overrides it per link).
    #[serde(default)]
    pub links: LinkMode,
}

/// `[app] links` and `[[links]] mode`: how a call link whose two ends run
/// on one host is made (docs/manifest.md argues the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    /// The host composes the caller and its callee into one component at
    /// load: a call between them is a call inside one instance.
    #[default]
    Composed,
    /// Each component keeps its own instance and store; the host forwards
    /// every call between them.
    Dynamic,
}

/// `[app] artifacts`: where a lattice's hosts get `oci://` components.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactsFrom {
    /// Each host pulls from the registry (the default).
    #[default]
    Registry,
    /// `membrane ctl apply` copies manifest and component into the
    /// lattice's object store; hosts never speak to the registry.
    Lattice,
}

/// `[components.<name>]`: one component and how it may run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Path of the `.wasm` component, relative to the manifest's directory;
    /// `sha256:<hex>`, an artifact in the lattice's object store; or
    /// `oci://REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`, an OCI artifact.
    pub source: PathBuf,
    /// Values the component reads through `wasi:config/store`.
    #[serde(default)]
    pub config: BTreeMap<String, ConfigValue>,
    /// Label selector: the component runs on hosts whose labels include all of these.
    #[serde(default)]
    pub placement: BTreeMap<String, String>,
    /// Replicas across matching hosts: that many of the hosts whose labels
    /// match run it. `None`: every matching host runs it.
    #[serde(default)]
    pub instances: Option<u32>,
    /// Label selector of where the component *may* run, wider than
    /// `placement` (`{}`: any host): with `[adaptive]`, a hot caller's host
    /// may start an extra replica for its own calls. `None`: only where
    /// `placement` says.
    #[serde(default)]
    pub may_run: Option<BTreeMap<String, String>>,
    /// Instance strategy: the calls one instance may serve before it is
    /// replaced. 0 (the default) gives every call a fresh instance; more
    /// keeps healthy instances between calls, so guest state survives them.
    #[serde(default)]
    pub reuse: u32,
    /// Requests one instance may serve at once. 1 (the default): one at a
    /// time. More needs a WASI 0.3 HTTP handler (its calls are async) and
    /// `reuse` (the requests share the instance's memory); `reuse` then
    /// counts every request the instance serves.
    #[serde(default = "one")]
    pub concurrency: u32,
    /// Per-call limits.
    #[serde(default)]
    pub limits: Limits,
    /// WASI capabilities granted beyond the defaults (clocks, random, stdio).
    #[serde(default)]
    pub wasi: WasiGrants,
    /// Where outgoing HTTP requests and sockets may go (see
    /// [`outbound`]); empty, the default, allows nothing.
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// The key-value buckets it may open; none by default.
    #[serde(default)]
    pub keyvalue: KeyValueGrant,
    /// How to build the component from its sources, for `membrane dev`
    /// only: `membrane up` and the lattice ignore it, and `membrane ctl
    /// apply` does not store it.
    #[serde(default)]
    pub build: Option<BuildSpec>,
}

/// `[components.<name>] build = { command = "...", watch = [...] }`: how
/// `membrane dev` builds the component and which files it watches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// A shell command (run with `sh -c` in `workdir`) that writes the
    /// component's `source`.
    pub command: String,
    /// Globs of the files whose change means a rebuild, relative to
    /// `workdir` (`src/**/*.rs`, `Cargo.toml`). `target/` is never watched.
    /// Empty: built once at start, never rebuilt.
    #[serde(default)]
    pub watch: Vec<String>,
    /// Where the command runs and the globs are rooted; relative to the
    /// manifest's directory, which is the default.
    pub workdir: Option<PathBuf>,
}

impl BuildSpec {
    /// What is wrong with the build table of component `name`, each
    /// problem naming its field.
    fn problems(&self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.command.trim().is_empty() {
            problems.push(format!("components.{name}.build.command: must not be empty"));
        }
        for (i, glob) in self.watch.iter().enumerate() {
            let field = format!("components.{name}.build.watch[{i}]");
            if let Err(why) = check_watch_glob(glob) {
                problems.push(format!("{field}: {glob:?} {why}"));
            }
        }
        problems
    }
}

/// Whether `glob` can be a `build.watch` entry: a valid glob, relative to
/// the workdir, not reaching out of it.
pub fn check_watch_glob(glob: &str) -> Result<globset::Glob, String> {
    if glob.trim().is_empty() {
        return Err("is empty".into());
    }
    if glob.starts_with('/') || glob.starts_with('\\') || Path::new(glob).is_absolute() {
        return Err("must be relative to build.workdir".into());
    }
    if glob.split(['/', '\\']).any(|part| part == "..") {
        return Err("must not leave build.workdir (`..`): set build.workdir to a common parent instead".into());
    }
    globset::GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map_err(|e| format!("is not a glob: {}", e.kind()))
}

impl ComponentSpec {
    /// The digest when `source` names a lattice artifact (`sha256:<hex>`).
    pub fn digest_source(&self) -> Option<&str> {
        self.source.to_str().filter(|s| is_digest(s))
    }

    /// The reference when `source` names an OCI artifact (`oci://...`)
    /// that parses; [`Manifest::load`] refuses one that does not.
    pub fn oci_source(&self) -> Option<crate::registry::Reference> {
        let text = self.source.to_str()?;
        crate::registry::Reference::is_oci(text)
            .then(|| crate::registry::Reference::parse(text).ok())
            .flatten()
    }

    /// Whether `source` is a file path (neither a digest nor an OCI reference).
    pub fn is_file_source(&self) -> bool {
        self.digest_source().is_none() && !self.source.to_str().is_some_and(crate::registry::Reference::is_oci)
    }

    /// Whether `source` pins exact bytes: a digest, or an OCI reference with one.
    pub fn is_pinned_source(&self) -> bool {
        self.digest_source().is_some() || self.oci_source().is_some_and(|r| r.digest.is_some())
    }

    /// `allowed_outbound_hosts` parsed; each problem names
    /// `components.<name>.allowed_outbound_hosts[i]`.
    pub fn outbound_hosts(&self, name: &str) -> Result<AllowedHosts, Vec<String>> {
        AllowedHosts::parse(
            &format!("components.{name}.allowed_outbound_hosts"),
            &self.allowed_outbound_hosts,
        )
    }
}

pub use crate::registry::reference::is_sha256 as is_digest;

/// A config or environment value: strings as they are; numbers and booleans
/// are accepted and turned into their TOML text, since `wasi:config` only
/// carries strings; `{ secret = "NAME" }` is resolved on the host that runs
/// the component, so the value itself never appears in the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// A secret held by the host (`runtime::secrets`).
    Secret(SecretRef),
    /// A string value.
    String(String),
    /// An integer, stored as its decimal text.
    Integer(i64),
    /// A float, stored as its text.
    Float(f64),
    /// A boolean, stored as `true` / `false`.
    Bool(bool),
}

/// `{ secret = "NAME" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The secret's name: letters, digits and `_`.
    pub secret: String,
}

impl ConfigValue {
    /// The value as `wasi:config` hands it to the guest. A secret must have
    /// been resolved before (`runtime::secrets::resolve`); unresolved, it is
    /// empty.
    pub fn as_config_string(&self) -> String {
        match self {
            ConfigValue::Secret(_) => String::new(),
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
    /// Environment variables the guest sees (a value may be a secret).
    pub env: BTreeMap<String, ConfigValue>,
    /// Preopened directories: guest path = host path (relative to the manifest).
    pub dirs: BTreeMap<String, PathBuf>,
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
    /// Deadline of one call over this link when it crosses hosts, in
    /// milliseconds; default: whatever is left of the caller's deadline.
    pub timeout_ms: Option<u64>,
    /// How calls reach `to`: a call and its answer (default), or queued.
    #[serde(default)]
    pub delivery: Delivery,
    /// Overrides `[app] links` for this link.
    pub mode: Option<LinkMode>,
}

impl LinkSpec {
    /// How this link is made when both ends run on one host, in `app`.
    pub fn mode(&self, app: &AppSection) -> LinkMode {
        self.mode.unwrap_or(app.links)
    }
}

/// `links[].delivery`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// The caller waits for the answer: in process, or a NATS request.
    #[default]
    Call,
    /// One way, at least once: each call is stored in the JetStream stream of
    /// `to`'s `queue` binding for the function, and the caller goes on.
    Queue,
}

/// `[[bindings]]`: a medium delivering calls to a component. The manifest
/// knows what every binding has (its medium's name, its component, the
/// export of a function-level medium); the rest of the table belongs to the
/// medium it names, which parses and checks it (`transports`, one file per
/// medium). The manifest layer so knows no transport, and a new medium
/// touches nothing here.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingSpec {
    /// `medium = "..."`: the medium's name.
    pub medium: String,
    /// `component = "..."`: the component it delivers to.
    pub component: String,
    /// `export = "pkg:ns/iface@version#function"`, for function-level media.
    pub export: Option<String>,
    /// The whole table as written, for the medium to parse.
    pub table: toml::Table,
    /// The manifest's directory when it was loaded from a file: the
    /// medium resolves relative paths against it.
    pub base: Option<PathBuf>,
}

impl BindingSpec {
    /// The component the binding delivers to.
    pub fn component(&self) -> &str {
        &self.component
    }

    /// The exported function (`interface#function`) for function-level media.
    pub fn export(&self) -> Option<&str> {
        self.export.as_deref()
    }
}

impl<'de> Deserialize<'de> for BindingSpec {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let table = toml::Table::deserialize(de)?;
        let text = |key: &str| match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(D::Error::custom(format!(
                "{key}: expected a string, found {}",
                other.type_str()
            ))),
        };
        let medium = text("medium")?.ok_or_else(|| D::Error::missing_field("medium"))?;
        let component = text("component")?.ok_or_else(|| D::Error::missing_field("component"))?;
        let export = text("export")?;
        Ok(BindingSpec {
            medium,
            component,
            export,
            table,
            base: None,
        })
    }
}

/// Splits `pkg:ns/iface@1.0.0#func` into interface and function.
pub fn split_export(export: &str) -> Option<(&str, &str)> {
    export
        .rsplit_once('#')
        .filter(|(iface, func)| is_interface_name(iface) && !func.is_empty())
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
    /// `dirs` paths are resolved against the manifest's directory. Its
    /// bindings are checked by their media only by [`Self::load_with`]
    /// (`transports::load`).
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        Self::load_with(path, &spin::Settings::default(), |_| Vec::new())
    }

    /// [`Self::load`], a Spin manifest read with `settings`, with `more`
    /// adding the problems that layers above the manifest find (the media's
    /// checks of their bindings).
    pub fn load_with(
        path: &Path,
        settings: &spin::Settings,
        more: impl Fn(&Manifest) -> Vec<String>,
    ) -> Result<Manifest, ManifestError> {
        let (text, origin) = Self::read_text(path, settings)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut manifest = parse_membrane(&text, &origin)?.checked(&origin, more)?;
        manifest.resolve_paths(base);
        Ok(manifest)
    }

    /// The Membrane manifest text of the file at `path`, and the name its
    /// errors give it: the file's own text; a Spin manifest translated
    /// (with `settings`); or an overlay's Spin manifest translated, with the
    /// overlay merged over it. Relative paths stay relative to `path`.
    pub fn read_text(path: &Path, settings: &spin::Settings) -> Result<(String, String), ManifestError> {
        let origin = path.display().to_string();
        let text = read_file(path)?;
        if spin::is_spin(&text) {
            let translated = translate_spin(&text, &origin, settings, None)?;
            return Ok((
                translated.to_string(),
                format!("{origin} (a Spin manifest, translated)"),
            ));
        }
        if !spin::is_overlay(&text) {
            return Ok((text, origin));
        }
        let invalid = |problems| ManifestError::Invalid {
            path: format!("{origin} (an overlay on a Spin manifest)"),
            problems,
        };
        let overlay = spin::Overlay::read(toml_table(&text, &origin)?).map_err(invalid)?;
        let spin_path = path.parent().unwrap_or(Path::new(".")).join(&overlay.spin);
        let spin_origin = spin_path.display().to_string();
        let spin_text = read_file(&spin_path)?;
        if !spin::is_spin(&spin_text) {
            return Err(invalid(vec![format!(
                "spin: {spin_origin} is not a Spin manifest (it sets no `spin_manifest_version`)"
            )]));
        }
        let translated = translate_spin(&spin_text, &spin_origin, settings, overlay.listen.as_deref())?;
        let merged = overlay.merge(translated).map_err(invalid)?;
        Ok((
            merged.to_string(),
            format!("{origin} (an overlay on {spin_origin}, merged)"),
        ))
    }

    /// Parses and checks manifest text; `origin` names it in errors. Paths stay
    /// as written. Its bindings are checked by their media only by
    /// [`Self::parse_with`] (`transports::parse`).
    pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
        Self::parse_with(text, origin, |_| Vec::new())
    }

    /// [`Self::parse`], with `more` adding the problems that layers above
    /// the manifest find.
    pub fn parse_with(
        text: &str,
        origin: &str,
        more: impl Fn(&Manifest) -> Vec<String>,
    ) -> Result<Manifest, ManifestError> {
        parse_toml(text, origin)?.checked(origin, more)
    }

    /// The manifest if it has no problem, else every problem together.
    fn checked(self, origin: &str, more: impl Fn(&Manifest) -> Vec<String>) -> Result<Manifest, ManifestError> {
        let mut problems = self.problems();
        problems.extend(more(&self));
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ManifestError::Invalid {
                path: origin.to_string(),
                problems,
            })
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let nats = &mut self.nats;
        for path in [
            &mut nats.creds,
            &mut nats.nkey,
            &mut nats.tls_ca,
            &mut nats.tls_cert,
            &mut nats.tls_key,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        for binding in &mut self.bindings {
            binding.base = Some(base.to_path_buf());
        }
        for spec in self.components.values_mut() {
            if spec.source.is_relative() && spec.is_file_source() {
                spec.source = base.join(&spec.source);
            }
            for host in spec.wasi.dirs.values_mut() {
                if host.is_relative() {
                    *host = base.join(&*host);
                }
            }
            if let Some(build) = &mut spec.build {
                let dir = build.workdir.take().unwrap_or_default();
                build.workdir = Some(if dir.is_relative() { base.join(dir) } else { dir });
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
        self.component_problems(&mut problems);
        if let Some(adaptive) = &self.adaptive {
            problems.extend(adaptive.problems());
        }
        self.keyvalue_problems(&mut problems);
        self.link_problems(&mut problems);
        self.binding_problems(&mut problems);
        problems
    }

    /// The backend of bucket `bucket`: as `[keyvalue.<bucket>]` says, else
    /// embedded.
    pub fn bucket_backend(&self, bucket: &str) -> KvBackend {
        self.keyvalue.get(bucket).map(|b| b.backend).unwrap_or_default()
    }

    /// Bucket names in grants and in the `[keyvalue]` table.
    fn keyvalue_problems(&self, problems: &mut Vec<String>) {
        for (name, spec) in &self.components {
            let mut seen = std::collections::BTreeSet::new();
            for (i, bucket) in spec.keyvalue.buckets.iter().enumerate() {
                if !is_bucket_name(bucket) {
                    problems.push(format!(
                        "components.{name}.keyvalue.buckets[{i}]: {bucket:?} must be 1 to 64 letters, digits, `-` or `_`"
                    ));
                }
                if !seen.insert(bucket) {
                    problems.push(format!(
                        "components.{name}.keyvalue.buckets[{i}]: {bucket:?} is listed twice"
                    ));
                }
            }
        }
        for bucket in self.keyvalue.keys() {
            if !is_bucket_name(bucket) {
                problems.push(format!(
                    "keyvalue.{bucket}: a bucket name must be 1 to 64 letters, digits, `-` or `_`"
                ));
            }
        }
    }

    /// The known component names, for messages.
    fn known(&self) -> String {
        self.components.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    fn component_problems(&self, problems: &mut Vec<String>) {
        for (name, spec) in &self.components {
            if !is_name(name) {
                problems.push(format!(
                    "components.{name}: a component name must be letters, digits, `-` or `_`"
                ));
            }
            if spec.limits.timeout_ms == 0 {
                problems.push(format!("components.{name}.limits.timeout_ms: must be at least 1"));
            }
            if spec.limits.memory_mib == 0 || spec.limits.memory_mib > 4096 {
                problems.push(format!("components.{name}.limits.memory_mib: must be 1..=4096"));
            }
            if spec.concurrency == 0 || spec.concurrency > MAX_CONCURRENCY {
                problems.push(format!("components.{name}.concurrency: must be 1..={MAX_CONCURRENCY}"));
            } else if spec.concurrency > 1 && spec.reuse < spec.concurrency {
                problems.push(format!(
                    "components.{name}.concurrency: {} requests at once share one instance, so set `reuse` to at least {} (it is {})",
                    spec.concurrency, spec.concurrency, spec.reuse
                ));
            }
            if spec.limits.max_instances == 0 {
                problems.push(format!("components.{name}.limits.max_instances: must be at least 1"));
            }
            if let Some(text) = spec.source.to_str()
                && text.starts_with("sha256:")
                && !is_digest(text)
            {
                problems.push(format!(
                    "components.{name}.source: {text:?} is not a digest (`sha256:` and 64 lower-case hex digits)"
                ));
            }
            if let Some(text) = spec.source.to_str()
                && crate::registry::Reference::is_oci(text)
                && let Err(why) = crate::registry::Reference::parse(text)
            {
                problems.push(format!("components.{name}.source: {text:?}: {why}"));
            }
            if spec.instances == Some(0) {
                problems.push(format!("components.{name}.instances: must be at least 1"));
            }
            let values = spec.config.iter().map(|(k, v)| ("config", k, v));
            for (table, key, value) in values.chain(spec.wasi.env.iter().map(|(k, v)| ("wasi.env", k, v))) {
                if let ConfigValue::Secret(s) = value
                    && (s.secret.is_empty() || !s.secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                {
                    problems.push(format!(
                        "components.{name}.{table}.{key}: secret {:?}: a secret's name is letters, digits and `_`",
                        s.secret
                    ));
                }
            }
            if let Err(bad) = spec.outbound_hosts(name) {
                problems.extend(bad);
            }
            if let Some(build) = &spec.build {
                problems.extend(build.problems(name));
            }
            if let Some(may_run) = &spec.may_run {
                problems.extend(adaptive::may_run_problems(name, may_run, &spec.placement));
                for bucket in &spec.keyvalue.buckets {
                    if self.bucket_backend(bucket) == KvBackend::Embedded {
                        problems.push(format!(
                            "components.{name}.may_run: bucket `{bucket}` is embedded (one host's data), so a replica \
                             on another host would see other data: make it `[keyvalue.{bucket}] backend = \"nats\"`, or drop may_run"
                        ));
                    }
                }
            }
        }
    }

    fn link_problems(&self, problems: &mut Vec<String>) {
        let mut seen_links = BTreeMap::new();
        for (i, link) in self.links.iter().enumerate() {
            for (field, value) in [("from", &link.from), ("to", &link.to)] {
                if !self.components.contains_key(value) {
                    problems.push(format!(
                        "links[{i}].{field}: unknown component `{value}` (known: {})",
                        self.known()
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
                problems.push(format!("links[{i}]: component `{}` cannot link to itself", link.from));
            }
            if link.delivery == Delivery::Queue && link.mode == Some(LinkMode::Composed) {
                problems.push(format!(
                    "links[{i}].mode: a queued link stores its calls in a stream, so it is never composed (remove `mode`)"
                ));
            }
            if let Some(first) = seen_links.insert((&link.from, &link.import), i) {
                problems.push(format!(
                    "links[{i}]: `{}` import `{}` is already linked by links[{first}]",
                    link.from, link.import
                ));
            }
        }
    }

    fn binding_problems(&self, problems: &mut Vec<String>) {
        for (i, binding) in self.bindings.iter().enumerate() {
            let component = binding.component();
            if !self.components.contains_key(component) {
                problems.push(format!(
                    "bindings[{i}].component: unknown component `{component}` (known: {})",
                    self.known()
                ));
            }
            if let Some(export) = binding.export()
                && split_export(export).is_none()
            {
                problems.push(format!(
                    "bindings[{i}].export: {export:?} is not `pkg:ns/iface@version#function`"
                ));
            }
        }
    }
}

/// Parses manifest text: a Membrane manifest, or a Spin manifest read with
/// default settings (no environment).
fn parse_toml(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
    if spin::is_spin(text) {
        let translated = translate_spin(text, origin, &spin::Settings::default(), None)?;
        return parse_membrane(
            &translated.to_string(),
            &format!("{origin} (a Spin manifest, translated)"),
        );
    }
    parse_membrane(text, origin)
}

/// The file at `path`, as text.
fn read_file(path: &Path) -> Result<String, ManifestError> {
    std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// `text` as a TOML table, a syntax error located in `origin`.
fn toml_table(text: &str, origin: &str) -> Result<toml::Table, ManifestError> {
    text.parse().map_err(|e: toml::de::Error| ManifestError::Parse {
        location: located(text, origin, &e),
        message: format!("syntax error: {}", e.message()),
    })
}

/// The Membrane manifest of Spin manifest `text` (named `origin`), its
/// HTTP triggers on `settings`' address, else `listen`, else Spin's default.
fn translate_spin(
    text: &str,
    origin: &str,
    settings: &spin::Settings,
    listen: Option<&str>,
) -> Result<toml::Table, ManifestError> {
    let table = toml_table(text, origin)?;
    let listen = settings.listen.as_deref().or(listen).unwrap_or(spin::LISTEN);
    spin::translate(&table, listen, &settings.provided).map_err(|problems| ManifestError::Invalid {
        path: format!("{origin} (a Spin manifest)"),
        problems,
    })
}

/// Where `err` is in `text`: `origin:line:column`, or `origin`.
fn located(text: &str, origin: &str, err: &toml::de::Error) -> String {
    match err.span() {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("{origin}:{line}:{column}")
        }
        None => origin.to_string(),
    }
}

/// Parses a Membrane manifest's TOML; `origin` names it in errors.
fn parse_membrane(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
    let located = |err: &toml::de::Error| located(text, origin, err);
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

/// A key-value bucket's name: a name of at most 64 characters.
fn is_bucket_name(s: &str) -> bool {
    s.len() <= 64 && is_name(s)
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
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
        assert!(rater.allowed_outbound_hosts.is_empty());
        assert_eq!(m.links.len(), 1);
    }

    #[test]
    fn concurrency_needs_reuse_and_a_bound() {
        let with = |extra: &str| {
            GOOD.replace(
                "source = \"gateway.wasm\"",
                &format!("source = \"gateway.wasm\"\n{extra}"),
            )
        };
        assert_eq!(
            Manifest::parse(GOOD, "app.toml").unwrap().components["gateway"].concurrency,
            1
        );
        let cases = [
            ("concurrency = 8\nreuse = 100", None),
            ("concurrency = 8\nreuse = 8", None),
            (
                "concurrency = 0",
                Some("components.gateway.concurrency: must be 1..=1024"),
            ),
            ("concurrency = 5000\nreuse = 9000", Some("must be 1..=1024")),
            ("concurrency = 8", Some("set `reuse` to at least 8 (it is 0)")),
            (
                "concurrency = 8\nreuse = 4",
                Some("set `reuse` to at least 8 (it is 4)"),
            ),
        ];
        for (extra, problem) in cases {
            match (Manifest::parse(&with(extra), "app.toml"), problem) {
                (Ok(m), None) => assert_eq!(m.components["gateway"].concurrency, 8),
                (Err(e), Some(p)) => assert!(e.to_string().contains(p), "{extra}: {e}"),
                (got, want) => panic!("{extra}: got {:?}, want {want:?}", got.map(|_| ())),
            }
        }
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = parse_err("[app]\nname = \"x\"\n[components.a\nsource = 1\n");
        assert!(err.starts_with("app.toml:3:"), "{err}");
        assert!(err.contains("syntax error"), "{err}");
    }

    #[test]
    fn unknown_field_names_its_path_and_line() {
        let text = GOOD.replace("source = \"rater.wasm\"", "source = \"rater.wasm\"\npalcement = {}");
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
    fn link_to_unknown_component_names_field_and_known_components() {
        let err = parse_err(&GOOD.replace("to = \"rater\"", "to = \"ratr\""));
        assert!(err.contains("links[0].to: unknown component `ratr`"), "{err}");
        assert!(err.contains("gateway, rater"), "{err}");
    }

    #[test]
    fn duplicate_link_and_bad_interface_are_reported_together() {
        let text = format!(
            "{GOOD}\n[[links]]\nfrom = \"gateway\"\nimport = \"example:insurance/rater@0.1.0\"\nto = \"rater\"\n\n[[links]]\nfrom = \"rater\"\nimport = \"pricing\"\nto = \"gateway\"\n"
        );
        let err = parse_err(&text);
        assert!(
            err.contains("links[1]: `gateway` import `example:insurance/rater@0.1.0` is already linked by links[0]"),
            "{err}"
        );
        assert!(err.contains("links[2].import"), "{err}");
    }

    #[test]
    fn outbound_hosts_are_checked_and_old_grants_are_gone() {
        let text = GOOD.replace(
            "source = \"rater.wasm\"",
            "source = \"rater.wasm\"\nallowed_outbound_hosts = [\"https://api.example.com\", \"db:*:1\"]",
        );
        let err = parse_err(&text);
        assert!(
            err.contains("components.rater.allowed_outbound_hosts[1]: \"db:*:1\""),
            "{err}"
        );
        assert!(!err.contains("allowed_outbound_hosts[0]"), "{err}");
        let err = parse_err(&GOOD.replace(
            "source = \"rater.wasm\"",
            "source = \"rater.wasm\"\nwasi = { network = true }",
        ));
        assert!(err.contains("unknown field `network`"), "{err}");
    }

    #[test]
    fn keyvalue_grants_and_buckets_are_checked() {
        let text = GOOD.replace(
            "source = \"rater.wasm\"",
            "source = \"rater.wasm\"\nkeyvalue = { buckets = [\"counts\", \"a.b\", \"counts\"] }",
        );
        let err = parse_err(&format!("{text}\n[keyvalue.\"x y\"]\nbackend = \"nats\"\n"));
        assert!(err.contains("components.rater.keyvalue.buckets[1]: \"a.b\""), "{err}");
        assert!(
            err.contains("components.rater.keyvalue.buckets[2]: \"counts\" is listed twice"),
            "{err}"
        );
        assert!(err.contains("keyvalue.x y: a bucket name"), "{err}");
        let err = parse_err(&format!("{GOOD}\n[keyvalue.counts]\nbackend = \"redis\"\n"));
        assert!(
            err.contains("keyvalue.counts.backend") && err.contains("redis"),
            "{err}"
        );
        let text = GOOD.replace(
            "source = \"rater.wasm\"",
            "source = \"rater.wasm\"\nkeyvalue = { buckets = [\"counts\", \"cache\"] }",
        );
        let m = Manifest::parse(&format!("{text}\n[keyvalue.counts]\nbackend = \"nats\"\n"), "app.toml").unwrap();
        assert_eq!(m.bucket_backend("counts"), KvBackend::Nats);
        assert_eq!(m.bucket_backend("cache"), KvBackend::Embedded);
    }

    #[test]
    fn build_tables_are_checked_field_by_field() {
        let with = |build: &str| {
            GOOD.replace(
                "source = \"rater.wasm\"",
                &format!("source = \"rater.wasm\"\nbuild = {build}"),
            )
        };
        let m = Manifest::parse(
            &with(r#"{ command = "cargo build", watch = ["src/**/*.rs", "Cargo.toml"], workdir = "rater" }"#),
            "app.toml",
        )
        .unwrap();
        let build = m.components["rater"].build.as_ref().unwrap();
        assert_eq!(build.watch.len(), 2);
        assert!(m.components["gateway"].build.is_none());
        let err = parse_err(&with(
            r#"{ command = " ", watch = ["/etc/*", "../x/*.rs", "src/[", ""] }"#,
        ));
        for expected in [
            "components.rater.build.command: must not be empty",
            "components.rater.build.watch[0]: \"/etc/*\" must be relative",
            "components.rater.build.watch[1]: \"../x/*.rs\" must not leave build.workdir",
            "components.rater.build.watch[2]: \"src/[\" is not a glob",
            "components.rater.build.watch[3]: \"\" is empty",
        ] {
            assert!(err.contains(expected), "{expected}: {err}");
        }
        let err = parse_err(&with(r#"{ command = "make", watchh = [] }"#));
        assert!(err.contains("unknown field `watchh`"), "{err}");
        let err = parse_err(&with(r#"{ watch = [] }"#));
        assert!(
            err.contains("components.rater") && err.contains("missing field `command`"),
            "{err}"
        );
    }

    #[test]
    fn a_build_workdir_resolves_against_the_manifest_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.toml");
        let text = GOOD
            .replace(
                "source = \"rater.wasm\"",
                "source = \"rater.wasm\"\nbuild = { command = \"make\", workdir = \"rater\" }",
            )
            .replace(
                "source = \"gateway.wasm\"",
                "source = \"gateway.wasm\"\nbuild = { command = \"make\" }",
            );
        std::fs::write(&path, text).unwrap();
        let m = Manifest::load(&path).unwrap();
        let workdir = |c: &str| m.components[c].build.as_ref().unwrap().workdir.clone().unwrap();
        assert_eq!(workdir("rater"), dir.path().join("rater"));
        assert_eq!(workdir("gateway"), dir.path().join(""));
    }

    #[test]
    fn relative_sources_resolve_against_the_manifest_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.toml");
        std::fs::write(&path, GOOD).unwrap();
        let m = Manifest::load(&path).unwrap();
        assert_eq!(m.components["gateway"].source, dir.path().join("gateway.wasm"));
    }
}
