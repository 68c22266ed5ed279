//! Structural comparison of component-model types, for link validation.
//!
//! A link is sound only if every function the importer expects exists in the
//! exporter with an identical signature. This module compares the two sides'
//! own type information (never a trial call) and, when they differ, says where:
//! `function rate: param policy: field region: expected char, found string`.
//! It knows types only; which components they belong to is the caller's concern.

use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentInstance, ComponentItem, Type};

/// Why an import cannot be served by an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The first function that differs (or is missing).
    pub function: String,
    /// What differs, as a readable path.
    pub detail: String,
}

/// Checks that `export` provides every function of `import` with the same
/// signature. Extra functions in the export are fine. Each side comes with
/// the engine that compiled it.
pub fn check_instance(
    (engine, import): (&Engine, &ComponentInstance),
    (export_engine, export): (&Engine, &ComponentInstance),
) -> Result<(), Mismatch> {
    for (name, item) in import.exports(engine) {
        let ComponentItem::ComponentFunc(wanted) = item.ty else {
            continue;
        };
        let Some(found) = export.get_export(export_engine, name) else {
            return Err(Mismatch {
                function: name.to_string(),
                detail: "missing from the export".to_string(),
            });
        };
        let ComponentItem::ComponentFunc(found) = found.ty else {
            return Err(Mismatch {
                function: name.to_string(),
                detail: "exported, but not as a function".to_string(),
            });
        };
        if let Some(detail) = diff_func(&wanted, &found) {
            return Err(Mismatch {
                function: name.to_string(),
                detail,
            });
        }
    }
    Ok(())
}

/// The first difference between two function types, or `None` if equal.
pub fn diff_func(expected: &ComponentFunc, found: &ComponentFunc) -> Option<String> {
    let (ep, fp): (Vec<_>, Vec<_>) = (expected.params().collect(), found.params().collect());
    if ep.len() != fp.len() {
        return Some(format!(
            "expected {} parameter(s) ({}), found {} ({})",
            ep.len(),
            param_names(&ep),
            fp.len(),
            param_names(&fp)
        ));
    }
    for ((en, et), (fname, ft)) in ep.iter().zip(&fp) {
        if en != fname {
            return Some(format!("expected parameter `{en}`, found `{fname}`"));
        }
        if let Some(d) = diff(et, ft) {
            return Some(format!("param `{en}`: {d}"));
        }
    }
    let (er, fr): (Vec<_>, Vec<_>) = (expected.results().collect(), found.results().collect());
    match (er.first(), fr.first()) {
        (None, None) => None,
        (Some(e), Some(f)) => diff(e, f).map(|d| format!("result: {d}")),
        (e, f) => Some(format!(
            "result: expected {}, found {}",
            e.map_or("nothing".into(), describe),
            f.map_or("nothing".into(), describe)
        )),
    }
}

