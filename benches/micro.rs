//! Micro benchmarks (criterion): the cost of a fresh instance and of an
//! in-process link hop, measured from the host side.
//!
//! - `instantiate_call/echo`: a fresh store + instance of `echo` and one call,
//!   the per-request cost of the default instance strategy.
//! - `warm_call/echo` vs `warm_call/relay->echo`: the same call on kept
//!   instances, directly and through one link. The difference is the hop
//!   (plus `relay`'s own few instructions: an upper bound).
//! - `reused_call/echo`: the same as `instantiate_call`, with `reuse` set, so
//!   the call takes a parked instance: the other instance strategy.
//! - `fresh_rate/rater->pricing`: `rater.rate` on a fresh instance, which
//!   starts `pricing` through its link: the example's inner path per request;
//!   `reused_rate/rater->pricing` the same with `reuse` on both, and
//!   `native/rate` the same rules as a direct Rust call (`insurance::rate`).
//! - `native/echo`: the same logic as `echo#echo` as a direct Rust call (the
//!   physical floor under `warm_call`).
//! - `remote/link relay->echo` vs `remote/raw-nats`: one remote link call
//!   (a kept `relay` on host X, `echo` on host Y, each a runtime with its own
//!   NATS connection to a private nats-server) against raw async-nats
//!   request/reply of the same 7 bytes.
//! - `codec/{wire,json}-{encode,decode}/{small,medium,large}`: a value of
//!   `values#roundtrip`'s record type with a 5 B, 1 KiB and 64 KiB payload,
//!   through the wire codec of remote links and the JSON of the media.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use membrane::codec::{json, wire};
use membrane_benches::load;
use std::hint::black_box;
use std::time::{Duration, Instant};
use wasmtime::component::Val;
use wasmtime::component::types::{ComponentFunc, ComponentItem};

const ECHO: &str = "example:testkit/echo@0.1.0";

const APP: &str = r#"
[app]
name = "bench"
[components.echo]
source = "{wasm:echo}"
# Kept instances (warm_call) live for the whole group, past the default 5 s deadline.
limits = { timeout_ms = 3600000 }
[components.relay]
source = "{wasm:relay}"
limits = { timeout_ms = 3600000 }
[components.rater]
source = "{wasm:rater}"
[components.pricing]
source = "{wasm:pricing}"
config = { currency = "EUR", "life.base" = "95" }
[[links]]
from = "relay"
import = "example:testkit/echo@0.1.0"
to = "echo"
[[links]]
from = "rater"
import = "example:insurance/pricing@0.1.0"
to = "pricing"
"#;

fn life_policy() -> Val {
    Val::Record(vec![
        ("id".into(), Val::U64(7)),
        ("holder".into(), Val::String("Bench".into())),
        ("region".into(), Val::Char('N')),
        (
            "subject".into(),
            Val::Variant("person".into(), Some(Box::new(Val::U8(40)))),
        ),
        ("coverage".into(), Val::Flags(vec![])),
        ("deductible".into(), Val::Option(None)),
        ("drivers".into(), Val::List(vec![])),
        ("start-day".into(), Val::S32(20_000)),
        ("discount-code".into(), Val::Option(None)),
    ])
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let app = rt.block_on(load(APP));
    let hello = [Val::String("hello".into())];

    c.bench_function("instantiate_call/echo", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(app.call(&echo_ref(), &hello, incoming()).await.expect("echo")) })
    });
    let reusing = rt.block_on(load(&["echo", "relay", "rater", "pricing"].iter().fold(
        APP.to_string(),
        |app, name| {
            let source = format!("source = \"{{wasm:{name}}}\"");
            app.replace(&source, &format!("{source}\nreuse = 1000000"))
        },
    )));
    c.bench_function("reused_call/echo", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(reusing.call(&echo_ref(), &hello, incoming()).await.expect("echo")) })
    });

    let far = Instant::now() + Duration::from_secs(24 * 3600);
    let mut group = c.benchmark_group("warm_call");
    for name in ["echo", "relay"] {
        let label = if name == "relay" { "relay->echo" } else { "echo" };
        let cx = membrane::runtime::context::CallContext::new(far);
        let mut instance = rt.block_on(app.start_instance(name, &cx)).expect("instance");
        group.bench_function(label, |b| {
            b.iter(|| black_box(rt.block_on(instance.invoke(ECHO, "echo", &hello)).expect("call")))
        });
    }
    group.finish();

    let policy = [life_policy()];
    c.bench_function("fresh_rate/rater->pricing", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(app.call(&rate_ref(), &policy, incoming()).await.expect("rate")) })
    });
    c.bench_function("reused_rate/rater->pricing", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(reusing.call(&rate_ref(), &policy, incoming()).await.expect("rate")) })
    });
    let native = insurance::model::Policy {
        id: 7,
        holder: "Bench".into(),
        region: 'N',
        subject: insurance::model::Subject::Person(40),
        coverage: insurance::model::Coverage::empty(),
        deductible: None,
        drivers: vec![],
        start_day: 20_000,
        discount_code: None,
    };
    let config = |key: &str| Ok((key == "life.base").then(|| "95".to_string()));
    c.bench_function("native/rate", |b| {
        b.iter(|| {
            black_box(insurance::rate(black_box(&native), |line| insurance::price_table(line, config)).expect("rate"))
        })
    });
}

