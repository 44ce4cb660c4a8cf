//! Size classes ("bins"): which block size serves a request, how many pages a
//! run of the class takes, and how many blocks move per refill or flush.
//!
//! Owns: the bin table and the size → bin mapping. Must never: touch memory.
//!
//! Bins 0..128 are the small classes 16..2048 in 16-byte steps (one page per
//! run); 128..132 the sub-4 KiB classes 2304, 2816, 3328, 3840 (two-page runs);
//! 132..148 the medium classes 4..64 KiB in 4 KiB steps, 148..156 the big
//! medium classes 80, 96, 112, 128, 160, 192, 224, 256 KiB and 156..164 the
//! large classes 320, 384, 448, 512, 640, 768, 896, 1016 KiB (one block per run
//! of `size / 4 KiB` pages; 1016 KiB is the most pages a segment holds). From
//! 64 KiB up there are four classes per doubling, so a block is at most 25%
//! bigger than the request it serves. Every class goes through the thread
//! caches and the lock-free remote-free path (the C hz3 collapsed when 64–128
//! KiB blocks were freed remotely); the classes above 256 KiB within a byte
//! budget per thread (`CACHE_BUDGET_BYTES`). Larger requests are "large"
//! (`LARGE_BIN`, runs of whole arena slots: `large`).

use crate::os::{PAGE_SHIFT, PAGE_SIZE};

/// Number of small classes (16..=2048 step 16).
pub const SMALL_BINS: usize = 128;
/// Largest small size.
pub const SMALL_MAX: usize = 2048;
/// Sizes of the sub-4 KiB classes.
pub const SUB4K_SIZES: [usize; 4] = [2304, 2816, 3328, 3840];
/// First medium bin.
pub const MEDIUM_FIRST: usize = SMALL_BINS + SUB4K_SIZES.len();
/// Number of medium classes (4..=64 KiB step 4 KiB).
pub const MEDIUM_BINS: usize = 16;
/// Largest size of the 4 KiB-step medium classes.
const MEDIUM_STEP_MAX: usize = MEDIUM_BINS * PAGE_SIZE;
/// Sizes of the big medium and large classes: four per doubling (16 KiB steps
/// to 128 KiB, 32 KiB to 256 KiB, 64 KiB to 512 KiB, 128 KiB to 1 MiB; the
/// last one is the 254 pages a segment has room for).
pub const BIG_SIZES: [usize; 16] = [
    80 << 10,
    96 << 10,
    112 << 10,
    128 << 10,
    160 << 10,
    192 << 10,
    224 << 10,
    256 << 10,
    320 << 10,
    384 << 10,
    448 << 10,
    512 << 10,
    640 << 10,
    768 << 10,
    896 << 10,
    crate::segment::USABLE_PAGES * PAGE_SIZE,
];
/// Classes above this size (320 KiB to 1016 KiB) are cached by bytes, not
/// by blocks: what a thread cache holds of all of them together stays within
/// [`CACHE_BUDGET_BYTES`] (see `tcache::flush`). A count per class would let
/// a thread hold up to its count of blocks of each of the eight classes, up
/// to 1016 KiB each (measured with two per class: 8.4 MiB held by one
/// thread in `reliability_purge`'s thread waves).
pub const CACHE_BY_BYTES_ABOVE: usize = 256 << 10;
/// Bytes of blocks of the classes above [`CACHE_BY_BYTES_ABOVE`] a thread
/// cache holds at most: one block of the largest class, so a thread that
/// frees and allocates one such block again gets it back from its cache.
pub const CACHE_BUDGET_BYTES: usize = 1 << 20;
/// First big medium bin.
const BIG_FIRST: usize = MEDIUM_FIRST + MEDIUM_BINS;
/// First bin cached by bytes (the first class above `CACHE_BY_BYTES_ABOVE`):
/// its bins and all after it have a flush threshold of zero, so each free
/// into them takes the flush path, which keeps the block while the budget
/// allows (pops stay on the hot path).
pub const BUDGET_FIRST: usize = BIG_FIRST + 8;
const _: () = assert!(BIG_SIZES[BUDGET_FIRST - BIG_FIRST - 1] == CACHE_BY_BYTES_ABOVE);
const _: () = assert!(BIG_SIZES[BIG_SIZES.len() - 1] <= CACHE_BUDGET_BYTES);
/// Largest size served from size classes; anything above is large.
pub const MEDIUM_MAX: usize = BIG_SIZES[BIG_SIZES.len() - 1];
/// Number of bins a thread cache holds.
pub const NBINS: usize = BIG_FIRST + BIG_SIZES.len();
const _: () = assert!(NBINS < 256, "remote-free keys hold the bin in 8 bits");
/// Marker bin for large blocks in page meta and tags.
pub const LARGE_BIN: usize = NBINS;

