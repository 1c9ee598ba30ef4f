//! The operator runtime: jobs with failures injected produce exactly the output of a run
//! without failures; restarts at another parallelism keep every key's state; event-time
//! timers fire as the watermark passes; a graph that cannot run is refused before it starts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eddy::codec::{I64, U64};
use eddy::runtime::{
    CheckpointConfig, CollectSink, Context, DirectorySource, ExactlyOnceFileSink, FileSource, GeneratorSource,
    JobBuilder, KeyedProcessFunction, OpenContext, RestartStrategy, RunOptions, Sink, SinkContext, SinkWriter,
    TimeDomain, WatermarkStrategy,
};
use eddy::state::{MapState, MapStateDescriptor, OperatorStateBackend, ValueState, ValueStateDescriptor};
use eddy::{Error, Misuse};
use quickcheck::{QuickCheck, TestResult};

/// Where a failure is injected, and after how many records (or at which checkpoint).
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// The source panics before giving record `n`.
    Source(u64),
    /// The keyed function returns an error at its `n`-th record after the first committed
    /// checkpoint.
    Operator(usize),
    /// The keyed function returns an error at its `n`-th record, checkpoint or not.
    OperatorAnyway(usize),
    /// The sink's writer fails at its `n`-th record.
    SinkWrite(usize),
    /// The sink fails to commit the `n`-th checkpoint it is told of.
    SinkCommit(usize),
}

/// A shared countdown, counting only once armed: true once, when it reaches zero.
#[derive(Clone)]
struct Trip(Arc<AtomicUsize>, Armed);

/// Set when the first checkpoint has been committed, so that a failure comes after it and
/// the restart restores it.
#[derive(Clone, Default)]
struct Armed(Arc<std::sync::atomic::AtomicBool>);

impl Armed {
    fn always() -> Self {
        let a = Armed::default();
        a.arm();
        a
    }
    fn arm(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn armed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Trip {
    fn new(at: usize, armed: &Armed) -> Self {
        Trip(Arc::new(AtomicUsize::new(at)), armed.clone())
    }
    fn hit(&self) -> bool {
        self.1.armed()
            && self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok_and(|n| n == 1)
    }
}

/// A running count per key; emits `key,count` per record.
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
            return Err(Error::TaskFailed { operator: "count".into(), subtask: 0, why: "injected".into() });
        }
        let s = self.state.as_ref().expect("opened");
        let n = s.get(ctx.backend())?.unwrap_or(0) + 1;
        s.update(ctx.backend(), &n)?;
        ctx.collect(format!("{key},{n}"))
    }
}

/// The file sink, with a failure injected into its writer.
struct FailingSink {
    inner: ExactlyOnceFileSink,
    write: Option<Trip>,
    commit: Option<Trip>,
    armed: Armed,
}

struct FailingWriter {
    inner: Box<dyn SinkWriter<String>>,
    write: Option<Trip>,
    commit: Option<Trip>,
    armed: Armed,
}

impl Sink<String> for FailingSink {
    fn open(&self, ctx: &SinkContext, state: &mut OperatorStateBackend) -> eddy::Result<Box<dyn SinkWriter<String>>> {
        Ok(Box::new(FailingWriter {
            inner: self.inner.open(ctx, state)?,
            write: self.write.clone(),
            commit: self.commit.clone(),
            armed: self.armed.clone(),
        }))
    }
}

fn injected() -> Error {
    Error::TaskFailed { operator: "sink".into(), subtask: 0, why: "injected".into() }
}

impl SinkWriter<String> for FailingWriter {
    fn write(&mut self, value: String, ts: i64) -> eddy::Result<()> {
        if self.write.as_ref().is_some_and(Trip::hit) {
            return Err(injected());
        }
        self.inner.write(value, ts)
    }
    fn prepare(&mut self, id: u64, state: &mut OperatorStateBackend) -> eddy::Result<()> {
        self.inner.prepare(id, state)
    }
    fn commit(&mut self, id: u64) -> eddy::Result<()> {
        if self.commit.as_ref().is_some_and(Trip::hit) {
            return Err(injected());
        }
        self.inner.commit(id)?;
        self.armed.arm();
        Ok(())
    }
    fn finish(&mut self) -> eddy::Result<()> {
        self.inner.finish()
    }
}

fn key_of(i: u64, keys: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % keys
}

