//! The binary wire codec against random WIT types and values.
//!
//! Each case draws a random type tree, renders it as WIT, builds a real
//! component exporting a function of that type (wit-component's dummy
//! module), and takes the type from wasmtime, as a host would. Then:
//! - random values of the type round-trip exactly;
//! - arbitrary bytes, and corrupted encodings, fed to the decoder end in a
//!   `WireError`, never a panic, and never allocate more than
//!   `MAX_ALLOC_PER_BYTE` (128) bytes per input byte plus 8 KiB, counted by
//!   this binary's allocator (the decoder checks every length against the
//!   bytes left, and charges every allocation to a budget of
//!   `wire::MEMORY_PER_BYTE` per byte plus `wire::MEMORY_FLOOR`, before it
//!   allocates);
//! - the JSON codec of function-level media takes arbitrary and corrupted
//!   bodies without a panic.
//!
//! These are property tests, run by CI for a bounded number of cases
//! (`PROPTEST_CASES` raises it). The coverage-guided fuzz targets of the same
//! decoders are in `fuzz/` (`scripts/fuzz.sh`).

use membrane::codec::{json, wire};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};
use wasmtime::component::{Component, Val};
use wasmtime::{Config, Engine};

/// A WIT type tree.
#[derive(Debug, Clone)]
enum T {
    Bool,
    S8,
    U8,
    S16,
    U16,
    S32,
    U32,
    S64,
    U64,
    F32,
    F64,
    Char,
    String,
    List(Box<T>),
    Option(Box<T>),
    Result(Option<Box<T>>, Option<Box<T>>),
    Tuple(Vec<T>),
    Record(Vec<T>),
    Variant(Vec<Option<T>>),
    Enum(usize),
    Flags(usize),
}

fn wit_type() -> impl Strategy<Value = T> {
    let leaf = prop_oneof![
        Just(T::Bool),
        Just(T::S8),
        Just(T::U8),
        Just(T::S16),
        Just(T::U16),
        Just(T::S32),
        Just(T::U32),
        Just(T::S64),
        Just(T::U64),
        Just(T::F32),
        Just(T::F64),
        Just(T::Char),
        Just(T::String),
        (1usize..6).prop_map(T::Enum),
        (1usize..20).prop_map(T::Flags),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| T::List(Box::new(t))),
            inner.clone().prop_map(|t| T::Option(Box::new(t))),
            (
                proptest::option::of(inner.clone().prop_map(Box::new)),
                proptest::option::of(inner.clone().prop_map(Box::new))
            )
                .prop_map(|(ok, err)| T::Result(ok, err)),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(T::Tuple),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(T::Record),
            proptest::collection::vec(proptest::option::of(inner), 1..4).prop_map(T::Variant),
        ]
    })
}

/// WIT text for `t`; named types are declared into `decls`.
fn render(t: &T, decls: &mut Vec<String>) -> String {
    let name = |decls: &Vec<String>| format!("t{}", decls.len());
    match t {
        T::Bool => "bool".into(),
        T::S8 => "s8".into(),
        T::U8 => "u8".into(),
        T::S16 => "s16".into(),
        T::U16 => "u16".into(),
        T::S32 => "s32".into(),
        T::U32 => "u32".into(),
        T::S64 => "s64".into(),
        T::U64 => "u64".into(),
        T::F32 => "f32".into(),
        T::F64 => "f64".into(),
        T::Char => "char".into(),
        T::String => "string".into(),
        T::List(t) => format!("list<{}>", render(t, decls)),
        T::Option(t) => format!("option<{}>", render(t, decls)),
        T::Result(ok, err) => match (ok, err) {
            (Some(ok), Some(err)) => format!("result<{}, {}>", render(ok, decls), render(err, decls)),
            (Some(ok), None) => format!("result<{}>", render(ok, decls)),
            (None, Some(err)) => format!("result<_, {}>", render(err, decls)),
            (None, None) => "result".into(),
        },
        T::Tuple(ts) => format!(
            "tuple<{}>",
            ts.iter().map(|t| render(t, decls)).collect::<Vec<_>>().join(", ")
        ),
        T::Record(fields) => {
            let body: Vec<_> = fields
                .iter()
                .enumerate()
                .map(|(i, t)| format!("f{i}: {}", render(t, decls)))
                .collect();
            let n = name(decls);
            decls.push(format!("record {n} {{ {} }}", body.join(", ")));
            n
        }
        T::Variant(cases) => {
            let body: Vec<_> = cases
                .iter()
                .enumerate()
                .map(|(i, t)| match t {
                    Some(t) => format!("c{i}({})", render(t, decls)),
                    None => format!("c{i}"),
                })
                .collect();
            let n = name(decls);
            decls.push(format!("variant {n} {{ {} }}", body.join(", ")));
            n
        }
        T::Enum(k) => {
            let n = name(decls);
            decls.push(format!(
                "enum {n} {{ {} }}",
                (0..*k).map(|i| format!("e{i}")).collect::<Vec<_>>().join(", ")
            ));
            n
        }
        T::Flags(k) => {
            let n = name(decls);
            decls.push(format!(
                "flags {n} {{ {} }}",
                (0..*k).map(|i| format!("g{i}")).collect::<Vec<_>>().join(", ")
            ));
            n
        }
    }
}

