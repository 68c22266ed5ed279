//! `spin.toml` (Spin's manifest, version 2) read as a Membrane manifest, so
//! that `membrane up spin.toml` and `membrane dev spin.toml` run a Spin app
//! as written. A pure translation, text to text: the result is parsed and
//! checked like any manifest, so every rule (and every message) stays the
//! manifest's own.
//!
//! What maps:
//! - `[application] name` is the app's name;
//! - each `[component.<id>]` is a component: a file `source`,
//!   `allowed_outbound_hosts` (the same syntax), `key_value_stores` as
//!   `keyvalue` buckets, `environment` as `wasi.env`, `variables` as its
//!   `config` table (Spin serves them through `wasi:config` too), each
//!   `{{ name }}` filled from `[variables]`: the value `spin up` would take
//!   from `SPIN_VARIABLE_<NAME>`, else its `default`, else the host's secret
//!   of that name (`MEMBRANE_SECRET_<NAME>`), and `build`;
//! - each `[[trigger.http]]` is an `http` binding on the address `spin up`
//!   would listen on: `$SPIN_HTTP_LISTEN_ADDR`, else [`LISTEN`]; its
//!   `route` under `[application.trigger.http] base`; a private route binds
//!   nothing.
//!
//! What is refused, each with the field named: manifest version 1, sources
//! from a URL or a registry, `files` (Spin mounts them read-only; Membrane's
//! `wasi.dirs` are writable, so it will not widen the grant silently),
//! `dependencies`, SQLite databases, AI models, inline components, other
//! triggers than `http`, and a WAGI executor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// The prefix of the environment variables that set a Spin variable, as
/// Spin's environment provider reads them: `SPIN_VARIABLE_API_KEY` sets
/// `api_key`.
pub const VARIABLE_PREFIX: &str = "SPIN_VARIABLE_";

/// The Spin variables that `vars` (environment variables) set.
pub fn provided(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    vars.into_iter()
        .filter_map(|(key, value)| Some((key.strip_prefix(VARIABLE_PREFIX)?.to_ascii_lowercase(), value)))
        .collect()
}

/// Where a Spin app's HTTP triggers listen (as `spin up`'s default).
pub const LISTEN: &str = "127.0.0.1:3000";

/// The variable `spin up` reads its listen address from, as Membrane does
/// for a Spin manifest.
pub const LISTEN_VAR: &str = "SPIN_HTTP_LISTEN_ADDR";

/// What a Spin manifest is read with besides its text: where its HTTP
/// triggers listen and which variables the environment sets. Outside
/// input, read at the edge (`membrane up`), so translation stays pure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// `--listen`, else `$SPIN_HTTP_LISTEN_ADDR`; none: an overlay's
    /// `listen`, else [`LISTEN`].
    pub listen: Option<String>,
    /// The variables set by `SPIN_VARIABLE_*` ([`provided`]).
    pub provided: BTreeMap<String, String>,
}

impl Settings {
    /// The settings `spin up` would read: `flag` (its `--listen`), else
    /// `SPIN_HTTP_LISTEN_ADDR` of `vars`, and the `SPIN_VARIABLE_*` of `vars`.
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>, flag: Option<&str>) -> Settings {
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let env_listen = vars.iter().find(|(k, _)| k == LISTEN_VAR).map(|(_, v)| v.clone());
        Settings {
            listen: flag.map(str::to_string).or(env_listen),
            provided: provided(vars),
        }
    }
}

/// Whether `text` is a Spin manifest: it sets the top-level key
/// `spin_manifest_version` (before any table header, outside comments).
pub fn is_spin(text: &str) -> bool {
    has_top_level_key(text, "spin_manifest_version")
}

/// Whether `text` is a Membrane overlay on a Spin manifest: it sets the
/// top-level key [`OVERLAY_KEY`].
pub fn is_overlay(text: &str) -> bool {
    has_top_level_key(text, OVERLAY_KEY)
}

