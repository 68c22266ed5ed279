//! The NATS permissions of a lattice's three roles, for the NATS server to
//! enforce (`membrane ctl permissions`).
//!
//! - **host**: serves the lattice. It reads the desired state and the
//!   artifacts but cannot write or delete them; it publishes events and
//!   heartbeats, serves and calls remote links and answers inventory; it
//!   reads only its role's inbox (`_MEMBRANE.<lattice>.host.>`), never the
//!   replies meant for operators or callers, and nothing of another lattice.
//! - **operator** (`membrane ctl`): the only role that writes the desired
//!   state and the artifact store; it follows events and asks for inventory.
//! - **caller**: a client of the apps' NATS and queue bindings: it may
//!   publish to the bound subjects and read its own replies, nothing else.
//! - **viewer** (`membrane ctl console`): reads events, heartbeats, the
//!   inventory, the desired state and the event log; writes nothing, and
//!   reads no artifact.
//!
//! Every role works from an allow-list: what is not listed is refused by the
//! server. App-specific subjects (bindings, queue streams, the keys of the
//! app's `nats` key-value buckets) come from the manifests given.

use crate::lattice::artifacts::bucket_name as artifacts_bucket;
use crate::lattice::desired::bucket_name as apps_bucket;
use crate::lattice::keyvalue::bucket_name as kv_bucket;
use crate::manifest::{Delivery, KvBackend, Manifest};
use crate::subjects;
use crate::transports;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// A role in a lattice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A `membrane up` host.
    Host,
    /// `membrane ctl`.
    Operator,
    /// A client of the apps' bindings.
    Caller,
    /// `membrane ctl console`: reads, never writes.
    Viewer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Host, Role::Operator, Role::Caller, Role::Viewer];

    /// The role's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Operator => "operator",
            Role::Caller => "caller",
            Role::Viewer => "viewer",
        }
    }
}

/// The inbox prefix a member of `role` uses in `lattice`: replies to its
/// requests arrive under it, so the server can keep other roles out.
/// Callers use the default `_INBOX`.
pub fn inbox_prefix(lattice: &str, role: Role) -> String {
    match role {
        Role::Host => subjects::inbox(lattice, "host"),
        Role::Operator => subjects::inbox(lattice, "ctl"),
        Role::Caller => "_INBOX".into(),
        Role::Viewer => subjects::inbox(lattice, "view"),
    }
}

/// What one role may publish and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: BTreeSet<String>,
    /// Subjects it may subscribe to. No role may answer "whatever reply
    /// subject a request names" (NATS's response permission): a client with
    /// it may publish to the reply subject of any message it receives,
    /// including one it sent itself with a `$KV` or `$JS.API` reply subject.
    /// Replies go only to the inboxes listed in `publish`.
    pub subscribe: BTreeSet<String>,
}

impl Permissions {
    fn publish(&mut self, subjects: impl IntoIterator<Item = String>) {
        self.publish.extend(subjects);
    }

    fn subscribe(&mut self, subjects: impl IntoIterator<Item = String>) {
        self.subscribe.extend(subjects);
    }
}

/// JetStream API subjects that read stream `stream`: its info, direct and
/// plain message gets, ordered consumers (which push to the reader's inbox,
/// with flow control).
fn read_stream(stream: &str) -> Vec<String> {
    vec![
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.API.CONSUMER.INFO.{stream}.>"),
        // Ordered pull consumers (`ctl apps` reading the event log).
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]
}

/// The permissions of `role` in `lattice`, with the subjects of `apps`.
pub fn permissions(lattice: &str, role: Role, apps: &[Manifest]) -> Permissions {
    permissions_of(lattice, role, None, apps)
}

/// The permissions of host `id`'s own user: the host role, except that it
/// may publish heartbeats and events only under its own id.
pub fn host_permissions(lattice: &str, id: &str, apps: &[Manifest]) -> Permissions {
    permissions_of(lattice, Role::Host, Some(id), apps)
}