/// The counting job over `records` records of `keys` keys, into a file sink in `out`.
fn counting_job(
    records: u64,
    keys: u64,
    partitions: usize,
    parallelism: (usize, usize),
    fault: Fault,
    out: &Path,
) -> eddy::runtime::Job {
    let job = JobBuilder::new("counting").max_parallelism(32);
    // Failures come after the first committed checkpoint, except a failure to commit.
    let armed = Armed::default();
    let source_trip = match fault {
        Fault::Source(n) => Some((n, Trip::new(1, &armed))),
        _ => None,
    };
    let op_trip = match fault {
        Fault::Operator(n) => Some(Trip::new(n, &armed)),
        Fault::OperatorAnyway(n) => Some(Trip::new(n, &Armed::always())),
        _ => None,
    };
    let (write, commit) = match fault {
        Fault::SinkWrite(n) => (Some(Trip::new(n, &armed)), None),
        Fault::SinkCommit(n) => (None, Some(Trip::new(n, &Armed::always()))),
        _ => (None, None),
    };
    let source = GeneratorSource::new(records, partitions, move |i| {
        if let Some((n, trip)) = &source_trip {
            if i >= *n && trip.hit() {
                panic!("injected into the source at record {i}");
            }
        }
        // Slow enough for several checkpoints to happen along the way.
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        key_of(i, keys)
    });
    job.source("numbers", source)
        .parallelism(parallelism.0)
        .key_by(|k: &u64| *k, U64)
        .process("count", move || Count { state: None, fail: op_trip.clone() })
        .parallelism(parallelism.1)
        .sink("files", FailingSink { inner: ExactlyOnceFileSink::new(out), write, commit, armed });
    job.build().expect("a valid job")
}

fn options(dir: &Path) -> RunOptions {
    RunOptions::new(dir.join("checkpoints"))
        .checkpoints(CheckpointConfig::every(Duration::from_millis(5)).retained(2).timeout(Duration::from_secs(20)))
        .restart(RestartStrategy::FixedDelay { attempts: 3, delay: Duration::from_millis(1) })
        .channel_capacity(4)
        .memory_budget(16 << 20)
}

/// The output a run without failures gives: `key,n` for every key and every `n` up to its
/// count, sorted.
fn expected(records: u64, keys: u64) -> Vec<String> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for i in 0..records {
        *counts.entry(key_of(i, keys)).or_default() += 1;
    }
    let mut out: Vec<String> = counts.iter().flat_map(|(k, n)| (1..=*n).map(move |i| format!("{k},{i}"))).collect();
    out.sort();
    out
}

fn published(out: &Path) -> Vec<String> {
    let mut lines = ExactlyOnceFileSink::read_published(out).expect("published files");
    lines.sort();
    lines
}

#[test]
fn a_failure_free_run_publishes_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = counting_job(20_000, 300, 4, (2, 2), Fault::None, &out);
    let r = job.run(&options(dir.path())).expect("the job runs");
    assert_eq!(r.restarts, 0);
    assert!(!r.checkpoints.is_empty(), "at least the final checkpoint completes");
    assert_eq!(published(&out), expected(20_000, 300));
}

fn exactly_once_with(fault: Fault, parallelism: (usize, usize), restored: &AtomicUsize) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = counting_job(12_000, 200, 3, parallelism, fault, &out);
    let r = job.run(&options(dir.path())).map_err(|e| format!("{fault:?}: the job failed: {e}"))?;
    if r.restarts > 1 {
        return Err(format!("{fault:?}: {} restarts, {:?}", r.restarts, r.failures));
    }
    restored.store(r.restored.len(), Ordering::Relaxed);
    let got = published(&out);
    let want = expected(12_000, 200);
    if got != want {
        return Err(format!("{fault:?} {parallelism:?}: {} lines published, {} expected", got.len(), want.len()));
    }
    // No hidden file is left behind.
    let hidden = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'))
        .count();
    if hidden != 0 {
        return Err(format!("{fault:?}: {hidden} hidden files left"));
    }
    Ok(())
}

#[test]
fn a_failure_in_the_source_restarts_and_publishes_exactly_once() {
    let restored = AtomicUsize::new(0);
    exactly_once_with(Fault::Source(5_000), (2, 2), &restored).unwrap();
    assert_eq!(restored.load(Ordering::Relaxed), 1, "the restart restored a checkpoint");
}

#[test]
fn a_failure_in_the_operator_restarts_and_publishes_exactly_once() {
    let restored = AtomicUsize::new(0);
    exactly_once_with(Fault::Operator(3_000), (1, 2), &restored).unwrap();
    assert_eq!(restored.load(Ordering::Relaxed), 1, "the restart restored a checkpoint");
}

#[test]
fn a_failure_in_the_sink_restarts_and_publishes_exactly_once() {
    let restored = AtomicUsize::new(0);
    exactly_once_with(Fault::SinkWrite(3_000), (2, 1), &restored).unwrap();
    assert_eq!(restored.load(Ordering::Relaxed), 1, "the restart restored a checkpoint");
}

