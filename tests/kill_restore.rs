//! A process killed with SIGKILL at random moments while it writes and checkpoints: the
//! newest checkpoint is at least the last one it reported completed, and every retained
//! checkpoint restores exactly the model's state at its barrier (see `support/kill_restore.rs`).
//! This test runs a few trials of two generations each (the second goes on from what the first
//! left), re-executing its own binary as the child; the example
//! `kill_restore` runs many (`cargo run --release --example kill_restore -- --trials 100`).
#![cfg(unix)]

#[path = "support/kill_restore.rs"]
mod kill_restore;

use std::process::Command;

use kill_restore::Kill;
use std::time::Duration;

/// The child's entry: a no-op unless the parent set the environment for it.
#[test]
fn kill_restore_child() {
    kill_restore::child_if_asked();
}

#[test]
fn a_process_killed_while_it_checkpoints_restores_a_checkpoint_at_least_as_new_as_it_reported() {
    let exe = std::env::current_exe().unwrap();
    let mut summary = kill_restore::Summary::default();
    for seed in 0..3u64 {
        let dir = tempfile::tempdir().unwrap();
        for generation in 0..2 {
            let mut command = Command::new(&exe);
            command.args(["--exact", "kill_restore_child", "--nocapture", "--test-threads=1"]);
            // The first generation dies at any moment, the second once it checkpointed.
            let delay = kill_restore::delay(seed, generation, Duration::from_millis(300));
            let kill = match generation {
                0 => Kill::After(Duration::from_millis(20) + delay),
                _ => Kill::AfterFirstCheckpoint(delay),
            };
            let t = kill_restore::trial(command, dir.path(), seed, generation, kill);
            summary.add(&t);
        }
    }
    eprintln!("{summary}");
    assert!(summary.restores > 0, "{summary}");
}
