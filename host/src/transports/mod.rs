//! Transports: the media that deliver calls to components, and the services
//! that answer on NATS.
//!
//! A medium is one file here implementing [`medium::Medium`]: its part of
//! the manifest (a binding's table), its checks, its NATS rights and host
//! files, bind and serve. This file is the registry ([`MEDIA`], one line
//! per medium) and plans, checks and binds a manifest's bindings through
//! it; [`parse`] and [`load`] are the manifest with its media checked.
//! Media hand calls to [`crate::runtime::dispatch`] and map a fault to
//! their own error form.

pub mod forward;
pub mod http;
pub mod http_rpc;
pub mod medium;
pub mod mqtt;
pub mod nats;
pub mod queue;
pub mod rpc;
pub mod schedule;
pub mod serve;
pub mod tls;

pub use medium::{BindContext, Medium, Rights, Service};

use crate::manifest::{BindingSpec, Manifest, ManifestError};
use crate::runtime::Runtime;
use crate::runtime::component::{Generation, Loaded};
use futures::future::BoxFuture;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The media: one line each.
pub const MEDIA: &[Entry] = &[
    entry::<http::HttpMedium>(),
    entry::<http_rpc::HttpRpcMedium>(),
    entry::<nats::NatsMedium>(),
    entry::<queue::QueueMedium>(),
    entry::<schedule::ScheduleMedium>(),
    entry::<mqtt::MqttMedium>(),
];

/// One medium as the registry sees it: its name, and its operations on a
/// binding's table.
pub struct Entry {
    /// `medium = "..."`.
    pub name: &'static str,
    /// Whether it needs the host's NATS connection.
    pub needs_nats: bool,
    problems: fn(&Manifest, &[usize]) -> Vec<String>,
    address: fn(&BindingSpec) -> Option<SocketAddr>,
    files: fn(&BindingSpec) -> Vec<(&'static str, PathBuf)>,
    rights: fn(&BindingSpec, &str, &str) -> Rights,
    group: fn(&BindingSpec) -> Option<(String, bool)>,
    check: fn(usize, &BindingSpec, &Loaded, Option<&Loaded>) -> Vec<String>,
    bind: Binder,
}

/// Binds the bindings at some positions of a manifest as one medium.
type Binder =
    for<'a> fn(&'a [usize], &'a Manifest, &'a BindContext<'a>) -> BoxFuture<'a, anyhow::Result<Box<dyn Service>>>;

/// The registry's entry of medium `M`.
pub const fn entry<M: Medium>() -> Entry {
    Entry {
        name: M::NAME,
        needs_nats: M::NEEDS_NATS,
        problems: problems_of::<M>,
        address: |b| spec::<M>(b).ok().and_then(|s| M::address(&s)),
        files: |b| spec::<M>(b).map(|s| M::files(&s)).unwrap_or_default(),
        rights: |b, app, lattice| spec::<M>(b).map(|s| M::rights(&s, app, lattice)).unwrap_or_default(),
        group: |b| {
            spec::<M>(b)
                .ok()
                .and_then(|s| M::shares(&s))
                .map(|key| (key, M::ROUTES_ELSEWHERE))
        },
        check: |i, b, new, old| match spec::<M>(b) {
            Ok(s) => M::check(i, &s, new, old),
            Err(e) => vec![format!("bindings[{i}]: {e}")],
        },
        bind: bind_of::<M>,
    }
}

/// The medium binding `binding` names, if there is one.
pub fn medium(binding: &BindingSpec) -> Option<&'static Entry> {
    MEDIA.iter().find(|m| m.name == binding.medium)
}

/// `binding`'s table as the spec of medium `M`, its relative paths
/// resolved; the error names the field.
pub fn spec<M: Medium>(binding: &BindingSpec) -> Result<M::Spec, String> {
    let mut table = binding.table.clone();
    table.remove("medium");
    let mut spec: M::Spec = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().message().to_string();
        // An unknown field's path is the field itself, which the message names.
        if path == "." || path.is_empty() || message.starts_with("unknown field") {
            message
        } else {
            format!("{path}: {message}")
        }
    })?;
    if let Some(base) = &binding.base {
        M::resolve(&mut spec, base);
    }
    Ok(spec)
}

/// The specs of every binding of medium `M` in `manifest`, with their
/// positions (those that do not parse are left out: [`problems`] names them).
pub fn specs<M: Medium>(manifest: &Manifest) -> Vec<(usize, M::Spec)> {
    manifest
        .bindings
        .iter()
        .enumerate()
        .filter(|(_, b)| b.medium == M::NAME)
        .filter_map(|(i, b)| spec::<M>(b).ok().map(|s| (i, s)))
        .collect()
}

