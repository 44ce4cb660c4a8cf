//! Every call into the operating system, in one place.
//!
//! Owns: reserving, committing, purging and releasing address space; writing a
//! line to a descriptor; aborting. Must never: allocate, format, or panic. Callers
//! treat a failed call as "no memory" and return null.

use core::ptr::null_mut;
use core::sync::atomic::{AtomicU8, Ordering};

/// The page size the engine is built around (checked against the OS when the
/// arena is reserved: see [`page_size_is_ours`]).
pub const PAGE_SHIFT: usize = 12;
/// 4 KiB.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// Whether the OS pages are [`PAGE_SIZE`] bytes. The arena is laid out in such
/// pages (commit, purge and tags per page), so on another page size it is never
/// reserved: every block then goes to a direct mapping, the engine's fallback
/// when no arena could be had, which works with any page size.
pub fn page_size_is_ours() -> bool {
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is read from what the
    // loader recorded at start-up (no allocation, usable during early init).
    page_size_fits(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
}

/// Whether `os_page` (a `sysconf` answer, -1 on error) is [`PAGE_SIZE`].
fn page_size_fits(os_page: libc::c_long) -> bool {
    os_page == PAGE_SIZE as libc::c_long
}

/// Reserve `len` bytes of address space with no access (`PROT_NONE`, not committed).
/// Returns null on failure.
pub fn reserve(len: usize) -> *mut u8 {
    map(len, libc::PROT_NONE)
}

/// Map `len` bytes read/write, demand-zero. Returns null on failure.
pub fn map_rw(len: usize) -> *mut u8 {
    map(len, libc::PROT_READ | libc::PROT_WRITE)
}

fn map(len: usize, prot: i32) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing
    // touches no existing memory; the result is checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(null_mut(), len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
    };
    if p == libc::MAP_FAILED {
        null_mut()
    } else {
        p as *mut u8
    }
}

