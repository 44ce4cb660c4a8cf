//! Counters of one generated type, and its exit line.
//!
//! Owns: the counter set, the snapshot a program reads, and the lines printed
//! at process exit (to `HZ3_STATS_FILE`, or to stderr while descriptor 2 is
//! still the file it was at start-up; see `options`). Counters live in each thread's cache (written only by
//! that thread: a relaxed load and store, no shared cache line on the hot path)
//! plus one shared set for threads without a cache; a snapshot sums them all.
//! Must never: allocate or format through `core::fmt` (each line is built by
//! hand in a stack buffer and written with one `write`). With `stats: false` every counter update compiles away.

use core::sync::atomic::{AtomicU64, Ordering};

/// Counter indices. Only independent events are counted on the hot path;
/// `calls`, `seg_hit`, `ptag_lookups` and `fallback_ptag` are derived from them.
/// The first [`FREE_EVENTS`] are the events of one small/medium free, which the
/// free path collects in an [`Events`] set and counts with one bump.
#[derive(Clone, Copy)]
#[repr(usize)]
pub enum Ctr {
    SegMiss,
    MetaHit,
    MetaZero,
    PtagHit,
    PtagMiss,
    Local,
    Remote,
    /// Frees that were not small/medium (large, direct-mapped, foreign, invalid).
    FreeOther,
    PtagDecodeFail,
    Allocs,
    Refills,
    Flushes,
    RemoteBatches,
    LargeAllocs,
    /// Blocks a refill put into a thread-cache bin (the one it returned is
    /// counted in `Allocs`).
    CacheIn,
    /// Blocks moved out of a thread-cache bin by a flush or a thread's exit.
    CacheOut,
    Invalid,
}

/// Number of counters.
pub const NCTR: usize = Ctr::Invalid as usize + 1;

/// Counters `0..FREE_EVENTS` can be collected in an [`Events`] set.
pub const FREE_EVENTS: usize = Ctr::Remote as usize + 1;

/// A set of free events (bit `k` = `Ctr` `k`), counted together with one bump:
/// a hot free costs one counter update however many route steps it observed.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Events(pub u32);

impl Events {
    /// No event.
    pub const NONE: Events = Events(0);

    /// This set plus event `k` (one of the first [`FREE_EVENTS`] counters).
    #[inline(always)]
    pub const fn with(self, k: Ctr) -> Events {
        Events(self.0 | 1 << k as u32)
    }
}

