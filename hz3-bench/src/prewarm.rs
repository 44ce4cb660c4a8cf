//! Warming the kernel's free memory before a child run.
//!
//! On a virtual machine that reports its free memory to the host (free page reporting of a
//! virtio balloon, as on the project machine), the 2 MiB blocks the kernel has kept free for
//! about two seconds are handed back to the host, and the next process that faults them in
//! waits for the host to supply them again. Measured on the project machine: 4–5 ms of
//! system time per MiB, and a child of `live_build_free_fifo` that met such blocks spent
//! 0.15–0.35 s of system time instead of 0.01–0.03, with any allocator, in one run of two to
//! eight. Before the child of a cell (workload, allocator) whose earlier runs had a large
//! peak, the runner maps as much memory, asks for huge pages, touches every page and unmaps
//! it: the blocks it frees lie at the head of the kernel's free lists (blocks handed back to
//! the host go to the tail), so the child's page faults take them. The cost falls on the
//! runner, before the child starts; the same for every allocator. Owns nothing else; never
//! touches memory it did not map.

/// Peaks below this (MiB) are not worth a warm-up: the kernel's small free blocks are never
/// handed back to the host.
pub const MIN_MIB: u64 = 32;

/// Map, touch and unmap `mib` MiB of huge-page-advised memory, in a process forked for it:
/// a child process reports the highest resident set of the process it was started from
/// (Linux carries it over `exec`), so the runner itself must never grow (nothing when the
/// fork or the mapping fails).
pub fn warm(mib: u64) {
    if mib == 0 {
        return;
    }
    // SAFETY: the forked process only makes system calls (mmap, madvise, stores into its own
    // mapping, munmap, _exit), which are safe after `fork` in a multi-threaded process; the
    // parent waits for it.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            touch_and_release((mib as usize) << 20);
            libc::_exit(0);
        }
        if pid > 0 {
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
        }
    }
}

/// The forked process's work: map `len` bytes, ask for huge pages, write every page, unmap.
///
/// # Safety
/// Called in the process forked by [`warm`] (or any process that may map memory).
unsafe fn touch_and_release(len: usize) {
    const HUGE: usize = 2 << 20;
    // SAFETY: a private anonymous mapping at an address of the kernel's choosing, checked
    // against MAP_FAILED; only this function uses it, and it unmaps all of it.
    unsafe {
        let p = libc::mmap(core::ptr::null_mut(), len + HUGE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0);
        if p == libc::MAP_FAILED {
            return;
        }
        let start = (p as usize).next_multiple_of(HUGE) as *mut u8;
        // Advice only: without huge pages the writes below still warm 4 KiB pages.
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        let mut off = 0;
        while off < len {
            core::ptr::write_volatile(start.add(off), 1);
            off += 4096;
        }
        libc::munmap(p, len + HUGE);
    }
}

/// The warm-up, in MiB, before a child of a cell whose runs so far peaked at
/// `peak_kib` (0 when none ran yet): a quarter more than the peak, or nothing below
/// [`MIN_MIB`].
pub fn mib_for(peak_kib: u64) -> u64 {
    let mib = peak_kib / 1024;
    if mib < MIN_MIB {
        0
    } else {
        mib + mib / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_peaks_get_no_warm_up_and_large_ones_a_quarter_more() {
        assert_eq!(mib_for(0), 0);
        assert_eq!(mib_for(31 * 1024), 0);
        assert_eq!(mib_for(100 * 1024), 125);
        warm(1); // forks, maps, touches and unmaps without crashing
    }
}