/// Make `[p, p+len)` (inside one of our reservations) readable and writable.
/// Returns false when the kernel refuses (out of memory / map count).
///
/// # Safety
/// The range must lie inside a reservation made by [`reserve`].
pub unsafe fn commit(p: *mut u8, len: usize) -> bool {
    // SAFETY: the range is inside one of our reservations (contract), which
    // holds nothing anyone else relies on being inaccessible.
    unsafe { libc::mprotect(p as *mut _, len, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

/// Ask for `[p, p+len)` (inside one of our reservations, 2 MiB-aligned) to be
/// backed by transparent huge pages when it is first touched: one fault then
/// brings in 2 MiB instead of 4 KiB. Advice only: a kernel without huge pages,
/// or with them off, ignores it (the error is of no consequence).
///
/// # Safety
/// The range must lie inside a reservation made by [`reserve`].
pub unsafe fn advise_huge(p: *mut u8, len: usize) {
    // SAFETY: the range is inside one of our reservations (contract); the
    // advice changes how pages are backed, never their contents.
    unsafe { libc::madvise(p as *mut _, len, libc::MADV_HUGEPAGE) };
}

/// Most bytes [`resident_pages`] looks at in one call (one huge page).
pub const RESIDENT_PROBE_MAX: usize = 2 << 20;

/// How many pages of `[p, p+len)` are resident (`mincore`; `len` at most
/// [`RESIDENT_PROBE_MAX`]); 0 when the kernel refuses.
///
/// # Safety
/// The range must be page-aligned, mapped memory of ours.
pub unsafe fn resident_pages(p: *mut u8, len: usize) -> usize {
    let mut vec = [0u8; RESIDENT_PROBE_MAX / PAGE_SIZE];
    let n = len.min(RESIDENT_PROBE_MAX) / PAGE_SIZE;
    // SAFETY: the range is mapped memory of ours (contract), and `vec` has a
    // byte for each of its `n` pages.
    if unsafe { libc::mincore(p as *mut _, n * PAGE_SIZE, vec.as_mut_ptr()) } != 0 {
        return 0;
    }
    vec[..n].iter().filter(|&&b| b & 1 != 0).count()
}

/// Give the physical pages of `[p, p+len)` back to the OS; the range stays mapped
/// and reads back as zero on next touch.
///
/// # Safety
/// The range must be committed memory of ours that holds no live data.
pub unsafe fn purge(p: *mut u8, len: usize) {
    // SAFETY: committed memory of ours holding no live data (contract).
    unsafe { libc::madvise(p as *mut _, len, libc::MADV_DONTNEED) };
}

/// Ranges a [`PurgeBatch`] gives back in one system call at most.
pub const PURGE_BATCH: usize = 16;

/// `PIDFD_SELF_THREAD` (Linux 6.15): the calling thread, whose memory is the
/// process's, for `process_madvise`, with no descriptor to open, leak or
/// inherit across `fork`. (Not `PIDFD_SELF_THREAD_GROUP`: that names the
/// main thread, which may have exited while others run on.)
const PIDFD_SELF: libc::c_int = -10000;

/// Whether `process_madvise(PIDFD_SELF, …, MADV_DONTNEED)` works here:
/// `BATCH_UNTRIED`, `BATCH_WORKS` or `BATCH_REFUSED` (older kernels answer
/// `EBADF` or `EINVAL`, a seccomp filter `EPERM` or `ENOSYS`). Relaxed: each
/// thread that finds it untried tries the call itself; every answer is the same.
static BATCH_STATE: AtomicU8 = AtomicU8::new(BATCH_UNTRIED);
const BATCH_UNTRIED: u8 = 0;
const BATCH_WORKS: u8 = 1;
const BATCH_REFUSED: u8 = 2;

/// Ranges to [`purge`], given back together: one `process_madvise` call for
/// up to [`PURGE_BATCH`] of them where the kernel has it for the calling
/// process (Linux 6.15 and later), else one `madvise` each. Each `madvise`
/// call flushes the TLBs of every CPU running the process (an interrupt to
/// each, costly in a virtual machine: ~22 µs a call measured on 2 vCPUs
/// with a second thread running); one `process_madvise` call flushes once
/// for all its ranges (8 stretches of 80 KiB: 176 µs as 8 calls, 32 µs as
/// one). A thread that exits and purges the free pages its shard does not
/// keep gives back several stretches at once.
///
/// The ranges are given back when the batch is full, at [`PurgeBatch::flush`],
/// and when it is dropped: whoever pushes keeps them unused until then (the
/// shard lock held over the batch's life).
pub struct PurgeBatch {
    ranges: [libc::iovec; PURGE_BATCH],
    n: usize,
}

impl PurgeBatch {
    /// An empty batch.
    pub const fn new() -> Self {
        PurgeBatch { ranges: [libc::iovec { iov_base: null_mut(), iov_len: 0 }; PURGE_BATCH], n: 0 }
    }

    /// Add `[p, p+len)` (given back by the next flush; at once when the
    /// batch is full).
    ///
    /// # Safety
    /// As [`purge`], until the batch is flushed or dropped.
    pub unsafe fn push(&mut self, p: *mut u8, len: usize) {
        if self.n == PURGE_BATCH {
            self.flush();
        }
        self.ranges[self.n] = libc::iovec { iov_base: p as *mut _, iov_len: len };
        self.n += 1;
    }

    /// Give back every range pushed so far.
    pub fn flush(&mut self) {
        let n = core::mem::replace(&mut self.n, 0);
        let ranges = &self.ranges[..n];
        let mut done = 0;
        if n > 1 && BATCH_STATE.load(Ordering::Relaxed) != BATCH_REFUSED {
            let total: usize = ranges.iter().map(|r| r.iov_len).sum();
            // SAFETY: `ranges` describes `n` ranges of committed memory of ours
            // holding no live data (`push`'s contract); the call reads the
            // array and changes nothing else.
            let r = unsafe {
                libc::syscall(libc::SYS_process_madvise, PIDFD_SELF, ranges.as_ptr(), n, libc::MADV_DONTNEED, 0u32)
            };
            if r >= 0 {
                BATCH_STATE.store(BATCH_WORKS, Ordering::Relaxed);
                done = r as usize;
                if done >= total {
                    return;
                }
            } else if BATCH_STATE.load(Ordering::Relaxed) == BATCH_UNTRIED {
                BATCH_STATE.store(BATCH_REFUSED, Ordering::Relaxed);
            }
        }
        // One call per range for what the batched call did not do (all of
        // it when refused; after a partial answer, from where it stopped).
        for r in ranges {
            if done >= r.iov_len {
                done -= r.iov_len;
                continue;
            }
            // SAFETY: the rest of a pushed range (contract of `push`).
            unsafe { purge((r.iov_base as *mut u8).add(done), r.iov_len - done) };
            done = 0;
        }
    }
}

impl Drop for PurgeBatch {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Unmap `[p, p+len)`.
///
/// # Safety
/// The range must be a mapping (or part of one) of ours holding no live data.
pub unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: a mapping of ours holding no live data (contract).
    unsafe { libc::munmap(p as *mut _, len) };
}

/// Write `bytes` to stderr with one `write` call (see [`write_once`]).
pub fn write_stderr(bytes: &[u8]) {
    write_once(2, bytes)
}

/// Write `bytes` to `fd` with one `write` call (no retry: a line written
/// this way never interleaves with another writer's, and a short write at
/// exit is not worth a loop). Best effort, no allocation.
pub fn write_once(fd: i32, bytes: &[u8]) {
    // SAFETY: the pointer and length describe the live slice `bytes`.
    unsafe { libc::write(fd, bytes.as_ptr() as *const _, bytes.len()) };
}

/// Abort the process at once (no unwinding, no destructors).
pub fn abort() -> ! {
    // SAFETY: abort() has no preconditions and does not return.
    unsafe { libc::abort() }
}

/// A coarse monotonic clock in milliseconds (64 bits: never wraps). The
/// coarse clock is read from the vDSO without a system call.
pub fn now_ms() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC_COARSE exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1000).wrapping_add(ts.tv_nsec as u64 / 1_000_000)
}

/// Milliseconds from `at` to `now` (both [`now_ms`] readings); 0 when `at` is later: two
/// threads read the clock before taking a lock in either order. The clock is 64-bit, so no
/// age wraps (a 32-bit one read a time more than 24.8 days old as "in the future").
#[inline]
pub fn ms_since(now: u64, at: u64) -> u64 {
    now.saturating_sub(at)
}

/// Yield the CPU to another thread (used by spin loops that waited long).
pub fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe {
        libc::sched_yield();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write a marker into every page of a fresh mapping of `pages` pages,
    /// give back every other run of `run` pages through one batch (more runs
    /// than one call takes), and check exactly those read zero again.
    fn purge_every_other_run(pages: usize, run: usize) {
        let len = pages * PAGE_SIZE;
        let mem = map_rw(len);
        assert!(!mem.is_null());
        for p in 0..pages {
            // SAFETY: page `p` lies in the fresh mapping.
            unsafe { *mem.add(p * PAGE_SIZE + 8) = 0xA5 };
        }
        let mut batch = PurgeBatch::new();
        let mut pushed = 0;
        for start in (0..pages).step_by(2 * run) {
            // SAFETY: the run lies in the mapping, which holds no data of anyone.
            unsafe { batch.push(mem.add(start * PAGE_SIZE), run * PAGE_SIZE) };
            pushed += 1;
        }
        assert!(pushed > PURGE_BATCH, "the batch must fill and flush on its own");
        drop(batch);
        for p in 0..pages {
            let purged = (p / run).is_multiple_of(2);
            // SAFETY: as above.
            let v = unsafe { *mem.add(p * PAGE_SIZE + 8) };
            assert_eq!(v, if purged { 0 } else { 0xA5 }, "page {p} (purged: {purged})");
        }
        // SAFETY: the mapping is this test's alone.
        unsafe { unmap(mem, len) };
    }

    #[test]
    fn a_purge_batch_gives_back_exactly_its_ranges() {
        // 24 runs of 3 pages given back, 24 kept between them.
        purge_every_other_run(144, 3);
        // Whatever the kernel answered, the engine remembers it: batched
        // where `process_madvise` works for this process, else one call a range.
        assert_ne!(BATCH_STATE.load(Ordering::Relaxed), BATCH_UNTRIED);
    }

    #[test]
    fn a_refused_batch_falls_back_to_one_call_a_range() {
        let was = BATCH_STATE.swap(BATCH_REFUSED, Ordering::Relaxed);
        purge_every_other_run(100, 1);
        // Other tests of this process may have flushed meanwhile: both ways
        // purge the same pages, so the state is only put back.
        BATCH_STATE.store(was, Ordering::Relaxed);
    }

    #[test]
    fn page_size_check_accepts_only_the_engines_page_size() {
        assert!(page_size_fits(PAGE_SIZE as libc::c_long));
        assert!(!page_size_fits(16384), "a 16 KiB page kernel");
        assert!(!page_size_fits(65536), "a 64 KiB page kernel");
        assert!(!page_size_fits(-1), "sysconf failed");
        // The machine running the tests has 4 KiB pages (x86-64 Linux).
        // SAFETY: sysconf has no preconditions.
        let os_page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        assert_eq!(page_size_is_ours(), os_page == 4096);
    }
}