/// The wasmtime type of `t`, from a real component exporting `f: func(v: t)`.
/// Counts the bytes this thread allocates, to bound what decoding costs.
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counter is a plain thread-local cell that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.with(|a| a.set(a.get() + layout.size()));
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// The bytes `f` allocates on this thread.
fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATED.with(Cell::get);
    let result = f();
    (result, ALLOCATED.with(Cell::get) - before)
}

/// The most a decode may allocate per input byte, plus [`ALLOC_SLACK`]: above
/// the decoder's own budget (`wire::MEMORY_PER_BYTE`, `wire::MEMORY_FLOOR`),
/// which charges what the values hold, because this counts every allocation
/// made on the way, the results vector included.
const MAX_ALLOC_PER_BYTE: usize = 128;
/// What a tiny value may cost beyond [`MAX_ALLOC_PER_BYTE`].
const ALLOC_SLACK: usize = 8192;

fn wasmtime_type(engine: &Engine, t: &T) -> Type {
    wasmtime_func(engine, t).params().next().unwrap().1
}

/// The type of `f: func(v: t)` in a real component.
fn wasmtime_func(engine: &Engine, t: &T) -> ComponentFunc {
    let mut decls = Vec::new();
    let ty = render(t, &mut decls);
    let wit = format!(
        "package test:gen;\ninterface i {{\n{}\nf: func(v: {ty});\n}}\nworld w {{ export i; }}\n",
        decls.join("\n")
    );
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_str("gen.wit", &wit)
        .unwrap_or_else(|e| panic!("{e}\n{wit}"));
    let world = resolve.select_world(&[package], Some("w")).unwrap();
    let mut module = wit_component::dummy_module(
        &resolve,
        world,
        wit_parser::ManglingAndAbi::Legacy(wit_parser::LiftLowerAbi::Sync),
    );
    wit_component::embed_component_metadata(&mut module, &resolve, world, wit_component::StringEncoding::UTF8).unwrap();
    let bytes = wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap();
    let component = Component::new(engine, bytes).unwrap();
    let ComponentItem::ComponentInstance(i) = component.component_type().get_export(engine, "test:gen/i").unwrap().ty
    else {
        panic!("no interface")
    };
    let ComponentItem::ComponentFunc(f) = i.get_export(engine, "f").unwrap().ty else {
        panic!("no function")
    };
    f
}

