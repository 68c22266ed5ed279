//! Component values <-> JSON, directed by the component's own types.
//!
//! The mapping (specified in `docs/json.md`): records are objects, variants
//! `{"case": payload}` (or `"case"` without a payload), enums strings, flags
//! arrays of strings, options `null` or the value, results `{"ok": ..}` /
//! `{"err": ..}`, tuples and lists arrays, chars one-character strings.
//! Integers are range-checked; 64-bit integers are written exactly and also
//! accepted as decimal strings, so clients whose numbers are doubles lose
//! nothing. A value of the wrong shape is a [`JsonError`] with the path to it,
//! what was expected and what was found.

use serde_json::{Map, Value};
use std::fmt;
use wasmtime::component::Val;
use wasmtime::component::types::{ComponentFunc, Type};

use super::types::describe;

/// A JSON value that does not fit the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: expected {expected}, found {found}")]
pub struct JsonError {
    /// Where in the document, e.g. `policy.drivers[0].age`.
    pub path: String,
    /// What the type wanted.
    pub expected: String,
    /// What the document had (abridged).
    pub found: String,
}

impl JsonError {
    /// The error as the JSON body media send back.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "error": self.to_string(),
            "path": self.path,
            "expected": self.expected,
            "found": self.found,
        })
    }
}

/// Parses a request body, a JSON object of `func`'s parameters by name, into
/// argument values.
pub fn params_from_json(func: &ComponentFunc, body: &[u8]) -> Result<Vec<Val>, JsonError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| JsonError {
        path: "$".into(),
        expected: "a JSON object of the parameters".into(),
        found: format!("invalid JSON ({e})"),
    })?;
    let Value::Object(mut args) = doc else {
        return Err(mismatch(&Path::root(), "a JSON object of the parameters", &doc));
    };
    let mut params = Vec::new();
    for (name, ty) in func.params() {
        let path = Path::root().field(name);
        let value = take(&mut args, name).unwrap_or(Value::Null);
        if value.is_null() && !matches!(ty, Type::Option(_)) {
            return Err(JsonError {
                path: path.to_string(),
                expected: describe(&ty),
                found: "nothing (missing parameter)".into(),
            });
        }
        params.push(from_json(&ty, &value, &path)?);
    }
    if let Some(extra) = args.keys().next() {
        let names: Vec<_> = func.params().map(|(n, _)| n.to_string()).collect();
        return Err(JsonError {
            path: format!("$.{extra}"),
            expected: format!("one of the parameters ({})", names.join(", ")),
            found: "an unknown parameter".into(),
        });
    }
    Ok(params)
}

/// The JSON of a call's results: the single result's value, or `null` for
/// a function without results.
pub fn results_to_json(results: &[Val]) -> Value {
    match results {
        [] => Value::Null,
        [one] => to_json(one),
        many => Value::Array(many.iter().map(to_json).collect()),
    }
}

/// Removes `name` from `object`, also accepting `snake_case` for a
/// `kebab-case` WIT name.
fn take(object: &mut Map<String, Value>, name: &str) -> Option<Value> {
    object.remove(name).or_else(|| object.remove(&name.replace('-', "_")))
}

/// A location in a JSON document, for errors.
#[derive(Clone)]
struct Path(String);

impl Path {
    fn root() -> Path {
        Path("$".into())
    }
    fn field(&self, name: &str) -> Path {
        Path(format!("{}.{name}", self.0))
    }
    fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn mismatch(path: &Path, expected: &str, found: &Value) -> JsonError {
    let mut text = match found {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::Object(_) => "an object".to_string(),
    };
    if text.len() > 80 {
        text.truncate(77);
        text.push_str("...");
    }
    JsonError {
        path: path.to_string(),
        expected: expected.to_string(),
        found: text,
    }
}

fn int<T: TryFrom<i128>>(value: &Value, path: &Path, name: &str) -> Result<T, JsonError> {
    let wide: Option<i128> = match value {
        Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) if matches!(name, "u64" | "s64") => s.trim().parse().ok(),
        _ => None,
    };
    wide.and_then(|w| T::try_from(w).ok()).ok_or_else(|| {
        let expected = match name {
            "u64" | "s64" => format!("{name} (a number or a decimal string)"),
            _ => name.to_string(),
        };
        let mut e = mismatch(path, &expected, value);
        if let Value::Number(_) = value {
            e.expected = format!("{expected} in range");
        }
        e
    })
}

fn float(value: &Value, path: &Path, name: &str) -> Result<f64, JsonError> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| mismatch(path, name, value)),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(mismatch(path, name, value)),
        },
        _ => Err(mismatch(path, name, value)),
    }
}

