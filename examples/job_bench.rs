//! Keyed counting, end to end, in the shape of the Flink job anchor (`anchors/flink-job`): a
//! generated sequence of 10,000,000 records split into `p` contiguous ranges, each record
//! mapped to `(key(i), 1)` with the anchor's keys (`splitmix64(42 + (i + 1) *
//! 0x9E3779B97F4A7C15) mod 1,000,000`), `key_by` the key with max parallelism 128, a keyed
//! process function keeping a running count in value state, and a discarding sink.
//!
//! ```text
//! cargo run --release --example job_bench                       # every variant, 10,000,000 records
//! cargo run --release --example job_bench -- --records 2000000  # a quick run
//! cargo run --release --example job_bench -- --variants p1-cpoff,p2-cp1s
//! cargo run --release --example job_bench -- --memory-mb 256             # the budget per subtask
//! ```
//!
//! Each subtask's keyed backend gets 512 MiB by default (`--memory-mb`): the 1,000,000 counts
//! then stay in its mutable region, as the heap backend keeps them on its 8 GiB JVM heap. With
//! a quarter of the budget for the mutable region, a single subtask needs more than 256 MiB for
//! that (the anchor gives RocksDB 256 MiB in all); below it, the counts spill into segments and
//! every read that misses the mutable region searches a segment.
//!
//! Variants: parallelism 1 and 2, checkpoints off or every second, and with checkpoints the
//! changelog off or on (`-cl`). Each prints its wall time (from the start of the run to its
//! end, including the final checkpoint), records per second, the checkpoints it completed and
//! their mean duration; and after the run the state is checked: the counts add up to the
//! records and every key has the count the sequence gives it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::codec::I64;
use eddy::runtime::{
    CheckpointConfig, Context, DiscardingSink, GeneratorSource, JobBuilder, KeyedProcessFunction, OpenContext,
    RunOptions,
};
use eddy::state::{ValueState, ValueStateDescriptor};

const KEYS: u64 = 1_000_000;

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn key(i: u64) -> i64 {
    (splitmix64(42u64.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))) % KEYS) as i64
}

/// `c = state.value(); state.update(c == null ? 1 : c + 1)`, emitting nothing; it adds up
/// what it counted when its subtask ends, for the check.
struct CountFunction {
    state: Option<ValueState<I64>>,
    seen: Arc<AtomicU64>,
    local: u64,
}

impl KeyedProcessFunction<I64, (i64, i64), ()> for CountFunction {
    fn open(&mut self, ctx: &mut OpenContext<'_, I64>) -> eddy::Result<()> {
        self.state = Some(ctx.backend().state(ValueStateDescriptor::new("count", I64))?);
        Ok(())
    }

    #[inline]
    fn process(&mut self, record: (i64, i64), ctx: &mut Context<'_, I64, ()>) -> eddy::Result<()> {
        let s = self.state.as_ref().expect("opened");
        let c = s.get(ctx.backend())?;
        s.update(ctx.backend(), &c.map_or(record.1, |c| c + record.1))?;
        self.local += 1;
        Ok(())
    }
}

impl Drop for CountFunction {
    fn drop(&mut self) {
        self.seen.fetch_add(self.local, Ordering::Relaxed);
    }
}

struct Variant {
    name: String,
    parallelism: usize,
    checkpoints: bool,
    changelog: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let records: u64 = arg("--records").and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let memory_mb: usize = arg("--memory-mb").and_then(|s| s.parse().ok()).unwrap_or(512);
    let mut variants = Vec::new();
    for p in [1, 2] {
        variants.push(Variant { name: format!("p{p}-cpoff"), parallelism: p, checkpoints: false, changelog: false });
        variants.push(Variant { name: format!("p{p}-cp1s"), parallelism: p, checkpoints: true, changelog: false });
        variants.push(Variant { name: format!("p{p}-cp1s-cl"), parallelism: p, checkpoints: true, changelog: true });
    }
    if let Some(only) = arg("--variants") {
        let only: Vec<&str> = only.split(',').collect();
        variants.retain(|v| only.contains(&v.name.as_str()));
    }
    println!("{records} records over {KEYS} keys, max parallelism 128, a memory budget of {memory_mb} MiB per subtask");
    println!();
    println!("| variant | wall time (s) | records/s | checkpoints | mean checkpoint (ms) | max sync (ms) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for v in &variants {
        let root = tempfile::tempdir().expect("a temporary directory");
        let seen = Arc::new(AtomicU64::new(0));
        let job = JobBuilder::new("keyed-counting").max_parallelism(128).parallelism(v.parallelism);
        let s = seen.clone();
        job.source("sequence", GeneratorSource::new(records, v.parallelism, |i| i))
            .map(|i: u64| (key(i), 1i64))
            .key_by(|r: &(i64, i64)| r.0, I64)
            .process("count", move || CountFunction { state: None, seen: s.clone(), local: 0 })
            .sink("discard", DiscardingSink);
        let job = job.build().expect("a valid job");
        let mut opts = RunOptions::new(root.path().join("checkpoints")).memory_budget(memory_mb << 20);
        if v.checkpoints {
            opts = opts.checkpoints(CheckpointConfig::every(Duration::from_secs(1)).changelog(v.changelog));
        }
        let start = Instant::now();
        let r = job.run(&opts).expect("the job runs");
        let wall = start.elapsed();
        assert_eq!(seen.load(Ordering::Relaxed), records, "every record counted once");
        let n = r.checkpoints.len();
        let mean = if n == 0 {
            0.0
        } else {
            r.checkpoints.iter().map(|c| c.duration.as_secs_f64()).sum::<f64>() / n as f64 * 1e3
        };
        let sync = r.checkpoints.iter().map(|c| c.max_sync()).max().unwrap_or_default();
        println!(
            "| {} | {:.2} | {:.0} | {n} | {mean:.1} | {:.2} |",
            v.name,
            wall.as_secs_f64(),
            records as f64 / wall.as_secs_f64(),
            sync.as_secs_f64() * 1e3
        );
    }
}
