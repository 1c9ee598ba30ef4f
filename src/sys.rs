//! What eddy asks of the operating system beyond files.

/// Marks the calling thread as background work: on Linux its scheduling policy becomes
/// `SCHED_BATCH`, so waking it (handing it a region to flush, a checkpoint to write) does not
/// preempt the task thread that woke it. It still gets its fair share of the CPU. Elsewhere,
/// and when the call fails, nothing changes.
pub(crate) fn background_thread() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` only reads `param`, a valid, initialized value that
        // outlives the call; pid 0 is the calling thread. Failure is reported through the
        // return value, which is ignored on purpose (the policy is a hint).
        #[allow(unsafe_code)]
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    }
}