fn case_name(value: &Value) -> Option<(&str, Option<&Value>)> {
    match value {
        Value::String(s) => Some((s, None)),
        Value::Object(o) if o.len() == 1 => o.iter().next().map(|(k, v)| (k.as_str(), Some(v))),
        _ => None,
    }
}

/// The elements of a JSON array as values of type `elem` (`ty` is the list
/// type, for the error).
fn elements(elem: &Type, ty: &Type, value: &Value, path: &Path) -> Result<Vec<Val>, JsonError> {
    let Value::Array(items) = value else {
        return Err(mismatch(path, &describe(ty), value));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| from_json(elem, v, &path.index(i)))
        .collect()
}

/// Converts `value` into a component value of type `ty`.
fn from_json(ty: &Type, value: &Value, path: &Path) -> Result<Val, JsonError> {
    let fail = |expected: &str| Err(mismatch(path, expected, value));
    Ok(match ty {
        Type::Bool => match value {
            Value::Bool(b) => Val::Bool(*b),
            _ => return fail("bool"),
        },
        Type::S8 => Val::S8(int(value, path, "s8")?),
        Type::U8 => Val::U8(int(value, path, "u8")?),
        Type::S16 => Val::S16(int(value, path, "s16")?),
        Type::U16 => Val::U16(int(value, path, "u16")?),
        Type::S32 => Val::S32(int(value, path, "s32")?),
        Type::U32 => Val::U32(int(value, path, "u32")?),
        Type::S64 => Val::S64(int(value, path, "s64")?),
        Type::U64 => Val::U64(int(value, path, "u64")?),
        Type::Float32 => Val::Float32(float(value, path, "f32")? as f32),
        Type::Float64 => Val::Float64(float(value, path, "f64")?),
        Type::Char => match value.as_str().map(|s| (s.chars().next(), s.chars().count())) {
            Some((Some(c), 1)) => Val::Char(c),
            _ => return fail("char (a one-character string)"),
        },
        Type::String => match value {
            Value::String(s) => Val::String(s.clone()),
            _ => return fail("string"),
        },
        Type::List(list) => Val::List(elements(&list.ty(), ty, value, path)?),
        Type::FixedLengthList(list) => Val::FixedLengthList(elements(&list.ty(), ty, value, path)?),
        Type::Map(map) => match value {
            Value::Array(pairs) => {
                let (kt, vt) = (map.key(), map.value());
                let mut out = Vec::new();
                for (i, pair) in pairs.iter().enumerate() {
                    let p = path.index(i);
                    match pair.as_array().map(Vec::as_slice) {
                        Some([k, v]) => out.push((from_json(&kt, k, &p.index(0))?, from_json(&vt, v, &p.index(1))?)),
                        _ => return Err(mismatch(&p, "a [key, value] pair", pair)),
                    }
                }
                Val::Map(out)
            }
            _ => return fail("map (an array of [key, value] pairs)"),
        },
        Type::Record(record) => {
            let Value::Object(object) = value else {
                return fail(&describe(ty));
            };
            let mut object = object.clone();
            let mut fields = Vec::new();
            for field in record.fields() {
                let p = path.field(field.name);
                let v = take(&mut object, field.name).unwrap_or(Value::Null);
                if v.is_null() && !matches!(field.ty, Type::Option(_)) {
                    return Err(JsonError {
                        path: p.to_string(),
                        expected: describe(&field.ty),
                        found: "nothing (missing field)".into(),
                    });
                }
                fields.push((field.name.to_string(), from_json(&field.ty, &v, &p)?));
            }
            if let Some(extra) = object.keys().next() {
                return Err(JsonError {
                    path: path.field(extra).to_string(),
                    expected: format!("one of the fields of {}", describe(ty)),
                    found: "an unknown field".into(),
                });
            }
            Val::Record(fields)
        }
        Type::Tuple(tuple) => match value {
            Value::Array(items) if items.len() == tuple.types().len() => Val::Tuple(
                tuple
                    .types()
                    .zip(items)
                    .enumerate()
                    .map(|(i, (t, v))| from_json(&t, v, &path.index(i)))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return fail(&describe(ty)),
        },
        Type::Variant(variant) => {
            let Some((name, payload)) = case_name(value) else {
                return fail(&format!("{} as \"case\" or {{\"case\": payload}}", describe(ty)));
            };
            let Some(case) = variant.cases().find(|c| c.name == name) else {
                return fail(&describe(ty));
            };
            let payload = match (&case.ty, payload) {
                (None, None | Some(Value::Null)) => None,
                (Some(t), Some(v)) => Some(Box::new(from_json(t, v, &path.field(name))?)),
                (Some(t), None) => {
                    return Err(JsonError {
                        path: path.field(name).to_string(),
                        expected: describe(t),
                        found: "nothing (missing payload)".into(),
                    });
                }
                (None, Some(v)) => return Err(mismatch(&path.field(name), "no payload (null)", v)),
            };
            Val::Variant(case.name.to_string(), payload)
        }
        Type::Enum(e) => match value.as_str() {
            Some(s) if e.names().any(|n| n == s) => Val::Enum(s.to_string()),
            _ => return fail(&describe(ty)),
        },
        Type::Flags(flags) => match value {
            Value::Array(items) => {
                let mut set = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(s) if flags.names().any(|n| n == s) => set.push(s.to_string()),
                        _ => return Err(mismatch(&path.index(i), &describe(ty), item)),
                    }
                }
                Val::Flags(set)
            }
            _ => return fail(&format!("{} as an array of names", describe(ty))),
        },
        Type::Option(option) => {
            let inner = option.ty();
            match value {
                Value::Null => Val::Option(None),
                // `option<option<T>>`: the outer `some` is spelled out, or
                // `some(none)` and `none` would both be `null`.
                Value::Object(o) if matches!(inner, Type::Option(_)) => match o.get("some") {
                    Some(v) if o.len() == 1 => Val::Option(Some(Box::new(from_json(&inner, v, &path.field("some"))?))),
                    _ => return fail("null or {\"some\": value}"),
                },
                v => Val::Option(Some(Box::new(from_json(&inner, v, path)?))),
            }
        }
        Type::Result(result) => {
            let Some((name, payload)) = case_name(value).filter(|(n, _)| *n == "ok" || *n == "err") else {
                return fail("{\"ok\": value} or {\"err\": value}");
            };
            let ty = if name == "ok" { result.ok() } else { result.err() };
            let payload = match (ty, payload) {
                (None, None | Some(Value::Null)) => None,
                (Some(t), Some(v)) => Some(Box::new(from_json(&t, v, &path.field(name))?)),
                (Some(t), None) => return Err(mismatch(&path.field(name), &describe(&t), &Value::Null)),
                (None, Some(v)) => return Err(mismatch(&path.field(name), "no payload (null)", v)),
            };
            Val::Result(if name == "ok" { Ok(payload) } else { Err(payload) })
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            return fail(&format!("{} (cannot be passed as JSON)", describe(ty)));
        }
    })
}

