//! The one wasmtime `Engine`: pooling allocator when the OS allows it,
//! epoch interruption driven by a ticker thread, component model + async.

use std::thread;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; per-attempt timeouts are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Largest linear memory a pooled slot can hold; per-attempt limits are lower.
const POOL_MAX_MEMORY: usize = 1 << 32;

/// Builds the engine, preferring the pooling allocator (fast instantiation)
/// and falling back to on-demand allocation where the address space is too
/// small to reserve the pool. Starts the epoch ticker.
pub fn new_engine() -> wasmtime::Result<Engine> {
    new_engine_with(true)
}

/// As [`new_engine`]; without epoch interruption attempts cannot time out
/// while running guest code. Exists to measure what interruption costs.
pub fn new_engine_with(epoch_interruption: bool) -> wasmtime::Result<Engine> {
    let mut config = base_config(epoch_interruption);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling_config()));
    let engine = match Engine::new(&config) {
        Ok(engine) => {
            tracing::debug!("wasmtime engine uses the pooling allocator");
            engine
        }
        Err(error) => {
            tracing::debug!("pooling allocator unavailable ({error:#}); using on-demand allocation");
            let mut config = base_config(epoch_interruption);
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&config)?
        }
    };
    start_epoch_ticker(&engine);
    Ok(engine)
}

fn base_config(epoch_interruption: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(epoch_interruption);
    config
}

/// Bytes of each pooled memory and table kept resident between attempts.
const KEEP_RESIDENT: usize = 1 << 20;

/// Component instances the pooling allocator holds at once (workflows and step attempts).
pub const POOL_COMPONENT_INSTANCES: u32 = 1000;

fn pooling_config() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_COMPONENT_INSTANCES)
        .total_core_instances(4000)
        .total_memories(2000)
        .total_tables(4000)
        .max_memory_size(POOL_MAX_MEMORY)
        .max_core_instances_per_component(64)
        .max_memories_per_component(16)
        .max_tables_per_component(64)
        // Reset a slot by zeroing just the pages an attempt dirtied (found with
        // PAGEMAP_SCAN where the kernel has it) instead of `madvise`: no page
        // faults on the next attempt and no TLB shootdown of the other cores.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    pool
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = thread::Builder::new().name("stepbox-epoch".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            thread::sleep(EPOCH_TICK);
        }
    });
    if let Err(error) = spawned {
        tracing::warn!("cannot start the epoch ticker ({error}); attempt timeouts will not fire");
    }
}

/// Epoch ticks that make up `duration`, at least one.
pub fn ticks(duration: Duration) -> u64 {
    let ticks = duration.as_nanos() / EPOCH_TICK.as_nanos();
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}
