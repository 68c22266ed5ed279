//! Transports: the media that deliver calls to components, and the services
//! that answer on NATS.
//!
//! A medium is one file here implementing [`medium::Medium`] (its spec, its
//! checks against the component, bind, serve). This file is the registry
//! that maps each arm of [`BindingSpec`] to its medium (`with_medium!`),
//! and plans, checks and binds a manifest's bindings through it. Adding a
//! medium is its file, its arm in the manifest, and one line in the
//! registry. Transports know nothing of wasmtime; they hand calls to
//! [`crate::runtime::dispatch`] and map a fault to their own error form.

pub mod forward;
pub mod http;
pub mod http_rpc;
pub mod medium;
pub mod nats;
pub mod queue;
pub mod rpc;
pub mod serve;
pub mod tls;

pub use medium::{BindContext, Medium, Service};

use crate::manifest::{BindingSpec, Manifest};
use crate::runtime::Runtime;
use crate::runtime::component::{Generation, Loaded};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Runs `$body` with `$m` naming the medium type of `$binding`'s arm: the
/// registry of media.
macro_rules! with_medium {
    ($binding:expr, $m:ident => $body:expr) => {
        match $binding {
            BindingSpec::Http(_) => {
                type $m = http::HttpMedium;
                $body
            }
            BindingSpec::HttpRpc(_) => {
                type $m = http_rpc::HttpRpcMedium;
                $body
            }
            BindingSpec::Nats(_) => {
                type $m = nats::NatsMedium;
                $body
            }
            BindingSpec::Queue(_) => {
                type $m = queue::QueueMedium;
                $body
            }
        }
    };
}

/// Whether `binding`'s medium needs a NATS connection.
pub fn needs_nats(binding: &BindingSpec) -> bool {
    with_medium!(binding, M => M::NEEDS_NATS)
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
        let (shared, elsewhere) =
            with_medium!(binding, M => (M::spec(binding).and_then(M::shares), M::ROUTES_ELSEWHERE));
        match shared {
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
            let specs: Vec<&BindingSpec> = bindings.iter().map(|&i| &manifest.bindings[i]).collect();
            Planned {
                key: format!("{specs:?}"),
                bindings,
            }
        })
        .collect()
}

/// The components in `here` that other hosts' http listeners may forward
/// requests to: those routed on an address that also routes to another
/// component (a listener runs wherever any of its components does).
pub fn forwarded_to(manifest: &Manifest, here: &BTreeSet<String>) -> Vec<String> {
    let mut by_address: BTreeMap<std::net::SocketAddr, BTreeSet<&str>> = BTreeMap::new();
    for binding in &manifest.bindings {
        if let BindingSpec::Http(http) = binding {
            by_address.entry(http.address).or_default().insert(&http.component);
        }
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
    let mut problems = Vec::new();
    for (i, binding) in manifest.bindings.iter().enumerate() {
        let Some(loaded) = new.get(binding.component()) else {
            continue;
        };
        let old = current.get(binding.component()).map(Arc::as_ref);
        with_medium!(binding, M => {
            if let Some(spec) = M::spec(binding) {
                problems.extend(M::check(i, spec, loaded, old));
            }
        });
    }
    problems
}

/// Binds one planned medium.
pub async fn bind(planned: &Planned, manifest: &Manifest, cx: &BindContext<'_>) -> anyhow::Result<Box<dyn Service>> {
    let first = &manifest.bindings[planned.bindings[0]];
    with_medium!(first, M => {
        let specs: Vec<(usize, &<M as Medium>::Spec)> = planned
            .bindings
            .iter()
            .filter_map(|&i| M::spec(&manifest.bindings[i]).map(|spec| (i, spec)))
            .collect();
        Ok(Box::new(M::bind(&specs, cx).await?) as Box<dyn Service>)
    })
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
