//! `membrane new`: a new component crate from a template, ready for
//! `membrane dev`.
//!
//! This file owns the templates (`host/templates/`, embedded in the binary)
//! and writing them out: a crate of its own (`[workspace]`) with the
//! wit-bindgen the repository's components use, the 64 KiB stack setting
//! (`.cargo/config.toml`), its WIT world (the WASI packages it imports are
//! copied from this repository's `wit/`), a small working `src/lib.rs`, and
//! an `app.toml` whose component has a `build` table and a binding. The
//! name must make a valid crate, WIT package and manifest name; an existing
//! directory is never touched.

use std::path::{Path, PathBuf};

/// What a new component does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Template {
    /// `wasi:http/incoming-handler` (WASI 0.2), bound to an `http` address.
    Http,
    /// `wasi:http/handler` (WASI 0.3) through the `wasip3` crate, bound to
    /// an `http` address.
    #[value(name = "http-p3")]
    HttpP3,
    /// An exported function, bound to an `http-rpc` route.
    Rpc,
    /// A queue worker: a `queue` binding (needs NATS) and the same export
    /// over `http-rpc`, so it runs without a broker too.
    Queue,
}

impl Template {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Template::Http => "http",
            Template::HttpP3 => "http-p3",
            Template::Rpc => "rpc",
            Template::Queue => "queue",
        }
    }
}

const CARGO_TOML: &str = include_str!("../../templates/common/Cargo.toml.in");
const CARGO_CONFIG: &str = include_str!("../../templates/common/cargo-config.toml");
const GITIGNORE: &str = include_str!("../../templates/common/gitignore");
const WASI_CONFIG_STORE: &str = include_str!("../../../wit/insurance/deps/config/store.wit");
const WASI_CONFIG_WORLD: &str = include_str!("../../../wit/insurance/deps/config/world.wit");
const WASI_LOGGING: &str = include_str!("../../../wit/insurance/deps/logging/logging.wit");

/// The address the templates' bindings listen on.
pub const ADDRESS: &str = "127.0.0.1:8080";

/// Rust's keywords and the crates every crate sees: not a crate's name.
#[rustfmt::skip]
const RUST_RESERVED: &[&str] = &[
    "abstract", "alloc", "as", "async", "await", "become", "box", "break", "const", "continue", "core", "crate", "do",
    "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "macro",
    "match", "mod", "move", "mut", "override", "priv", "proc_macro", "pub", "ref", "return", "self", "static", "std",
    "struct", "super", "test", "trait", "true", "try", "type", "typeof", "unsafe", "unsized", "use", "virtual",
    "where", "while", "yield",
];

/// WIT's keywords: not a package or world name.
#[rustfmt::skip]
const WIT_RESERVED: &[&str] = &[
    "as", "async", "bool", "borrow", "char", "constructor", "enum", "error-context", "export", "f32", "f64", "flags",
    "float32", "float64", "from", "func", "future", "import", "include", "interface", "list", "own", "package",
    "record", "resource", "result", "option", "s16", "s32", "s64", "s8", "static", "stream", "string", "tuple",
    "type", "u16", "u32", "u64", "u8", "use", "variant", "with", "world",
];

/// Why `name` cannot name a new component, if it cannot: it must be a
/// crate name, a WIT package name (kebab-case words that start with a
/// letter) and a manifest name at once.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{name:?}: a name has 1 to 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "{name:?}: a name is lower-case ASCII letters, digits, `-` and `_`"
        ));
    }
    if name
        .split(['-', '_'])
        .any(|word| !word.starts_with(|c: char| c.is_ascii_lowercase()))
    {
        return Err(format!(
            "{name:?}: every word (between `-` or `_`) must start with a letter, as in `my-api2`"
        ));
    }
    let rust = name.replace('-', "_");
    let wit = name.replace('_', "-");
    if RUST_RESERVED.contains(&rust.as_str()) || WIT_RESERVED.contains(&wit.as_str()) {
        return Err(format!(
            "{name:?} is a keyword or a reserved crate name; choose another"
        ));
    }
    Ok(())
}

