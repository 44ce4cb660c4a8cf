//! Counters of one generated type, and its exit line.
//!
//! Owns: the counter set, the snapshot a program reads, and the stderr lines
//! printed at process exit. Counters live in each thread's cache (written only by
//! that thread: a relaxed load and store, no shared cache line on the hot path)
//! plus one shared set for threads without a cache; a snapshot sums them all.
//! Must never: allocate or format through `core::fmt` (the line is built by hand
//! in a stack buffer). With `stats: false` every counter update compiles away.

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

    /// The bytes written so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Write the line and a newline to stderr.
    pub fn emit(&mut self) {
        self.s("\n");
        crate::os::write_stderr(self.bytes());
    }
}

impl Default for Line {
    fn default() -> Self {
        Self::new()
    }
}

/// Write the exit lines of one type.
pub fn print_lines(name: &str, s: &StatsSnapshot) {
    Line::new()
        .s("[HZ3_S110_FREE] calls=").u(s.calls)
        .s(" seg_hit=").u(s.seg_hit)
        .s(" seg_miss=").u(s.seg_miss)
        .s(" meta_hit=").u(s.meta_hit)
        .s(" meta_zero=").u(s.meta_zero)
        .s(" fallback_ptag=").u(s.fallback_ptag)
        .s(" local=").u(s.local)
        .s(" remote=").u(s.remote)
        .s(" type=").s(name)
        .emit();
    Line::new()
        .s("[HZ3_PTAG] lookups=").u(s.ptag_lookups)
        .s(" hit=").u(s.ptag_hit)
        .s(" miss=").u(s.ptag_miss)
        .s(" decode_fail=").u(s.ptag_decode_fail)
        .s(" type=").s(name)
        .emit();
    Line::new()
        .s("[HZ3_CACHE] allocs=").u(s.allocs)
        .s(" refills=").u(s.refills)
        .s(" flushes=").u(s.flushes)
        .s(" remote_batches=").u(s.remote_batches)
        .s(" large=").u(s.large_allocs)
        .s(" invalid_frees=").u(s.invalid_frees)
        .s(" type=").s(name)
        .emit();
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