#[test]
fn a_failure_to_commit_restarts_and_publishes_exactly_once() {
    let restored = AtomicUsize::new(0);
    exactly_once_with(Fault::SinkCommit(2), (2, 2), &restored).unwrap();
    assert_eq!(restored.load(Ordering::Relaxed), 1, "the restart restored a checkpoint");
}

#[test]
fn failures_anywhere_give_exactly_the_output_of_a_run_without_them() {
    fn prop(place: u8, at: u16, p1: u8, p2: u8) -> TestResult {
        let at = usize::from(at) % 11_000 + 1;
        let fault = match place % 4 {
            0 => Fault::Source(at as u64),
            1 => Fault::Operator(at),
            2 => Fault::SinkWrite(at),
            _ => Fault::SinkCommit(at % 4 + 1),
        };
        match exactly_once_with(fault, (usize::from(p1 % 3) + 1, usize::from(p2 % 3) + 1), &AtomicUsize::new(0)) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(e),
        }
    }
    QuickCheck::new().tests(12).quickcheck(prop as fn(u8, u16, u8, u8) -> TestResult);
}

#[test]
fn a_failure_beyond_the_restart_strategy_ends_the_job_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = counting_job(5_000, 50, 1, (1, 1), Fault::Operator(100), &out);
    let opts = options(dir.path()).restart(RestartStrategy::None);
    match job.run(&opts) {
        Err(Error::TaskFailed { why, .. }) => assert!(why.contains("injected"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_job_restarted_at_another_parallelism_keeps_every_keys_state() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Fails once late with no restart: the job ends, its checkpoints stay.
    let job = counting_job(12_000, 200, 3, (2, 2), Fault::Operator(2_000), &out);
    let opts = options(dir.path()).restart(RestartStrategy::None);
    assert!(job.run(&opts).is_err());
    let restored = eddy::runtime::latest_job_checkpoint(dir.path().join("checkpoints")).unwrap();
    assert!(restored.is_some(), "a checkpoint completed before the failure");
    // Started again with 3 counting subtasks and 1 source subtask, it resumes there.
    let job = counting_job(12_000, 200, 3, (1, 3), Fault::None, &out);
    let r = job.run(&opts).expect("the job runs");
    assert_eq!(r.restored.first().copied(), restored);
    assert_eq!(published(&out), expected(12_000, 200));
}

/// Counts per key over event-time windows of 100 ms: a count per window (a map from the
/// window's end), and a timer at each window's end.
struct WindowCount {
    counts: Option<MapState<I64, U64>>,
}

impl KeyedProcessFunction<U64, (u64, i64), String> for WindowCount {
    fn open(&mut self, ctx: &mut OpenContext<'_, U64>) -> eddy::Result<()> {
        self.counts = Some(ctx.backend().state(MapStateDescriptor::new("counts", I64, U64))?);
        Ok(())
    }
    fn process(&mut self, (_, ts): (u64, i64), ctx: &mut Context<'_, U64, String>) -> eddy::Result<()> {
        assert!(ts > ctx.watermark(), "a record behind the watermark");
        let end = ts - ts % 100 + 99;
        let s = self.counts.as_ref().expect("opened");
        let v = s.get(ctx.backend(), &end)?.unwrap_or(0) + 1;
        s.put(ctx.backend(), &end, &v)?;
        ctx.register_event_time_timer(end)
    }
    fn on_timer(&mut self, ts: i64, domain: TimeDomain, ctx: &mut Context<'_, U64, String>) -> eddy::Result<()> {
        assert_eq!(domain, TimeDomain::EventTime);
        assert!(ctx.watermark() >= ts);
        let s = self.counts.as_ref().expect("opened");
        let v = s.get(ctx.backend(), &ts)?.unwrap_or(0);
        s.remove(ctx.backend(), &ts)?;
        let key = ctx.current_key()?;
        ctx.collect(format!("{key}@{ts}={v}"))
    }
}

#[test]
fn event_time_timers_fire_as_the_watermark_passes() {
    let dir = tempfile::tempdir().unwrap();
    let sink = CollectSink::new();
    let job = JobBuilder::new("windows").max_parallelism(16);
    // Timestamps ascend per partition: record i at i ms.
    let source = GeneratorSource::new(2_000, 2, |i| (i % 5, i as i64)).timestamps(|i| i as i64);
    job.source_with_watermarks("events", source, WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO))
        .parallelism(2)
        .key_by(|r: &(u64, i64)| r.0, U64)
        .process("window", || WindowCount { counts: None })
        .parallelism(2)
        .sink("out", sink.clone());
    job.build().unwrap().run(&RunOptions::new(dir.path())).unwrap();
    let mut got = sink.values();
    got.sort();
    let mut want = Vec::new();
    for key in 0..5u64 {
        for w in 0..20i64 {
            let n = (w * 100..w * 100 + 100).filter(|i| (*i as u64) % 5 == key).count();
            want.push(format!("{key}@{}={n}", w * 100 + 99));
        }
    }
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn file_and_directory_sources_resume_where_the_checkpoint_was() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let mut all = Vec::new();
    for f in 0..3 {
        let lines: Vec<String> = (0..2_000).map(|i| format!("{}", f * 10_000 + i)).collect();
        std::fs::write(input.join(format!("f{f}.txt")), lines.join("\n") + "\n").unwrap();
        all.extend(lines);
    }
    for (name, directory) in [("dir", true), ("files", false)] {
        let out = dir.path().join(format!("out-{name}"));
        let trip = Trip::new(4_500, &Armed::always());
        let job = JobBuilder::new("lines").max_parallelism(8);
        let stream = if directory {
            job.source("lines", DirectorySource::new(&input))
        } else {
            job.source("lines", FileSource::files((0..3).map(|f| input.join(format!("f{f}.txt")))))
        };
        stream
            .map(move |l: String| {
                if trip.hit() {
                    panic!("injected");
                }
                if l.ends_with("00") {
                    std::thread::sleep(Duration::from_millis(1));
                }
                l.parse::<u64>().unwrap()
            })
            .key_by(|k: &u64| *k, U64)
            .process("count", || Count { state: None, fail: None })
            .sink("out", ExactlyOnceFileSink::new(&out));
        let r = job.build().unwrap().run(&options(&dir.path().join(name))).unwrap();
        assert_eq!(r.restarts, 1, "{name}");
        let mut want: Vec<String> = all.iter().map(|l| format!("{l},1")).collect();
        want.sort();
        assert_eq!(published(&out), want, "{name}");
    }
}

fn invalid(r: eddy::Result<eddy::runtime::Job>) -> String {
    match r {
        Err(Error::Misuse(Misuse::InvalidJob { why })) => why,
        other => panic!("expected an invalid job, got {other:?}"),
    }
}

#[test]
fn a_graph_that_cannot_run_is_refused_before_it_starts() {
    // No source.
    assert!(invalid(JobBuilder::new("empty").build()).contains("no source"));
    // A key_by with no keyed operator after it.
    let job = JobBuilder::new("dangling");
    let keyed = job.source("s", GeneratorSource::new(10, 1, |i| i)).key_by(|k: &u64| *k, U64);
    drop(keyed);
    assert!(invalid(job.build()).contains("no sink"));
    // A parallelism above the max parallelism.
    let job = JobBuilder::new("wide").max_parallelism(4);
    job.source("s", GeneratorSource::new(10, 1, |i| i)).parallelism(5).sink("out", CollectSink::new());
    assert!(invalid(job.build()).contains("parallelism 5"));
    // Two operators with one uid.
    let job = JobBuilder::new("twins");
    job.source("s", GeneratorSource::new(10, 1, |i| i))
        .key_by(|k: &u64| *k, U64)
        .process("s", || Count { state: None, fail: None })
        .sink("out", CollectSink::new());
    assert!(invalid(job.build()).contains("two operators"));
    // A uid that cannot name files.
    let job = JobBuilder::new("names");
    job.source("a/b", GeneratorSource::new(10, 1, |i| i)).sink("out", CollectSink::new());
    assert!(invalid(job.build()).contains("uid"));
    // Nor one that could name the job's own directories.
    let job = JobBuilder::new("names");
    job.source("_job", GeneratorSource::new(10, 1, |i| i)).sink("out", CollectSink::new());
    assert!(invalid(job.build()).contains("uid"));
}

#[test]
fn checkpoint_statistics_are_reported_per_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = counting_job(20_000, 300, 2, (2, 2), Fault::None, &out);
    let r = job.run(&options(dir.path())).unwrap();
    let last = r.checkpoints.last().expect("checkpoints");
    assert_eq!(last.subtasks.len(), 4, "every subtask's part");
    assert!(r.checkpoints.windows(2).all(|w| w[0].id < w[1].id));
    let line = last.to_string();
    assert!(line.starts_with(&format!("checkpoint {}:", last.id)), "{line}");
    // The whole state is at least what the last checkpoint stored anew.
    assert!(last.state_size() >= last.bytes() && last.state_size() > 0, "{line}");
    assert!(last.subtasks.iter().all(|s| s.state_size > 0));
}