fn param_names(params: &[(&str, Type)]) -> String {
    params.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// The first difference between two value types, as a path, or `None`.
pub fn diff(expected: &Type, found: &Type) -> Option<String> {
    let mismatch = || Some(format!("expected {}, found {}", describe(expected), describe(found)));
    match (expected, found) {
        (Type::Record(e), Type::Record(f)) => {
            let (ef, ff): (Vec<_>, Vec<_>) = (e.fields().collect(), f.fields().collect());
            for (i, field) in ef.iter().enumerate() {
                match ff.get(i) {
                    Some(other) if other.name == field.name => {
                        if let Some(d) = diff(&field.ty, &other.ty) {
                            return Some(format!("field `{}`: {d}", field.name));
                        }
                    }
                    Some(other) => {
                        return Some(format!("field {i}: expected `{}`, found `{}`", field.name, other.name));
                    }
                    None => return Some(format!("field `{}` is missing", field.name)),
                }
            }
            (ff.len() > ef.len()).then(|| format!("unexpected field `{}`", ff[ef.len()].name))
        }
        (Type::Variant(e), Type::Variant(f)) => {
            let (ec, fc): (Vec<_>, Vec<_>) = (e.cases().collect(), f.cases().collect());
            for (i, case) in ec.iter().enumerate() {
                let Some(other) = fc.get(i) else {
                    return Some(format!("case `{}` is missing", case.name));
                };
                if other.name != case.name {
                    return Some(format!("case {i}: expected `{}`, found `{}`", case.name, other.name));
                }
                if let Some(d) = diff_opt(case.ty.as_ref(), other.ty.as_ref()) {
                    return Some(format!("case `{}`: {d}", case.name));
                }
            }
            (fc.len() > ec.len()).then(|| format!("unexpected case `{}`", fc[ec.len()].name))
        }
        (Type::Enum(e), Type::Enum(f)) => diff_names("case", e.names(), f.names()),
        (Type::Flags(e), Type::Flags(f)) => diff_names("flag", e.names(), f.names()),
        (Type::Tuple(e), Type::Tuple(f)) => {
            let (et, ft): (Vec<_>, Vec<_>) = (e.types().collect(), f.types().collect());
            if et.len() != ft.len() {
                return mismatch();
            }
            et.iter()
                .zip(&ft)
                .enumerate()
                .find_map(|(i, (a, b))| diff(a, b).map(|d| format!("element {i}: {d}")))
        }
        (Type::List(e), Type::List(f)) => diff(&e.ty(), &f.ty()).map(|d| format!("list element: {d}")),
        (Type::Option(e), Type::Option(f)) => diff(&e.ty(), &f.ty()).map(|d| format!("option: {d}")),
        (Type::Result(e), Type::Result(f)) => diff_opt(e.ok().as_ref(), f.ok().as_ref())
            .map(|d| format!("ok: {d}"))
            .or_else(|| diff_opt(e.err().as_ref(), f.err().as_ref()).map(|d| format!("err: {d}"))),
        (e, f) if std::mem::discriminant(e) == std::mem::discriminant(f) => {
            // Primitives are equal by kind; everything else (resources, maps,
            // streams...) falls back to wasmtime's own structural equality.
            (e != f).then(|| format!("expected {}, found a different {}", describe(e), describe(f)))
        }
        _ => mismatch(),
    }
}

fn diff_opt(expected: Option<&Type>, found: Option<&Type>) -> Option<String> {
    match (expected, found) {
        (None, None) => None,
        (Some(e), Some(f)) => diff(e, f),
        (e, f) => Some(format!(
            "expected {}, found {}",
            e.map_or("no payload".into(), describe),
            f.map_or("no payload".into(), describe)
        )),
    }
}

fn diff_names<'a>(
    what: &str,
    expected: impl Iterator<Item = &'a str>,
    found: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let (e, f): (Vec<_>, Vec<_>) = (expected.collect(), found.collect());
    (e != f).then(|| format!("expected {what}s ({}), found ({})", e.join(", "), f.join(", ")))
}

/// A short WIT-like rendering of a type: compound types show their shape one
/// level deep, e.g. `record { id, holder, region, .. }`.
pub fn describe(ty: &Type) -> String {
    fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
        let all: Vec<_> = it.collect();
        if all.len() > 4 {
            format!("{}, ..", all[..4].join(", "))
        } else {
            all.join(", ")
        }
    }
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", describe(&l.ty())),
        Type::Record(r) => format!("record {{ {} }}", names(r.fields().map(|f| f.name))),
        Type::Tuple(t) => format!(
            "tuple<{}>",
            t.types().map(|t| describe(&t)).collect::<Vec<_>>().join(", ")
        ),
        Type::Variant(v) => format!("variant {{ {} }}", names(v.cases().map(|c| c.name))),
        Type::Enum(e) => format!("enum {{ {} }}", names(e.names())),
        Type::Option(o) => format!("option<{}>", describe(&o.ty())),
        Type::Result(r) => format!(
            "result<{}, {}>",
            r.ok().map_or("_".into(), |t| describe(&t)),
            r.err().map_or("_".into(), |t| describe(&t))
        ),
        Type::Flags(f) => format!("flags {{ {} }}", names(f.names())),
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Map(_) => "map".into(),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
        Type::FixedLengthList(_) => "fixed-length list".into(),
    }
}

/// Whether values of `ty` can carry a resource handle (own or borrow), or an
/// async handle (future, stream), which cannot be forwarded between stores.
pub fn carries_handle(ty: &Type) -> bool {
    match ty {
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => true,
        Type::List(l) => carries_handle(&l.ty()),
        Type::FixedLengthList(l) => carries_handle(&l.ty()),
        Type::Option(o) => carries_handle(&o.ty()),
        Type::Record(r) => r.fields().any(|f| carries_handle(&f.ty)),
        Type::Tuple(t) => t.types().any(|t| carries_handle(&t)),
        Type::Variant(v) => v.cases().any(|c| c.ty.as_ref().is_some_and(carries_handle)),
        Type::Result(r) => r.ok().as_ref().is_some_and(carries_handle) || r.err().as_ref().is_some_and(carries_handle),
        Type::Map(_) => true,
        _ => false,
    }
}

/// Whether a function passes a resource, stream or future in its parameters
/// or results: no link between components nor any medium can carry those.
pub fn func_carries_handle(func: &ComponentFunc) -> bool {
    func.params().any(|(_, t)| carries_handle(&t)) || func.results().any(|t| carries_handle(&t))
}