/// The key of an overlay that names its Spin manifest:
/// `spin = "spin.toml"`.
pub const OVERLAY_KEY: &str = "spin";

/// Whether `text` sets top-level `key` (before any table header, outside
/// comments).
fn has_top_level_key(text: &str, key: &str) -> bool {
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            return false;
        }
        if let Some((found, _)) = line.split_once('=')
            && found.trim().trim_matches('"') == key
        {
            return true;
        }
    }
    false
}

/// The Membrane manifest of Spin manifest `spin` (already parsed as TOML),
/// its HTTP triggers on `listen` and the variables in `provided` set (over
/// their defaults), or every problem, each naming its `spin.toml` field.
pub fn translate(spin: &Table, listen: &str, provided: &BTreeMap<String, String>) -> Result<Table, Vec<String>> {
    let mut problems = Vec::new();
    match spin.get("spin_manifest_version") {
        Some(Value::Integer(2)) => {}
        Some(other) => problems.push(format!(
            "spin_manifest_version: {other} is not supported; Membrane reads version 2 (`spin doctor` upgrades a version 1 manifest)"
        )),
        None => problems.push("spin_manifest_version: missing".into()),
    }
    let application = table(spin, "application");
    let name = application.and_then(|a| a.get("name")).and_then(Value::as_str);
    let Some(name) = name else {
        problems.push("application.name: missing".into());
        return Err(problems);
    };
    let mut variables = table(spin, "variables").cloned().unwrap_or_default();
    for (name, value) in provided {
        if let Some(Value::Table(variable)) = variables.get_mut(name) {
            variable.insert("default".into(), Value::String(value.clone()));
        }
    }
    let mut components = Table::new();
    for (id, spec) in table(spin, "component").cloned().unwrap_or_default() {
        match spec.as_table() {
            Some(spec) => match component(&id, spec, &variables) {
                Ok(c) => {
                    components.insert(id, Value::Table(c));
                }
                Err(p) => problems.extend(p),
            },
            None => problems.push(format!("component.{id}: not a table")),
        }
    }
    let base = application
        .and_then(|a| table(a, "trigger"))
        .and_then(|t| table(t, "http"))
        .and_then(|h| h.get("base"))
        .and_then(Value::as_str)
        .unwrap_or("/");
    let bindings = triggers(spin, (base, listen), &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut app = Table::new();
    app.insert("name".into(), Value::String(name.into()));
    let mut manifest = Table::new();
    manifest.insert("app".into(), Value::Table(app));
    manifest.insert("components".into(), Value::Table(components));
    manifest.insert("bindings".into(), Value::Array(bindings));
    Ok(manifest)
}

/// A Membrane overlay on a Spin manifest, read: the `spin.toml` it names,
/// where that app's HTTP triggers listen, and the Membrane manifest tables
/// it adds (`placement` for components, more bindings, `[adaptive]`, ...).
///
/// ```toml
/// spin = "spin.toml"
/// [components.hello]
/// placement = { zone = "edge" }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    /// The Spin manifest, relative to the overlay's directory.
    pub spin: PathBuf,
    /// Where the Spin app's HTTP triggers listen, unless `--listen` or
    /// `$SPIN_HTTP_LISTEN_ADDR` say otherwise.
    pub listen: Option<String>,
    /// The rest: Membrane manifest tables merged over the translation.
    pub adds: Table,
}

impl Overlay {
    /// The overlay of `table` (an overlay file's TOML), or its problems.
    pub fn read(mut table: Table) -> Result<Overlay, Vec<String>> {
        let mut problems = Vec::new();
        let spin = match table.remove(OVERLAY_KEY) {
            Some(Value::String(path)) if !path.is_empty() => PathBuf::from(path),
            _ => {
                problems.push(format!("{OVERLAY_KEY}: the path of a spin.toml, as a string"));
                PathBuf::new()
            }
        };
        let listen = match table.remove("listen") {
            None => None,
            Some(Value::String(addr)) => Some(addr),
            Some(_) => {
                problems.push("listen: an address such as \"0.0.0.0:3000\"".into());
                None
            }
        };
        if table.contains_key("spin_manifest_version") {
            problems.push("spin_manifest_version: an overlay names its spin.toml with `spin`; it is not one".into());
        }
        if problems.is_empty() {
            Ok(Overlay {
                spin,
                listen,
                adds: table,
            })
        } else {
            Err(problems)
        }
    }