/// Add one to a counter only the calling thread writes: a relaxed load and
/// store, no locked read-modify-write (readers on other threads see some
/// recent value, which is all a statistics snapshot needs).
#[inline(always)]
pub fn add_owned(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// One set of counters.
pub struct Counters {
    c: [AtomicU64; NCTR],
    /// `sets[m]`: frees whose events were exactly the set `m`.
    sets: [AtomicU64; 1 << FREE_EVENTS],
}

impl Counters {
    /// All zero.
    pub const fn new() -> Self {
        Counters { c: [const { AtomicU64::new(0) }; NCTR], sets: [const { AtomicU64::new(0) }; 1 << FREE_EVENTS] }
    }

    /// The counter of event set `e` (one bump counts each of its events).
    #[inline(always)]
    pub fn of_events(&self, e: Events) -> &AtomicU64 {
        // The mask keeps the index in bounds without a check (`Events::with`
        // only sets free-event bits, so it never changes the set).
        &self.sets[e.0 as usize & ((1 << FREE_EVENTS) - 1)]
    }

    /// The counter of `k`.
    #[inline(always)]
    pub fn of(&self, k: Ctr) -> &AtomicU64 {
        &self.c[k as usize]
    }

    /// Add one, by the only thread that writes this set.
    #[inline(always)]
    pub fn bump_owned(&self, k: Ctr) {
        add_owned(self.of(k))
    }

    /// Add one to a set shared between threads.
    #[inline]
    pub fn bump_shared(&self, k: Ctr) {
        self.of(k).fetch_add(1, Ordering::Relaxed);
    }

    /// Add this set into `into` (each event set adds to each of its events).
    pub fn add_to(&self, into: &mut [u64; NCTR]) {
        for (acc, c) in into.iter_mut().zip(self.c.iter()) {
            *acc += c.load(Ordering::Relaxed);
        }
        for (m, c) in self.sets.iter().enumerate().skip(1) {
            let v = c.load(Ordering::Relaxed);
            if v != 0 {
                for (k, acc) in into.iter_mut().enumerate().take(FREE_EVENTS) {
                    if m & (1 << k) != 0 {
                        *acc += v;
                    }
                }
            }
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

/// A copy of one type's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Free calls (every `free`/`dealloc` of a non-null pointer).
    pub calls: u64,
    /// S110 step: the pointer's segment header was found live.
    pub seg_hit: u64,
    /// S110 step: no live runs-segment header for the pointer.
    pub seg_miss: u64,
    /// S110 step: `bin_plus1 != 0`.
    pub meta_hit: u64,
    /// S110 step: `bin_plus1 == 0`.
    pub meta_zero: u64,
    /// Frees routed by the tag map after the S110 step did not route them.
    pub fallback_ptag: u64,
    /// Small/medium frees of blocks owned by the freeing thread's shard.
    pub local: u64,
    /// Small/medium frees of blocks owned by another shard.
    pub remote: u64,
    /// Tag-map lookups.
    pub ptag_lookups: u64,
    /// Tag-map lookups that found a non-zero tag.
    pub ptag_hit: u64,
    /// Tag-map lookups that found zero.
    pub ptag_miss: u64,
    /// Non-zero tags that did not decode to a valid bin and owner (tags are
    /// validated only with `failfast: true`; always 0 otherwise).
    pub ptag_decode_fail: u64,
    /// Allocation calls.
    pub allocs: u64,
    /// Thread-cache refills (allocation slow path).
    pub refills: u64,
    /// Thread-cache flushes to the shard central (free slow path).
    pub flushes: u64,
    /// Remote-free batches published to another shard.
    pub remote_batches: u64,
    /// Large (> 256 KiB) and direct-mapped allocations.
    pub large_allocs: u64,
    /// Frees of in-arena pointers that are not live blocks (ignored without failfast).
    pub invalid_frees: u64,
}

impl StatsSnapshot {
    /// Build from summed counters; `ptag_late` says whether every tag hit was a
    /// fallback after the S110 step (`ptag: late`).
    ///
    /// `allocs` is derived: every block that enters a thread-cache bin (a
    /// local free, or a refill's surplus) leaves it by an allocation (a pop,
    /// not counted on the hot path), a flush or a thread exit, or is still in
    /// it (`cached`, the bins' current counts); so pops = local + in − out −
    /// cached, plus the allocations counted directly (refill's returned block,
    /// large, direct-mode). Exact when no other thread is mid-operation.
    pub fn from_sums(s: &[u64; NCTR], ptag_late: bool, cached: u64) -> Self {
        use Ctr::*;
        StatsSnapshot {
            calls: s[Local as usize] + s[Remote as usize] + s[FreeOther as usize],
            seg_hit: s[MetaHit as usize] + s[MetaZero as usize],
            seg_miss: s[SegMiss as usize],
            meta_hit: s[MetaHit as usize],
            meta_zero: s[MetaZero as usize],
            fallback_ptag: if ptag_late { s[PtagHit as usize] } else { 0 },
            local: s[Local as usize],
            remote: s[Remote as usize],
            ptag_lookups: s[PtagHit as usize] + s[PtagMiss as usize] + s[PtagDecodeFail as usize],
            ptag_hit: s[PtagHit as usize],
            ptag_miss: s[PtagMiss as usize],
            ptag_decode_fail: s[PtagDecodeFail as usize],
            allocs: (s[Allocs as usize] + s[Local as usize] + s[CacheIn as usize])
                .saturating_sub(s[CacheOut as usize] + cached),
            refills: s[Refills as usize],
            flushes: s[Flushes as usize],
            remote_batches: s[RemoteBatches as usize],
            large_allocs: s[LargeAllocs as usize],
            invalid_frees: s[Invalid as usize],
        }
    }
}

/// A line under construction in a fixed stack buffer (no allocation).
pub struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    /// Empty line.
    pub const fn new() -> Self {
        Line { buf: [0; 512], len: 0 }
    }

    /// Append bytes (truncated at the buffer's end).
    pub fn s(&mut self, text: &str) -> &mut Self {
        for &b in text.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    /// Append a decimal number.
    pub fn u(&mut self, mut v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        while n > 0 {
            n -= 1;
            if self.len < self.buf.len() {
                self.buf[self.len] = digits[n];
                self.len += 1;
            }
        }
        self
    }

    /// Append `0x` and a hexadecimal number.
    pub fn x(&mut self, v: usize) -> &mut Self {
        self.s("0x");
        let mut started = false;
        for shift in (0..16).rev() {
            let d = (v >> (shift * 4)) & 0xf;
            if d != 0 || started || shift == 0 {
                started = true;
                let c = if d < 10 { b'0' + d as u8 } else { b'a' + (d - 10) as u8 };
                if self.len < self.buf.len() {
                    self.buf[self.len] = c;
                    self.len += 1;
                }
            }
        }
        self
    }

    /// Append raw bytes (truncated at the buffer's end).
    pub fn bytes_raw(&mut self, raw: &[u8]) -> &mut Self {
        let n = raw.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&raw[..n]);
        self.len += n;
        self
    }

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Write the line and a newline to stderr (one `write`, as [`Line::emit_to`]).
    pub fn emit(&mut self) {
        self.end_line();
        crate::os::write_stderr(self.bytes());
    }

    /// Write the line and a newline to `fd` with one `write` call, so that
    /// lines of concurrent writers (other processes appending to the same
    /// file, threads) never interleave inside a line. Best effort: a short or
    /// failed write is not retried. The last byte is always the newline.
    pub fn emit_to(&mut self, fd: i32) {
        self.end_line();
        crate::os::write_once(fd, self.bytes());
    }

    /// Append the newline, over the last byte when the buffer is full.
    fn end_line(&mut self) {
        if self.len == self.buf.len() {
            self.len -= 1;
        }
        self.s("\n");
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the exit lines go: an opened `HZ3_STATS_FILE`, or descriptor 2.
struct Sink {
    fd: i32,
    close: bool,
}

impl Sink {
    /// `HZ3_STATS_FILE` (`%p` replaced by the pid) opened for appending; else
    /// descriptor 2 if it is still the file it was at start-up (a program that
    /// closed stderr and opened another file must not get our lines in it);
    /// else nowhere.
    fn open() -> Option<Sink> {
        let file = crate::options::stats_file();
        if !file.is_empty() {
            let mut path = Line::new();
            let mut i = 0;
            while i < file.len() {
                if file[i] == b'%' && file.get(i + 1) == Some(&b'p') {
                    // SAFETY: getpid has no preconditions.
                    path.u(unsafe { libc::getpid() } as u64);
                    i += 2;
                } else {
                    path.bytes_raw(&file[i..i + 1]);
                    i += 1;
                }
            }
            // The NUL terminator (a path that fills the buffer is cut, then opened).
            if path.len == path.buf.len() {
                path.len -= 1;
            }
            path.bytes_raw(&[0]);
            // SAFETY: `path` is NUL-terminated; open has no other preconditions.
            let fd = unsafe {
                libc::open(
                    path.buf.as_ptr() as *const libc::c_char,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
                    0o644 as libc::c_uint,
                )
            };
            if fd >= 0 {
                return Some(Sink { fd, close: true });
            }
        }
        if crate::options::stderr_unchanged() {
            return Some(Sink { fd: 2, close: false });
        }
        None
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.close {
            // SAFETY: `fd` was opened by `Sink::open` and is closed once.
            unsafe { libc::close(self.fd) };
        }
    }
}

/// Print the exit lines of type `name` (whose `stats` flag is `stats`) if the
/// options want them: the three counter lines, or for a type built without
/// counters one line saying so. Each line ends with the program and pid.
pub fn print_at_exit(name: &str, stats: bool, s: &StatsSnapshot) {
    if !crate::options::exit_lines_wanted(stats) {
        return;
    }
    let Some(sink) = Sink::open() else {
        return;
    };
    if stats {
        print_lines_to(sink.fd, name, s);
    } else {
        let mut l = Line::new();
        l.s("[HZ3_STATS] no counters (the type is built with stats: false) type=").s(name);
        crate::options::append_origin(&mut l);
        l.emit_to(sink.fd);
    }
}

/// Write the exit lines of one type to `fd`, one `write` per line.
pub fn print_lines_to(fd: i32, name: &str, s: &StatsSnapshot) {
    let mut l = Line::new();
    l.s("[HZ3_S110_FREE] calls=").u(s.calls)
        .s(" seg_hit=").u(s.seg_hit)
        .s(" seg_miss=").u(s.seg_miss)
        .s(" meta_hit=").u(s.meta_hit)
        .s(" meta_zero=").u(s.meta_zero)
        .s(" fallback_ptag=").u(s.fallback_ptag)
        .s(" local=").u(s.local)
        .s(" remote=").u(s.remote)
        .s(" type=").s(name);
    crate::options::append_origin(&mut l);
    l.emit_to(fd);
    let mut l = Line::new();
    l.s("[HZ3_PTAG] lookups=").u(s.ptag_lookups)
        .s(" hit=").u(s.ptag_hit)
        .s(" miss=").u(s.ptag_miss)
        .s(" decode_fail=").u(s.ptag_decode_fail)
        .s(" type=").s(name);
    crate::options::append_origin(&mut l);
    l.emit_to(fd);
    let mut l = Line::new();
    l.s("[HZ3_CACHE] allocs=").u(s.allocs)
        .s(" refills=").u(s.refills)
        .s(" flushes=").u(s.flushes)
        .s(" remote_batches=").u(s.remote_batches)
        .s(" large=").u(s.large_allocs)
        .s(" invalid_frees=").u(s.invalid_frees)
        .s(" type=").s(name);
    crate::options::append_origin(&mut l);
    l.emit_to(fd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_formats_numbers() {
        let mut l = Line::new();
        l.s("a=").u(0).s(" b=").u(1234567890123).s(" p=").x(0x7f12ab);
        assert_eq!(l.bytes(), b"a=0 b=1234567890123 p=0x7f12ab");
        let mut m = Line::new();
        m.u(u64::MAX);
        assert_eq!(m.bytes(), b"18446744073709551615");
    }

    #[test]
    fn full_line_keeps_its_newline() {
        let mut l = Line::new();
        for _ in 0..600 {
            l.s("x");
        }
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid out-array of two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        l.emit_to(fds[1]);
        let mut buf = [0u8; 1024];
        // SAFETY: `buf` is writable; both descriptors were opened above and are closed once.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr() as *mut _, buf.len()) };
        // SAFETY: both descriptors were opened by `pipe` above and are closed once.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        assert_eq!(n, 512);
        assert_eq!(buf[511], b'\n');
    }

    #[test]
    fn counters_sum() {
        let a = Counters::new();
        let b = Counters::new();
        a.bump_owned(Ctr::Local);
        a.bump_owned(Ctr::Local);
        b.bump_shared(Ctr::FreeOther);
        b.bump_shared(Ctr::Remote);
        a.bump_owned(Ctr::MetaHit);
        b.bump_shared(Ctr::MetaZero);
        a.bump_owned(Ctr::PtagHit);
        b.bump_shared(Ctr::PtagMiss);
        let mut s = [0; NCTR];
        a.add_to(&mut s);
        b.add_to(&mut s);
        let snap = StatsSnapshot::from_sums(&s, true, 0);
        assert_eq!(snap.calls, 4);
        assert_eq!(snap.remote, 1);
        assert_eq!(snap.local, 2);
        assert_eq!(snap.seg_hit, 2);
        assert_eq!(snap.ptag_lookups, 2);
        assert_eq!(snap.fallback_ptag, 1);
        assert_eq!(StatsSnapshot::from_sums(&s, false, 0).fallback_ptag, 0);
    }
}