/// Static description of one bin.
#[derive(Clone, Copy)]
pub struct BinInfo {
    /// Block size in bytes.
    pub size: u32,
    /// Pages per run.
    pub run_pages: u16,
    /// Blocks per run.
    pub blocks: u16,
    /// Blocks moved per refill / flush.
    pub batch: u16,
    /// Initial flush threshold of a thread-cache bin (blocks); 0 for the
    /// classes cached by bytes (`BUDGET_FIRST..`).
    pub max_cached: u16,
    /// A bin that keeps hitting its threshold doubles it, up to this many blocks
    /// (64 KiB of small blocks, 512 KiB of medium ones, at most 256 blocks;
    /// 0 for the classes cached by bytes). A flush gives back the half of the
    /// bin freed last, so the cap keeps what it walks again (up to 128
    /// blocks, their lines and run descriptors) in the first-level cache: with
    /// 1024, a million 16-128 B blocks freed in random order ran 16% slower.
    pub max_limit: u16,
    /// Remote frees of this bin buffered per (owner, bin) before they are
    /// published (about 4 KiB, 2..=32 blocks: at most ~4 KiB per (owner, bin) for
    /// small classes; 8 KiB measured 5-10% fewer instructions per op on
    /// mt_remote and prodcons but 5% more peak RSS, held by threads that free
    /// and never allocate).
    pub remote_batch: u16,
    /// Empty runs a live shard keeps for the bin instead of releasing them
    /// (one small run; 128 KiB of medium runs, at least one; the classes
    /// above 256 KiB one each within `shard::KEEP_EMPTY_BIG_BYTES` together).
    pub keep_empty: u16,
}

const fn bin_info(size: usize, run_pages: usize) -> BinInfo {
    let blocks = run_pages * PAGE_SIZE / size;
    let batch = if size <= 256 {
        32
    } else if size <= SMALL_MAX {
        let b = 8192 / size;
        if b < 8 {
            8
        } else {
            b
        }
    } else if size < PAGE_SIZE {
        4
    } else {
        let b = MEDIUM_STEP_MAX / size;
        if b < 2 {
            2
        } else if b > 16 {
            16
        } else {
            b
        }
    };
    let by_bytes = size > CACHE_BY_BYTES_ABOVE;
    let batch = if by_bytes { 1 } else { batch };
    let budget = if size < PAGE_SIZE { 64 << 10 } else { 512 << 10 };
    let mut limit = budget / size;
    // At most 256 blocks: see `max_limit`.
    if limit > 256 {
        limit = 256;
    }
    if limit < 2 * batch {
        limit = 2 * batch;
    }
    BinInfo {
        size: size as u32,
        run_pages: run_pages as u16,
        blocks: blocks as u16,
        batch: batch as u16,
        max_cached: if by_bytes { 0 } else { (2 * batch) as u16 },
        max_limit: if by_bytes { 0 } else { limit as u16 },
        remote_batch: {
            let r = (4 << 10) / size;
            if r < 2 {
                2
            } else if r > 32 {
                32
            } else {
                r as u16
            }
        },
        keep_empty: if size < PAGE_SIZE {
            1
        } else if (128 << 10) / size > 1 {
            ((128 << 10) / size) as u16
        } else {
            1
        },
    }
}

const fn build_table() -> [BinInfo; NBINS] {
    let mut t = [BinInfo { size: 0, run_pages: 0, blocks: 0, batch: 0, max_cached: 0, max_limit: 0, remote_batch: 0, keep_empty: 0 }; NBINS];
    let mut i = 0;
    while i < SMALL_BINS {
        t[i] = bin_info((i + 1) * 16, 1);
        i += 1;
    }
    let mut j = 0;
    while j < SUB4K_SIZES.len() {
        t[SMALL_BINS + j] = bin_info(SUB4K_SIZES[j], 2);
        j += 1;
    }
    let mut k = 0;
    while k < MEDIUM_BINS {
        t[MEDIUM_FIRST + k] = bin_info((k + 1) * PAGE_SIZE, k + 1);
        k += 1;
    }
    let mut g = 0;
    while g < BIG_SIZES.len() {
        t[BIG_FIRST + g] = bin_info(BIG_SIZES[g], BIG_SIZES[g] / PAGE_SIZE);
        g += 1;
    }
    t
}

