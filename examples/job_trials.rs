//! Exactly-once trials: a keyed counting job into an exactly-once file sink, each trial with a
//! failure injected at a random point (in the source, in the keyed function, in the sink's
//! writes, in its commits) and a random parallelism, restarted from its latest checkpoint;
//! the published output must equal that of a run without failures, line for line.
//!
//! ```text
//! cargo run --release --example job_trials                  # 1,000 trials
//! cargo run --release --example job_trials -- --trials 50 --seed 7
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eddy::codec::U64;
use eddy::runtime::{
    CheckpointConfig, Context, ExactlyOnceFileSink, GeneratorSource, JobBuilder, KeyedProcessFunction, OpenContext,
    RestartStrategy, RunOptions, Sink, SinkContext, SinkWriter,
};
use eddy::state::{OperatorStateBackend, ValueState, ValueStateDescriptor};
use eddy::Error;

const RECORDS: u64 = 10_000;
const KEYS: u64 = 150;

/// A countdown shared by every run of a trial: true once, when it reaches zero.
#[derive(Clone)]
struct Trip(Arc<AtomicUsize>);

impl Trip {
    fn hit(&self) -> bool {
        self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok_and(|n| n == 1)
    }
}

fn injected(at: &str) -> Error {
    Error::TaskFailed { operator: at.into(), subtask: 0, why: "injected".into() }
}

struct Count {
    state: Option<ValueState<U64>>,
    fail: Option<Trip>,
}

impl KeyedProcessFunction<U64, u64, String> for Count {
    fn open(&mut self, ctx: &mut OpenContext<'_, U64>) -> eddy::Result<()> {
        self.state = Some(ctx.backend().state(ValueStateDescriptor::new("count", U64))?);
        Ok(())
    }
    fn process(&mut self, key: u64, ctx: &mut Context<'_, U64, String>) -> eddy::Result<()> {
        if self.fail.as_ref().is_some_and(Trip::hit) {
            return Err(injected("count"));
        }
        let s = self.state.as_ref().expect("opened");
        let n = s.get(ctx.backend())?.unwrap_or(0) + 1;
        s.update(ctx.backend(), &n)?;
        ctx.collect(format!("{key},{n}"))
    }
}

struct Failing {
    inner: ExactlyOnceFileSink,
    write: Option<Trip>,
    commit: Option<Trip>,
}

struct FailingWriter {
    inner: Box<dyn SinkWriter<String>>,
    write: Option<Trip>,
    commit: Option<Trip>,
}

impl Sink<String> for Failing {
    fn open(&self, ctx: &SinkContext, state: &mut OperatorStateBackend) -> eddy::Result<Box<dyn SinkWriter<String>>> {
        let inner = self.inner.open(ctx, state)?;
        Ok(Box::new(FailingWriter { inner, write: self.write.clone(), commit: self.commit.clone() }))
    }
}

impl SinkWriter<String> for FailingWriter {
    fn write(&mut self, value: String, ts: i64) -> eddy::Result<()> {
        if self.write.as_ref().is_some_and(Trip::hit) {
            return Err(injected("sink"));
        }
        self.inner.write(value, ts)
    }
    fn prepare(&mut self, id: u64, state: &mut OperatorStateBackend) -> eddy::Result<()> {
        self.inner.prepare(id, state)
    }
    fn commit(&mut self, id: u64) -> eddy::Result<()> {
        if self.commit.as_ref().is_some_and(Trip::hit) {
            return Err(injected("commit"));
        }
        self.inner.commit(id)
    }
    fn finish(&mut self) -> eddy::Result<()> {
        self.inner.finish()
    }
}

fn key_of(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    (z ^ (z >> 31)) % KEYS
}

/// A small xorshift generator: the trials are reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn expected() -> Vec<String> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..RECORDS {
        *counts.entry(key_of(i)).or_default() += 1;
    }
    let mut out: Vec<String> = counts.iter().flat_map(|(k, n)| (1..=*n).map(move |i| format!("{k},{i}"))).collect();
    out.sort();
    out
}

/// One trial: whether the output was exact, and whether a checkpoint was restored.
fn trial(rng: &mut Rng, dir: &Path, want: &[String]) -> (bool, bool, String) {
    let place = rng.below(4);
    let at = rng.below(RECORDS) as usize + 1;
    let (p1, p2, partitions) = (rng.below(3) as usize + 1, rng.below(3) as usize + 1, rng.below(4) as usize + 1);
    let trip = || Some(Trip(Arc::new(AtomicUsize::new(at))));
    let (source_trip, op_trip, write, commit) = match place {
        0 => (trip(), None, None, None),
        1 => (None, trip(), None, None),
        2 => (None, None, trip(), None),
        _ => (None, None, None, Some(Trip(Arc::new(AtomicUsize::new(at % 5 + 1))))),
    };
    let what = format!(
        "{} at {at}, parallelism {p1} -> {p2}, {partitions} partitions",
        ["source", "operator", "sink write", "sink commit"][place as usize]
    );
    let out = dir.join("out");
    let job = JobBuilder::new("trials").max_parallelism(32);
    let source = GeneratorSource::new(RECORDS, partitions, move |i| {
        if source_trip.as_ref().is_some_and(Trip::hit) {
            panic!("injected into the source");
        }
        if i % 200 == 0 {
            std::thread::sleep(Duration::from_micros(300));
        }
        key_of(i)
    });
    job.source("numbers", source)
        .parallelism(p1)
        .key_by(|k: &u64| *k, U64)
        .process("count", move || Count { state: None, fail: op_trip.clone() })
        .parallelism(p2)
        .sink("files", Failing { inner: ExactlyOnceFileSink::new(&out), write, commit });
    let opts = RunOptions::new(dir.join("checkpoints"))
        .checkpoints(CheckpointConfig::every(Duration::from_millis(5)).timeout(Duration::from_secs(30)))
        .restart(RestartStrategy::FixedDelay { attempts: 2, delay: Duration::ZERO })
        .channel_capacity(4)
        .memory_budget(8 << 20);
    let r = match job.build().and_then(|j| j.run(&opts)) {
        Ok(r) => r,
        Err(e) => return (false, false, format!("{what}: {e}")),
    };
    let mut got = ExactlyOnceFileSink::read_published(&out).unwrap_or_default();
    got.sort();
    (got == want, !r.restored.is_empty(), what)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg =
        |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|s| s.parse().ok());
    let trials: u64 = arg("--trials").unwrap_or(1000);
    let seed: u64 = arg("--seed").unwrap_or(42);
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    std::panic::set_hook(Box::new(|_| {}));
    let want = expected();
    let (mut exact, mut restored) = (0, 0);
    let start = Instant::now();
    for t in 0..trials {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (ok, from_checkpoint, what) = trial(&mut rng, dir.path(), &want);
        exact += u64::from(ok);
        restored += u64::from(from_checkpoint);
        if !ok {
            println!("trial {t}: NOT EXACT: {what}");
        }
    }
    println!(
        "{exact} of {trials} trials exact ({restored} restored a checkpoint, the others restarted from the start or did not fail), {:.0} s, seed {seed}",
        start.elapsed().as_secs_f64()
    );
    if exact != trials {
        std::process::exit(1);
    }
}
