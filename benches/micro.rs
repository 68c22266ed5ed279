//! Micro benchmarks (criterion): the cost of a fresh instance and of an
//! in-process link hop, measured from the host side.
//!
//! - `instantiate_call/echo`: a fresh store + instance of `echo` and one call,
//!   the per-request cost of the default instance strategy.
//! - `warm_call/echo` vs `warm_call/relay->echo`: the same call on kept
//!   instances, directly and through one link. The difference is the hop
//!   (plus `relay`'s own few instructions: an upper bound).
//! - `fresh_rate/rater->pricing`: `rater.rate` on a fresh instance, which
//!   starts `pricing` through its link: the example's inner path per request.

use criterion::{Criterion, criterion_group, criterion_main};
use membrane_benches::load;
use std::hint::black_box;
use std::time::{Duration, Instant};
use wasmtime::component::Val;

const ECHO: &str = "example:testkit/echo@0.1.0";

const APP: &str = r#"
[app]
name = "bench"
[components.echo]
source = "{wasm:echo}"
[components.relay]
source = "{wasm:relay}"
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
            .iter(|| async { black_box(app.call("echo", ECHO, "echo", &hello).await.expect("echo")) })
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
        b.to_async(&rt).iter(|| async {
            black_box(
                app.call("rater", "example:insurance/rater@0.1.0", "rate", &policy)
                    .await
                    .expect("rate"),
            )
        })
    });
}

criterion_group! {
    name = micro;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(micro);