/// The bin table.
pub static BINS: [BinInfo; NBINS] = build_table();

/// Requests above this many bytes (up to [`SMALL_MAX`]) take four size
/// classes per doubling unless the type has `fine_classes: true`.
pub const COARSE_FROM: usize = 256;

/// `size - 1` of the coarse class of a request with `below = size - 1` in
/// `[COARSE_FROM, SMALL_MAX)`: the low bits below the top two of `below`
/// set (so 257..=320 -> 320, 321..=384 -> 384, ..., 1793..=2048 -> 2048).
/// Every result is a multiple of 16 of a bin, and at most 25% above the request.
#[inline(always)]
pub const fn coarse_below(below: usize) -> usize {
    let shift = (usize::BITS - 1 - below.leading_zeros()) - 2;
    below | ((1 << shift) - 1)
}

/// Per 16-byte step of a small request (`(size - 1) >> 4`), the byte offset
/// in a thread cache of its coarse class's bin (32 bytes per bin): the hot
/// path's one load for a request of 257 B to 2 KiB (the arithmetic of
/// [`coarse_below`] is nine instructions; this is three). Entries below
/// `COARSE_FROM` are the fine bins' and unused.
pub static COARSE_BIN_OFFSET: [u16; SMALL_BINS] = {
    let mut t = [0u16; SMALL_BINS];
    let mut i = 0;
    while i < SMALL_BINS {
        let below = i * 16;
        let b = if below < COARSE_FROM { below } else { coarse_below(below) };
        t[i] = ((b & !15) * 2) as u16;
        i += 1;
    }
    t
};

/// The size whose bin serves a request of `size` bytes in a type with or
/// without `fine_classes`.
#[inline(always)]
pub fn class_request(size: usize, fine: bool) -> usize {
    if fine || size <= COARSE_FROM || size > SMALL_MAX {
        size
    } else {
        coarse_below(size - 1) + 1
    }
}

/// [`bin_for`] for a type with or without `fine_classes`.
#[inline(always)]
pub fn bin_for_classes(size: usize, align: usize, fine: bool) -> Option<usize> {
    bin_for(class_request(size, fine), align)
}

/// Bin of a small request (`size <= SMALL_MAX`); size 0 maps to the 16-byte class.
#[inline(always)]
pub fn small_bin(size: usize) -> usize {
    small_bin_nonzero(size.max(1))
}

/// Bin of a small request of 1 to `SMALL_MAX` bytes: `size - 1` is what the
/// hot path's range test already computed, so the bin is one shift more (and
/// the bin's offset in the cache one mask).
#[inline(always)]
pub fn small_bin_nonzero(size: usize) -> usize {
    (size - 1) >> 4
}

/// Bin of an unaligned request of at most `MEDIUM_MAX` bytes.
#[inline]
pub fn bin_of(size: usize) -> usize {
    if size <= SMALL_MAX {
        small_bin(size)
    } else if size <= SUB4K_SIZES[3] {
        let mut j = 0;
        while SUB4K_SIZES[j] < size {
            j += 1;
        }
        SMALL_BINS + j
    } else {
        medium_bin(size)
    }
}

/// Medium bin whose run of whole pages holds `size` bytes (`size <= MEDIUM_MAX`).
#[inline]
fn medium_bin(size: usize) -> usize {
    if size <= MEDIUM_STEP_MAX {
        MEDIUM_FIRST + ((size + PAGE_SIZE - 1) >> PAGE_SHIFT).max(1) - 1
    } else {
        // `size` in (2^k, 2^(k+1)], k >= 16: four classes in steps of 2^(k-2).
        let k = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
        BIG_FIRST + 4 * (k - 16) + (size - (1 << k)).div_ceil(1 << (k - 2)) - 1
    }
}

/// Largest run (bytes) carved at an alignment above a page (see [`run_align`]).
const ALIGNED_RUN_MAX: usize = 64 * PAGE_SIZE;

/// Largest alignment a run of whole pages is carved at (see [`run_align`]).
pub const MAX_RUN_ALIGN: usize = 64 << 10;

