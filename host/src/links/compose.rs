//! Composed links: which links between components placed on this host are
//! fused into one component, decided from the manifest and placement alone
//! (a pure function with table tests; `fuse.rs` builds what it decides).
//!
//! A call link whose two ends run here is composed when the manifest asks
//! for it (`[app] links`, `[[links]] mode`) and composition keeps
//! everything a caller and the callee see the same:
//!
//! - both are WASI 0.2 components (one engine; 0.3 ones stay dynamic);
//! - the callee serves no binding of its own and no other link calls it,
//!   so its instances belong to its caller alone;
//! - both have the same limits (a composed instance is one store, one
//!   deadline, one reuse count, one instance budget);
//! - every host interface the callee imports is served with its own grant:
//!   the same as its group's root, or a [`Plug`] (its own config values, or
//!   a denial where it holds no grant at all).
//!
//! Otherwise the link stays dynamic and [`Made::Dynamic`] says why. Chains
//! compose into one: a [`Group`] is a root (a caller no composed link calls)
//! and every component reached from it over composed links.

use crate::manifest::{ComponentSpec, Delivery, LinkMode, Manifest};
use crate::runtime::capabilities::plug::{DENIABLE, OWN, Plug, unversioned};
use std::collections::{BTreeMap, BTreeSet};

/// How one link is made on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Made {
    /// Fused into its group's component: a call inside one instance.
    Composed,
    /// In process, each end in its own store. `Some(reason)` when the
    /// manifest asked for composition and it cannot hold.
    Dynamic(Option<String>),
    /// Not a local call link: its caller or callee runs elsewhere, or it is
    /// queued.
    Elsewhere,
}

/// What the plan needs of one component beyond its spec: read from its
/// compiled type.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// It runs on the engine with concurrency support (WASI 0.3).
    pub p3: bool,
    /// The host-served interfaces it imports (`capabilities::serves`).
    pub capabilities: Vec<String>,
}

/// Components fused into one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The member no composed link calls: the group runs where it is served.
    pub root: String,
    /// Every member, the root first, then in the order reached.
    pub members: Vec<String>,
    /// The composed links inside, by their index in the manifest.
    pub links: Vec<usize>,
    /// Per member other than the root: its host imports served otherwise
    /// than with the root's grants.
    pub plugs: BTreeMap<String, Vec<(String, Plug)>>,
}

/// Every link's [`Made`] (by manifest index) and the groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// How each link is made here.
    pub made: Vec<Made>,
    /// The composed groups, by root.
    pub groups: Vec<Group>,
}

impl Plan {
    /// The group `name` is the root of.
    pub fn group_of(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.root == name)
    }
}

/// Decides, for `manifest` with `here` placed on this host, which links are
/// composed; `facts` has every component here.
pub fn plan(manifest: &Manifest, here: &BTreeSet<String>, facts: &BTreeMap<String, Facts>) -> Plan {
    let mut made: Vec<Made> = manifest
        .links
        .iter()
        .map(|link| first_look(manifest, here, facts, link))
        .collect();
    // Demoting a link makes its callee a root of its own, whose members are
    // then checked against it: repeat until nothing changes.
    loop {
        let (groups, demote) = groups(manifest, facts, &made);
        if demote.is_empty() {
            return Plan { made, groups };
        }
        for (index, reason) in demote {
            made[index] = Made::Dynamic(Some(reason));
        }
    }
}

/// The link's [`Made`] from itself alone and its ends.
fn first_look(
    manifest: &Manifest,
    here: &BTreeSet<String>,
    facts: &BTreeMap<String, Facts>,
    link: &crate::manifest::LinkSpec,
) -> Made {
    if link.delivery == Delivery::Queue || !here.contains(&link.from) || !here.contains(&link.to) {
        return Made::Elsewhere;
    }
    if link.mode(&manifest.app) == LinkMode::Dynamic {
        return Made::Dynamic(None);
    }
    let p3 = |name: &str| facts.get(name).is_some_and(|f| f.p3);
    if p3(&link.from) || p3(&link.to) {
        return Made::Dynamic(Some(
            "WASI 0.3 components are linked dynamically (composition runs on the WASI 0.2 engine)".into(),
        ));
    }
    if manifest.bindings.iter().any(|b| b.component() == link.to) {
        return Made::Dynamic(Some(format!("`{}` also serves bindings of its own", link.to)));
    }
    let callers: Vec<&str> = (manifest.links.iter())
        .filter(|l| l.to == link.to && l.from != link.from)
        .map(|l| l.from.as_str())
        .collect();
    if !callers.is_empty() {
        return Made::Dynamic(Some(format!(
            "`{}` is also called by `{}`",
            link.to,
            callers.join("`, `")
        )));
    }
    Made::Composed
}

