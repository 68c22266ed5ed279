//! Links: a component's import served by another component's export.
//!
//! This module owns checking a link against both components' types before
//! anything serves ([`check`]) and satisfying the import at run time: in
//! process ([`define_local`]), fused into the caller's component
//! ([`compose`] decides, [`fuse`] builds) or over NATS ([`remote`]). It
//! knows nothing of media; the serving side of remote links is a service in
//! `transports`.
//!
//! A local link is a host function that starts the target in its own store on first use within the caller's call, and forwards
//! component values (`Val`s) to it: no serialisation, no network. Each target
//! instance gets its own store, so WASI grants, config, memory caps and
//! deadlines stay per component; the callee inherits the caller's deadline
//! when it is the sooner one.

pub mod chunks;
pub mod compose;
pub mod fuse;
pub mod queue;
pub mod remote;

use crate::codec::types as typecheck;
use crate::manifest::LinkSpec;
use crate::metrics::{CALL_BUCKETS, Counter, Histogram, registry};
use crate::runtime::component::{Host, acquire};
use crate::runtime::fault::Fault;
use crate::runtime::state::call_cx;
use crate::runtime::trace;
use std::collections::BTreeMap;
use std::sync::Arc;
use tracing::Instrument as _;
use wasmtime::component::Component;
use wasmtime::component::Linker;
use wasmtime::component::types::{ComponentInstance, ComponentItem};
use wasmtime::{Engine, Result};

/// Checks `link` against the two components' own types: the importer imports
/// the interface, the target exports it, every function the importer expects
/// has the identical signature, and nothing passes a resource. `index` is the
/// link's position in the manifest, for messages. The two may be compiled
/// on different engines (WASI 0.2 and 0.3); each side's types are read with
/// its own.
pub fn check(index: usize, link: &LinkSpec, from: &Component, to: &Component) -> Result<ComponentInstance, String> {
    let (engine, to_engine) = (from.engine(), to.engine());
    let (from, to) = (from.component_type(), to.component_type());
    let names = |items: Vec<&str>| {
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    let import = match from.get_import(engine, &link.import).map(|e| e.ty) {
        Some(ComponentItem::ComponentInstance(i)) => i,
        Some(_) => {
            return Err(format!("links[{index}].import: `{}` is not an interface", link.import));
        }
        None => {
            return Err(format!(
                "links[{index}].import: component `{}` does not import `{}` (it imports: {})",
                link.from,
                link.import,
                names(from.imports(engine).map(|(n, _)| n).collect())
            ));
        }
    };
    let export = match to.get_export(to_engine, &link.import).map(|e| e.ty) {
        Some(ComponentItem::ComponentInstance(i)) => i,
        _ => {
            return Err(format!(
                "links[{index}].to: component `{}` does not export `{}` (it exports: {})",
                link.to,
                link.import,
                names(to.exports(to_engine).map(|(n, _)| n).collect())
            ));
        }
    };
    typecheck::check_instance((engine, &import), (to_engine, &export)).map_err(|m| {
        format!(
            "links[{index}]: `{}` imports `{}` with a different type than `{}` exports: function `{}`: {}",
            link.from, link.import, link.to, m.function, m.detail
        )
    })?;
    for (name, item) in import.exports(engine) {
        if let ComponentItem::ComponentFunc(f) = item.ty
            && typecheck::func_carries_handle(&f)
        {
            return Err(format!(
                "links[{index}]: function `{name}` of `{}` passes a resource or stream, which cannot cross a link between components",
                link.import
            ));
        }
    }
    Ok(import)
}

/// Whether an imported item is an interface that declares only types, which
/// needs no link.
pub fn is_type_only(engine: &Engine, item: &ComponentItem) -> bool {
    match item {
        ComponentItem::ComponentInstance(i) => i
            .exports(engine)
            .all(|(_, e)| matches!(e.ty, ComponentItem::Type(_) | ComponentItem::Resource(_))),
        _ => false,
    }
}

/// A link: (app, from, to).
pub type LinkKey = (String, String, String);

/// One link's counters: what the links layer records on every call, and
/// what adaptive placement reads ([`link_totals`]), as typed handles rather
/// than series looked up in the metrics registry by name. Each is
/// registered as a metric when the link is first staged that way (a link
/// only ever called in process has no remote series).
#[derive(Clone, Default)]
struct LinkCounters {
    local: Option<Counter>,
    remote: Option<Counter>,
    waited: Option<Counter>,
    composed: Option<Counter>,
}

/// One link's totals at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkTotals {
    /// Calls made in process.
    pub local: u64,
    /// Calls made over the lattice.
    pub remote: u64,
    /// Microseconds the remote calls waited for their replies.
    pub waited_us: u64,
    /// Calls into the composition the link is fused in: an upper bound of
    /// its calls, which a composed link cannot count itself.
    pub composed: u64,
}