fn problems_of<M: Medium>(manifest: &Manifest, positions: &[usize]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for &i in positions {
        match spec::<M>(&manifest.bindings[i]) {
            Ok(spec) => parsed.push((i, spec)),
            Err(e) => problems.push(format!("bindings[{i}]: {e}")),
        }
    }
    let refs: Vec<(usize, &M::Spec)> = parsed.iter().map(|(i, s)| (*i, s)).collect();
    problems.extend(M::problems(&refs, manifest));
    problems
}

fn bind_of<'a, M: Medium>(
    positions: &'a [usize],
    manifest: &'a Manifest,
    cx: &'a BindContext<'a>,
) -> BoxFuture<'a, anyhow::Result<Box<dyn Service>>> {
    Box::pin(async move {
        let mut parsed = Vec::new();
        for &i in positions {
            let spec = spec::<M>(&manifest.bindings[i]).map_err(|e| anyhow::anyhow!("bindings[{i}]: {e}"))?;
            parsed.push((i, spec));
        }
        let refs: Vec<(usize, &M::Spec)> = parsed.iter().map(|(i, s)| (*i, s)).collect();
        Ok(Box::new(M::bind(&refs, cx).await?) as Box<dyn Service>)
    })
}

/// What is wrong with `manifest`'s bindings as their media see them: an
/// unknown medium, a table its medium cannot parse, each medium's own
/// checks, two media on one address. Every problem, each naming its field.
pub fn problems(manifest: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_medium: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, binding) in manifest.bindings.iter().enumerate() {
        match medium(binding) {
            Some(m) => by_medium.entry(m.name).or_default().push(i),
            None => problems.push(format!(
                "bindings[{i}].medium: unknown medium `{}` (known: {})",
                binding.medium,
                MEDIA.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
            )),
        }
    }
    // Every medium, with or without bindings: a queue link needs a queue
    // binding even when there is none.
    for m in MEDIA {
        let positions = by_medium.get(m.name).map_or(&[][..], Vec::as_slice);
        problems.extend((m.problems)(manifest, positions));
    }
    // Bindings of one medium may share an address (one server, routed);
    // two media may not.
    let mut addresses: BTreeMap<SocketAddr, (usize, &str)> = BTreeMap::new();
    for (i, binding) in manifest.bindings.iter().enumerate() {
        let Some(m) = medium(binding) else { continue };
        if let Some(address) = (m.address)(binding).filter(|a| a.port() != 0) {
            let (first, name) = *addresses.entry(address).or_insert((i, m.name));
            if name != m.name {
                problems.push(format!(
                    "bindings[{i}].address: {address} is already bound by bindings[{first}], of another medium"
                ));
            }
        }
    }
    problems
}

/// Parses and checks manifest text, its bindings by their media; `origin`
/// names it in errors. Every problem is reported together.
pub fn parse(text: &str, origin: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse_with(text, origin, problems)
}

/// Reads, parses and checks the manifest at `path` (a Spin manifest, or an
/// overlay on one, read with `settings`), its bindings by their media.
pub fn load(path: &Path, settings: &crate::manifest::spin::Settings) -> Result<Manifest, ManifestError> {
    Manifest::load_with(path, settings, problems)
}

/// Whether `binding`'s medium needs a NATS connection.
pub fn needs_nats(binding: &BindingSpec) -> bool {
    medium(binding).is_some_and(|m| m.needs_nats)
}

/// The host files `binding` reads (TLS keys, say), each with its field:
/// what a host's policy must allow.
pub fn files(binding: &BindingSpec) -> Vec<(&'static str, PathBuf)> {
    medium(binding).map(|m| (m.files)(binding)).unwrap_or_default()
}

/// The NATS subjects each role needs for `binding` of app `app` in
/// `lattice`.
pub fn rights(binding: &BindingSpec, app: &str, lattice: &str) -> Rights {
    medium(binding)
        .map(|m| (m.rights)(binding, app, lattice))
        .unwrap_or_default()
}

/// One medium to bind, named by its whole configuration: a reconcile keeps a
/// running medium whose key is unchanged and rebinds only what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The medium's identity (its bindings' configuration).
    pub key: String,
    /// The manifest bindings it serves, by index.
    bindings: Vec<usize>,
}

