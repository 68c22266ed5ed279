//! The host's wasmtime engines, shared by every app the host runs:
//! configuration, the pooling allocator (with a logged fallback where the
//! machine refuses its reservation), the host-wide instance budget, and the
//! epoch ticker that drives per-call deadlines.
//!
//! There are two engines. Components of WASI 0.2 run on one without
//! concurrency support: with it, wasmtime sends every call through its
//! concurrent call path, which costs a 0.2 call about 2.3 times the
//! instructions (docs/performance.md). Components that need it (WASI 0.3,
//! async functions, streams) run on a second engine that has it, built the
//! first time one is loaded. Both share the instance budget and the ticker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A running guest notices its deadline at the
/// next tick and yields to the async runtime at every tick, so this is both
/// the deadline's resolution and the longest a guest holds a worker thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of each pooled memory/table slot reset in place rather than released.
const KEEP_RESIDENT: usize = 128 << 10;

/// Instances a host runs at once, all apps together, unless told otherwise.
pub const DEFAULT_MAX_INSTANCES: u32 = 1000;

/// Sizing for the host's engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// The largest memory cap any component on this host may have, in MiB.
    pub max_memory_mib: u64,
    /// Component instances alive at once on this host, all apps together:
    /// the pool's size and the host-wide budget.
    pub max_instances: u32,
    /// Try the pooling allocator (falls back to on-demand if it cannot reserve).
    pub pooling: bool,
}

impl Default for EngineOptions {
    fn default() -> EngineOptions {
        EngineOptions {
            max_memory_mib: crate::manifest::DEFAULT_MEMORY_MIB,
            max_instances: DEFAULT_MAX_INSTANCES,
            pooling: true,
        }
    }
}

/// The host's engines, its instance budget and the ticker thread's stop flag.
pub struct HostEngine {
    /// The engine of every component that needs no concurrency support
    /// (WASI 0.2).
    pub engine: Engine,
    /// The engine with concurrency support (WASI 0.3), once a component
    /// needed it.
    concurrent: Arc<OnceLock<Engine>>,
    /// Whether the pooling allocator is in use.
    pub pooling: bool,
    /// The sizing it was built with.
    pub options: EngineOptions,
    budget: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
}

impl HostEngine {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(mut options: EngineOptions) -> wasmtime::Result<Arc<HostEngine>> {
        options.max_instances = options.max_instances.max(1);
        let (engine, pooling) = build(options, false)?;
        let stop = Arc::new(AtomicBool::new(false));
        let concurrent = Arc::new(OnceLock::<Engine>::new());
        let ticker = engine.weak();
        let (flag, second) = (stop.clone(), concurrent.clone());
        std::thread::Builder::new()
            .name("membrane-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                    if let Some(engine) = second.get() {
                        engine.increment_epoch();
                    }
                }
            })?;
        Ok(Arc::new(HostEngine {
            engine,
            concurrent,
            pooling,
            options,
            budget: Arc::new(Semaphore::new(options.max_instances as usize)),
            stop,
        }))
    }

    /// The engine with concurrency support, built on first use with the
    /// same sizing (pooled when the first engine is).
    pub fn concurrent(&self) -> wasmtime::Result<Engine> {
        if let Some(engine) = self.concurrent.get() {
            return Ok(engine.clone());
        }
        let options = EngineOptions {
            pooling: self.pooling,
            ..self.options
        };
        let (engine, _) = build(options, true)?;
        tracing::debug!("built the engine with concurrency support (WASI 0.3)");
        Ok(self.concurrent.get_or_init(|| engine).clone())
    }

    /// Whether `engine` is the one with concurrency support.
    pub fn is_concurrent(&self, engine: &Engine) -> bool {
        self.concurrent.get().is_some_and(|c| Engine::same(c, engine))
    }

    /// One instance's share of the host-wide budget, or `None` when every
    /// instance of the host is in use.
    pub fn instance_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.budget.clone().try_acquire_owned().ok()
    }

    /// Whether at least a quarter of the host-wide instance budget is free
    /// now: room to start one more component here.
    pub fn has_room(&self) -> bool {
        self.budget.available_permits() * 4 >= self.options.max_instances as usize
    }
}

impl Drop for HostEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// An engine sized by `options`, pooled if it may and can be; `concurrent`
/// turns on concurrency support (WASI 0.3). Answers whether it is pooled.
fn build(options: EngineOptions, concurrent: bool) -> wasmtime::Result<(Engine, bool)> {
    if options.pooling {
        match Engine::new(&config(Some(options), concurrent)) {
            Ok(engine) => return Ok((engine, true)),
            Err(e) => {
                // Typical causes: a low `ulimit -v` or vm.overcommit settings
                // that refuse the pool's virtual reservation. On-demand
                // allocation is slower per instance but otherwise equivalent.
                tracing::warn!("pooling allocator unavailable ({e}); using on-demand allocation");
            }
        }
    }
    Ok((Engine::new(&config(None, concurrent))?, false))
}

fn config(pool: Option<EngineOptions>, concurrent: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Without it, component-model async features are off and calls take
    // the direct path; with it, every call takes the concurrent one.
    config.concurrency_support(concurrent);
    config.epoch_interruption(true);
    config.parallel_compilation(true);
    // `compiler_inlining` stays off (wasmtime's default): measured on the
    // composed hop it saves about 500 instructions of 8 300 per linked call,
    // and inlined frames drop out of the backtraces that attribute a trap to
    // a composed member (docs/performance.md, "Composed links").
    if let Some(options) = pool {
        let mut pooling = PoolingAllocationConfig::default();
        let instances = options.max_instances.max(16);
        // A Rust wasip2 component holds a handful of core instances, memories
        // and tables; a composed one (links/fuse.rs) holds each member's, and
        // one fusing three components holds three memories. Size the pool
        // for that times the instance budget (address space, not memory:
        // a slot costs nothing resident until used).
        pooling.total_component_instances(instances);
        pooling.total_core_instances(instances * 16);
        pooling.total_memories(instances * 4);
        pooling.total_tables(instances * 8);
        pooling.total_stacks(instances);
        pooling.max_memory_size((options.max_memory_mib as usize) << 20);
        // Fresh instances per request make slot reuse the hot path: keep the
        // first pages of each slot resident and reset them with memset instead
        // of returning them to the kernel (madvise) and faulting them back in.
        pooling.linear_memory_keep_resident(KEEP_RESIDENT);
        pooling.table_keep_resident(KEEP_RESIDENT);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    config
}
