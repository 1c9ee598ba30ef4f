//! A stateful streaming job on eddy, end to end: per-account running totals over a generated
//! stream of transactions, a fraud rule delivered on a broadcast stream, event-time session
//! windows per account, and exactly-once file sinks. During the run a failure is injected
//! and the job recovers from its latest checkpoint; then it is stopped with a savepoint and
//! started again from it with 3 subtasks instead of 2. At the end the published output is
//! checked against a run without failures.
//!
//! Run with `cargo run --release --example quickstart` (`examples/state_tour.rs` walks through
//! the state API on its own).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::codec::{Str, I64, U64};
use eddy::runtime::{
    BroadcastContext, CheckpointConfig, Context, ExactlyOnceFileSink, GeneratorSource, JobBuilder, JobResult,
    KeyedBroadcastProcessFunction, OpenContext, RestartStrategy, RunOptions, WatermarkStrategy, WindowAssigner,
    WindowResult,
};
use eddy::state::{
    AggregateFunction, BroadcastStateDescriptor, ListState, ListStateDescriptor, ValueState, ValueStateDescriptor,
};

const TRANSACTIONS: u64 = 400_000;
const PARTITIONS: usize = 4;
const ACCOUNTS_PER_PARTITION: u64 = 500;

/// Transaction `i`: (account, amount in cents). Each account's transactions come from one
/// partition, so their order, and every running total, is the same in every run.
fn transaction(i: u64) -> (u64, i64) {
    let per = TRANSACTIONS / PARTITIONS as u64;
    let partition = i / per;
    let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let account = partition * ACCOUNTS_PER_PARTITION + z % ACCOUNTS_PER_PARTITION;
    (account, (z >> 20) as i64 % 50_000 + 100)
}

/// Its event time: transactions of a partition 2 ms apart, with pauses that end sessions.
fn timestamp(i: u64) -> i64 {
    let per = TRANSACTIONS / PARTITIONS as u64;
    let j = (i % per) as i64;
    j * 2 + (j / 20_000) * 5_000
}

fn rule() -> BroadcastStateDescriptor<Str, I64> {
    BroadcastStateDescriptor::new("fraud-rule", Str, I64)
}

/// Keeps each account's running total; flags transactions above the broadcast rule's limit.
/// Transactions that come before the rule wait in list state, and the rule's arrival replays
/// them for every account.
struct Totals {
    total: Option<ValueState<I64>>,
    waiting: Option<ListState<I64>>,
}

impl Totals {
    fn apply(&self, b: &mut eddy::state::KeyedBackend<U64>, amount: i64, limit: i64) -> eddy::Result<String> {
        let total = self.total.as_ref().expect("opened");
        let t = total.get(b)?.unwrap_or(0) + amount;
        total.update(b, &t)?;
        let account = b.current_key()?;
        Ok(format!("{account},{amount},{t}{}", if amount > limit { ",FLAGGED" } else { "" }))
    }
}

impl KeyedBroadcastProcessFunction<U64, (u64, i64), (String, i64), String> for Totals {
    fn open(&mut self, ctx: &mut OpenContext<'_, U64>) -> eddy::Result<()> {
        self.total = Some(ctx.backend().state(ValueStateDescriptor::new("total", I64))?);
        self.waiting = Some(ctx.backend().state(ListStateDescriptor::new("waiting", I64))?);
        Ok(())
    }

    fn process(&mut self, (_, amount): (u64, i64), ctx: &mut Context<'_, U64, String>) -> eddy::Result<()> {
        let limit = ctx.broadcast_state(&rule())?.get(&"limit".to_owned()).copied();
        match limit {
            Some(limit) => {
                let line = self.apply(ctx.backend(), amount, limit)?;
                ctx.collect(line)
            }
            None => self.waiting.as_ref().expect("opened").add(ctx.backend(), &amount),
        }
    }

    fn process_broadcast(
        &mut self,
        (name, limit): (String, i64),
        ctx: &mut BroadcastContext<'_, U64, String>,
    ) -> eddy::Result<()> {
        ctx.broadcast_state(&rule())?.put(name, limit);
        let waiting = self.waiting.as_ref().expect("opened");
        let mut lines = Vec::new();
        ctx.backend().apply_to_all_keys(waiting, |b, _| {
            for amount in waiting.get_vec(b)? {
                lines.push(self.apply(b, amount, limit)?);
            }
            waiting.clear(b)
        })?;
        lines.into_iter().try_for_each(|l| ctx.collect(l))
    }
}

/// Count and sum of a session's amounts.
#[derive(Clone)]
struct CountSum;

