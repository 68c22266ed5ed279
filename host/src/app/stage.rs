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

use crate::links::compose::{self, Facts, Group, Made, Plan};
use crate::links::fuse::{self, PLUG_PREFIX, plug_name};
use crate::links::queue::define_queued;
use crate::links::remote::{Lattice, define_remote};
use crate::links::{self, define_local, is_type_only};
use crate::manifest::{Delivery, Manifest};
use crate::runtime::capabilities::{self, AppShare, plug};
use crate::runtime::component::{Fused, Host, LinkReport, Loaded};
use crate::runtime::{LoadError, Runtime, Staged, Version};
use crate::transports;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::component::Linker;
use wasmtime::component::types::{ComponentInstance, ComponentItem};

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
    /// Which links are composed here.
    plan: Plan,
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
    let (plan, mut fused) = compose_links(runtime, manifest, here, &compiled).await;
    let app = App {
        runtime,
        manifest,
        here,
        lattice,
        types,
        link_types,
        buckets,
        plan,
    };
    let mut components = HashMap::new();
    for (name, version) in compiled.into_iter().filter(|(name, _)| here.contains(name)) {
        let prepared = match fused.remove(&name) {
            Some((composition, group, members)) => app.prepare_fused(&name, version, (composition, members), &group),
            None => app.prepare(&name, version),
        };
        match prepared.map(|loaded| loaded.with_links(app.reports(&name))) {
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

/// A group's compiled composition, the group, and its members after the
/// root with their digests.
type Composition = (Version, Group, Vec<(String, String)>);

/// Decides which links are composed here and builds each group's
/// component (or finds it built); a group whose composition fails keeps
/// its links dynamic, with the reason. Logs what it decided.
async fn compose_links(
    runtime: &Runtime,
    manifest: &Manifest,
    here: &BTreeSet<String>,
    compiled: &BTreeMap<String, Version>,
) -> (Plan, HashMap<String, Composition>) {
    let facts: BTreeMap<String, Facts> = (compiled.iter())
        .filter(|(name, _)| here.contains(*name))
        .map(|(name, (component, _))| {
            let engine = component.engine();
            let capabilities = (component.component_type().imports(engine))
                .map(|(import, _)| import)
                .filter(|import| capabilities::serves(import))
                .map(String::from)
                .collect();
            let p3 = runtime.host_engine().is_concurrent(engine);
            (name.clone(), Facts { p3, capabilities })
        })
        .collect();
    let mut plan = compose::plan(manifest, here, &facts);
    let mut fused = HashMap::new();
    for group in std::mem::take(&mut plan.groups) {
        let members: Vec<(String, String)> = (group.members.iter())
            .filter_map(|m| compiled.get(m).map(|(_, digest)| (m.clone(), digest.clone())))
            .collect();
        let bytes: Option<BTreeMap<String, Arc<[u8]>>> = (members.iter())
            .map(|(m, digest)| runtime.source(digest).map(|b| (m.clone(), b)))
            .collect();
        let key = format!("{group:?} {members:?}");
        let label = format!("{} ({})", group.root, group.members[1..].join(", "));
        let outcome = match bytes {
            Some(bytes) => {
                let (m, g) = (manifest.clone(), group.clone());
                runtime.fused(&label, key, move || fuse::fuse(&m, &g, &bytes)).await
            }
            None => Err("the members' bytes are not at hand".to_string()),
        };
        match outcome {
            Ok(version) => {
                plan.groups.push(group.clone());
                let members = members[1..].to_vec();
                fused.insert(group.root.clone(), (version, group, members));
            }
            Err(why) => {
                for &i in &group.links {
                    plan.made[i] = Made::Dynamic(Some(format!("composition failed: {why}")));
                }
            }
        }
    }
    log_plan(manifest, &plan);
    (plan, fused)
}

/// Says at load which links are composed and why the others the manifest
/// wanted composed stay dynamic.
fn log_plan(manifest: &Manifest, plan: &Plan) {
    let app = &manifest.app.name;
    for group in &plan.groups {
        let links: Vec<String> = (group.links.iter())
            .map(|&i| format!("{} -> {}", manifest.links[i].from, manifest.links[i].to))
            .collect();
        tracing::info!("app `{app}`: composed links {} into `{}`", links.join(", "), group.root);
    }
    for (i, made) in plan.made.iter().enumerate() {
        if let Made::Dynamic(Some(why)) = made {
            let link = &manifest.links[i];
            tracing::warn!("app `{app}`: link {} -> {} stays dynamic: {why}", link.from, link.to);
        }
    }
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
    /// The core module name of each of `names` (the root `root` with its
    /// own `digest`, then `members` with theirs) that no other has.
    fn modules(
        &self,
        names: &[String],
        members: &[(String, String)],
        digest: &str,
        root: &str,
    ) -> Vec<(String, Arc<str>)> {
        let digests = std::iter::once((root, digest)).chain(members.iter().map(|(m, d)| (m.as_str(), d.as_str())));
        let found: Vec<(String, Arc<str>)> = digests
            .filter(|(m, _)| names.iter().any(|n| n == m))
            .filter_map(|(m, d)| {
                let bytes = self.runtime.source(d)?;
                Some((fuse::module_name(&bytes)?, Arc::from(m)))
            })
            .collect();
        (found.iter())
            .filter(|(module, _)| found.iter().filter(|(other, _)| other == module).count() == 1)
            .cloned()
            .collect()
    }

    /// How each link of `name` is made here.
    fn reports(&self, name: &str) -> Vec<LinkReport> {
        (self.manifest.links.iter().enumerate())
            .filter(|(_, link)| link.from == name)
            .map(|(i, link)| {
                let (made, why) = match &self.plan.made[i] {
                    Made::Composed => ("composed", None),
                    Made::Dynamic(why) => ("dynamic", why.clone()),
                    Made::Elsewhere if link.delivery == Delivery::Queue => ("queued", None),
                    Made::Elsewhere => ("remote", None),
                };
                LinkReport {
                    to: link.to.clone(),
                    made: made.to_string(),
                    why,
                }
            })
            .collect()
    }

    /// Component `name`'s linker (capabilities, then links) and its
    /// pre-instantiated version.
    fn prepare(&self, name: &str, version: Version) -> Result<Loaded, Vec<String>> {
        let engine = self.types[name].engine();
        let spec = &self.manifest.components[name];
        let ty = self.types[name].component_type();
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
        let (mut linker, granted) = self.runtime.linker(engine, name, spec, &imports, &self.buckets)?;
        let slots = self.define_links((name, &[name.to_string()], &[]), &self.types[name], &mut linker)?;
        Loaded::new(name, spec, version, &linker, granted, slots).map_err(|problem| vec![problem])
    }

    /// Group root `name` (its own version `version`) as its group's
    /// composition: the root's grants, each member's plugs, and the links
    /// of every member that are not inside the group.
    fn prepare_fused(
        &self,
        name: &str,
        (_, digest): Version,
        ((component, fused), members): (Version, Vec<(String, String)>),
        group: &Group,
    ) -> Result<Loaded, Vec<String>> {
        let engine = component.engine();
        let spec = &self.manifest.components[name];
        let ty = component.component_type();
        let imports: Vec<String> = (ty.imports(engine))
            .map(|(n, _)| n.to_string())
            .filter(|n| !n.starts_with(PLUG_PREFIX))
            .collect();
        let (mut linker, granted) = self.runtime.linker(engine, name, spec, &imports, &self.buckets)?;
        let mut problems = Vec::new();
        for (k, member) in group.members.iter().enumerate() {
            let Some(plugs) = group.plugs.get(member) else { continue };
            let values = self.runtime.own_values(member, &self.manifest.components[member])?;
            for (import, how) in plugs {
                let plugged = plug_name(k, import);
                let Some(ComponentItem::ComponentInstance(it)) = ty.get_import(engine, &plugged).map(|e| e.ty) else {
                    let names: Vec<&str> = ty.imports(engine).map(|(n, _)| n).collect();
                    problems.push(format!(
                        "components.{member}: `{import}` ({plugged}) is not an interface of the composition (it imports {})",
                        names.join(", ")
                    ));
                    continue;
                };
                let defined = linker
                    .root()
                    .instance(&plugged)
                    .and_then(|mut instance| plug::define(&mut instance, engine, (import, &it), how, &values));
                if let Err(e) = defined {
                    problems.push(format!("components.{member}: `{import}`: {e:#}"));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let slots = self.define_links((name, &group.members, &group.links), &component, &mut linker)?;
        let modules = self.modules(&group.members, &members, &digest, name);
        let app = &self.manifest.app.name;
        let counters = (group.links.iter())
            .map(|&i| &self.manifest.links[i])
            .map(|link| links::composed_counter(app, &link.from, &link.to))
            .collect();
        let fused = Fused {
            digest: fused,
            members,
            modules,
        };
        Loaded::new(name, spec, (component, digest), &linker, granted, slots)
            .map(|loaded| loaded.with_fused(fused, counters))
            .map_err(|problem| vec![problem])
    }

    /// Defines, in `linker` (for `component`, which is `name` or its
    /// group's composition), the linked imports of `members` other than the
    /// links `inside` the composition: in process when the target runs here,
    /// else over the lattice; an interface of types only needs no link.
    /// Answers how many local link slots its instances need.
    fn define_links(
        &self,
        (name, members, inside): (&str, &[String], &[usize]),
        component: &Component,
        linker: &mut Linker<Host>,
    ) -> Result<usize, Vec<String>> {
        let engine = component.engine();
        let mut problems = Vec::new();
        let mut slots = 0;
        let outside = |i: usize, from: &String| members.contains(from) && !inside.contains(&i);
        for (i, link) in self
            .manifest
            .links
            .iter()
            .enumerate()
            .filter(|(i, l)| outside(*i, &l.from))
        {
            let Some(ty) = &self.link_types[i] else { continue };
            let target = Arc::from(link.to.as_str());
            let local = self.here.contains(&link.to);
            let meter = || links::Meter::new(&self.manifest.app.name, &link.from, &link.to, local);
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
                    (
                        target,
                        links::calls_counter(&self.manifest.app.name, &link.from, &link.to, local),
                    ),
                    &lattice.bus,
                    &bindings,
                )
            } else if local {
                slots += 1;
                define_local(linker, engine, &link.import, ty, (slots - 1, meter()), target)
            } else if let Some(lattice) = self.lattice {
                let timeout = link.timeout_ms.map(Duration::from_millis);
                let waited = links::waited_counter(&self.manifest.app.name, &link.from, &link.to);
                define_remote(
                    linker,
                    engine,
                    &link.import,
                    ty,
                    (target, meter(), waited),
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
        for (import, item) in component.component_type().imports(engine) {
            let linked = self
                .manifest
                .links
                .iter()
                .any(|l| members.contains(&l.from) && l.import == import);
            if linked || capabilities::serves(import) || import.starts_with(PLUG_PREFIX) {
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
