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

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to the disk, without
/// waiting for them: a later sync then has less left to wait for. On Linux this is
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`; elsewhere, and when the call fails, nothing
/// happens (the hint changes no data and no durability).
pub(crate) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
        // SAFETY: the descriptor belongs to `file`, which is open for the whole call; no memory
        // is passed. Failure is reported through the return value, ignored on purpose (a hint).
        #[allow(unsafe_code)]
        let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}