/// Alignment every run of `bin` starts at: for a class of whole pages, the
/// largest power of two dividing its size, up to `MAX_RUN_ALIGN` (so its
/// one block per run is aligned to it); a page otherwise.
pub const fn run_align(bin: usize) -> usize {
    let size = BINS[bin].size as usize;
    // Runs longer than 64 pages are found by the plain first-fit search
    // (`SegHdr::find_run_aligned` tests windows of at most 64 pages).
    if !size.is_multiple_of(PAGE_SIZE) || size > ALIGNED_RUN_MAX {
        return PAGE_SIZE;
    }
    let a = 1usize << size.trailing_zeros();
    if a > MAX_RUN_ALIGN {
        MAX_RUN_ALIGN
    } else {
        a
    }
}

/// Bin that serves `size` bytes at alignment `align` (a power of two), or `None`
/// when the request is large. Every block of the returned bin is `align`-aligned:
/// runs are page-aligned and a small class whose size is a multiple of `align`
/// keeps every block on it; above a page, a whole-page class whose runs are
/// carved at `align` or more (`run_align`) serves the request, so aligned
/// blocks up to 64 KiB come from page runs instead of whole segments.
#[inline]
pub fn bin_for(size: usize, align: usize) -> Option<usize> {
    if align <= 16 {
        return if size <= MEDIUM_MAX { Some(bin_of(size)) } else { None };
    }
    bin_for_aligned(size, align)
}

