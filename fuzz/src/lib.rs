//! What the fuzz targets share: the WIT types they decode against, taken
//! from a real component (`echo`'s `values#roundtrip` takes one value of
//! every WIT type), as a host would take them from wasmtime.

use std::sync::OnceLock;
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};

/// Where `scripts/build-components.sh` puts the echo component.
const ECHO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm32-wasip2/release/echo.wasm");

/// `example:testkit/values#roundtrip`: its type, and its parameters' types.
pub fn roundtrip() -> &'static (ComponentFunc, Vec<Type>) {
    static FUNC: OnceLock<(ComponentFunc, Vec<Type>)> = OnceLock::new();
    FUNC.get_or_init(|| {
        let engine = Engine::default();
        let component = Component::from_file(&engine, ECHO)
            .unwrap_or_else(|e| panic!("{ECHO}: {e} (run scripts/build-components.sh)"));
        let types = component.component_type();
        let interface = types
            .exports(&engine)
            .find_map(|(name, item)| match item.ty {
                ComponentItem::ComponentInstance(i) if name.starts_with("example:testkit/values") => Some(i),
                _ => None,
            })
            .expect("echo exports example:testkit/values");
        let func = interface
            .exports(&engine)
            .find_map(|(name, item)| match item.ty {
                ComponentItem::ComponentFunc(f) if name == "roundtrip" => Some(f),
                _ => None,
            })
            .expect("values exports roundtrip");
        let params = func.params().map(|(_, ty)| ty).collect();
        (func, params)
    })
}