/// Every link this host has counted.
fn links() -> &'static std::sync::Mutex<BTreeMap<LinkKey, LinkCounters>> {
    static LINKS: std::sync::LazyLock<std::sync::Mutex<BTreeMap<LinkKey, LinkCounters>>> =
        std::sync::LazyLock::new(Default::default);
    &LINKS
}

/// The counter `pick` of the link from `from` to `to` in `app`, made by
/// `make` (which registers it) the first time.
fn link_counter(
    (app, from, to): (&str, &str, &str),
    pick: fn(&mut LinkCounters) -> &mut Option<Counter>,
    make: impl FnOnce() -> Counter,
) -> Counter {
    let key = (app.to_string(), from.to_string(), to.to_string());
    let mut all = links().lock().unwrap_or_else(|e| e.into_inner());
    pick(all.entry(key).or_default()).get_or_insert_with(make).clone()
}

/// The counter of calls over the link from `from` to `to` in `app`, made in
/// process (`local`) or over the lattice.
pub fn calls_counter(app: &str, from: &str, to: &str, local: bool) -> Counter {
    let place = if local { "local" } else { "remote" };
    let pick: fn(&mut LinkCounters) -> &mut Option<Counter> = if local { |c| &mut c.local } else { |c| &mut c.remote };
    link_counter((app, from, to), pick, || {
        registry().counter(
            LINK_CALLS,
            "Calls from a component to a linked one, in process or over the lattice.",
            &[("app", app), ("from", from), ("to", to), ("where", place)],
        )
    })
}

/// What a dynamic link records on every call: the call, and how long it
/// took (what the lattice console charts as the link's p50 and p99).
#[derive(Clone)]
pub struct Meter {
    /// Its calls ([`calls_counter`]).
    pub calls: Counter,
    /// Their durations, caller side: the callee's time, plus the network's
    /// for a remote link.
    pub seconds: Histogram,
}

impl Meter {
    /// The meter of the link from `from` to `to` in `app`, made in process
    /// (`local`) or over the lattice.
    pub fn new(app: &str, from: &str, to: &str, local: bool) -> Meter {
        let place = if local { "local" } else { "remote" };
        Meter {
            calls: calls_counter(app, from, to, local),
            seconds: registry().histogram(
                LINK_SECONDS,
                "Time calls over a link took, caller side.",
                &[("app", app), ("from", from), ("to", to), ("where", place)],
                CALL_BUCKETS,
            ),
        }
    }
}

/// The family of [`Meter::seconds`].
pub const LINK_SECONDS: &str = "membrane_link_call_duration_seconds";

/// The family of link call counters ([`calls_counter`], [`composed_counter`]).
pub const LINK_CALLS: &str = "membrane_link_calls_total";

/// The counter of calls into the composition that fuses the link from
/// `from` to `to` in `app`: each call into it counts once for every link
/// inside, whether or not it crosses that link (the host has no boundary
/// inside a composition to count at).
pub fn composed_counter(app: &str, from: &str, to: &str) -> Counter {
    link_counter(
        (app, from, to),
        |c| &mut c.composed,
        || {
            registry().counter(
                LINK_CALLS,
                "Calls from a component to a linked one, in process or over the lattice.",
                &[("app", app), ("from", from), ("to", to), ("where", "composed")],
            )
        },
    )
}

/// The counter of microseconds that calls over the remote link from `from`
/// to `to` in `app` waited for their replies: with [`calls_counter`], the
/// link's mean remote cost (what adaptive placement weighs).
pub fn waited_counter(app: &str, from: &str, to: &str) -> Counter {
    link_counter(
        (app, from, to),
        |c| &mut c.waited,
        || {
            registry().scaled_counter(
                "membrane_link_remote_wait_seconds_total",
                "Time calls over a remote link waited for their replies.",
                &[("app", app), ("from", from), ("to", to)],
                1e-6,
            )
        },
    )
}