fn permissions_of(lattice: &str, role: Role, host: Option<&str>, apps: &[Manifest]) -> Permissions {
    let mut p = Permissions::default();
    let (kv, objects) = (apps_bucket(lattice), artifacts_bucket(lattice));
    let (kv_stream, object_stream) = (format!("KV_{kv}"), format!("OBJ_{objects}"));
    let inbox = format!("{}.>", inbox_prefix(lattice, role));
    let inventory = subjects::inventory(lattice);
    let events = subjects::events_all(lattice);
    let event_log = crate::lattice::events::log_stream(lattice);
    match role {
        Role::Host => {
            let rpc = subjects::rpc_all(lattice);
            // Routes to components on other hosts (transports/forward.rs).
            let http = subjects::http_all(lattice);
            // Replies, and chunks of link calls: to other hosts' inboxes,
            // to the operator's (inventory answers) and to callers' (`nats`
            // bindings). The host's own code refuses any other reply subject
            // (manifest::subject), so neither can a request steer a reply.
            let replies = [
                inbox.clone(),
                format!("{}.>", inbox_prefix(lattice, Role::Operator)),
                format!("{}.>", inbox_prefix(lattice, Role::Caller)),
                format!("{}.>", inbox_prefix(lattice, Role::Viewer)),
            ];
            match host {
                // `<kind>.<id>` and `<kind>.<what>.<id>`: heartbeats, then
                // host, component, app and placement events.
                Some(id) => p.publish(subjects::own_events(lattice, id)),
                None => p.publish([events.clone()]),
            }
            p.publish([rpc.clone(), http.clone(), inventory.clone()]);
            p.publish(replies);
            p.publish(["$JS.API.INFO".to_string()]);
            p.publish(read_stream(&kv_stream));
            p.publish(read_stream(&object_stream));
            p.subscribe([events, rpc, http, inventory, inbox]);
            for app in apps {
                host_bindings(&mut p, lattice, app);
                host_buckets(&mut p, lattice, app);
            }
        }
        Role::Operator => {
            p.publish([inventory, "$JS.API.INFO".to_string()]);
            for stream in [&kv_stream, &object_stream, &event_log] {
                p.publish(read_stream(stream));
                p.publish([format!("$JS.API.STREAM.CREATE.{stream}")]);
            }
            // An older event log gains the newer event kinds' subjects.
            p.publish([format!("$JS.API.STREAM.UPDATE.{event_log}")]);
            // An object store put purges the chunks of the object it replaces.
            p.publish([format!("$JS.API.STREAM.PURGE.{object_stream}")]);
            p.publish([format!("$KV.{kv}.>"), format!("$O.{objects}.>")]);
            p.subscribe([events, inbox]);
        }
        Role::Viewer => {
            p.publish([inventory, "$JS.API.INFO".to_string()]);
            p.publish(read_stream(&kv_stream));
            p.publish(read_stream(&event_log));
            p.subscribe([events, inbox]);
        }
        Role::Caller => {
            p.subscribe([inbox]);
            for app in apps {
                for binding in &app.bindings {
                    let rights = transports::rights(binding, &app.app.name, lattice);
                    p.publish(rights.caller_publish);
                    p.subscribe(rights.caller_subscribe);
                }
            }
        }
    }
    p
}

/// What a host needs to serve the bindings of `app` (each medium says),
/// and to publish the calls of its queue links.
fn host_bindings(p: &mut Permissions, lattice: &str, app: &Manifest) {
    for link in app.links.iter().filter(|l| l.delivery == Delivery::Queue) {
        p.publish(
            transports::queue::targets(app, &link.to, &link.import)
                .into_values()
                .map(|t| t.subject),
        );
    }
    for binding in &app.bindings {
        let rights = transports::rights(binding, &app.app.name, lattice);
        p.publish(rights.host_publish);
        p.subscribe(rights.host_subscribe);
    }
}

