//! The Wasm OCI artifact layout (CNCF wasm-oci, as `oci-wasm` and `wkg`
//! write it): an OCI image manifest with a `application/vnd.wasm.config.v0+json`
//! config and exactly one `application/wasm` layer holding the component.
//!
//! Pure: [`check_manifest`] judges a manifest a registry sent, and
//! [`build`] writes the config and manifest that `membrane push` uploads.

use super::reference::is_sha256;
use serde::{Deserialize, Serialize};

/// The manifest media type.
pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker's schema 2 manifest, which some registries convert to.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// An OCI index (a multi-platform image).
pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker's manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The config media type of a Wasm artifact.
pub const CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The layer media type of a Wasm component.
pub const LAYER: &str = "application/wasm";
/// The config media type of a Spin application (`spin registry push`).
const SPIN_CONFIG: &str = "application/vnd.fermyon.spin.application.v1+config";

/// What the `Accept` header of a manifest request names.
pub const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The largest manifest read: distribution's own limit, 4 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Its media type.
    pub media_type: String,
    /// `sha256:<hex>` of its bytes.
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    // An index's entries: only to recognise one.
    #[serde(default, skip_serializing)]
    manifests: Option<serde_json::Value>,
}

/// The component layer of a Wasm artifact's manifest, or why the manifest
/// is not one, in words a user can act on.
pub fn check_manifest(bytes: &[u8], max_layer: u64) -> Result<Descriptor, String> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| format!("its manifest is not an OCI image manifest: {e}"))?;
    let kind = manifest.media_type.as_deref().unwrap_or(MANIFEST);
    if kind == INDEX || kind == DOCKER_LIST || manifest.manifests.is_some() {
        return Err(
            "is an image index (several platforms), not one Wasm component: push the .wasm with `membrane push`".into(),
        );
    }
    if kind != MANIFEST && kind != DOCKER_MANIFEST {
        return Err(format!("its manifest has media type {kind:?}, not {MANIFEST:?}"));
    }
    if manifest.schema_version != 2 {
        return Err(format!(
            "its manifest has schemaVersion {}, not 2",
            manifest.schema_version
        ));
    }
    let config = manifest.config.ok_or("its manifest has no config")?;
    if config.media_type == SPIN_CONFIG {
        return Err("is a Spin application (`spin registry push`), not a Wasm component: push the component's .wasm with `membrane push`, or name it in spin.toml as a file".into());
    }
    if config.media_type != CONFIG {
        return Err(format!(
            "its config has media type {:?}, not {CONFIG:?}: it is not a Wasm component artifact",
            config.media_type
        ));
    }
    let [layer] = <[Descriptor; 1]>::try_from(manifest.layers).map_err(|layers| {
        format!(
            "has {} layers; a Wasm component artifact has exactly one ({LAYER:?})",
            layers.len()
        )
    })?;
    if layer.media_type != LAYER {
        return Err(format!(
            "its layer has media type {:?}, not {LAYER:?}: it is not a Wasm component",
            layer.media_type
        ));
    }
    if !is_sha256(&layer.digest) {
        return Err(format!("its layer digest {:?} is not sha256", layer.digest));
    }
    if layer.size > max_layer {
        return Err(format!(
            "its component has {} bytes, more than a component may have ({} MiB)",
            layer.size,
            max_layer >> 20
        ));
    }
    Ok(layer)
}

/// The config a Wasm artifact carries (the fields `oci-wasm` reads).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Config<'a> {
    created: String,
    architecture: &'static str,
    os: &'static str,
    layer_digests: [&'a str; 1],
    component: ComponentNames,
}

/// The component's world, by the names of its imports and exports.
#[derive(Serialize)]
pub struct ComponentNames {
    /// Interface and function names it exports.
    pub exports: Vec<String>,
    /// Interface and function names it imports.
    pub imports: Vec<String>,
}

/// The config blob and manifest of a component whose bytes hash to
/// `layer_digest`; `created` is an RFC 3339 time.
pub fn build(layer_digest: &str, size: u64, names: ComponentNames, created: String) -> (Vec<u8>, Vec<u8>) {
    let config = Config {
        created,
        architecture: "wasm",
        os: "wasip2",
        layer_digests: [layer_digest],
        component: names,
    };
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST.to_string()),
        config: Some(Descriptor {
            media_type: CONFIG.to_string(),
            digest: super::blobs::digest(&config),
            size: config.len() as u64,
        }),
        layers: vec![Descriptor {
            media_type: LAYER.to_string(),
            digest: layer_digest.to_string(),
            size,
        }],
        manifests: None,
    };
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    (config, manifest)
}

/// The names of a component's top-level imports and exports, read from its
/// binary without compiling it.
pub fn component_names(bytes: &[u8]) -> Result<ComponentNames, String> {
    use wasmparser::{Parser, Payload};
    let mut names = ComponentNames {
        exports: Vec::new(),
        imports: Vec::new(),
    };
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("is not a valid component: {e}"))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    let import = import.map_err(|e| format!("is not a valid component: {e}"))?;
                    names.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(section) if depth == 0 => {
                for export in section {
                    let export = export.map_err(|e| format!("is not a valid component: {e}"))?;
                    names.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn manifest(config: &str, layers: &[(&str, &str, u64)]) -> Vec<u8> {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": config, "digest": L, "size": 2},
            "layers": layers.iter().map(|(t, d, s)| serde_json::json!({"mediaType": t, "digest": d, "size": s})).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn only_a_one_layer_wasm_artifact_passes() {
        let good = manifest(CONFIG, &[(LAYER, L, 10)]);
        assert_eq!(check_manifest(&good, 100).unwrap().digest, L);
        let cases: [(Vec<u8>, &str); 9] = [
            (
                manifest(CONFIG, &[("application/vnd.oci.image.layer.v1.tar+gzip", L, 10)]),
                "layer has media type \"application/vnd.oci.image.layer.v1.tar+gzip\"",
            ),
            (manifest(CONFIG, &[(LAYER, L, 10), (LAYER, L, 10)]), "has 2 layers"),
            (manifest(CONFIG, &[]), "has 0 layers"),
            (
                manifest("application/vnd.oci.image.config.v1+json", &[(LAYER, L, 10)]),
                "not a Wasm component artifact",
            ),
            (manifest(SPIN_CONFIG, &[(LAYER, L, 10)]), "is a Spin application"),
            (manifest(CONFIG, &[(LAYER, "sha512:ab", 10)]), "is not sha256"),
            (manifest(CONFIG, &[(LAYER, L, 101)]), "101 bytes, more than"),
            (
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec(),
                "image index",
            ),
            (b"<html>".to_vec(), "not an OCI image manifest"),
        ];
        for (bytes, why) in cases {
            let err = check_manifest(&bytes, 100).expect_err(why);
            assert!(err.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn a_built_manifest_passes_its_own_check() {
        let names = ComponentNames {
            exports: vec!["wasi:http/incoming-handler@0.2.0".into()],
            imports: vec![],
        };
        let (config, manifest) = build(L, 10, names, "1970-01-01T00:00:00Z".into());
        let layer = check_manifest(&manifest, 100).unwrap();
        assert_eq!((layer.digest.as_str(), layer.size), (L, 10));
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["os"], "wasip2");
        assert_eq!(config["layerDigests"][0], L);
    }
}
