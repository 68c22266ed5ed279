//! The layer rule of `host/src/lib.rs`, checked: each module imports only
//! the layers below it (`crate::<layer>` in code, not in comments). A new
//! upward import fails here, naming the file and line.

use std::path::Path;

/// Each top-level module's layer, lowest first; modules of one layer do
/// not use each other (`dev` beside `lattice`, never using it).
const LAYERS: &[(&str, u8)] = &[
    ("codec", 0),
    ("metrics", 0),
    ("bus", 0),
    ("subjects", 0),
    ("registry", 0),
    ("manifest", 1),
    ("runtime", 2),
    ("links", 3),
    ("transports", 4),
    ("app", 5),
    ("lattice", 6),
    ("dev", 6),
    ("control", 7),
    ("admin", 8),
    ("console", 8),
    ("cli", 9),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The upward (or sideways) imports of the sources under `src`.
fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = top.trim_end_matches(".rs");
        let Some(own) = layer(module) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for used in code.split("crate::").skip(1) {
                let name: String = used
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if let Some(theirs) = layer(&name)
                    && name != module
                    && theirs >= own
                {
                    found.push(format!("{}:{}: {module} uses {name}", relative.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "imports against the layers:\n{}", found.join("\n"));
}

#[test]
fn an_upward_import_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("runtime")).unwrap();
    std::fs::write(
        dir.path().join("runtime/x.rs"),
        "// crate::lattice in a comment is fine\nuse crate::codec::json;\nuse crate::lattice::agent;\n",
    )
    .unwrap();
    assert_eq!(violations(dir.path()), ["runtime/x.rs:3: runtime uses lattice"]);
}