    /// `translated` (the Membrane manifest of [`Overlay::spin`], its paths
    /// relative to that file) with this overlay merged over it, its paths
    /// relative to the overlay: a component's tables merge key by key (the
    /// overlay's values win), `bindings` and `links` are appended, other
    /// tables merge the same way. A component the Spin app lacks is a
    /// problem, named.
    pub fn merge(&self, mut translated: Table) -> Result<Table, Vec<String>> {
        let spin_dir = self.spin.parent().unwrap_or(Path::new(""));
        if let Some(Value::Table(components)) = translated.get_mut("components") {
            for (_, component) in components.iter_mut() {
                let Some(component) = component.as_table_mut() else {
                    continue;
                };
                rebase(component, spin_dir);
            }
        }
        let known: Vec<String> = table(&translated, "components")
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        let mut problems = Vec::new();
        for (key, value) in &self.adds {
            match (key.as_str(), value) {
                ("components", Value::Table(components)) => {
                    for name in components.keys().filter(|n| !known.contains(n)) {
                        problems.push(format!(
                            "components.{name}: {} has no component `{name}` (it has: {})",
                            self.spin.display(),
                            known.join(", ")
                        ));
                    }
                }
                ("bindings" | "links", Value::Array(more)) => {
                    let list = translated
                        .entry(key.clone())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = list {
                        list.extend(more.iter().cloned());
                    }
                    continue;
                }
                _ => {}
            }
            match translated.get_mut(key) {
                Some(existing) => merge_value(existing, value.clone()),
                None => {
                    translated.insert(key.clone(), value.clone());
                }
            }
        }
        if problems.is_empty() {
            Ok(translated)
        } else {
            Err(problems)
        }
    }
}

/// `component`'s relative paths (`source`, `build.workdir`) made relative
/// to the directory that holds its Spin manifest's directory, `spin_dir`.
fn rebase(component: &mut Table, spin_dir: &Path) {
    if let Some(Value::String(source)) = component.get_mut("source")
        && Path::new(source.as_str()).is_relative()
    {
        *source = spin_dir.join(source.as_str()).display().to_string();
    }
    if let Some(Value::Table(build)) = component.get_mut("build") {
        let rebased = match build.get("workdir").and_then(Value::as_str) {
            Some(workdir) => spin_dir.join(workdir),
            None => spin_dir.to_path_buf(),
        };
        let rebased = rebased.display().to_string();
        build.insert("workdir".into(), Value::String(rebased));
    }
}