/// A sum and a count, merged for session windows.
#[derive(Clone)]
struct SumCount;

impl eddy::state::AggregateFunction for SumCount {
    type In = (u64, i64);
    type Acc = (u64, u64);
    type Out = (u64, u64);
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: (u64, i64), acc: (u64, u64)) -> (u64, u64) {
        (acc.0 + value.1 as u64, acc.1 + 1)
    }
    fn get_result(&self, acc: &(u64, u64)) -> (u64, u64) {
        *acc
    }
    fn merge(&self, a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
        (a.0 + b.0, a.1 + b.1)
    }
}

/// Runs `records` (key, timestamp) through `assigner`'s windows: the results, sorted.
fn windows(records: Vec<(u64, i64)>, assigner: eddy::runtime::WindowAssigner) -> Vec<(u64, i64, i64, u64, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let sink = CollectSink::new();
    let job = JobBuilder::new("windows").max_parallelism(16);
    let n = records.len() as u64;
    let rec = Arc::new(records);
    let (r1, r2) = (rec.clone(), rec);
    let source = GeneratorSource::new(n, 1, move |i| r1[i as usize]).timestamps(move |i| r2[i as usize].1);
    job.source_with_watermarks(
        "events",
        source,
        WatermarkStrategy::bounded_out_of_orderness(Duration::from_millis(50)),
    )
    .key_by(|r: &(u64, i64)| r.0, U64)
    .window("windows", assigner, SumCount, (U64, U64))
    .parallelism(2)
    .map(|w: eddy::runtime::WindowResult<u64, (u64, u64)>| (w.key, w.window.start, w.window.end, w.value.0, w.value.1))
    .sink("out", sink.clone());
    job.build().unwrap().run(&RunOptions::new(dir.path())).unwrap();
    let mut got = sink.values();
    got.sort();
    got
}

