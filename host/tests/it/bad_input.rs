//! Manifests and components that must be rejected before anything serves,
//! each with an error that names the culprit. Every case runs the real binary.

use crate::support::{Host, insurance_manifest};

#[test]
fn syntax_error_names_file_line_and_column() {
    let err = Host::fail("[app]\nname = \"x\"\n\n[components.a]\nsource = \"a.wasm\n");
    assert!(
        err.contains("app.toml:5:17: syntax error: invalid basic string"),
        "{err}"
    );
}

#[test]
fn unknown_field_names_its_path() {
    let manifest = insurance_manifest().replace("[components.rater]", "[components.rater]\ntimeout = 5");
    let err = Host::fail(&manifest);
    assert!(
        err.contains("components.rater.timeout: unknown field `timeout`, expected one of `source`"),
        "{err}"
    );
}

#[test]
fn missing_field_names_its_path() {
    let manifest = insurance_manifest().replace("from = \"rater\"\n", "");
    let err = Host::fail(&manifest);
    assert!(err.contains("links[1]: missing field `from`"), "{err}");
}

#[test]
fn missing_source_is_named() {
    let manifest = insurance_manifest().replace("{wasm:pricing}", "/nonexistent/pricing.wasm");
    let err = Host::fail(&manifest);
    assert!(
        err.contains("components.pricing.source: /nonexistent/pricing.wasm: No such file"),
        "{err}"
    );
}

#[test]
fn core_module_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let manifest = insurance_manifest().replace("{wasm:pricing}", &core.display().to_string());
    let err = Host::fail(&manifest);
    assert!(err.contains("components.pricing.source"), "{err}");
    assert!(err.contains("is a core WebAssembly module, not a component"), "{err}");
}

#[test]
fn garbage_component_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x0d\0\x01\0garbage-after-the-header").unwrap();
    let manifest = insurance_manifest().replace("{wasm:rater}", &junk.display().to_string());
    let err = Host::fail(&manifest);
    assert!(err.contains("components.rater.source"), "{err}");
    assert!(err.contains("not a valid component"), "{err}");
}

#[test]
fn link_to_unknown_component_lists_the_known_ones() {
    let manifest = insurance_manifest().replace("to = \"pricing\"", "to = \"prices\"");
    let err = Host::fail(&manifest);
    assert!(
        err.contains("links[1].to: unknown component `prices` (known: gateway, pricing, rater)"),
        "{err}"
    );
}

#[test]
fn link_with_different_types_names_both_sides_and_the_function() {
    let manifest = insurance_manifest()
        .replace("{wasm:rater}", "{wasm:bad_rater}")
        .replace(
            "[[links]]\nfrom = \"rater\"\nimport = \"example:insurance/pricing@0.1.0\"\nto = \"pricing\"\n",
            "",
        );
    let err = Host::fail(&manifest);
    assert!(
        err.contains(
            "links[0]: `gateway` imports `example:insurance/rater@0.1.0` with a different type than `rater` exports: \
             function `rate`: param `policy`: expected record { id, holder, region, subject, .. }, found string"
        ),
        "{err}"
    );
}

#[test]
fn link_to_a_component_without_the_export_is_named() {
    let manifest = insurance_manifest().replace("to = \"rater\"", "to = \"pricing\"");
    let err = Host::fail(&manifest);
    assert!(
        err.contains("links[0].to: component `pricing` does not export `example:insurance/rater@0.1.0` (it exports: example:insurance/pricing@0.1.0)"),
        "{err}"
    );
}

#[test]
fn queue_link_needs_a_queue_binding_and_functions_without_results() {
    let queued = insurance_manifest().replace("to = \"rater\"\n", "to = \"rater\"\ndelivery = \"queue\"\n");
    let err = Host::fail(&queued);
    assert!(
        err.contains(
            "links[0].delivery: \"queue\" needs a `queue` binding of `rater` for a function of `example:insurance/rater@0.1.0`"
        ),
        "{err}"
    );
    // With the binding, the type check names the function that returns a value.
    let nats = crate::support::nats::NatsServer::start();
    let bound = format!(
        "[nats]\nurls = [\"{}\"]\n\n{queued}\n[[bindings]]\nmedium = \"queue\"\nstream = \"RATE\"\nsubject = \"rate\"\ncomponent = \"rater\"\n\
         export = \"example:insurance/rater@0.1.0#rate\"\n",
        nats.url()
    );
    let err = Host::fail(&bound);
    assert!(
        err.contains(
            "links[0].delivery: function `rate` of `example:insurance/rater@0.1.0` returns a value, \
             but a queued call returns nothing to its caller"
        ),
        "{err}"
    );
}

#[test]
fn unlinked_import_is_named() {
    let manifest = insurance_manifest().replace(
        "[[links]]\nfrom = \"rater\"\nimport = \"example:insurance/pricing@0.1.0\"\nto = \"pricing\"\n",
        "",
    );
    let err = Host::fail(&manifest);
    assert!(
        err.contains("components.rater: imports `example:insurance/pricing@0.1.0` but no [[links]] entry serves it"),
        "{err}"
    );
}

#[test]
fn http_binding_to_a_component_without_a_handler_is_named() {
    let manifest = insurance_manifest().replace("component = \"gateway\"", "component = \"rater\"");
    let err = Host::fail(&manifest);
    assert!(
        err.contains("bindings[0]: medium `http` needs component `rater` to export `wasi:http/incoming-handler@0.2.x` or `wasi:http/handler@0.3.x`; it exports: example:insurance/rater@0.1.0"),
        "{err}"
    );
}

#[test]
fn busy_port_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let manifest = insurance_manifest().replace("127.0.0.1:0", &taken.local_addr().unwrap().to_string());
    let err = Host::fail(&manifest);
    assert!(err.contains("bindings[0]: cannot listen on 127.0.0.1:"), "{err}");
}

#[test]
fn binding_to_a_missing_function_is_named() {
    let manifest = format!(
        "{}\n[[bindings]]\nmedium = \"http-rpc\"\naddress = \"127.0.0.1:0\"\ncomponent = \"rater\"\nexport = \"example:insurance/rater@0.1.0#rat\"\n",
        insurance_manifest()
    );
    let err = Host::fail(&manifest);
    assert!(
        err.contains(
            "bindings[1].export: component `rater` has no exported function `example:insurance/rater@0.1.0#rat` \
             (it exports: example:insurance/rater@0.1.0#rate)"
        ),
        "{err}"
    );
}

#[test]
fn nats_binding_without_a_server_is_named() {
    let manifest = format!(
        "{}\n[[bindings]]\nmedium = \"nats\"\nsubject = \"x\"\ncomponent = \"rater\"\nexport = \"example:insurance/rater@0.1.0#rate\"\n",
        insurance_manifest()
    );
    let err = Host::fail(&manifest);
    assert!(
        err.contains("the manifest has NATS bindings but no NATS server: pass --nats URL"),
        "{err}"
    );
    // A server that is not there is named too.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = Host::fail(&manifest.replace("[app]", &format!("[nats]\nurls = [\"nats://{closed}\"]\n\n[app]")));
    assert!(
        err.contains(&format!("cannot connect to NATS at nats://{closed}")),
        "{err}"
    );
}
