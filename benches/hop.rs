//! The in-process link hop in instructions, not seconds: `N` calls of
//! `relay → echo` through an in-process link and `N` direct calls of `echo`,
//! on kept instances, for `valgrind --tool=callgrind` (which counts
//! instructions and so reads the same on a busy machine). Run it twice and
//! subtract:
//!
//! ```sh
//! cargo bench -p membrane-benches --bench hop --no-run   # then, with the binary it names:
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/hop.%p BINARY linked 2000
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/hop.%p BINARY linked 0
//! ```
//!
//! (instructions of the first − the second) / 2000 is the cost of one linked
//! call; `direct` instead of `linked` gives a direct call's, and the hop is
//! the difference. `linked` composes the two (`links = "composed"`, the
//! default: one component); `dynamic` links them through the host
//! (`links = "dynamic"`: a host function and a second store). `fresh` makes `N` calls of `echo` each in a fresh
//! instance (the whole `Runtime::call` path), `reused` the same with
//! `reuse` (a parked instance per call). Without valgrind it prints the
//! median time per call.

use membrane::runtime::context::CallContext;
use membrane::runtime::dispatch::FunctionRef;
use membrane_benches::{load, percentiles};
use std::time::{Duration, Instant};
use wasmtime::component::Val;

const ECHO: &str = "example:testkit/echo@0.1.0";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("linked", String::as_str).to_string();
    let calls: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let reuse = if kind == "reused" { "reuse = 1000000\n" } else { "" };
        let links = if kind == "dynamic" { "dynamic" } else { "composed" };
        let app = load(&format!(
            "[app]\nname = \"hop\"\nlinks = \"{links}\"\n[components.echo]\nsource = \"{{wasm:echo}}\"\n{reuse}[components.relay]\nsource = \"{{wasm:relay}}\"\n\
             [[links]]\nfrom = \"relay\"\nimport = \"example:testkit/echo@0.1.0\"\nto = \"echo\"\n",
        ))
        .await;
        let hello = [Val::String("hello".into())];
        if kind == "fresh" || kind == "reused" {
            let echo = FunctionRef::new("echo", ECHO, "echo");
            let mut samples = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = Instant::now();
                app.call(&echo, &hello, CallContext::incoming(None)).await.expect("echo");
                samples.push(t.elapsed());
            }
            if calls > 0 {
                println!("{kind}: {calls} calls, median {:?}", percentiles(&mut samples).0);
            }
            return;
        }
        let far = CallContext::new(Instant::now() + Duration::from_secs(3600));
        let target = if kind == "direct" { "echo" } else { "relay" };
        let mut instance = app.start_instance(target, &far).await.expect("instance");
        // One call first: a linked callee starts on its first use.
        instance.invoke(ECHO, "echo", &hello).await.expect("call");
        let mut samples = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            instance.invoke(ECHO, "echo", &hello).await.expect("call");
            samples.push(t.elapsed());
        }
        if calls > 0 {
            println!("{kind}: {calls} calls, median {:?}", percentiles(&mut samples).0);
        }
    });
}
