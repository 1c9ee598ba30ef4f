//! Kills a process with SIGKILL at random moments while it writes and checkpoints, then
//! restores what it left and checks it against a model: the newest checkpoint is at least the
//! last one the process reported completed, and every retained checkpoint restores exactly the
//! state of the process's deterministic writes at its barrier.
//!
//! Run with `cargo run --release --example kill_restore -- --trials 100` (`--seed N` to start
//! elsewhere, `--max-delay-ms N` for the longest wait before a kill, `--generations N` for how
//! many children in turn go on in one directory, each from the newest checkpoint the one before
//! left; 4 by default). Each trial is one child killed and checked: every other one at any
//! moment from its start, the others once they completed a checkpoint. The example
//! re-executes itself as the child.

#[cfg(unix)]
#[path = "../tests/support/kill_restore.rs"]
mod kill_restore;

#[cfg(unix)]
fn main() {
    use std::time::{Duration, Instant};
    kill_restore::child_if_asked();
    let mut trials = 100u64;
    let mut seed = 1000u64;
    let mut max_delay_ms = 300u64;
    let mut generations = 4u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse().ok()).expect("a number after the option");
        match a.as_str() {
            "--trials" => trials = value(),
            "--seed" => seed = value(),
            "--max-delay-ms" => max_delay_ms = value(),
            "--generations" => generations = value().max(1),
            other => {
                panic!("unknown option {other:?}; options: --trials N, --seed N, --max-delay-ms N, --generations N")
            }
        }
    }
    let exe = std::env::current_exe().expect("the example's own path");
    let start = Instant::now();
    let mut summary = kill_restore::Summary::default();
    // Each directory serves a few generations of children, each going on from the newest
    // checkpoint the one before left.
    let mut dir = None;
    for (n, s) in (seed..seed + trials).enumerate() {
        let generation = n as u64 % generations;
        if generation == 0 {
            dir = Some(tempfile::tempdir().expect("a temporary directory"));
        }
        let dir = dir.as_ref().expect("made at generation 0");
        // The seed of the directory's first trial drives all its generations.
        let first = s - generation;
        // Every other child dies at any moment, the others once they checkpointed.
        let delay = kill_restore::delay(first, generation, Duration::from_millis(max_delay_ms));
        let kill = if generation.is_multiple_of(2) {
            kill_restore::Kill::After(Duration::from_millis(5) + delay)
        } else {
            kill_restore::Kill::AfterFirstCheckpoint(delay)
        };
        let t = kill_restore::trial(std::process::Command::new(&exe), dir.path(), first, generation, kill);
        summary.add(&t);
    }
    println!("{summary}");
    println!("in {:.1?}", start.elapsed());
}

#[cfg(not(unix))]
fn main() {
    eprintln!("kill_restore needs a Unix system (it kills its child with SIGKILL)");
}