#[test]
fn tumbling_windows_aggregate_each_window_once() {
    // Timestamps a little out of order (within the 50 ms bound).
    let records: Vec<(u64, i64)> =
        (0..3_000i64).map(|i| ((i % 3) as u64, i + if i % 7 == 0 { -20 } else { 0 })).collect();
    let got = windows(records.clone(), eddy::runtime::WindowAssigner::tumbling(Duration::from_millis(100)));
    let mut want: BTreeMap<(u64, i64), (u64, u64)> = BTreeMap::new();
    for (k, ts) in records.iter().copied().filter(|(_, ts)| *ts >= 0) {
        let e = want.entry((k, ts - ts % 100)).or_default();
        e.0 += ts as u64;
        e.1 += 1;
    }
    let want: Vec<(u64, i64, i64, u64, u64)> =
        want.into_iter().map(|((k, s), (sum, n))| (k, s, s + 100, sum, n)).collect();
    let got_nonneg: Vec<_> = got.into_iter().filter(|w| w.1 >= 0).collect();
    assert_eq!(got_nonneg, want);
}

#[test]
fn session_windows_merge_what_falls_within_the_gap() {
    // Key 1: bursts at 0..50 (every 10 ms) and 500..540, then one at 1000; key 2: one long
    // session of records 30 ms apart.
    let mut records = Vec::new();
    for ts in (0..50).step_by(10).chain((500..540).step_by(10)).chain([1000]) {
        records.push((1u64, ts as i64));
    }
    for ts in (0..1200).step_by(30) {
        records.push((2u64, ts as i64));
    }
    records.sort_by_key(|r| r.1);
    let got = windows(records, eddy::runtime::WindowAssigner::session(Duration::from_millis(100)));
    let sum = |r: std::ops::Range<i64>, step: usize| r.step_by(step).sum::<i64>() as u64;
    assert_eq!(
        got,
        vec![
            (1, 0, 140, sum(0..50, 10), 5),
            (1, 500, 630, sum(500..540, 10), 4),
            (1, 1000, 1100, 1000, 1),
            (2, 0, 1270, sum(0..1200, 30), 40),
        ]
    );
}

/// Rules by name on the broadcast side; on the keyed side, each record is matched against
/// them. A broadcast record also resets every key's count.
struct Rules {
    count: Option<ValueState<U64>>,
}

fn rules() -> eddy::state::BroadcastStateDescriptor<eddy::codec::Str, U64> {
    eddy::state::BroadcastStateDescriptor::new("rules", eddy::codec::Str, U64)
}

