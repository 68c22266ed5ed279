//! `{{name}}`: a component that exports functions (`wit/world.wit`), which
//! the manifest binds to HTTP routes taking and giving JSON.
//!
//! Run `membrane dev` in this directory: it builds the component, serves it
//! on http://127.0.0.1:8080 and swaps a new build in every time you save.

wit_bindgen::generate!({
    path: "wit",
    world: "local:{{wit}}/{{wit}}-component",
});

struct Component;

impl exports::local::{{module}}::api::Guest for Component {
    fn hello(name: String) -> String {
        format!("Hello, {name}!")
    }
}

export!(Component);
