//! Staging: a checked manifest into a validated generation, before anything
//! of it serves.
//!
//! Every source is compiled (or found compiled); every link is type-checked
//! on both sides (every host checks every link, but prepares only its own
//! share); each component here gets a linker with the capabilities its grants
//! allow and its links, in process or over the lattice, and is
//! pre-instantiated; every binding is checked by its medium. All problems
//! are reported together, each naming its manifest field. Nothing changes
//! until the caller commits the result.

use crate::links::queue::define_queued;
use crate::links::remote::{Lattice, define_remote};
use crate::links::{self, define_local, is_type_only};
use crate::manifest::{Delivery, Manifest};
use crate::runtime::capabilities::AppShare;
use crate::runtime::component::{Host, Loaded};
use crate::runtime::{LoadError, Runtime, Staged, Version};
use crate::transports;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::component::Linker;
use wasmtime::component::types::ComponentInstance;

/// What preparing one component needs to know of the whole app.
struct App<'a> {
    runtime: &'a Runtime,
    manifest: &'a Manifest,
    here: &'a BTreeSet<String>,
    lattice: Option<&'a Lattice>,
    /// Every component of the app, compiled (each on its own engine).
    types: BTreeMap<String, Component>,
    /// The imported interface's type of each link that type-checks.
    link_types: Vec<Option<ComponentInstance>>,
    /// The app's key-value buckets.
    buckets: AppShare,
}

/// Compiles, checks and prepares the components of `manifest` that `here`
/// places on this host, on `runtime`; links to components elsewhere go over
/// `lattice`.
pub async fn stage(
    runtime: &Runtime,
    manifest: &Manifest,
    here: &BTreeSet<String>,
    lattice: Option<&Lattice>,
) -> Result<Staged, LoadError> {
    let started = Instant::now();
    let compiled = runtime.compile_all(manifest).await?;
    let compile = started.elapsed();
    let types: BTreeMap<String, Component> = compiled
        .iter()
        .map(|(name, (component, _))| (name.clone(), component.clone()))
        .collect();
    let mut problems = Vec::new();
    let link_types = manifest
        .links
        .iter()
        .enumerate()
        .map(|(i, link)| {
            let import = links::check(i, link, &types[&link.from], &types[&link.to])
                .map_err(|problem| problems.push(problem))
                .ok()?;
            if link.delivery == Delivery::Queue {
                let bindings = transports::queue::targets(manifest, &link.to, &link.import);
                let found = links::queue::check(types[&link.from].engine(), i, link, &import, &bindings);
                if !found.is_empty() {
                    problems.extend(found);
                    return None;
                }
            }
            Some(import)
        })
        .collect();
    let buckets = runtime.open_app(manifest, here).await.unwrap_or_else(|found| {
        problems.extend(found);
        AppShare::default()
    });
    let app = App {
        runtime,
        manifest,
        here,
        lattice,
        types,
        link_types,
        buckets,
    };
    let mut components = HashMap::new();
    for (name, version) in compiled.into_iter().filter(|(name, _)| here.contains(name)) {
        match app.prepare(&name, version) {
            Ok(loaded) => {
                components.insert(loaded.name.clone(), Arc::new(loaded));
            }
            Err(found) => problems.extend(found),
        }
    }
    problems.extend(transports::check(manifest, &components, &runtime.generation()));
    if !problems.is_empty() {
        return Err(LoadError { problems });
    }
    warn_over_budget(runtime, manifest, here);
    Ok(runtime.staged(components, compile))
}

/// Logs when the components here may want more instances than the host's
/// budget holds: calls past it are shed (`host-capacity`), not queued.
fn warn_over_budget(runtime: &Runtime, manifest: &Manifest, here: &BTreeSet<String>) {
    let wanted: u64 = here
        .iter()
        .filter_map(|name| manifest.components.get(name))
        .map(|spec| u64::from(spec.limits.max_instances))
        .sum();
    let budget = runtime.host_engine().options.max_instances;
    if wanted > u64::from(budget) {
        tracing::warn!(
            "app `{}`: its components here allow {wanted} instances in all, more than this host's budget of {budget} \
             (membrane up --max-instances); calls past the budget are shed",
            manifest.app.name
        );
    }
}

impl App<'_> {
    /// Component `name`'s linker (capabilities, then links) and its
    /// pre-instantiated version.
    fn prepare(&self, name: &str, version: Version) -> Result<Loaded, Vec<String>> {
        let engine = self.types[name].engine();
        let spec = &self.manifest.components[name];
        let ty = self.types[name].component_type();
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
        let (mut linker, granted) = self.runtime.linker(engine, name, spec, &imports, &self.buckets)?;
        let slots = self.define_links(name, &mut linker)?;
        Loaded::new(name, spec, version, &linker, granted, slots).map_err(|problem| vec![problem])
    }

    /// Defines `name`'s linked imports in `linker`, in process when the
    /// target runs here, else over the lattice; an interface of types only
    /// needs no link. Answers how many local link slots its instances need.
    fn define_links(&self, name: &str, linker: &mut Linker<Host>) -> Result<usize, Vec<String>> {
        let engine = self.types[name].engine();
        let mut problems = Vec::new();
        let mut slots = 0;
        for (i, link) in self.manifest.links.iter().enumerate().filter(|(_, l)| l.from == name) {
            let Some(ty) = &self.link_types[i] else { continue };
            let target = Arc::from(link.to.as_str());
            let local = self.here.contains(&link.to);
            let calls = links::calls_counter(&self.manifest.app.name, name, &link.to, local);
            let defined = if link.delivery == Delivery::Queue {
                let Some(lattice) = self.lattice else {
                    problems.push(format!(
                        "links[{i}].delivery: a queue link stores its calls in JetStream: pass --nats URL"
                    ));
                    continue;
                };
                let bindings = transports::queue::targets(self.manifest, &link.to, &link.import);
                define_queued(
                    linker,
                    engine,
                    &link.import,
                    ty,
                    (target, calls),
                    &lattice.bus,
                    &bindings,
                )
            } else if local {
                slots += 1;
                define_local(linker, engine, &link.import, ty, (slots - 1, calls), target)
            } else if let Some(lattice) = self.lattice {
                let timeout = link.timeout_ms.map(Duration::from_millis);
                let waited = links::waited_counter(&self.manifest.app.name, name, &link.to);
                define_remote(
                    linker,
                    engine,
                    &link.import,
                    ty,
                    (target, calls, waited),
                    (lattice, &self.manifest.app.name),
                    timeout,
                )
            } else {
                problems.push(format!(
                    "links[{i}]: `{}` does not run on this host (placement {:?}) and there is no lattice: pass --nats URL",
                    link.to, self.manifest.components[&link.to].placement
                ));
                continue;
            };
            if let Err(e) = defined {
                problems.push(format!("links[{i}]: {e}"));
            }
        }
        for (import, item) in self.types[name].component_type().imports(engine) {
            let linked = self.manifest.links.iter().any(|l| l.from == name && l.import == import);
            if linked || crate::runtime::capabilities::serves(import) {
                continue;
            }
            if is_type_only(engine, &item.ty) {
                // An interface of types only (like `types`): nothing to
                // call, so an empty instance satisfies it.
                if let Err(e) = linker.root().instance(import) {
                    problems.push(format!("components.{name}: import `{import}`: {e}"));
                }
            } else {
                problems.push(format!(
                    "components.{name}: imports `{import}` but no [[links]] entry serves it \
                     (add one with from = \"{name}\", import = \"{import}\")"
                ));
            }
        }
        if problems.is_empty() { Ok(slots) } else { Err(problems) }
    }
}