impl eddy::runtime::KeyedBroadcastProcessFunction<U64, u64, (String, u64), String> for Rules {
    fn open(&mut self, ctx: &mut OpenContext<'_, U64>) -> eddy::Result<()> {
        self.count = Some(ctx.backend().state(ValueStateDescriptor::new("count", U64))?);
        Ok(())
    }
    fn process(&mut self, key: u64, ctx: &mut Context<'_, U64, String>) -> eddy::Result<()> {
        let s = self.count.as_ref().expect("opened");
        let n = s.get(ctx.backend())?.unwrap_or(0) + 1;
        s.update(ctx.backend(), &n)?;
        let threshold = ctx.broadcast_state(&rules())?.get(&"limit".to_owned()).copied();
        if threshold.is_some_and(|t| n == t) {
            ctx.collect(format!("{key} reached {n}"))?;
        }
        Ok(())
    }
    fn process_broadcast(
        &mut self,
        (name, value): (String, u64),
        ctx: &mut eddy::runtime::BroadcastContext<'_, U64, String>,
    ) -> eddy::Result<()> {
        ctx.broadcast_state(&rules())?.put(name, value);
        let s = self.count.as_ref().expect("opened");
        ctx.backend().apply_to_all_keys(s, |b, _key| s.clear(b))?;
        Ok(())
    }
}

#[test]
fn broadcast_state_reaches_every_subtask_and_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let sink = CollectSink::new();
    let job = JobBuilder::new("rules").max_parallelism(16);
    let rule = job.source("rules", GeneratorSource::new(1, 1, |_| ("limit".to_owned(), 3u64))).broadcast();
    // The keyed records wait for the rule: the broadcast source's record comes first.
    let keyed = GeneratorSource::new(60, 1, |i| {
        if i == 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        i % 6
    });
    job.source("events", keyed)
        .key_by(|k: &u64| *k, U64)
        .connect(rule)
        .process("match", || Rules { count: None })
        .parallelism(3)
        .sink("out", sink.clone());
    job.build().unwrap().run(&RunOptions::new(dir.path())).unwrap();
    let mut got = sink.values();
    got.sort();
    let want: Vec<String> = (0..6).map(|k| format!("{k} reached 3")).collect();
    assert_eq!(got, want);
}

#[test]
fn a_job_stopped_with_a_savepoint_resumes_from_it_at_another_parallelism() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let sp = dir.path().join("savepoint");
    let job = counting_job(30_000, 200, 3, (2, 2), Fault::None, &out);
    let handle = job.spawn(options(&dir.path().join("a"))).unwrap();
    std::thread::sleep(Duration::from_millis(40));
    let taken = handle.stop_with_savepoint(&sp).expect("the savepoint");
    let r = handle.join().expect("the job stops");
    assert_eq!(r.savepoint.as_deref(), Some(taken.as_path()));
    let before = published(&out).len();
    assert!(before > 0 && before < 30_000, "stopped part-way: {before} lines");
    // Another checkpoint directory, 3 counting subtasks: it starts from the savepoint.
    let job = counting_job(30_000, 200, 3, (1, 3), Fault::None, &out);
    let r = job.run(&options(&dir.path().join("b")).from_savepoint(&sp)).expect("the job runs");
    assert_eq!(r.restored.len(), 1);
    assert_eq!(published(&out), expected(30_000, 200));
    // A second savepoint into the same directory is refused.
    let job = counting_job(30_000, 200, 1, (1, 1), Fault::None, &dir.path().join("out2"));
    let handle = job.spawn(options(&dir.path().join("c"))).unwrap();
    assert!(handle.stop_with_savepoint(&sp).is_err());
    handle.join().unwrap();
}

#[test]
fn at_least_once_mode_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The failure lands whether or not a checkpoint completed before it (the input may end
    // before the first one under load).
    let job = counting_job(12_000, 200, 3, (3, 2), Fault::OperatorAnyway(6_000), &out);
    let opts = RunOptions::new(dir.path().join("checkpoints"))
        .checkpoints(
            CheckpointConfig::every(Duration::from_millis(5)).exactly_once(false).timeout(Duration::from_secs(20)),
        )
        .restart(RestartStrategy::FixedDelay { attempts: 3, delay: Duration::from_millis(1) })
        .channel_capacity(4)
        .memory_budget(16 << 20);
    let r = job.run(&opts).expect("the job runs");
    assert_eq!(r.restarts, 1);
    let got: std::collections::BTreeSet<String> = published(&out).into_iter().collect();
    for line in expected(12_000, 200) {
        assert!(got.contains(&line), "{line} is missing");
    }
}

