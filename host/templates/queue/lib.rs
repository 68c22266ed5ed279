//! `{{name}}`: a queue worker. The manifest binds `handle` to a JetStream
//! queue, and to an HTTP route for trying it without NATS.
//!
//! Run `membrane dev` in this directory: it builds the component, serves it
//! on http://127.0.0.1:8080 (and the queue, with `--nats URL`) and swaps a
//! new build in every time you save.

wit_bindgen::generate!({
    path: "wit",
    world: "local:{{wit}}/{{wit}}-component",
    generate_all,
});

use wasi::logging::logging::{Level, log};

struct Component;

impl exports::local::{{module}}::jobs::Guest for Component {
    fn handle(job: String) -> Result<String, String> {
        if job.trim().is_empty() {
            return Err("an empty job".to_string());
        }
        log(Level::Info, "{{name}}", &format!("handling {job:?}"));
        Ok(format!("done: {job}"))
    }
}

export!(Component);