/// The same logic as the `echo` component's `echo`, compiled natively.
#[inline(never)]
fn native_echo(message: &str) -> String {
    message.to_string()
}

/// A `values#everything` record whose text and bytes carry `size` bytes.
fn everything(size: usize) -> Val {
    let text: String = "x".repeat(size / 2);
    let bytes = Val::List((0..size - size / 2).map(|i| Val::U8(i as u8)).collect());
    Val::Record(vec![
        ("flag".into(), Val::Bool(true)),
        ("a".into(), Val::S8(-1)),
        ("b".into(), Val::U8(2)),
        ("c".into(), Val::S16(-3)),
        ("d".into(), Val::U16(4)),
        ("e".into(), Val::S32(-5)),
        ("f".into(), Val::U32(6)),
        ("g".into(), Val::S64(-7)),
        ("h".into(), Val::U64(8)),
        ("x".into(), Val::Float32(1.5)),
        ("y".into(), Val::Float64(2.25)),
        ("ch".into(), Val::Char('λ')),
        ("text".into(), Val::String(text)),
        ("bytes".into(), bytes),
        ("pair".into(), Val::Tuple(vec![Val::String("k".into()), Val::U32(9)])),
        ("color".into(), Val::Enum("green".into())),
        ("perms".into(), Val::Flags(vec!["read".into(), "exec".into()])),
        (
            "shape".into(),
            Val::Variant("circle".into(), Some(Box::new(Val::Float64(1.0)))),
        ),
        ("maybe".into(), Val::Option(Some(Box::new(Val::String("m".into()))))),
        ("maybe-maybe".into(), Val::Option(Some(Box::new(Val::Option(None))))),
        ("outcome".into(), Val::Result(Ok(Some(Box::new(Val::U16(10)))))),
        ("unit-result".into(), Val::Result(Err(None))),
        (
            "nested".into(),
            Val::List(vec![Val::List(vec![Val::Variant("point".into(), None)])]),
        ),
    ])
}

/// The type of `values#roundtrip` in the `echo` component.
fn roundtrip_type(app: &membrane::runtime::Runtime) -> ComponentFunc {
    let echo = app.get("echo").expect("echo loaded");
    let engine = echo.component.engine();
    let ty = echo.component.component_type();
    let Some(ComponentItem::ComponentInstance(values)) =
        ty.get_export(engine, "example:testkit/values@0.1.0").map(|e| e.ty)
    else {
        panic!("echo exports values");
    };
    match values.get_export(engine, "roundtrip").map(|e| e.ty) {
        Some(ComponentItem::ComponentFunc(f)) => f,
        _ => panic!("values exports roundtrip"),
    }
}

