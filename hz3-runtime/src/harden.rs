//! Checks against misuse that cost O(1) and no division: the exact block-start
//! test of a freed pointer, and (with `harden: true`) the free-list link
//! encoding.
//!
//! Owns: the per-class block-shape table (a reciprocal per class, so "is this
//! offset a multiple of the block size" is one multiply and one compare), and
//! the link key of a hardened type with its encode/decode. Must never:
//! allocate, divide on a path a free can reach, or cost anything in a type
//! whose flags do not ask for it (every caller tests `C::HARDEN` or
//! `C::FAILFAST`, so the code folds away).

use crate::os::PAGE_SIZE;
use crate::segment::{self, SegHdr};
use crate::size_class::{BIG_SIZES, MEDIUM_BINS, MEDIUM_FIRST, NBINS, SMALL_BINS, SUB4K_SIZES};

/// What the block-start test needs of one class.
#[derive(Clone, Copy)]
pub struct Shape {
    /// `ceil(2^64 / size)`: `off` (below 2^32) is a multiple of the size iff
    /// `off * recip mod 2^64 < recip` (Lemire, Kaser & Kurz, "Faster remainder
    /// by direct computation", 2019).
    pub recip: u64,
    /// Bytes of a run holding whole blocks (`blocks * size`): offsets at or
    /// past it are the run's unused tail.
    pub span: u32,
    /// The run is one page, so a block's offset in its run is its offset in
    /// its page (no descriptor load).
    pub one_page: bool,
}

const fn shape(size: usize, run_pages: usize) -> Shape {
    let blocks = run_pages * PAGE_SIZE / size;
    Shape { recip: u64::MAX / size as u64 + 1, span: (blocks * size) as u32, one_page: run_pages == 1 }
}

/// Block size and pages per run of bin `i`, by the rules of `size_class`
/// (checked against its table by a unit test).
const fn size_and_pages(i: usize) -> (usize, usize) {
    if i < SMALL_BINS {
        ((i + 1) * 16, 1)
    } else if i < MEDIUM_FIRST {
        (SUB4K_SIZES[i - SMALL_BINS], 2)
    } else if i < MEDIUM_FIRST + MEDIUM_BINS {
        let k = i - MEDIUM_FIRST + 1;
        (k * PAGE_SIZE, k)
    } else {
        let s = BIG_SIZES[i - MEDIUM_FIRST - MEDIUM_BINS];
        (s, s / PAGE_SIZE)
    }
}

const fn build() -> [Shape; NBINS] {
    let mut t = [Shape { recip: 0, span: 0, one_page: false }; NBINS];
    let mut i = 0;
    while i < NBINS {
        let (size, pages) = size_and_pages(i);
        t[i] = shape(size, pages);
        i += 1;
    }
    t
}

/// The block shape of every bin.
pub static SHAPES: [Shape; NBINS] = build();

/// Whether `p`, a pointer into a run of `bin` (the free route says so), is the
/// start of one of its blocks. O(1): at most one descriptor load, one
/// multiply, two compares.
///
/// # Safety
/// `p` lies on a page of a live run of `bin` in a committed runs segment.
#[inline(always)]
pub unsafe fn is_block_start(p: usize, bin: usize) -> bool {
    // SAFETY: callers pass `bin < NBINS` (a decoded route).
    let s = unsafe { SHAPES.get_unchecked(bin) };
    let off = if s.one_page {
        p & (PAGE_SIZE - 1)
    } else {
        let seg = segment::seg_base(p);
        // SAFETY: the caller guarantees the segment is a committed runs segment.
        let rs = unsafe { SegHdr::at(seg).descs[segment::page_index(p)].run_start } as usize;
        p.wrapping_sub(seg + rs * PAGE_SIZE)
    };
    off < s.span as usize && (off as u64).wrapping_mul(s.recip) < s.recip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::BINS;

    #[test]
    fn shapes_match_the_bin_table() {
        for (i, b) in BINS.iter().enumerate() {
            let (size, pages) = size_and_pages(i);
            assert_eq!(size, b.size as usize, "bin {i}");
            assert_eq!(pages, b.run_pages as usize, "bin {i}");
            assert_eq!(SHAPES[i].span as usize, b.blocks as usize * b.size as usize, "bin {i}");
        }
    }

    #[test]
    fn reciprocal_test_is_exact_for_every_offset_of_every_run() {
        for (i, b) in BINS.iter().enumerate() {
            let s = SHAPES[i];
            let run = b.run_pages as usize * PAGE_SIZE;
            for off in 0..run as u64 {
                let fast = off < s.span as u64 && off.wrapping_mul(s.recip) < s.recip;
                let slow = off % b.size as u64 == 0 && off / (b.size as u64) < b.blocks as u64;
                assert_eq!(fast, slow, "bin {i} offset {off}");
            }
        }
    }
}