/// [`bin_for`] for alignments above 16 (out of line: callers inline only
/// the common case).
#[inline(never)]
fn bin_for_aligned(size: usize, align: usize) -> Option<usize> {
    if align > MAX_RUN_ALIGN || size > MEDIUM_MAX {
        return None;
    }
    let rounded = (size.max(1) + align - 1) & !(align - 1);
    if rounded <= SMALL_MAX {
        Some(small_bin(rounded))
    } else if rounded <= MEDIUM_MAX {
        let b = medium_bin(rounded);
        if align <= PAGE_SIZE || ((BINS[b].size as usize).is_multiple_of(align) && run_align(b) >= align) {
            Some(b)
        } else {
            None
        }
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_classes_table_and_rounding_agree() {
        for size in 1..=SMALL_MAX {
            let c = class_request(size, false);
            assert_eq!(class_request(size, true), size);
            assert!(c >= size && c.is_multiple_of(16) || size <= COARSE_FROM, "size {size} -> {c}");
            if size > COARSE_FROM {
                assert!(c * 4 <= size * 5 + 60, "size {size} -> {c}");
                assert_eq!(class_request(c, false), c, "a class rounds to itself ({c})");
                let off = COARSE_BIN_OFFSET[(size - 1) >> 4] as usize;
                assert_eq!(off, bin_of(c) * 32, "table entry of size {size}");
                assert_eq!(BINS[off / 32].size as usize, c);
            }
        }
        let mut distinct = 0;
        for s in COARSE_FROM + 1..=SMALL_MAX {
            if class_request(s, false) == s {
                distinct += 1;
            }
        }
        assert_eq!(distinct, 12, "classes of 257 B to 2 KiB");
    }

    #[test]
    fn small_classes_are_16_byte_steps() {
        assert_eq!(small_bin(0), 0);
        assert_eq!(small_bin(1), 0);
        assert_eq!(small_bin(16), 0);
        assert_eq!(small_bin(17), 1);
        assert_eq!(small_bin(2048), 127);
        for s in 1..=SMALL_MAX {
            let b = bin_of(s);
            assert!(BINS[b].size as usize >= s);
            assert!(b == 0 || (BINS[b - 1].size as usize) < s, "size {s} not in the tightest bin");
        }
    }

    #[test]
    fn every_size_up_to_medium_max_fits_its_bin() {
        for s in 1..=MEDIUM_MAX {
            let b = bin_of(s);
            assert!(b < NBINS);
            assert!(BINS[b].size as usize >= s, "size {s} bin {b}");
            assert!(b == 0 || (BINS[b - 1].size as usize) < s, "size {s} not in the tightest bin");
        }
        assert_eq!(bin_of(2049), SMALL_BINS);
        assert_eq!(bin_of(3841), MEDIUM_FIRST);
        assert_eq!(bin_of(MEDIUM_STEP_MAX), BIG_FIRST - 1);
        assert_eq!(bin_of(MEDIUM_STEP_MAX + 1), BIG_FIRST);
        assert_eq!(BINS[BIG_FIRST].size as usize, 80 << 10);
        assert_eq!(bin_of(MEDIUM_MAX), NBINS - 1);
    }

    #[test]
    fn runs_hold_their_blocks() {
        for (i, b) in BINS.iter().enumerate() {
            assert!(b.blocks >= 1, "bin {i}");
            assert!(b.blocks as usize * b.size as usize <= b.run_pages as usize * PAGE_SIZE);
            assert!(b.batch >= 1 && (b.max_cached > b.batch || (i >= BUDGET_FIRST && b.max_cached == 0)), "bin {i}");
            assert!(b.max_limit >= b.max_cached);
            assert_eq!(b.size % 16, 0);
        }
        assert_eq!(BINS[MEDIUM_FIRST + 15].run_pages, 16);
        assert_eq!(BINS[NBINS - 1].run_pages as usize, crate::segment::USABLE_PAGES);
        assert!((BINS[NBINS - 1].run_pages as usize) <= crate::segment::USABLE_PAGES);
    }

    /// From 16 KiB up, a block is at most 25% bigger than the request it
    /// serves (4 KiB steps to 64 KiB, then four classes per doubling), and
    /// the classes above 256 KiB are cached by bytes (threshold 0, each
    /// one block within the budget).
    #[test]
    fn classes_above_16_kib_waste_at_most_a_quarter() {
        let mut s = 16 << 10;
        while s <= MEDIUM_MAX {
            for size in [s, s + 1, s + 4095, s + 4096] {
                if size > MEDIUM_MAX {
                    continue;
                }
                let b = bin_of(size);
                assert!(BINS[b].size as usize * 4 <= size * 5 + 4 * PAGE_SIZE, "size {size}: class {}", BINS[b].size);
                assert!(BINS[b].size as usize >= size && (BINS[b - 1].size as usize) < size, "size {size} not in the tightest bin");
                if size > 16 << 10 {
                    assert!((BINS[b].size as usize) * 4 <= size * 5, "size {size}: class {} wastes more than 25%", BINS[b].size);
                }
            }
            s += 4096;
        }
        for (i, b) in BINS.iter().enumerate() {
            let by_bytes = b.size as usize > CACHE_BY_BYTES_ABOVE;
            assert_eq!(by_bytes, i >= BUDGET_FIRST, "class {}", b.size);
            if by_bytes {
                assert!(b.max_limit == 0 && b.max_cached == 0 && b.batch == 1 && b.size as usize <= CACHE_BUDGET_BYTES, "class {}", b.size);
            }
        }
        assert_eq!(bin_of(300 << 10), bin_of(320 << 10));
        assert_eq!(BINS[bin_of(257 << 10)].size, 320 << 10);
        assert_eq!(BINS[bin_of(MEDIUM_MAX)].size as usize, MEDIUM_MAX);
    }

    #[test]
    fn aligned_bins_keep_every_block_aligned() {
        let mut align = 32;
        while align <= 2 * MAX_RUN_ALIGN {
            for size in [1, 8, align - 1, align, align + 1, 3 * align, 5000, 40000, 70000, 100_000, 150_000, 200000, 250_000] {
                if let Some(b) = bin_for(size, align) {
                    let info = BINS[b];
                    assert!(info.size as usize >= size);
                    // Runs start at a multiple of `run_align` (pages are aligned).
                    assert_eq!(run_align(b).max(PAGE_SIZE) % align.min(PAGE_SIZE), 0);
                    if align > PAGE_SIZE {
                        assert_eq!(info.blocks, 1, "bin {b}");
                        assert_eq!(run_align(b) % align, 0, "bin {b} align {align}");
                    }
                    for k in 0..info.blocks as usize {
                        assert_eq!((k * info.size as usize) % align.min(PAGE_SIZE), 0, "bin {b} align {align}");
                    }
                } else if align <= MAX_RUN_ALIGN {
                    let rounded = size.max(1).div_ceil(align) * align;
                    // Only sizes whose rounded class is not a multiple of the alignment
                    // are large; none of them at 8 or 16 KiB or when a page suffices.
                    assert!(rounded > MEDIUM_MAX || align > 16 << 10, "size {size} align {align} is large");
                }
            }
            align *= 2;
        }
        assert_eq!(bin_for(100, 8192).map(|b| BINS[b].size), Some(8192));
        assert_eq!(bin_for(4096, 65536).map(|b| BINS[b].size), Some(65536));
        assert_eq!(bin_for(100, 2 * MAX_RUN_ALIGN), None);
        assert_eq!(bin_for(MEDIUM_MAX + 1, 16), None);
    }
}