/// The JSON of a component value. Values carry their own case and field
/// names, so no type is needed in this direction.
pub fn to_json(val: &Val) -> Value {
    fn float(x: f64) -> Value {
        if x.is_nan() {
            Value::from("NaN")
        } else if x.is_infinite() {
            Value::from(if x > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            Value::from(x)
        }
    }
    fn tagged(name: &str, payload: &Option<Box<Val>>) -> Value {
        let mut object = Map::new();
        object.insert(name.to_string(), payload.as_deref().map_or(Value::Null, to_json));
        Value::Object(object)
    }
    match val {
        Val::Bool(b) => Value::from(*b),
        Val::S8(x) => Value::from(*x),
        Val::U8(x) => Value::from(*x),
        Val::S16(x) => Value::from(*x),
        Val::U16(x) => Value::from(*x),
        Val::S32(x) => Value::from(*x),
        Val::U32(x) => Value::from(*x),
        Val::S64(x) => Value::from(*x),
        Val::U64(x) => Value::from(*x),
        Val::Float32(x) => float(f64::from(*x)),
        Val::Float64(x) => float(*x),
        Val::Char(c) => Value::from(c.to_string()),
        Val::String(s) => Value::from(s.as_str()),
        Val::List(items) | Val::Tuple(items) | Val::FixedLengthList(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
        Val::Map(pairs) => Value::Array(
            pairs
                .iter()
                .map(|(k, v)| Value::Array(vec![to_json(k), to_json(v)]))
                .collect(),
        ),
        Val::Record(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
        Val::Variant(name, None) => Value::from(name.as_str()),
        Val::Variant(name, payload) => tagged(name, payload),
        Val::Enum(name) => Value::from(name.as_str()),
        Val::Flags(names) => Value::Array(names.iter().map(|n| Value::from(n.as_str())).collect()),
        Val::Option(None) => Value::Null,
        Val::Option(Some(inner)) => match **inner {
            Val::Option(_) => tagged("some", &Some(inner.clone())),
            _ => to_json(inner),
        },
        Val::Result(Ok(payload)) => tagged("ok", payload),
        Val::Result(Err(payload)) => tagged("err", payload),
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => {
            Value::from("<handle: not representable as JSON>")
        }
    }
}