impl Planned {
    /// Whether its medium needs the NATS connection.
    pub fn needs_nats(&self, manifest: &Manifest) -> bool {
        self.bindings
            .iter()
            .filter_map(|i| manifest.bindings.get(*i))
            .any(needs_nats)
    }
}

/// The media that serve the components in `here`: one per binding, except
/// that bindings whose medium shares them are planned together. A shared
/// medium that routes elsewhere (http) is planned with all its bindings
/// when any of their components is here; any other serves only those here.
pub fn plan(manifest: &Manifest, here: &BTreeSet<String>) -> Vec<Planned> {
    let mut groups: BTreeMap<String, (bool, Vec<usize>)> = BTreeMap::new();
    let mut planned = Vec::new();
    for (i, binding) in manifest.bindings.iter().enumerate() {
        let is_here = here.contains(binding.component());
        let Some(m) = medium(binding) else { continue };
        let group = (m.group)(binding);
        let elsewhere = group.as_ref().is_some_and(|(_, e)| *e);
        match group.map(|(key, _)| key) {
            Some(shared) if elsewhere => {
                let group = groups.entry(shared).or_default();
                group.0 |= is_here;
                group.1.push(i);
            }
            // Served on the hosts that run the component.
            _ if !is_here => {}
            Some(shared) => {
                let group = groups.entry(shared).or_default();
                group.0 = true;
                group.1.push(i);
            }
            None => planned.push(vec![i]),
        }
    }
    planned.extend(groups.into_values().filter(|(any_here, _)| *any_here).map(|(_, g)| g));
    planned
        .into_iter()
        .map(|bindings| {
            let key: Vec<String> = bindings.iter().map(|&i| binding_key(&manifest.bindings[i])).collect();
            Planned {
                key: key.join("\n"),
                bindings,
            }
        })
        .collect()
}

/// A binding's whole configuration as text: its medium, its table and the
/// directory its paths are relative to. Equal keys, equal media.
fn binding_key(binding: &BindingSpec) -> String {
    let table = toml::to_string(&binding.table).unwrap_or_default();
    let base = binding
        .base
        .as_deref()
        .map(|b| b.display().to_string())
        .unwrap_or_default();
    format!("{} [{}] {table}", binding.medium, base)
}

/// The components in `here` that other hosts' http listeners may forward
/// requests to: those routed on an address that also routes to another
/// component (a listener runs wherever any of its components does).
pub fn forwarded_to(manifest: &Manifest, here: &BTreeSet<String>) -> Vec<String> {
    let mut by_address: BTreeMap<std::net::SocketAddr, BTreeSet<&str>> = BTreeMap::new();
    let routed = specs::<http::HttpMedium>(manifest);
    for (_, http) in &routed {
        by_address.entry(http.address).or_default().insert(&http.component);
    }
    let mut components: BTreeSet<String> = BTreeSet::new();
    for group in by_address.values().filter(|g| g.len() > 1) {
        components.extend(group.iter().filter(|c| here.contains(**c)).map(|c| c.to_string()));
    }
    components.into_iter().collect()
}

/// Checks every binding of a component in `new` against its new version and
/// the version `current` runs now. Bindings of components placed elsewhere
/// are checked elsewhere.
pub fn check(manifest: &Manifest, new: &HashMap<Arc<str>, Arc<Loaded>>, current: &Generation) -> Vec<String> {
    // A manifest parsed without its media ([`Manifest::parse`]) is checked
    // by them here, before anything is committed.
    let mut problems = problems(manifest);
    if !problems.is_empty() {
        return problems;
    }
    for (i, binding) in manifest.bindings.iter().enumerate() {
        let Some(loaded) = new.get(binding.component()) else {
            continue;
        };
        let old = current.get(binding.component()).map(Arc::as_ref);
        if let Some(m) = medium(binding) {
            problems.extend((m.check)(i, binding, loaded, old));
        }
    }
    problems
}

/// Binds one planned medium.
pub async fn bind(planned: &Planned, manifest: &Manifest, cx: &BindContext<'_>) -> anyhow::Result<Box<dyn Service>> {
    let first = &manifest.bindings[planned.bindings[0]];
    let m = medium(first).ok_or_else(|| anyhow::anyhow!("unknown medium `{}`", first.medium))?;
    (m.bind)(&planned.bindings, manifest, cx).await
}