impl AggregateFunction for CountSum {
    type In = (u64, i64);
    type Acc = (u64, i64);
    type Out = (u64, i64);
    fn create_accumulator(&self) -> (u64, i64) {
        (0, 0)
    }
    fn add(&self, (_, amount): (u64, i64), (n, sum): (u64, i64)) -> (u64, i64) {
        (n + 1, sum + amount)
    }
    fn get_result(&self, acc: &(u64, i64)) -> (u64, i64) {
        *acc
    }
    fn merge(&self, a: (u64, i64), b: (u64, i64)) -> (u64, i64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// The job, writing into `out`; `fail` (when set) makes the source fail once, part-way.
fn job(parallelism: usize, out: &Path, fail: Option<Arc<AtomicBool>>) -> eddy::runtime::Job {
    let job = JobBuilder::new("quickstart").max_parallelism(128).parallelism(parallelism);
    let generate = move |i: u64| {
        if i.is_multiple_of(250) {
            // A stream, not a file: transactions arrive over time.
            std::thread::sleep(Duration::from_millis(1));
        }
        if i == TRANSACTIONS / PARTITIONS as u64 * 3 / 2 {
            if let Some(f) = &fail {
                if f.swap(false, Ordering::SeqCst) {
                    panic!("injected failure at transaction {i}");
                }
            }
        }
        transaction(i)
    };
    let transactions = || GeneratorSource::new(TRANSACTIONS, PARTITIONS, generate.clone()).timestamps(timestamp);
    let rules = job.source("rules", GeneratorSource::new(1, 1, |_| ("limit".to_owned(), 45_000i64))).broadcast();
    job.source("transactions", transactions())
        .key_by(|t: &(u64, i64)| t.0, U64)
        .connect(rules)
        .process("totals", || Totals { total: None, waiting: None })
        .sink("totals_out", ExactlyOnceFileSink::new(out.join("totals")));
    job.source_with_watermarks("events", transactions(), WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO))
        .key_by(|t: &(u64, i64)| t.0, U64)
        .window("sessions", WindowAssigner::session(Duration::from_millis(1_000)), CountSum, (U64, I64))
        .map(|w: WindowResult<u64, (u64, i64)>| {
            format!("{},{},{},{},{}", w.key, w.window.start, w.window.end, w.value.0, w.value.1)
        })
        .sink("sessions_out", ExactlyOnceFileSink::new(out.join("sessions")));
    job.build().expect("a valid job")
}

fn options(dir: &Path) -> RunOptions {
    RunOptions::new(dir)
        .checkpoints(CheckpointConfig::every(Duration::from_millis(200)).retained(2))
        .restart(RestartStrategy::FixedDelay { attempts: 3, delay: Duration::from_millis(100) })
        .memory_budget(64 << 20)
}

fn output(out: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for part in ["totals", "sessions"] {
        let mut l = ExactlyOnceFileSink::read_published(out.join(part)).expect("published output");
        l.iter_mut().for_each(|line| line.insert_str(0, &format!("{part}:")));
        lines.extend(l);
    }
    lines.sort();
    lines
}

fn checkpoints(r: &JobResult) -> String {
    let n = r.checkpoints.len();
    if n == 0 {
        return "no checkpoints".into();
    }
    let mean = r.checkpoints.iter().map(|c| c.duration.as_secs_f64()).sum::<f64>() / n as f64 * 1e3;
    let bytes: u64 = r.checkpoints.iter().map(|c| c.bytes()).sum();
    format!("{n} checkpoints, {mean:.0} ms on average, {:.1} MB written", bytes as f64 / 1e6)
}

fn main() -> eddy::Result<()> {
    let root = tempfile::tempdir().expect("a temporary directory");
    let root = root.path();
    let started = Instant::now();
    // The injected failure is a panic in user code: one line for it, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let what =
            payload.downcast_ref::<&str>().copied().or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        eprintln!("[injected] {}", what.unwrap_or("a panic"));
    }));

    // The reference: the same job without failures, at parallelism 2.
    let reference = job(2, &root.join("reference-out"), None).run(&options(&root.join("reference")))?;
    println!("reference run: {TRANSACTIONS} transactions twice (totals and sessions), {}", checkpoints(&reference));

    // The run: a failure part-way, then a stop with a savepoint, then 3 subtasks.
    let out = root.join("out");
    let fail = Arc::new(AtomicBool::new(true));
    let handle = job(2, &out, Some(fail)).spawn(options(&root.join("run")))?;
    std::thread::sleep(Duration::from_millis(700));
    let savepoint = handle.stop_with_savepoint(root.join("savepoint"))?;
    let first = handle.join()?;
    println!(
        "first part at parallelism 2: {}, {} restart(s) after [{}], restored checkpoint(s) {:?}",
        checkpoints(&first),
        first.restarts,
        first.failures.join("; "),
        first.restored
    );
    let published = output(&out).len();
    println!("stopped with a savepoint in {} after {published} published lines", savepoint.display());
    let second = job(3, &out, None).run(&options(&root.join("run-rescaled")).from_savepoint(&savepoint))?;
    println!("second part at parallelism 3, from the savepoint: {}", checkpoints(&second));

    let (got, want) = (output(&out), output(&root.join("reference-out")));
    let flagged = got.iter().filter(|l| l.ends_with("FLAGGED")).count();
    let sessions = got.iter().filter(|l| l.starts_with("sessions:")).count();
    println!(
        "output: {} lines ({} running totals, {flagged} flagged by the broadcast rule; {sessions} sessions)",
        got.len(),
        got.len() - sessions
    );
    let exact = got == want;
    println!(
        "verdict: {} ({:.1} s in all)",
        if exact { "the output equals the run without failures, every line exactly once" } else { "MISMATCH" },
        started.elapsed().as_secs_f64()
    );
    if !exact {
        std::process::exit(1);
    }
    Ok(())
}