#[test]
fn restart_strategies_allow_what_flink_allows() {
    use eddy::runtime::RestartStrategy as R;
    // The strategies themselves, through jobs that fail every time.
    let fails_always = |strategy: R| {
        let dir = tempfile::tempdir().unwrap();
        let job = JobBuilder::new("fails");
        job.source("s", GeneratorSource::new(10, 1, |i| i))
            .key_by(|k: &u64| *k, U64)
            .process("count", || Count { state: None, fail: Some(Trip::new(1, &Armed::always())) })
            .sink("out", CollectSink::new());
        // Each run makes a new function, whose trip fires at its first record.
        let job = job.build().unwrap();
        let start = std::time::Instant::now();
        let r = job.run(&RunOptions::new(dir.path()).restart(strategy));
        (r.is_err(), start.elapsed())
    };
    let (failed, _) = fails_always(R::None);
    assert!(failed);
    let (failed, took) = fails_always(R::FixedDelay { attempts: 2, delay: Duration::from_millis(30) });
    assert!(failed && took >= Duration::from_millis(60), "two restarts 30 ms apart: {took:?}");
    let (failed, took) = fails_always(R::ExponentialDelay {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
        multiplier: 2.0,
        reset_after: Duration::from_secs(60),
        attempts: 3,
    });
    assert!(failed && took >= Duration::from_millis(10 + 20 + 40), "{took:?}");
    let (failed, _) = fails_always(R::FailureRate {
        max_failures: 2,
        interval: Duration::from_secs(60),
        delay: Duration::from_millis(1),
    });
    assert!(failed);
}

#[test]
fn a_slow_sink_backpressures_the_source_and_checkpoints_still_complete() {
    use std::sync::atomic::AtomicU64;
    let dir = tempfile::tempdir().unwrap();
    let produced = Arc::new(AtomicU64::new(0));
    let (consumed, lag) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let job = JobBuilder::new("backpressure").max_parallelism(8);
    let p = produced.clone();
    let (c, l, p2) = (consumed.clone(), lag.clone(), produced.clone());
    job.source(
        "fast",
        GeneratorSource::new(30_000, 1, move |i| {
            p.fetch_add(1, Ordering::Relaxed);
            i % 100
        }),
    )
    .key_by(|k: &u64| *k, U64)
    .process("count", || Count { state: None, fail: None })
    .sink(
        "slow",
        eddy::runtime::FnSink::new(move |_line: String| {
            let done = c.fetch_add(1, Ordering::Relaxed) + 1;
            l.fetch_max(p2.load(Ordering::Relaxed).saturating_sub(done), Ordering::Relaxed);
            if done % 16 == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(())
        }),
    );
    let opts = RunOptions::new(dir.path())
        .checkpoints(CheckpointConfig::every(Duration::from_millis(20)).timeout(Duration::from_secs(20)))
        .channel_capacity(2);
    let r = job.build().unwrap().run(&opts).unwrap();
    assert_eq!(consumed.load(Ordering::Relaxed), 30_000);
    // The source is never more than the channels, a batch being built and one burst ahead.
    let max_lag = lag.load(Ordering::Relaxed);
    assert!(max_lag < 6_000, "the source ran {max_lag} records ahead of the sink");
    assert!(r.checkpoints.len() >= 3, "{} checkpoints under backpressure", r.checkpoints.len());
}

/// Regression: the final checkpoint was triggered while another was in flight; a source
/// subtask completed both and its retention (one checkpoint) removed the first, which the job
/// then completed; a failure in the sink's commit of it made the restart find it gone.
#[test]
fn the_final_checkpoint_waits_so_no_subtask_loses_a_checkpoint_the_job_completes() {
    for n in 1..=12 {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let job = counting_job(6_000, 100, 3, (3, 3), Fault::SinkCommit(n % 6 + 1), &out);
        let opts = RunOptions::new(dir.path().join("checkpoints"))
            .checkpoints(CheckpointConfig::every(Duration::from_millis(1)).timeout(Duration::from_secs(20)))
            .restart(RestartStrategy::FixedDelay { attempts: 3, delay: Duration::ZERO })
            .channel_capacity(4)
            .memory_budget(8 << 20);
        job.run(&opts).unwrap_or_else(|e| panic!("commit failure {n}: {e}"));
        assert_eq!(published(&out), expected(6_000, 100), "commit failure {n}");
    }
}

/// Emits each key once, from a processing-time timer 20 ms after its first record.
struct Later {
    seen: Option<ValueState<U64>>,
}

impl KeyedProcessFunction<U64, u64, String> for Later {
    fn open(&mut self, ctx: &mut OpenContext<'_, U64>) -> eddy::Result<()> {
        self.seen = Some(ctx.backend().state(ValueStateDescriptor::new("seen", U64))?);
        Ok(())
    }
    fn process(&mut self, _key: u64, ctx: &mut Context<'_, U64, String>) -> eddy::Result<()> {
        let s = self.seen.as_ref().expect("opened");
        if s.get(ctx.backend())?.is_none() {
            s.update(ctx.backend(), &1)?;
            let at = ctx.processing_time() + 20;
            ctx.register_processing_time_timer(at)?;
        }
        Ok(())
    }
    fn on_timer(&mut self, ts: i64, domain: TimeDomain, ctx: &mut Context<'_, U64, String>) -> eddy::Result<()> {
        assert_eq!(domain, TimeDomain::ProcessingTime);
        assert!(ctx.processing_time() >= ts, "fired early");
        let key = ctx.current_key()?;
        ctx.collect(format!("{key}"))
    }
}