/// Every link's totals now.
pub fn link_totals() -> BTreeMap<LinkKey, LinkTotals> {
    let all = links().lock().unwrap_or_else(|e| e.into_inner());
    all.iter()
        .map(|(key, c)| {
            let get = |c: &Option<Counter>| c.as_ref().map_or(0, Counter::get);
            let totals = LinkTotals {
                local: get(&c.local),
                remote: get(&c.remote),
                waited_us: get(&c.waited),
                composed: get(&c.composed),
            };
            (key.clone(), totals)
        })
        .collect()
}

/// The span of one call over a link (`link`), from component `from` to
/// `interface#function` of `to`, `mode` `local` or `remote`; opened only
/// when spans are exported (else a disabled span, which costs nothing), with
/// `parent: None`: the caller's context gives it its parent.
pub(crate) fn link_span(
    from: &str,
    to: &str,
    (interface, function): (&str, &str),
    mode: &'static str,
) -> tracing::Span {
    if !trace::exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        parent: None,
        "link",
        otel.name = %format_args!("link {to}.{function}"),
        otel.kind = if mode == "remote" { "client" } else { "internal" },
    );
    trace::set_attributes(&span, || {
        [
            ("membrane.link.from", from.to_string().into()),
            ("membrane.link.to", to.to_string().into()),
            ("membrane.link.import", interface.to_string().into()),
            ("membrane.link.function", function.to_string().into()),
            ("membrane.link.mode", mode.into()),
        ]
    });
    span
}

/// One function of a local link, as its host function sees it.
struct LinkedFunc {
    interface: String,
    function: String,
    target: Arc<str>,
    /// Position of the function in the interface (the callee's cache slot).
    index: usize,
    /// The link's slot among the caller's callees.
    slot: usize,
    /// Functions in the interface.
    count: usize,
    meter: Meter,
}

/// Defines every function of `interface` (whose type is `import`) in
/// `linker` as a call into component `target`, through link slot `slot` of the
/// caller's store, counted in `calls`.
pub fn define_local(
    linker: &mut Linker<Host>,
    engine: &Engine,
    interface: &str,
    import: &ComponentInstance,
    (slot, meter): (usize, Meter),
    target: Arc<str>,
) -> Result<()> {
    let functions: Vec<String> = import
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    let count = functions.len();
    let mut root = linker.root();
    let mut instance = root.instance(interface)?;
    for (index, function) in functions.into_iter().enumerate() {
        // Everything the call needs, behind one Arc: one clone per call.
        let link = Arc::new(LinkedFunc {
            interface: interface.to_string(),
            function: function.clone(),
            target: target.clone(),
            index,
            slot,
            count,
            meter: meter.clone(),
        });
        instance.func_new_async(&function, move |mut store, _ty, params, results| {
            let link = link.clone();
            link.meter.calls.inc();
            Box::new(async move {
                let started = std::time::Instant::now();
                let span = link_span(
                    &store.data().component,
                    &link.target,
                    (&link.interface, &link.function),
                    "local",
                );
                // Unexported, a local hop needs no span id of its own.
                let cx = call_cx(&mut store);
                let cx = if span.is_disabled() { cx } else { cx.under(&span) };
                let call = async {
                    let slot = store.data_mut().chain.callees.get_mut(link.slot).and_then(Option::take);
                    let mut callee = match slot {
                        Some(callee) => callee,
                        None => {
                            let generation = store
                                .data()
                                .chain
                                .generation
                                .clone()
                                .ok_or_else(|| Fault::not_running(&link.target))?;
                            // Boxed: the first call's instantiation is a
                            // large future, and every later call would
                            // otherwise carry (and copy) its space.
                            Box::new(Box::pin(acquire(&generation, &link.target, &cx, link.count)).await?)
                        }
                    };
                    let result = callee
                        .call((link.index, &link.interface, &link.function), params, results, &cx)
                        .await;
                    if let Some(slot) = store.data_mut().chain.callees.get_mut(link.slot) {
                        *slot = Some(callee);
                    }
                    result
                };
                if span.is_disabled() {
                    let result = call.await;
                    link.meter.seconds.observe_since(started);
                    return result.map_err(wasmtime::Error::from);
                }
                let result = call.instrument(span.clone()).await;
                link.meter.seconds.observe_since(started);
                if let Err(fault) = &result {
                    trace::set_failed(&span, fault);
                }
                result.map_err(wasmtime::Error::from)
            })
        })?;
    }
    Ok(())
}