/// The groups the composed links in `made` form, and the links to demote
/// with their reasons.
fn groups(manifest: &Manifest, facts: &BTreeMap<String, Facts>, made: &[Made]) -> (Vec<Group>, Vec<(usize, String)>) {
    let composed: Vec<usize> = (0..made.len()).filter(|&i| made[i] == Made::Composed).collect();
    let callees: BTreeSet<&str> = composed.iter().map(|&i| manifest.links[i].to.as_str()).collect();
    let roots: BTreeSet<&str> = (composed.iter())
        .map(|&i| manifest.links[i].from.as_str())
        .filter(|from| !callees.contains(from))
        .collect();
    let mut groups = Vec::new();
    let mut demote = Vec::new();
    let mut reached = BTreeSet::new();
    for root in roots {
        let root_spec = &manifest.components[root];
        let mut group = Group {
            root: root.to_string(),
            members: vec![root.to_string()],
            links: Vec::new(),
            plugs: BTreeMap::new(),
        };
        let mut at = 0;
        while at < group.members.len() {
            let caller = group.members[at].clone();
            at += 1;
            for &i in composed.iter().filter(|&&i| manifest.links[i].from == caller) {
                let callee = &manifest.links[i].to;
                reached.insert(i);
                let spec = &manifest.components[callee];
                let imports = facts.get(callee.as_str()).map_or(&[][..], |f| &f.capabilities[..]);
                match fits(root, root_spec, callee, spec, imports) {
                    Ok(plugs) => {
                        group.links.push(i);
                        if !plugs.is_empty() {
                            group.plugs.insert(callee.clone(), plugs);
                        }
                        group.members.push(callee.clone());
                    }
                    Err(reason) => demote.push((i, reason)),
                }
            }
        }
        if !group.links.is_empty() {
            groups.push(group);
        }
    }
    // A composed link no root reaches is part of a cycle (once no link
    // under a demoted one is left unreached for that reason).
    if demote.is_empty() {
        for &i in composed.iter().filter(|i| !reached.contains(i)) {
            demote.push((i, "the links form a cycle".to_string()));
        }
    }
    if !demote.is_empty() {
        groups.clear();
    }
    (groups, demote)
}

/// How member `name` (with `spec`, importing host interfaces `imports`)
/// fits into the group of `root`: the plugs its imports need, or why it
/// cannot join.
fn fits(
    root: &str,
    root_spec: &ComponentSpec,
    name: &str,
    spec: &ComponentSpec,
    imports: &[String],
) -> Result<Vec<(String, Plug)>, String> {
    let limits = [
        ("limits.timeout_ms", root_spec.limits.timeout_ms, spec.limits.timeout_ms),
        ("limits.memory_mib", root_spec.limits.memory_mib, spec.limits.memory_mib),
        (
            "limits.max_instances",
            u64::from(root_spec.limits.max_instances),
            u64::from(spec.limits.max_instances),
        ),
        ("reuse", u64::from(root_spec.reuse), u64::from(spec.reuse)),
        (
            "concurrency",
            u64::from(root_spec.concurrency),
            u64::from(spec.concurrency),
        ),
    ];
    if let Some((field, a, b)) = limits.iter().find(|(_, a, b)| a != b) {
        return Err(format!("`{root}` and `{name}` differ in {field} ({a} and {b})"));
    }
    let mut plugs = Vec::new();
    for import in imports {
        let plug = plug_for(root_spec, spec, import).map_err(|grant| {
            format!("`{name}` holds another {grant} grant than `{root}`, and `{import}` cannot be served apart")
        })?;
        if plug != Plug::Share {
            plugs.push((import.clone(), plug));
        }
    }
    Ok(plugs)
}