/// Random values of `t`, named as `render` names things.
fn value(t: &T) -> BoxedStrategy<Val> {
    match t {
        T::Bool => any::<bool>().prop_map(Val::Bool).boxed(),
        T::S8 => any::<i8>().prop_map(Val::S8).boxed(),
        T::U8 => any::<u8>().prop_map(Val::U8).boxed(),
        T::S16 => any::<i16>().prop_map(Val::S16).boxed(),
        T::U16 => any::<u16>().prop_map(Val::U16).boxed(),
        T::S32 => any::<i32>().prop_map(Val::S32).boxed(),
        T::U32 => any::<u32>().prop_map(Val::U32).boxed(),
        T::S64 => any::<i64>().prop_map(Val::S64).boxed(),
        T::U64 => any::<u64>().prop_map(Val::U64).boxed(),
        // NaN != NaN would make equality meaningless; every other float, incl. ±inf and -0.
        T::F32 => any::<f32>()
            .prop_filter("not NaN", |x| !x.is_nan())
            .prop_map(Val::Float32)
            .boxed(),
        T::F64 => any::<f64>()
            .prop_filter("not NaN", |x| !x.is_nan())
            .prop_map(Val::Float64)
            .boxed(),
        T::Char => any::<char>().prop_map(Val::Char).boxed(),
        T::String => any::<String>().prop_map(Val::String).boxed(),
        T::List(t) => proptest::collection::vec(value(t), 0..5).prop_map(Val::List).boxed(),
        T::Option(t) => proptest::option::of(value(t).prop_map(Box::new))
            .prop_map(Val::Option)
            .boxed(),
        T::Result(ok, err) => {
            let side = |s: &Option<Box<T>>| match s {
                Some(t) => value(t).prop_map(|v| Some(Box::new(v))).boxed(),
                None => Just(None).boxed(),
            };
            prop_oneof![
                side(ok).prop_map(|v| Val::Result(Ok(v))),
                side(err).prop_map(|v| Val::Result(Err(v)))
            ]
            .boxed()
        }
        T::Tuple(ts) => ts.iter().map(value).collect::<Vec<_>>().prop_map(Val::Tuple).boxed(),
        T::Record(fields) => fields
            .iter()
            .map(value)
            .collect::<Vec<_>>()
            .prop_map(|vs| Val::Record(vs.into_iter().enumerate().map(|(i, v)| (format!("f{i}"), v)).collect()))
            .boxed(),
        T::Variant(cases) => {
            let options: Vec<BoxedStrategy<Val>> = cases
                .iter()
                .enumerate()
                .map(|(i, t)| match t {
                    Some(t) => value(t)
                        .prop_map(move |v| Val::Variant(format!("c{i}"), Some(Box::new(v))))
                        .boxed(),
                    None => Just(Val::Variant(format!("c{i}"), None)).boxed(),
                })
                .collect();
            proptest::strategy::Union::new(options).boxed()
        }
        T::Enum(k) => (0..*k).prop_map(|i| Val::Enum(format!("e{i}"))).boxed(),
        T::Flags(k) => proptest::collection::vec(any::<bool>(), *k)
            .prop_map(|bits| {
                Val::Flags(
                    bits.iter()
                        .enumerate()
                        .filter(|(_, b)| **b)
                        .map(|(i, _)| format!("g{i}"))
                        .collect(),
                )
            })
            .boxed(),
    }
}

fn engine() -> Engine {
    Engine::new(&Config::new()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_values_of_random_types_round_trip(
        (t, values) in wit_type().prop_flat_map(|t| {
            let v = proptest::collection::vec(value(&t), 1..8);
            (Just(t), v)
        })
    ) {
        let engine = engine();
        let ty = wasmtime_type(&engine, &t);
        for v in values {
            let bytes = wire::encode(std::slice::from_ref(&ty), std::slice::from_ref(&v)).unwrap();
            let back = wire::decode(std::slice::from_ref(&ty), &bytes).unwrap();
            prop_assert_eq!(&back[0], &v);
            // Every strict prefix is refused, never misread.
            for cut in [bytes.len() - 1, bytes.len() / 2] {
                if cut > 0 && cut < bytes.len() {
                    prop_assert!(wire::decode(std::slice::from_ref(&ty), &bytes[..cut]).is_err());
                }
            }
        }
    }

    /// The bounded fuzz harness CI runs: arbitrary bytes and corrupted valid
    /// messages against random types. Decoding may fail, but must not panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        (t, valid, noise, flips) in wit_type().prop_flat_map(|t| {
            let v = value(&t);
            (
                Just(t),
                v,
                proptest::collection::vec(any::<u8>(), 0..256),
                proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            )
        })
    ) {
        let engine = engine();
        let ty = wasmtime_type(&engine, &t);
        let types = std::slice::from_ref(&ty);
        let mut garbage = vec![wire::VERSION];
        garbage.extend_from_slice(&noise);
        let mut corrupted = wire::encode(types, std::slice::from_ref(&valid)).unwrap();
        let whole = corrupted.clone();
        for (at, byte) in flips {
            let i = at % corrupted.len();
            corrupted[i] ^= byte | 1;
        }
        for input in [&garbage, &noise, &corrupted, &whole] {
            let (_, bytes) = allocated_by(|| wire::decode(types, input));
            let bound = MAX_ALLOC_PER_BYTE * input.len() + ALLOC_SLACK;
            prop_assert!(bytes <= bound, "{bytes} bytes allocated decoding {} input bytes of {t:?}", input.len());
        }
    }

    /// The same for the JSON codec of function-level media: arbitrary bytes,
    /// and valid parameter objects with bytes flipped, fail or decode, never
    /// panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_json_decoder(
        (t, valid, noise, flips) in wit_type().prop_flat_map(|t| {
            let v = value(&t);
            (
                Just(t),
                v,
                proptest::collection::vec(any::<u8>(), 0..256),
                proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            )
        })
    ) {
        let engine = engine();
        let func = wasmtime_func(&engine, &t);
        let _ = json::params_from_json(&func, &noise);
        let body = serde_json::json!({ "v": json::to_json(&valid) }).to_string().into_bytes();
        prop_assert!(json::params_from_json(&func, &body).is_ok(), "{}", String::from_utf8_lossy(&body));
        let mut corrupted = body.clone();
        for (at, byte) in flips {
            let i = at % corrupted.len();
            corrupted[i] ^= byte | 1;
        }
        let _ = json::params_from_json(&func, &corrupted);
    }
}

