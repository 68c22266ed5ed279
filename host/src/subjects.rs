//! Every NATS subject of the lattice's own protocol, built in one place. The
//! media, the lattice, `ctl` and `ctl permissions` all take their subjects
//! from here, so the subject a host publishes and the permission that
//! allows it cannot drift apart. Every subject of lattice `L` lies under
//! `membrane.L.` (requests, events) or `_MEMBRANE.L.` (replies); the
//! reserved prefixes are in `manifest::subject`.

/// The subject of one linked function of `component` of `app`. The app is
/// part of it: apps are tenants of one lattice, and two apps with a
/// component of the same name must never answer each other's calls.
pub fn rpc(lattice: &str, app: &str, component: &str, interface: &str, function: &str) -> String {
    let interface = interface.replace('%', "%25").replace('.', "%2E");
    format!("membrane.{lattice}.rpc.v1.{app}.{component}.{interface}.{function}")
}

/// Every link call of `lattice`.
pub fn rpc_all(lattice: &str) -> String {
    format!("membrane.{lattice}.rpc.>")
}

/// The subject forwarded HTTP requests to `component` of `app` go to.
pub fn http(lattice: &str, app: &str, component: &str) -> String {
    format!("membrane.{lattice}.http.v1.{app}.{component}")
}

/// Every forwarded HTTP request of `lattice`.
pub fn http_all(lattice: &str) -> String {
    format!("membrane.{lattice}.http.>")
}

/// The request subject of control `operation` (`apply`, `inventory`...).
pub fn control(lattice: &str, operation: &str) -> String {
    format!("membrane.{lattice}.ctl.v1.{operation}")
}

/// The inventory request subject, which every host answers.
pub fn inventory(lattice: &str) -> String {
    control(lattice, "inventory")
}

/// The subject (or pattern) of event `kind`: the kind followed by the host
/// token, or a wildcard such as `component.*.*` or `>`.
pub fn event(lattice: &str, kind: &str) -> String {
    format!("membrane.{lattice}.evt.v1.{kind}")
}

/// The subject host `host` publishes event `kind` on.
pub fn host_event(lattice: &str, kind: &str, host: &str) -> String {
    format!("membrane.{lattice}.evt.v1.{kind}.{host}")
}

/// The heartbeat subject of `host` (`*`: every host's).
pub fn heartbeat(lattice: &str, host: &str) -> String {
    host_event(lattice, "heartbeat", host)
}

/// Every event and heartbeat of `lattice`.
pub fn events_all(lattice: &str) -> String {
    format!("membrane.{lattice}.evt.>")
}

/// The events and heartbeats host `id` may publish: `<kind>.<id>` and
/// `<kind>.<what>.<id>`.
pub fn own_events(lattice: &str, id: &str) -> [String; 2] {
    [
        format!("membrane.{lattice}.evt.v1.*.{id}"),
        format!("membrane.{lattice}.evt.v1.*.*.{id}"),
    ]
}

/// Where the lattice's own replies go: the inbox prefixes of its hosts and
/// operators (`_MEMBRANE.<lattice>.<role>`).
pub fn lattice_inboxes(lattice: &str) -> String {
    format!("_MEMBRANE.{lattice}")
}

/// The inbox prefix of `role` (`host`, `ctl`) in `lattice`.
pub fn inbox(lattice: &str, role: &str) -> String {
    format!("{}.{role}", lattice_inboxes(lattice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_of_a_lattice_lies_under_its_prefixes() {
        let l = "prod";
        let all = [
            rpc(l, "shop", "pricing", "example:insurance/pricing@0.1.0", "table"),
            rpc_all(l),
            http(l, "shop", "gateway"),
            http_all(l),
            control(l, "apply"),
            inventory(l),
            event(l, "component.*.*"),
            host_event(l, "host.started", "h1"),
            heartbeat(l, "h1"),
            events_all(l),
            own_events(l, "h1")[0].clone(),
            own_events(l, "h1")[1].clone(),
        ];
        for subject in all {
            assert!(subject.starts_with("membrane.prod."), "{subject}");
        }
        assert_eq!(inbox(l, "host"), "_MEMBRANE.prod.host");
        // A dot in an interface's version cannot add tokens.
        assert_eq!(
            rpc(l, "shop", "pricing", "example:insurance/pricing@0.1.0", "table"),
            "membrane.prod.rpc.v1.shop.pricing.example:insurance/pricing@0%2E1%2E0.table"
        );
        assert_eq!(heartbeat(l, "*"), "membrane.prod.evt.v1.heartbeat.*");
    }
}