/// The files of a new component `name` from `template`: path (relative to
/// its directory) and contents.
pub fn files(name: &str, template: Template) -> Vec<(&'static str, String)> {
    let (world, lib, app, readme) = match template {
        Template::HttpP3 => (
            "",
            include_str!("../../templates/http-p3/lib.rs"),
            include_str!("../../templates/http-p3/app.toml"),
            include_str!("../../templates/http-p3/README.md"),
        ),
        Template::Http => (
            include_str!("../../templates/http/world.wit"),
            include_str!("../../templates/http/lib.rs"),
            include_str!("../../templates/http/app.toml"),
            include_str!("../../templates/http/README.md"),
        ),
        Template::Rpc => (
            include_str!("../../templates/rpc/world.wit"),
            include_str!("../../templates/rpc/lib.rs"),
            include_str!("../../templates/rpc/app.toml"),
            include_str!("../../templates/rpc/README.md"),
        ),
        Template::Queue => (
            include_str!("../../templates/queue/world.wit"),
            include_str!("../../templates/queue/lib.rs"),
            include_str!("../../templates/queue/app.toml"),
            include_str!("../../templates/queue/README.md"),
        ),
    };
    let deps = match template {
        // Bindings for the WIT world in wit/; for http, the wasi:http types
        // and the incoming-handler export.
        Template::Http => "# Rust bindings for the WIT world in wit/.\nwit-bindgen = \"0.61\"\nwasip2 = \"1.0.4\"\n",
        Template::Rpc | Template::Queue => "# Rust bindings for the WIT world in wit/.\nwit-bindgen = \"0.61\"\n",
        // WASI 0.3's own world, and conversions to the `http` crate's types.
        Template::HttpP3 => "wasip3 = { version = \"0.7\", features = [\"http-compat\"] }\nhttp = \"1\"\n",
    };
    let module = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{deps}}", deps)
            .replace("{{name}}", name)
            .replace("{{wasm}}", &module)
            .replace("{{module}}", &module)
            .replace("{{wit}}", &name.replace('_', "-"))
    };
    let mut files = vec![
        ("Cargo.toml", fill(CARGO_TOML)),
        (".cargo/config.toml", CARGO_CONFIG.to_string()),
        (".gitignore", GITIGNORE.to_string()),
        ("README.md", fill(readme)),
        ("app.toml", fill(app)),
        ("src/lib.rs", fill(lib)),
    ];
    if !world.is_empty() {
        files.push(("wit/world.wit", fill(world)));
    }
    match template {
        Template::Http => {
            files.push(("wit/deps/config/store.wit", WASI_CONFIG_STORE.to_string()));
            files.push(("wit/deps/config/world.wit", WASI_CONFIG_WORLD.to_string()));
        }
        Template::Queue => files.push(("wit/deps/logging/logging.wit", WASI_LOGGING.to_string())),
        Template::Rpc | Template::HttpP3 => {}
    }
    files
}

/// Writes component `name` from `template` into `parent/name`, which must
/// not exist (`parent` is created if missing). On any error nothing is left
/// behind. Answers the new directory.
pub fn create(name: &str, template: Template, parent: &Path) -> anyhow::Result<PathBuf> {
    check_name(name).map_err(|why| anyhow::anyhow!("cannot name a component {why}"))?;
    std::fs::create_dir_all(parent).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    let dir = parent.join(name);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            anyhow::bail!("{} already exists; `membrane new` never overwrites", dir.display())
        }
        Err(e) => anyhow::bail!("cannot create {}: {e}", dir.display()),
    }
    let written = files(name, template).into_iter().try_for_each(|(path, text)| {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)
    });
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&dir);
        anyhow::bail!("cannot write {}: {e}", dir.display());
    }
    Ok(dir)
}