/// Binds every binding of `manifest` whose component runs in `runtime`.
/// Fails on the first that cannot bind.
pub async fn bind_all(
    manifest: &Manifest,
    runtime: &Arc<Runtime>,
    nats: Option<&async_nats::Client>,
) -> anyhow::Result<Vec<Box<dyn Service>>> {
    let here = runtime.loaded().iter().map(|c| c.name.to_string()).collect();
    let cx = BindContext {
        app: &manifest.app.name,
        manifest,
        runtime,
        nats,
        lattice: None,
    };
    let mut media = Vec::new();
    for planned in plan(manifest, &here) {
        media.push(bind(&planned, manifest, &cx).await?);
    }
    Ok(media)
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

[[bindings]]
medium = "http"
address = "127.0.0.1:0"
component = "gateway"
"#;

    fn parse_err(text: &str) -> String {
        parse(text, "app.toml").unwrap_err().to_string()
    }

    #[test]
    fn http_routes_on_one_address_are_checked_together() {
        let route = |component: &str, route: &str, extra: &str| {
            format!(
                "\n[[bindings]]\nmedium = \"http\"\naddress = \"127.0.0.1:8080\"\ncomponent = \"{component}\"\nroute = \"{route}\"\n{extra}"
            )
        };
        let shared = GOOD.to_string() + &route("gateway", "/api/...", "") + &route("rater", "/rate", "");
        assert!(parse(&shared, "app.toml").is_ok());
        let twice = GOOD.to_string() + &route("gateway", "/api/...", "") + &route("rater", "/api/...", "");
        let err = parse_err(&twice);
        assert!(
            err.contains(
                "bindings[2].route: `/api/...` on 127.0.0.1:8080 is already routed by bindings[1] (component `gateway`)"
            ),
            "{err}"
        );
        let hosted = GOOD.to_string()
            + &route("gateway", "/api/...", "")
            + &route("rater", "/api/...", "host = \"Rates.example.com\"");
        assert!(parse(&hosted, "app.toml").is_ok());
        let bad = GOOD.to_string() + &route("gateway", "api/...", "");
        assert!(parse_err(&bad).contains("bindings[1].route: \"api/...\" must start with `/`"));
        let tls = GOOD.to_string()
            + &route("gateway", "/a", "tls = { cert = \"c.pem\", key = \"k.pem\" }")
            + &route("rater", "/b", "");
        let err = parse_err(&tls);
        assert!(
            err.contains("bindings[2].tls: bindings sharing 127.0.0.1:8080 must agree on `tls`"),
            "{err}"
        );
        let mixed = shared
            + "\n[[bindings]]\nmedium = \"http-rpc\"\naddress = \"127.0.0.1:8080\"\ncomponent = \"rater\"\nexport = \"a:b/c@1.0.0#d\"\n";
        assert!(
            parse_err(&mixed)
                .contains("bindings[3].address: 127.0.0.1:8080 is already bound by bindings[1], of another medium")
        );
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
    fn every_problem_of_a_binding_is_reported_together() {
        let text = GOOD.to_string()
            + "\n[[bindings]]\nmedium = \"http-rpc\"\naddress = \"127.0.0.1:9000\"\ncomponent = \"rater\"\n\
               export = \"a:b/c@1.0.0#d\"\npath = \"rate\"\nmax_connections = 0\n";
        let err = parse_err(&text);
        assert!(err.contains("bindings[1].path: must start with `/`"), "{err}");
        assert!(err.contains("bindings[1].max_connections: must be at least 1"), "{err}");
    }

    #[test]
    fn duplicate_http_rpc_paths_are_a_manifest_problem() {
        let rpc = |path: &str| {
            format!(
                "\n[[bindings]]\nmedium = \"http-rpc\"\naddress = \"127.0.0.1:9000\"\ncomponent = \"rater\"\n\
                 export = \"a:b/c@1.0.0#d\"\npath = \"{path}\"\n"
            )
        };
        let err = parse_err(&(GOOD.to_string() + &rpc("/r") + &rpc("/r")));
        assert!(
            err.contains("bindings[2].path: /r on 127.0.0.1:9000 is already routed by bindings[1]"),
            "{err}"
        );
        assert!(parse(&(GOOD.to_string() + &rpc("/r") + &rpc("/s")), "app.toml").is_ok());
    }

    #[test]
    fn a_manifest_parsed_without_its_media_is_checked_before_binding() {
        let text = GOOD.replace("address = \"127.0.0.1:0\"", "address = \"127.0.0.1:0\"\nrouet = \"/x\"");
        let manifest = Manifest::parse(&text, "app.toml").expect("the manifest layer knows no medium");
        let found = problems(&manifest);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("bindings[0]: unknown field `rouet`"), "{found:?}");
    }
}
