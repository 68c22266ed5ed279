//! Fusing: the one component a composed [`Group`] runs as, built with
//! wac-graph from the members' own bytes.
//!
//! Each member is instantiated inside; each composed link's import is the
//! callee's export; each plugged import (`compose.rs`) becomes an import of
//! its own, named by [`plug_name`], which the host serves with the member's
//! own grant (`runtime/capabilities/plug.rs`). Every other import is shared:
//! wac merges imports of the same name. The result exports what the root
//! exports, so it serves where the root is served.

use super::compose::Group;
use crate::manifest::Manifest;
use std::collections::BTreeMap;
use wac_graph::types::{ItemKind, Package};
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

/// The prefix of every import a composition renames.
pub const PLUG_PREFIX: &str = "membrane:plug/";

/// The import name member `member` (its position in the group) gets for
/// its plugged import `import`: an interface of the host's own package
/// `membrane:plug`, which no component imports. (A plain name would be
/// encoded with an `implements` directive, which wasmtime 48 does not
/// parse.)
pub fn plug_name(member: usize, import: &str) -> String {
    let interface = import.split_once('@').map_or(import, |(name, _)| name);
    let words: String = interface
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let words: Vec<&str> = words.split('-').filter(|w| !w.is_empty()).collect();
    format!("{PLUG_PREFIX}m{member}-{}", words.join("-"))
}

/// Builds the component of `group` (of `manifest`) from each member's
/// `bytes`. An error names the member or the link wac refused.
pub fn fuse(
    manifest: &Manifest,
    group: &Group,
    bytes: &BTreeMap<String, std::sync::Arc<[u8]>>,
) -> Result<Vec<u8>, String> {
    let mut graph = CompositionGraph::new();
    let position = |name: &str| group.members.iter().position(|m| m == name);
    let mut packages = Vec::new();
    for (k, member) in group.members.iter().enumerate() {
        let Some(source) = bytes.get(member) else {
            return Err(format!("`{member}`: its bytes are not at hand"));
        };
        let package = Package::from_bytes(&format!("membrane:m{k}"), None, source.to_vec(), graph.types_mut())
            .map_err(|e| format!("`{member}`: {e:#}"))?;
        packages.push(
            graph
                .register_package(package)
                .map_err(|e| format!("`{member}`: {e:#}"))?,
        );
    }
    let nodes: Vec<NodeId> = packages.iter().map(|&p| graph.instantiate(p)).collect();
    for &i in &group.links {
        let link = &manifest.links[i];
        let (Some(from), Some(to)) = (position(&link.from), position(&link.to)) else {
            return Err(format!("links[{i}]: not inside the group"));
        };
        let export = graph
            .alias_instance_export(nodes[to], &link.import)
            .map_err(|e| format!("links[{i}]: {e:#}"))?;
        graph
            .set_instantiation_argument(nodes[from], &link.import, export)
            .map_err(|e| format!("links[{i}]: {}", chain(&e)))?;
    }
    for (member, plugs) in &group.plugs {
        let Some(k) = position(member) else { continue };
        for (import, _) in plugs {
            let world = graph[packages[k]].ty();
            let Some(ItemKind::Instance(interface)) = graph.types()[world].imports.get(import).copied() else {
                return Err(format!("`{member}` does not import the interface `{import}`"));
            };
            // The same interface under another id: wac imports an interface
            // once per id (a shared dependency), and this import must stay
            // apart from the root's.
            let name = plug_name(k, import);
            let mut renamed = graph.types()[interface].clone();
            renamed.id = Some(name.clone());
            let kind = ItemKind::Instance(graph.types_mut().add_interface(renamed));
            let node = graph
                .import(name, kind)
                .map_err(|e| format!("`{member}`: {import}: {e:#}"))?;
            graph
                .set_instantiation_argument(nodes[k], import, node)
                .map_err(|e| format!("`{member}`: {import}: {}", chain(&e)))?;
        }
    }
    let root = graph[packages[0]].ty();
    let exports: Vec<String> = graph.types()[root].exports.keys().cloned().collect();
    for name in exports {
        let export = graph
            .alias_instance_export(nodes[0], &name)
            .map_err(|e| format!("`{}` export `{name}`: {e:#}", group.root))?;
        graph
            .export(export, name.clone())
            .map_err(|e| format!("`{}` export `{name}`: {e:#}", group.root))?;
    }
    // wasmtime validates it when it compiles it.
    let options = EncodeOptions {
        define_components: true,
        validate: false,
        processor: None,
    };
    graph.encode(options).map_err(|e| chain(&e))
}

/// The name its name section gives the first core module of component
/// `bytes` (a Rust component's own code: `pricing.wasm`), if any.
pub fn module_name(bytes: &[u8]) -> Option<String> {
    use wasmparser::{KnownCustom, Name, Parser, Payload};
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::CustomSection(section)) = payload else {
            continue;
        };
        let KnownCustom::Name(names) = section.as_known() else {
            continue;
        };
        for name in names.into_iter().flatten() {
            if let Name::Module { name, .. } = name {
                return Some(name.to_string());
            }
        }
    }
    None
}

/// An error with its causes, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::plug_name;

    #[test]
    fn plug_names_are_interfaces_of_the_hosts_own_package() {
        for (member, import, want) in [
            (1, "wasi:config/store@0.2.0-draft", "membrane:plug/m1-wasi-config-store"),
            (
                2,
                "wasi:http/outgoing-handler@0.2.6",
                "membrane:plug/m2-wasi-http-outgoing-handler",
            ),
            (3, "wasi:keyvalue/store", "membrane:plug/m3-wasi-keyvalue-store"),
        ] {
            let name = plug_name(member, import);
            assert_eq!(name, want);
            let parsed = wasmparser::names::ComponentName::new(&name, 0).expect("a valid name");
            assert!(
                matches!(parsed.kind(), wasmparser::names::ComponentNameKind::Interface(_)),
                "{name}"
            );
        }
    }
}