/// What to type next, for the user: how to run and call the new component.
pub fn next_steps(name: &str, template: Template, dir: &Path) -> String {
    let call = match template {
        Template::Http | Template::HttpP3 => format!("curl http://{ADDRESS}/"),
        Template::Rpc => format!("curl -d '{{\"name\": \"world\"}}' http://{ADDRESS}/rpc/{name}/hello"),
        Template::Queue => format!("curl -d '{{\"job\": \"resize photo 7\"}}' http://{ADDRESS}/rpc/{name}/handle"),
    };
    let nats = match template {
        Template::Queue => "\n  (the queue binding needs NATS: membrane dev --nats nats://127.0.0.1:4222)",
        _ => "",
    };
    format!(
        "created component `{name}` ({} template) in {}\n\nnext:\n  cd {}\n  membrane dev      # builds, serves on {ADDRESS}, rebuilds and swaps on every save\n  {call}{nats}\n\nto ship it: membrane push target/wasm32-wasip2/release/{}.wasm oci://REGISTRY/REPOSITORY:TAG\n",
        template.name(),
        dir.display(),
        dir.display(),
        name.replace('-', "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    #[test]
    fn names_must_make_a_crate_a_wit_package_and_a_manifest_name() {
        for good in ["hello", "my-api", "my_api2", "a-b-c"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "1 to 64"),
            ("Hello", "lower-case"),
            ("my api", "lower-case"),
            ("../x", "lower-case"),
            ("2fast", "start with a letter"),
            ("api-2", "start with a letter"),
            ("my--api", "start with a letter"),
            ("trailing-", "start with a letter"),
            ("fn", "keyword"),
            ("test", "reserved"),
            ("string", "keyword"),
            ("error_context", "keyword"),
        ] {
            let err = check_name(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn every_template_fills_every_placeholder_and_its_manifest_is_valid() {
        for template in [Template::Http, Template::HttpP3, Template::Rpc, Template::Queue] {
            let files = files("my-api", template);
            for (path, text) in &files {
                assert!(!text.contains("{{"), "{path} of {template:?} has a placeholder left");
            }
            let get = |name: &str| &files.iter().find(|(p, _)| *p == name).unwrap().1;
            let manifest = Manifest::parse(get("app.toml"), "app.toml").unwrap();
            let spec = &manifest.components["my-api"];
            assert!(spec.build.is_some(), "{template:?}");
            assert_eq!(spec.source, Path::new("target/wasm32-wasip2/release/my_api.wasm"));
            assert!(get("Cargo.toml").contains("name = \"my-api\"\n"));
            assert!(get("Cargo.toml").contains("[workspace]"));
            assert!(get(".cargo/config.toml").contains("link-arg=-zstack-size=65536"));
            if template != Template::HttpP3 {
                assert!(get("wit/world.wit").starts_with("package local:my-api@0.1.0;"));
            }
        }
    }

    #[test]
    fn the_templates_use_the_repositorys_wit_bindgen() {
        let workspace = include_str!("../../../Cargo.toml");
        let line = workspace
            .lines()
            .find(|l| l.starts_with("wit-bindgen = "))
            .expect("the workspace names wit-bindgen");
        for template in [Template::Http, Template::Rpc, Template::Queue] {
            assert!(files("x", template)[0].1.contains(line), "{template:?} must use {line}");
        }
        // The WASI 0.3 template uses the wasip3 the repository's own 0.3 component builds with.
        let p3 = include_str!("../../../components/hello-p3/Cargo.toml");
        let wasip3 = p3
            .lines()
            .find(|l| l.starts_with("wasip3 = "))
            .expect("hello-p3 names wasip3");
        let version = wasip3.split('"').nth(1).expect("a version");
        assert!(
            files("x", Template::HttpP3)[0]
                .1
                .contains(&format!("wasip3 = {{ version = \"{version}\"")),
            "http-p3 template must use wasip3 {version}"
        );
        let wasip2 = workspace.lines().find(|l| l.starts_with("wasip2 = ")).expect("wasip2");
        assert!(
            files("x", Template::Http)[0].1.contains(wasip2),
            "http template must use {wasip2}"
        );
    }

    #[test]
    fn an_existing_directory_is_never_touched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("taken")).unwrap();
        std::fs::write(dir.path().join("taken/keep.txt"), "mine").unwrap();
        let err = create("taken", Template::Http, dir.path()).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("taken/keep.txt")).unwrap(),
            "mine"
        );
        assert_eq!(std::fs::read_dir(dir.path().join("taken")).unwrap().count(), 1);
        let made = create("fresh", Template::Rpc, &dir.path().join("sub")).unwrap();
        assert!(made.join("src/lib.rs").is_file() && made.join(".cargo/config.toml").is_file());
    }
}