#[test]
fn processing_time_timers_fire_as_the_clock_passes() {
    let dir = tempfile::tempdir().unwrap();
    let sink = CollectSink::new();
    let job = JobBuilder::new("later").max_parallelism(8);
    // The input lasts long enough (100 records 1 ms apart) for every timer to fire before it
    // ends: a processing-time timer still pending at the end of input does not fire.
    job.source(
        "s",
        GeneratorSource::new(100, 1, |i| {
            std::thread::sleep(Duration::from_millis(1));
            i % 10
        }),
    )
    .key_by(|k: &u64| *k, U64)
    .process("later", || Later { seen: None })
    .parallelism(2)
    .sink("out", sink.clone());
    job.build().unwrap().run(&RunOptions::new(dir.path())).unwrap();
    let mut got = sink.values();
    got.sort();
    assert_eq!(got, (0..10).map(|k| k.to_string()).collect::<Vec<_>>());
}

/// Checks that each record's key is in the key group Flink gives a Long key.
struct FlinkGroups;

impl KeyedProcessFunction<I64, i64, String> for FlinkGroups {
    fn open(&mut self, _ctx: &mut OpenContext<'_, I64>) -> eddy::Result<()> {
        Ok(())
    }
    fn process(&mut self, key: i64, ctx: &mut Context<'_, I64, String>) -> eddy::Result<()> {
        let flink = eddy::keygroup::MaxParallelism::new(128).unwrap().key_group(eddy::keygroup::java_hash_i64(key));
        assert_eq!(ctx.backend().current_key_group()?, flink, "key {key}");
        ctx.collect(format!("{key}@{flink}"))
    }
}

#[test]
fn java_key_hash_routes_keys_to_the_key_groups_flink_gives_them() {
    let dir = tempfile::tempdir().unwrap();
    let sink = CollectSink::new();
    let job = JobBuilder::new("flink-groups").max_parallelism(128);
    job.source("s", GeneratorSource::new(2_000, 2, |i| i as i64 * 7919 - 5_000))
        .parallelism(2)
        .key_by(|k: &i64| *k, I64)
        .java_key_hash()
        .process("check", || FlinkGroups)
        .parallelism(3)
        .sink("out", sink.clone());
    job.build().unwrap().run(&RunOptions::new(dir.path())).unwrap();
    assert_eq!(sink.values().len(), 2_000);
}

/// I/O errors injected into the file system of the checkpoints and the working state: in a
/// store's flush, a checkpoint's asynchronous part, the job's metadata, a restore's cleanup.
/// The job restarts from its latest checkpoint and publishes exactly once all the same.
#[test]
fn io_errors_anywhere_in_checkpointing_restart_the_job_and_lose_nothing() {
    let mut hit = 0;
    for n in [20u64, 60, 120, 200, 300, 420] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let fs = eddy::io::FaultFs::new();
        fs.fail_at(n, eddy::io::FaultKind::Error);
        let job = counting_job(12_000, 200, 3, (2, 2), Fault::None, &out);
        let opts = options(dir.path()).file_system(Arc::new(fs.clone()));
        let r = job.run(&opts).unwrap_or_else(|e| panic!("an error at operation {n}: {e}"));
        assert_eq!(published(&out), expected(12_000, 200), "an error at operation {n}");
        hit += usize::from(r.restarts > 0);
    }
    assert!(hit >= 4, "only {hit} of the injected errors made the job restart");
}

/// The same at every 7th mutating operation of a run (`cargo test --test runtime -- --ignored
/// io_error_sweep`).
#[test]
#[ignore]
fn io_error_sweep() {
    let clean = eddy::io::FaultFs::new();
    let dir = tempfile::tempdir().unwrap();
    counting_job(12_000, 200, 3, (2, 2), Fault::None, &dir.path().join("out"))
        .run(&options(dir.path()).file_system(Arc::new(clean.clone())))
        .unwrap();
    let total = clean.ops();
    let mut restarted = 0;
    for n in (10..total).step_by(7) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let fs = eddy::io::FaultFs::new();
        fs.fail_at(n, eddy::io::FaultKind::Error);
        let job = counting_job(12_000, 200, 3, (2, 2), Fault::None, &out);
        let r = job
            .run(&options(dir.path()).file_system(Arc::new(fs.clone())))
            .unwrap_or_else(|e| panic!("an error at operation {n} of {total}: {e}"));
        assert_eq!(published(&out), expected(12_000, 200), "an error at operation {n} of {total}");
        restarted += usize::from(r.restarts > 0);
    }
    println!("{total} operations, {restarted} runs restarted");
}