/// What a host needs of `app`'s `nats` key-value buckets: the lattice's KV
/// stream (created on first use), and the keys under the app's name only.
fn host_buckets(p: &mut Permissions, lattice: &str, app: &Manifest) {
    let shared = app.components.values().flat_map(|c| &c.keyvalue.buckets);
    if !shared.clone().any(|b| app.bucket_backend(b) == KvBackend::Nats) {
        return;
    }
    let kv = kv_bucket(lattice);
    let stream = format!("KV_{kv}");
    p.publish(read_stream(&stream));
    p.publish([format!("$JS.API.STREAM.CREATE.{stream}")]);
    p.publish([format!("$KV.{kv}.{}.>", app.app.name)]);
}

/// The environment variable holding `role`'s password for nats-server.
pub fn password_variable(role: Role) -> String {
    format!("MEMBRANE_{}_PASSWORD", role.as_str().to_uppercase())
}

/// The environment variable holding host `id`'s own password.
pub fn host_password_variable(id: &str) -> String {
    format!("MEMBRANE_HOST_{}_PASSWORD", id.to_uppercase().replace('-', "_"))
}

/// The nats-server `authorization` block of `lattice`: one user per role,
/// `<lattice>-<role>`, and one per host of `hosts`, `<lattice>-<id>`, whose
/// passwords nats-server reads from its environment ([`password_variable`],
/// [`host_password_variable`]).
pub fn render(lattice: &str, apps: &[Manifest], hosts: &[String]) -> String {
    let mut out = String::new();
    let names: Vec<&str> = apps.iter().map(|a| a.app.name.as_str()).collect();
    let _ = writeln!(
        out,
        "# NATS permissions of Membrane lattice `{lattice}` (membrane ctl permissions)."
    );
    if names.is_empty() {
        let _ = writeln!(
            out,
            "# No manifest given: hosts serve no NATS or queue binding, callers may call nothing."
        );
    } else {
        let _ = writeln!(out, "# Bindings of: {}.", names.join(", "));
    }
    let mut users: Vec<(String, String, Permissions)> = Role::ALL
        .iter()
        .map(|r| {
            (
                format!("{lattice}-{}", r.as_str()),
                password_variable(*r),
                permissions(lattice, *r, apps),
            )
        })
        .collect();
    for id in hosts {
        users.push((
            format!("{lattice}-{id}"),
            host_password_variable(id),
            host_permissions(lattice, id, apps),
        ));
    }
    let variables: Vec<String> = users.iter().map(|(_, v, _)| format!("${v}")).collect();
    let _ = writeln!(
        out,
        "# nats-server reads the passwords from its environment: {}.",
        variables.join(", ")
    );
    let _ = writeln!(out, "authorization {{\n  users = [");
    for (user, variable, p) in users {
        let _ = writeln!(out, "    {{");
        let _ = writeln!(out, "      user: \"{user}\"");
        let _ = writeln!(out, "      password: ${variable}");
        let _ = writeln!(out, "      permissions: {{");
        let _ = writeln!(out, "        publish: {{ allow: {} }}", list(&p.publish));
        let _ = writeln!(out, "        subscribe: {{ allow: {} }}", list(&p.subscribe));
        let _ = writeln!(out, "      }}\n    }}");
    }
    let _ = writeln!(out, "  ]\n}}");
    out
}