/// How a member with `spec` gets host interface `import` in the group of a
/// root with `root`: `Err(grant)` names the grant that differs when no plug
/// serves it.
fn plug_for(root: &ComponentSpec, spec: &ComponentSpec, import: &str) -> Result<Plug, &'static str> {
    let interface = unversioned(import);
    let deniable = DENIABLE.contains(&interface);
    let config = interface.starts_with("wasi:config/")
        || interface.contains(":spin/variables")
        || interface.starts_with("spin:variables/");
    let (grant, same, none) = if config {
        ("config", same_debug(&root.config, &spec.config), false)
    } else if interface == "wasi:cli/environment" {
        ("wasi.env", same_debug(&root.wasi.env, &spec.wasi.env), false)
    } else if interface.starts_with("wasi:filesystem/") {
        ("wasi.dirs", root.wasi.dirs == spec.wasi.dirs, spec.wasi.dirs.is_empty())
    } else if interface.starts_with("wasi:http/") || interface.starts_with("wasi:sockets/") {
        let same = set(&root.allowed_outbound_hosts) == set(&spec.allowed_outbound_hosts);
        ("allowed_outbound_hosts", same, spec.allowed_outbound_hosts.is_empty())
    } else if interface.starts_with("wasi:keyvalue/") || interface.contains("key-value") {
        let same = set(&root.keyvalue.buckets) == set(&spec.keyvalue.buckets);
        ("keyvalue.buckets", same, false)
    } else {
        // Interfaces without grants (clocks, random, io, stdio, logging).
        return Ok(Plug::Share);
    };
    if same {
        Ok(Plug::Share)
    } else if OWN.contains(&interface) {
        Ok(Plug::Own)
    } else if deniable && none {
        Ok(Plug::Deny)
    } else if (interface == "wasi:filesystem/types" || interface == "wasi:http/types") && none {
        // With its only way out denied (no preopened directory, no
        // outgoing handler), the types alone reach nothing.
        Ok(Plug::Share)
    } else {
        Err(grant)
    }
}

/// A list as a set, for comparing grants.
fn set(items: &[String]) -> BTreeSet<&String> {
    items.iter().collect()
}

