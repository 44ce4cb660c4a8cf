//! Counters of one generated type (placeholder until the engine lands).
/// A copy of one type's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Free calls (every `free`/`dealloc` of a non-null pointer).
    pub calls: u64,
    /// S110 step: the pointer's segment header was found live.
    pub seg_hit: u64,
    /// S110 step: no live segment header for the pointer.
    pub seg_miss: u64,
    /// S110 step: `bin_plus1 != 0`.
    pub meta_hit: u64,
    /// S110 step: `bin_plus1 == 0`.
    pub meta_zero: u64,
    /// Frees routed by the tag map after the S110 step did not route them.
    pub fallback_ptag: u64,
    /// Frees of blocks owned by the freeing thread's shard.
    pub local: u64,
    /// Frees of blocks owned by another shard.
    pub remote: u64,
    /// Tag-map lookups.
    pub ptag_lookups: u64,
    /// Tag-map lookups that found a non-zero tag.
    pub ptag_hit: u64,
    /// Tag-map lookups that found zero (not a small/medium block start).
    pub ptag_miss: u64,
    /// Non-zero tags that did not decode to a valid bin/owner.
    pub ptag_decode_fail: u64,
    /// Allocation calls.
    pub allocs: u64,
    /// Thread-cache refills (slow path of alloc).
    pub refills: u64,
    /// Thread-cache flushes (slow path of free).
    pub flushes: u64,
    /// Remote-free batches published to another shard.
    pub remote_batches: u64,
    /// Large (> 64 KiB) allocations.
    pub large_allocs: u64,
}