/// `subjects` as a quoted list, one per line.
fn list(subjects: &BTreeSet<String>) -> String {
    if subjects.is_empty() {
        // An empty allow-list would allow everything; this allows nothing.
        return "[\"_MEMBRANE.nothing\"]".into();
    }
    let items: Vec<String> = subjects.iter().map(|s| format!("\n          {s:?}")).collect();
    format!("[{}\n        ]", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_cannot_write_desired_state_and_callers_only_call() {
        let host = permissions("prod", Role::Host, &[]);
        assert!(
            !host
                .publish
                .iter()
                .any(|s| s.starts_with("$KV.") || s.contains("STREAM.DELETE"))
        );
        assert!(
            !host
                .subscribe
                .iter()
                .any(|s| s.starts_with("_INBOX") || s.contains(".ctl.>"))
        );
        // Nothing of another lattice; replies only to the inboxes.
        assert!(
            host.publish
                .iter()
                .chain(&host.subscribe)
                .all(|s| s.contains("prod") || s == "$JS.API.INFO" || s == "_INBOX.>")
        );
        assert!(host.publish.contains("_MEMBRANE.prod.ctl.>") && host.publish.contains("_INBOX.>"));
        // No role may answer whatever reply subject a request names.
        assert!(!render("prod", &[], &[]).contains(concat!("allow", "_responses")));
        // A host's own user publishes events only under its id.
        let own = host_permissions("prod", "h1", &[]);
        assert!(own.publish.contains("membrane.prod.evt.v1.*.h1"));
        assert!(!own.publish.iter().any(|s| s == "membrane.prod.evt.>"));
        assert!(render("prod", &[], &["h1".into()]).contains("$MEMBRANE_HOST_H1_PASSWORD"));
        let operator = permissions("prod", Role::Operator, &[]);
        assert!(operator.publish.contains("$KV.membrane-prod-apps.>"));
        let caller = permissions("prod", Role::Caller, &[]);
        assert!(caller.publish.is_empty());
        // A viewer reads: no KV or object write, no artifact, no call.
        let viewer = permissions("prod", Role::Viewer, &[]);
        assert!(
            !viewer
                .publish
                .iter()
                .any(|s| s.starts_with("$KV.") || s.starts_with("$O.") || s.contains("OBJ_") || s.contains(".rpc."))
        );
        assert!(viewer.publish.contains("membrane.prod.ctl.v1.inventory"));
        assert!(viewer.subscribe.contains("_MEMBRANE.prod.view.>"));
        assert!(host.publish.contains("_MEMBRANE.prod.view.>"), "hosts answer viewers");
        // A `nats` bucket: the app's own keys, no one else's.
        let text = "[app]\nname = \"shop\"\n[components.c]\nsource = \"c.wasm\"\n\
                    keyvalue = { buckets = [\"counts\"] }\n[keyvalue.counts]\nbackend = \"nats\"\n";
        let shop = Manifest::parse(text, "shop.toml").unwrap();
        let host = permissions("prod", Role::Host, &[shop]);
        assert!(host.publish.contains("$KV.membrane-prod-kv.shop.>"));
        assert!(!host.publish.contains("$KV.membrane-prod-kv.>"));
        assert!(render("prod", &[], &[]).contains("[\"_MEMBRANE.nothing\"]"));
    }

    #[test]
    fn hosts_may_forward_routes_and_publish_their_queue_links() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/links/distributed.toml"
        ))
        .expect("the links example");
        let links = Manifest::parse(&text, "distributed.toml").expect("a valid manifest");
        let host = permissions("prod", Role::Host, &[links]);
        assert!(host.publish.contains("membrane.prod.http.>"));
        assert!(host.subscribe.contains("membrane.prod.http.>"));
        // The redirector's clicks go to the queue binding's subject.
        assert!(host.publish.contains("links.clicks"), "{:?}", host.publish);
    }

    #[test]
    fn each_medium_says_what_its_bindings_need() {
        let text = r#"
[app]
name = "jobs"

[components.job]
source = "job.wasm"

[[bindings]]
medium = "schedule"
component = "job"
export = "a:b/c@1.0.0#run"
every_ms = 1000

[[bindings]]
medium = "nats"
subject = "jobs.run"
component = "job"
export = "a:b/c@1.0.0#run"

[[bindings]]
medium = "mqtt"
broker = "127.0.0.1:1883"
topic = "jobs/run"
component = "job"
export = "a:b/c@1.0.0#run"
"#;
        let jobs = crate::transports::parse(text, "jobs.toml").expect("a valid manifest");
        let host = permissions("prod", Role::Host, std::slice::from_ref(&jobs));
        // The schedule's leases, under the app's name only.
        assert!(
            host.publish.contains("$KV.membrane-prod-schedule.jobs.>"),
            "{:?}",
            host.publish
        );
        assert!(!host.publish.contains("$KV.membrane-prod-schedule.>"));
        assert!(host.subscribe.contains("jobs.run"));
        let caller = permissions("prod", Role::Caller, &[jobs]);
        assert_eq!(caller.publish, ["jobs.run".to_string()].into());
    }
}