/// Whether two tables of values are the same (their values have no `Eq`).
fn same_debug<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        let text = format!(
            r#"
[app]
name = "t"
[components.gateway]
source = "g.wasm"
[components.rater]
source = "r.wasm"
[components.pricing]
source = "p.wasm"
[components.pricing.config]
currency = "EUR"
[[links]]
from = "gateway"
import = "example:insurance/rater@0.1.0"
to = "rater"
[[links]]
from = "rater"
import = "example:insurance/pricing@0.1.0"
to = "pricing"
[[bindings]]
medium = "http"
address = "127.0.0.1:8080"
component = "gateway"
{extra}"#
        );
        Manifest::parse(&text, "test.toml").expect("the test manifest parses")
    }

    fn facts(imports: &[(&str, &[&str])]) -> BTreeMap<String, Facts> {
        let mut all: BTreeMap<String, Facts> = ["gateway", "rater", "pricing"]
            .iter()
            .map(|n| (n.to_string(), Facts::default()))
            .collect();
        for (name, list) in imports {
            all.insert(
                name.to_string(),
                Facts {
                    p3: false,
                    capabilities: list.iter().map(|s| s.to_string()).collect(),
                },
            );
        }
        all
    }

    fn here(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn reason(made: &Made) -> String {
        match made {
            Made::Dynamic(Some(reason)) => reason.clone(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_chain_on_one_host_is_one_group_with_the_callee_config_its_own() {
        let m = manifest("");
        let f = facts(&[(
            "pricing",
            &["wasi:config/store@0.2.0-draft", "wasi:cli/environment@0.2.0"],
        )]);
        let plan = plan(&m, &here(&["gateway", "rater", "pricing"]), &f);
        assert_eq!(plan.made, vec![Made::Composed, Made::Composed]);
        let group = plan.group_of("gateway").expect("a group");
        assert_eq!(group.members, ["gateway", "rater", "pricing"]);
        assert_eq!(group.links, [0, 1]);
        assert_eq!(
            group.plugs["pricing"],
            [("wasi:config/store@0.2.0-draft".to_string(), Plug::Own)],
            "the environment (none either side) is shared; the config is pricing's own"
        );
    }

    #[test]
    fn each_case_that_keeps_a_link_dynamic_says_why() {
        let all = here(&["gateway", "rater", "pricing"]);
        type Case = (
            &'static str,
            Manifest,
            BTreeMap<String, Facts>,
            BTreeSet<String>,
            [&'static str; 2],
        );
        let cases: Vec<Case> = vec![
            (
                "placement splits the chain",
                manifest(""),
                facts(&[]),
                here(&["gateway", "rater"]),
                ["Composed", "Elsewhere"],
            ),
            (
                "the manifest asks for dynamic links",
                manifest("").with_links("dynamic"),
                facts(&[]),
                all.clone(),
                ["Dynamic(None)", "Dynamic(None)"],
            ),
            (
                "a callee with a binding of its own",
                manifest(
                    "[[bindings]]\nmedium = \"nats\"\nsubject = \"rate\"\ncomponent = \"rater\"\nexport = \"example:insurance/rater@0.1.0#rate\"\n",
                ),
                facts(&[]),
                all.clone(),
                ["`rater` also serves bindings of its own", "Composed"],
            ),
            (
                "differing limits",
                manifest("[components.pricing.limits]\nmemory_mib = 32\n"),
                facts(&[]),
                all.clone(),
                [
                    "Composed",
                    "`gateway` and `pricing` differ in limits.memory_mib (64 and 32)",
                ],
            ),
            (
                "another outbound grant",
                manifest("").with_outbound("pricing", &["https://a.example"]),
                facts(&[("pricing", &["wasi:http/outgoing-handler@0.2.0"])]),
                all.clone(),
                [
                    "Composed",
                    "`pricing` holds another allowed_outbound_hosts grant than `gateway`, and `wasi:http/outgoing-handler@0.2.0` cannot be served apart",
                ],
            ),
        ];
        for (what, m, f, here, want) in cases {
            let plan = plan(&m, &here, &f);
            let got: Vec<String> = plan.made.iter().map(reason).collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn a_callee_without_a_grant_is_denied_what_its_root_holds() {
        let m = manifest("[components.gateway.wasi.env]\nTOKEN = \"x\"\n")
            .with_outbound("gateway", &["https://a.example"])
            .with_dir("gateway", "/data");
        let f = facts(&[(
            "rater",
            &[
                "wasi:http/types@0.2.0",
                "wasi:filesystem/types@0.2.0",
                "wasi:filesystem/preopens@0.2.0",
                "wasi:cli/environment@0.2.0",
            ],
        )]);
        let plan = plan(&m, &here(&["gateway", "rater", "pricing"]), &f);
        assert_eq!(plan.made[0], Made::Composed);
        let group = plan.group_of("gateway").expect("a group");
        assert_eq!(
            group.plugs["rater"],
            [
                ("wasi:filesystem/preopens@0.2.0".to_string(), Plug::Deny),
                ("wasi:cli/environment@0.2.0".to_string(), Plug::Own),
            ],
            "the types alone are shared: they reach nothing without the handler or a directory"
        );
    }

    #[test]
    fn a_demoted_link_makes_its_callee_a_root_of_its_own() {
        let m =
            manifest("[components.rater.limits]\ntimeout_ms = 500\n[components.pricing.limits]\ntimeout_ms = 500\n");
        let plan = plan(&m, &here(&["gateway", "rater", "pricing"]), &facts(&[]));
        assert_eq!(
            reason(&plan.made[0]),
            "`gateway` and `rater` differ in limits.timeout_ms (5000 and 500)"
        );
        assert_eq!(plan.made[1], Made::Composed);
        assert_eq!(
            plan.group_of("rater").map(|g| g.members.clone()),
            Some(vec!["rater".into(), "pricing".into()])
        );
        assert!(plan.group_of("gateway").is_none());
    }

    /// Test-only edits of a parsed manifest.
    trait Edit {
        fn with_links(self, mode: &str) -> Self;
        fn with_outbound(self, name: &str, hosts: &[&str]) -> Self;
        fn with_dir(self, name: &str, dir: &str) -> Self;
    }

    impl Edit for Manifest {
        fn with_links(mut self, mode: &str) -> Self {
            self.app.links = if mode == "dynamic" {
                LinkMode::Dynamic
            } else {
                LinkMode::Composed
            };
            self
        }
        fn with_outbound(mut self, name: &str, hosts: &[&str]) -> Self {
            if let Some(spec) = self.components.get_mut(name) {
                spec.allowed_outbound_hosts = hosts.iter().map(|s| s.to_string()).collect();
            }
            self
        }
        fn with_dir(mut self, name: &str, dir: &str) -> Self {
            if let Some(spec) = self.components.get_mut(name) {
                spec.wasi.dirs.insert(dir.to_string(), dir.into());
            }
            self
        }
    }
}