fn codec_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let app = rt.block_on(load(APP));
    let func = roundtrip_type(&app);
    let types: Vec<_> = func.params().map(|(_, t)| t).collect();
    let mut group = c.benchmark_group("codec");
    for (label, size) in [("small", 5), ("medium", 1 << 10), ("large", 64 << 10)] {
        let values = [everything(size)];
        let bytes = wire::encode(&types, &values).expect("encode");
        let body = serde_json::json!({ "v": json::to_json(&values[0]) }).to_string();
        group.bench_with_input(BenchmarkId::new("wire-encode", label), &values, |b, v| {
            b.iter(|| black_box(wire::encode(&types, v).expect("encode")))
        });
        group.bench_with_input(BenchmarkId::new("wire-decode", label), &bytes, |b, bytes| {
            b.iter(|| black_box(wire::decode(&types, bytes).expect("decode")))
        });
        group.bench_with_input(BenchmarkId::new("json-encode", label), &values, |b, v| {
            b.iter(|| black_box(json::results_to_json(v).to_string()))
        });
        group.bench_with_input(BenchmarkId::new("json-decode", label), &body, |b, body| {
            b.iter(|| black_box(json::params_from_json(&func, body.as_bytes()).expect("decode")))
        });
    }
    group.finish();

    c.bench_function("native/echo", |b| b.iter(|| black_box(native_echo(black_box("hello")))));
}

fn remote_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let server = membrane_benches::NatsServer::start();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let manifest = format!(
        "[app]\nname = \"hop\"\n[components.echo]\nsource = \"{}\"\n[components.relay]\nsource = \"{}\"\n\
         limits = {{ timeout_ms = 86400000 }}\n[[links]]\nfrom = \"relay\"\nimport = \"{ECHO}\"\nto = \"echo\"\n",
        membrane_benches::wasm("echo"),
        membrane_benches::wasm("relay")
    );
    let (_y, x) = rt.block_on(async {
        let y = membrane_benches::lattice_host(&manifest, &["echo"], &server.url, &shutdown).await;
        let x = membrane_benches::lattice_host(&manifest, &["relay"], &server.url, &shutdown).await;
        (y, x)
    });
    // A kept instance lives until its component's deadline: a day here.
    let far = membrane::runtime::context::CallContext::new(Instant::now() + Duration::from_secs(24 * 3600));
    let mut relay = rt.block_on(x.start_instance("relay", &far)).expect("relay");
    let hello = [Val::String("hello".into())];
    let (responder, requester) = rt.block_on(async {
        let responder = async_nats::connect(&server.url).await.expect("nats");
        membrane_benches::raw_echo(&responder, "bench.raw").await;
        (responder, async_nats::connect(&server.url).await.expect("nats"))
    });
    // The wire payload of `echo("hello")`: version byte, length, bytes.
    let payload = bytes::Bytes::from(vec![1u8; 7]);
    let mut group = c.benchmark_group("remote");
    group.bench_function("link relay->echo", |b| {
        b.iter(|| black_box(rt.block_on(relay.invoke(ECHO, "echo", &hello)).expect("remote echo")))
    });
    group.bench_function("raw-nats", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(requester.request("bench.raw", payload.clone()))
                    .expect("raw"),
            )
        })
    });
    group.finish();
    shutdown.cancel();
    drop(responder);
}

criterion_group! {
    name = micro;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches, codec_benches, remote_benches
}
criterion_main!(micro);

fn echo_ref() -> membrane::runtime::dispatch::FunctionRef {
    membrane::runtime::dispatch::FunctionRef::new("echo", ECHO, "echo")
}

fn rate_ref() -> membrane::runtime::dispatch::FunctionRef {
    membrane::runtime::dispatch::FunctionRef::new("rater", "example:insurance/rater@0.1.0", "rate")
}

fn incoming() -> membrane::runtime::context::CallContext {
    membrane::runtime::context::CallContext::incoming(None)
}