/// `over` merged into `into`: tables key by key, anything else replaced.
fn merge_value(into: &mut Value, over: Value) {
    match (into, over) {
        (Value::Table(into), Value::Table(over)) => {
            for (key, value) in over {
                match into.get_mut(&key) {
                    Some(existing) => merge_value(existing, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (into, over) => *into = over,
    }
}

/// The table at `key` of `t`, if it is one.
fn table<'a>(t: &'a Table, key: &str) -> Option<&'a Table> {
    t.get(key).and_then(Value::as_table)
}

/// The `[[bindings]]` of the `[[trigger.*]]` arrays.
fn triggers(spin: &Table, (base, listen): (&str, &str), problems: &mut Vec<String>) -> Vec<Value> {
    let mut bindings = Vec::new();
    for (kind, list) in table(spin, "trigger").cloned().unwrap_or_default() {
        if kind != "http" {
            problems.push(format!(
                "trigger.{kind}: Membrane runs `http` triggers from spin.toml; bind this component with a Membrane manifest ({})",
                "docs/manifest.md"
            ));
            continue;
        }
        for (i, trigger) in list.as_array().cloned().unwrap_or_default().iter().enumerate() {
            let field = format!("trigger.http[{i}]");
            let Some(trigger) = trigger.as_table() else {
                problems.push(format!("{field}: not a table"));
                continue;
            };
            if let Some(executor) = trigger.get("executor").and_then(Value::as_table)
                && executor.get("type").and_then(Value::as_str) != Some("spin")
            {
                problems.push(format!(
                    "{field}.executor: only the `spin` executor (wasi:http) is served; WAGI is not"
                ));
                continue;
            }
            let component = match trigger.get("component") {
                Some(Value::String(c)) => c.clone(),
                Some(_) => {
                    problems.push(format!(
                        "{field}.component: an inline component; name it in a [component.<id>] table"
                    ));
                    continue;
                }
                None => {
                    problems.push(format!("{field}.component: missing"));
                    continue;
                }
            };
            let route = match trigger.get("route") {
                Some(Value::String(route)) => route.clone(),
                // A private route is reached only through other components.
                Some(Value::Table(t)) if t.get("private").and_then(Value::as_bool) == Some(true) => continue,
                _ => {
                    problems.push(format!(
                        "{field}.route: a path such as \"/...\" or {{ private = true }}"
                    ));
                    continue;
                }
            };
            let mut binding = Table::new();
            binding.insert("medium".into(), Value::String("http".into()));
            binding.insert("address".into(), Value::String(listen.into()));
            binding.insert("component".into(), Value::String(component));
            binding.insert("route".into(), Value::String(under(base, &route)));
            bindings.push(Value::Table(binding));
        }
    }
    bindings
}

/// `route` under `base`, as Spin joins them.
fn under(base: &str, route: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        route.to_string()
    } else if route == "/" {
        base.to_string()
    } else {
        format!("{base}{route}")
    }
}

/// Fields Membrane does not serve, and why.
const REFUSED: &[(&str, &str)] = &[
    (
        "files",
        "Spin mounts files read-only and Membrane's `wasi.dirs` are writable; grant a directory in a Membrane manifest if the component may write to it",
    ),
    (
        "dependencies",
        "component dependencies are not composed from spin.toml; link the components with [[links]] in a Membrane manifest",
    ),
    ("sqlite_databases", "SQLite databases are not served"),
    ("ai_models", "AI models are not served"),
    (
        "allowed_http_hosts",
        "the Spin 1 name; use allowed_outbound_hosts (with schemes, e.g. \"https://api.example.com\")",
    ),
];

/// The Membrane component of `[component.<id>]`.
fn component(id: &str, spec: &Table, variables: &Table) -> Result<Table, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Table::new();
    for (field, why) in REFUSED {
        if spec.contains_key(*field) {
            problems.push(format!("component.{id}.{field}: {why}"));
        }
    }
    match spec.get("source") {
        Some(Value::String(path)) => {
            out.insert("source".into(), Value::String(path.clone()));
        }
        Some(_) => problems.push(format!(
            "component.{id}.source: only a file path is served (a URL or registry source is not yet)"
        )),
        None => problems.push(format!("component.{id}.source: missing")),
    }
    if let Some(hosts) = spec.get("allowed_outbound_hosts") {
        out.insert("allowed_outbound_hosts".into(), hosts.clone());
    }
    if let Some(stores) = spec.get("key_value_stores") {
        let mut keyvalue = Table::new();
        keyvalue.insert("buckets".into(), stores.clone());
        out.insert("keyvalue".into(), Value::Table(keyvalue));
    }
    if let Some(env) = spec.get("environment") {
        let mut wasi = Table::new();
        wasi.insert("env".into(), env.clone());
        out.insert("wasi".into(), Value::Table(wasi));
    }
    if let Some(values) = spec.get("variables").and_then(Value::as_table) {
        let mut config = Table::new();
        for (key, template) in values {
            let field = format!("component.{id}.variables.{key}");
            match template.as_str().map(|t| fill(t, variables)) {
                Some(Ok(value)) => {
                    config.insert(key.clone(), value);
                }
                Some(Err(why)) => problems.push(format!("{field}: {why}")),
                None => problems.push(format!("{field}: a string, such as \"{{{{ name }}}}\"")),
            }
        }
        out.insert("config".into(), Value::Table(config));
    }
    if let Some(build) = spec.get("build").and_then(Value::as_table) {
        let mut b = Table::new();
        for field in ["command", "watch", "workdir"] {
            if let Some(value) = build.get(field) {
                b.insert(field.into(), value.clone());
            }
        }
        out.insert("build".into(), Value::Table(b));
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// The config value of a Spin variable template: the text with each
/// `{{ name }}` replaced by that variable's default; a template that is one
/// variable without a default is the host's secret of that name.
fn fill(template: &str, variables: &Table) -> Result<Value, String> {
    let mut text = String::new();
    let mut secret = None;
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        text.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("an unclosed `{{`")?;
        let name = after[..end].trim();
        let variable = variables
            .get(name)
            .and_then(Value::as_table)
            .ok_or_else(|| format!("`{name}` is not in [variables]"))?;
        match variable.get("default").and_then(Value::as_str) {
            Some(default) => text.push_str(default),
            None if secret.is_none() => secret = Some(name.to_string()),
            None => return Err("two variables without a default in one value".into()),
        }
        rest = &after[end + 2..];
    }
    text.push_str(rest);
    match secret {
        None => Ok(Value::String(text)),
        Some(name) if text.is_empty() => {
            let mut table = Table::new();
            // Upper case, as environment variables are written:
            // `MEMBRANE_SECRET_API_KEY` for Spin's `api_key`.
            table.insert("secret".into(), Value::String(name.to_ascii_uppercase()));
            Ok(Value::Table(table))
        }
        Some(_) => {
            Err("a variable without a default must be the whole value (the host supplies it as a secret)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Membrane manifest of `spin`, as a TOML table.
    fn translated(spin: &str) -> Result<Table, Vec<String>> {
        translate(&spin.parse::<Table>().unwrap(), LISTEN, &BTreeMap::new())
    }

    const HELLO: &str = r#"
spin_manifest_version = 2

[application]
name = "hello"
version = "0.1.0"

[application.trigger.http]
base = "/api"

[variables]
greeting = { default = "Hello" }
token = { required = true }

[[trigger.http]]
route = "/..."
component = "hello"

[[trigger.http]]
route = { private = true }
component = "helper"

[component.hello]
source = "target/wasm32-wasip2/release/hello.wasm"
allowed_outbound_hosts = ["https://api.example.com"]
key_value_stores = ["default"]
environment = { MODE = "prod" }
variables = { greeting = "{{ greeting }}, world", token = "{{ token }}" }
[component.hello.build]
command = "cargo build --target wasm32-wasip2 --release"
watch = ["src/**/*.rs"]

[component.helper]
source = "helper.wasm"
"#;

    #[test]
    fn spin_variable_environment_variables_set_values_over_defaults() {
        let env = [
            ("SPIN_VARIABLE_GREETING", "Howdy"),
            ("SPIN_VARIABLE_TOKEN", "t0k"),
            ("SPIN_VARIABLE_UNUSED", "x"),
            ("SPIN_HTTP_LISTEN_ADDR", "127.0.0.1:1"),
            ("GREETING", "no prefix"),
        ];
        let provided = provided(env.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(provided.len(), 3, "{provided:?}");
        assert_eq!(provided["greeting"], "Howdy");
        let m = translate(&HELLO.parse::<Table>().unwrap(), LISTEN, &provided).unwrap();
        let text = m.to_string();
        let config = &m["components"]["hello"]["config"];
        assert_eq!(config["greeting"].as_str(), Some("Howdy, world"));
        assert_eq!(
            config["token"].as_str(),
            Some("t0k"),
            "a required variable set: no secret"
        );
        assert!(
            !text.contains("unused"),
            "a variable not in [variables] is not added:\n{text}"
        );
    }

    #[test]
    fn a_spin_app_becomes_components_and_http_bindings() {
        let m = translated(HELLO).unwrap();
        assert_eq!(m["app"]["name"].as_str(), Some("hello"));
        let hello = &m["components"]["hello"];
        assert_eq!(
            hello["source"].as_str(),
            Some("target/wasm32-wasip2/release/hello.wasm")
        );
        assert_eq!(
            hello["allowed_outbound_hosts"][0].as_str(),
            Some("https://api.example.com")
        );
        assert_eq!(hello["keyvalue"]["buckets"][0].as_str(), Some("default"));
        assert_eq!(hello["wasi"]["env"]["MODE"].as_str(), Some("prod"));
        assert_eq!(hello["config"]["greeting"].as_str(), Some("Hello, world"));
        assert_eq!(hello["config"]["token"]["secret"].as_str(), Some("TOKEN"));
        assert_eq!(hello["build"]["watch"][0].as_str(), Some("src/**/*.rs"));
        let bindings = m["bindings"].as_array().unwrap();
        assert_eq!(bindings.len(), 1, "the private route binds nothing: {bindings:?}");
        assert_eq!(bindings[0]["route"].as_str(), Some("/api/..."));
        assert_eq!(bindings[0]["address"].as_str(), Some(LISTEN));
        assert!(m["components"].get("helper").is_some());
    }

    #[test]
    fn what_is_not_served_is_refused_by_field() {
        let cases: &[(&str, &str)] = &[
            (
                "spin_manifest_version = \"1\"\n[application]\nname = \"a\"\n",
                "spin_manifest_version: \"1\" is not supported",
            ),
            ("spin_manifest_version = 2\n", "application.name: missing"),
            (
                "spin_manifest_version = 2\n[application]\nname = \"a\"\n[component.c]\nsource = { url = \"https://x/c.wasm\", digest = \"sha256:00\" }\n",
                "component.c.source: only a file path",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname = \"a\"\n[component.c]\nsource = \"c.wasm\"\nfiles = [\"static/**\"]\n",
                "component.c.files: Spin mounts files read-only",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname = \"a\"\n[[trigger.redis]]\nchannel = \"x\"\ncomponent = \"c\"\n[component.c]\nsource = \"c.wasm\"\n",
                "trigger.redis: Membrane runs `http` triggers",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname = \"a\"\n[[trigger.http]]\nroute = \"/\"\ncomponent = \"c\"\nexecutor = { type = \"wagi\" }\n[component.c]\nsource = \"c.wasm\"\n",
                "trigger.http[0].executor: only the `spin` executor",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname = \"a\"\n[component.c]\nsource = \"c.wasm\"\nvariables = { v = \"{{ nope }}\" }\n",
                "component.c.variables.v: `nope` is not in [variables]",
            ),
            (
                "spin_manifest_version = 2\n[application]\nname = \"a\"\n[variables]\nt = { required = true }\n[component.c]\nsource = \"c.wasm\"\nvariables = { v = \"Bearer {{ t }}\" }\n",
                "component.c.variables.v: a variable without a default must be the whole value",
            ),
        ];
        for (spin, expected) in cases {
            let problems = translated(spin).unwrap_err();
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected}: {problems:?}"
            );
        }
    }

    #[test]
    fn routes_join_the_base_as_spin_does() {
        assert_eq!(under("/", "/..."), "/...");
        assert_eq!(under("/api", "/..."), "/api/...");
        assert_eq!(under("/api/", "/users"), "/api/users");
        assert_eq!(under("/api", "/"), "/api");
    }

    #[test]
    fn a_spin_manifest_is_told_by_its_version_key() {
        assert!(is_spin(HELLO));
        assert!(is_spin("# a comment\n\"spin_manifest_version\" = 2\n"));
        for not in [
            "[app]\nname = \"a\"\n",
            "# spin_manifest_version = 2\n[app]\n",
            "[app]\nspin_manifest_version = 2\n",
            "spin_manifest_version_x = 2\n",
            "name = \"spin_manifest_version = 2\"\n",
        ] {
            assert!(!is_spin(not), "{not}");
        }
    }

    #[test]
    fn listen_comes_from_the_flag_then_the_environment() {
        let env = || [(LISTEN_VAR.to_string(), "127.0.0.1:4000".to_string())];
        let cases = [
            (Settings::from_env(env(), Some("0.0.0.0:80")).listen, Some("0.0.0.0:80")),
            (Settings::from_env(env(), None).listen, Some("127.0.0.1:4000")),
            (Settings::from_env([], None).listen, None),
        ];
        for (got, want) in cases {
            assert_eq!(got.as_deref(), want);
        }
    }

    fn overlay(text: &str) -> Result<Overlay, Vec<String>> {
        Overlay::read(text.parse::<Table>().unwrap())
    }

    #[test]
    fn an_overlay_is_told_by_its_spin_key_and_read() {
        assert!(is_overlay("spin = \"app/spin.toml\"\n[components.hello]\n"));
        assert!(!is_overlay("[components.hello]\nspin = \"x\"\n"));
        assert!(!is_overlay(HELLO));
        let read = overlay("spin = \"app/spin.toml\"\nlisten = \"0.0.0.0:3000\"\n").unwrap();
        assert_eq!(read.spin, PathBuf::from("app/spin.toml"));
        assert_eq!(read.listen.as_deref(), Some("0.0.0.0:3000"));
        assert!(read.adds.is_empty());
        for (bad, named) in [
            ("spin = 2\n", "spin: the path"),
            ("spin = \"\"\n", "spin: the path"),
            ("spin = \"s.toml\"\nlisten = 3000\n", "listen: an address"),
            (
                "spin = \"s.toml\"\nspin_manifest_version = 2\n",
                "spin_manifest_version:",
            ),
        ] {
            let problems = overlay(bad).unwrap_err();
            assert!(problems.iter().any(|p| p.starts_with(named)), "{bad}: {problems:?}");
        }
    }

    #[test]
    fn an_overlay_merges_placement_and_adds_bindings_with_paths_rebased() {
        let over = overlay(
            r#"
spin = "app/spin.toml"
[components.hello]
placement = { zone = "edge" }
keyvalue = { buckets = ["other"] }
[components.helper]
instances = 2
[[bindings]]
medium = "nats"
subject = "hello.>"
component = "hello"
[adaptive]
"#,
        )
        .unwrap();
        let merged = over.merge(translated(HELLO).unwrap()).unwrap();
        let hello = &merged["components"]["hello"];
        assert_eq!(hello["placement"]["zone"].as_str(), Some("edge"));
        assert_eq!(
            hello["keyvalue"]["buckets"][0].as_str(),
            Some("other"),
            "the overlay wins"
        );
        assert_eq!(
            hello["allowed_outbound_hosts"][0].as_str(),
            Some("https://api.example.com"),
            "kept"
        );
        assert_eq!(
            hello["source"].as_str(),
            Some("app/target/wasm32-wasip2/release/hello.wasm"),
            "relative to the overlay"
        );
        assert_eq!(hello["build"]["workdir"].as_str(), Some("app"));
        assert_eq!(merged["components"]["helper"]["instances"].as_integer(), Some(2));
        let bindings = merged["bindings"].as_array().unwrap();
        assert_eq!(
            bindings.len(),
            2,
            "the trigger's binding and the overlay's: {bindings:?}"
        );
        assert_eq!(bindings[1]["medium"].as_str(), Some("nats"));
        assert!(merged.contains_key("adaptive"));

        let unknown = overlay("spin = \"spin.toml\"\n[components.nope]\nplacement = {}\n").unwrap();
        let problems = unknown.merge(translated(HELLO).unwrap()).unwrap_err();
        assert_eq!(
            problems,
            ["components.nope: spin.toml has no component `nope` (it has: hello, helper)"]
        );
    }
}
