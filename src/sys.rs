//! What eddy asks of the operating system beyond files.

/// Marks the calling thread as background work: on Linux its scheduling policy becomes
/// `SCHED_BATCH` and its nice value 5. `SCHED_BATCH` alone did not keep the task thread from
/// being switched out when it woke a background thread after using its time slice; with the
/// lower weight that happens less often. It still gets a share of the CPU. Elsewhere, and
/// when a call fails, nothing changes.
pub(crate) fn background_thread() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` only reads `param`, a valid, initialized value that
        // outlives the call; pid 0 is the calling thread. Failure is reported through the
        // return value, which is ignored on purpose (the policy is a hint).
        #[allow(unsafe_code)]
        let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        // SAFETY: no memory is passed; `who` 0 with `PRIO_PROCESS` is the calling thread on
        // Linux. Failure is ignored on purpose (a hint).
        #[allow(unsafe_code)]
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 5) };
    }
}