#[test]
fn a_huge_claimed_length_is_refused_without_allocating_it() {
    let engine = engine();
    let ty = wasmtime_type(&engine, &T::List(Box::new(T::String)));
    // version, then a list length of u64::MAX as a varint, and nothing else.
    let mut bytes = vec![wire::VERSION];
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    let err = wire::decode(&[ty], &bytes).unwrap_err();
    assert!(err.message.contains("does not fit the 0 byte(s) left"), "{err}");
}

/// Found by `arbitrary_bytes_never_panic_the_decoder`: two bytes of a
/// sixteen-flag set became sixteen `String`s (about 430 bytes of memory per
/// input byte), so 128 bytes allocated 55 KiB before the budget existed.
#[test]
fn set_flags_cannot_amplify_a_message_into_memory() {
    let engine = engine();
    let t = T::List(Box::new(T::Tuple(vec![T::Flags(16)])));
    let ty = wasmtime_type(&engine, &t);
    let mut bytes = vec![wire::VERSION, 63];
    bytes.extend_from_slice(&[0xff; 126]);
    let (result, allocated) = allocated_by(|| wire::decode(std::slice::from_ref(&ty), &bytes));
    let err = result.unwrap_err();
    assert!(
        err.message
            .contains("need more memory than a message of 128 bytes may take"),
        "{err}"
    );
    assert!(
        allocated <= MAX_ALLOC_PER_BYTE * bytes.len() + ALLOC_SLACK,
        "{allocated} bytes"
    );
}

/// The budget leaves room for what real calls send: bytes, and a few sets
/// of flags with every flag set.
#[test]
fn the_memory_budget_admits_byte_lists_and_small_flag_sets() {
    let engine = engine();
    let bytes_ty = wasmtime_type(&engine, &T::List(Box::new(T::U8)));
    let data = Val::List((0..100_000u32).map(|i| Val::U8(i as u8)).collect());
    let encoded = wire::encode(std::slice::from_ref(&bytes_ty), std::slice::from_ref(&data)).unwrap();
    assert_eq!(
        wire::decode(std::slice::from_ref(&bytes_ty), &encoded).unwrap(),
        vec![data]
    );

    let flags_ty = wasmtime_type(&engine, &T::List(Box::new(T::Flags(16))));
    let all: Vec<String> = (0..16).map(|i| format!("g{i}")).collect();
    let sets = Val::List(vec![Val::Flags(all); 8]);
    let encoded = wire::encode(std::slice::from_ref(&flags_ty), std::slice::from_ref(&sets)).unwrap();
    assert_eq!(
        wire::decode(std::slice::from_ref(&flags_ty), &encoded).unwrap(),
        vec![sets]
    );
}

#[test]
fn a_wrong_version_is_named() {
    let engine = engine();
    let ty = wasmtime_type(&engine, &T::U8);
    let err = wire::decode(&[ty], &[9, 1]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "wire decode error at byte 1: unsupported wire version 9 (this host speaks 1)"
    );
}
