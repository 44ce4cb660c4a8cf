//! Checks against misuse that cost O(1) and no division: the exact block-start
//! test of a freed pointer (used by `failfast` and `harden`), and what only
//! `harden: true` adds — free-list links encoded with a per-process key and
//! checked when followed, and the freed-block mark that catches a double free.
//!
//! Owns: the per-class tables of the block-start test (a reciprocal per class,
//! so "is this offset a multiple of the block size" is one multiply and one
//! compare), the keys of a hardened type, the link encoding, the mark, and the
//! checks a refill applies to the blocks it puts into a bin. Must never:
//! allocate, divide on a path a free can reach, or cost anything in a type
//! whose flags do not ask for it (every caller tests `C::HARDEN` or
//! `C::FAILFAST`, so the code folds away).
//!
//! Every read and write of a free block's link goes through
//! `shard::next_of` / `shard::set_next` (or, on the hot pop and push, the
//! same [`Keys`] inline): a link written one way and read the other would
//! decode to garbage and abort.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::os::{PAGE_SHIFT, PAGE_SIZE};
use crate::segment::{self, SegHdr};
use crate::size_class::{BIG_SIZES, MEDIUM_BINS, MEDIUM_FIRST, NBINS, SMALL_BINS, SUB4K_SIZES};
use crate::{tagmap, Config, Ptag, State};

/// `ceil(2^64 / size)` of each bin: `off` (below 2^32) is a multiple of the
/// size iff `off * RECIP[bin] mod 2^64 < RECIP[bin]` (Lemire, Kaser & Kurz,
/// "Faster remainder by direct computation", 2019).
pub static RECIP: [u64; NBINS] = build_recip();

/// Bytes of a run of each bin holding whole blocks (`blocks * size`: offsets
/// at or past it are the run's unused tail), with [`MULTI_PAGE`] set when the
/// run spans several pages (then a block's offset in its run needs the run's
/// first page from the page descriptor; for one-page runs it is the offset
/// in the page, and the flag being clear lets the value serve as the bound).
pub static SPAN: [u32; NBINS] = build_span();

/// Flag of [`SPAN`]: the run has more than one page.
pub const MULTI_PAGE: u32 = 1 << 31;

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

const fn build_recip() -> [u64; NBINS] {
    let mut t = [0; NBINS];
    let mut i = 0;
    while i < NBINS {
        t[i] = u64::MAX / size_and_pages(i).0 as u64 + 1;
        i += 1;
    }
    t
}

const fn build_span() -> [u32; NBINS] {
    let mut t = [0; NBINS];
    let mut i = 0;
    while i < NBINS {
        let (size, pages) = size_and_pages(i);
        let span = (pages * PAGE_SIZE / size * size) as u32;
        t[i] = if pages == 1 { span } else { span | MULTI_PAGE };
        i += 1;
    }
    t
}

/// Whether `p`, a pointer into a run of `bin` (the free route says so), is the
/// start of one of its blocks. O(1): two table loads, at most one descriptor
/// load, one multiply, two compares.
///
/// # Safety
/// `p` lies on a page of a live run of `bin` in a committed runs segment.
#[inline(always)]
pub unsafe fn is_block_start(p: usize, bin: usize) -> bool {
    // SAFETY: callers pass `bin < NBINS` (a decoded route).
    let span = unsafe { *SPAN.get_unchecked(bin) };
    let (off, span) = if span & MULTI_PAGE == 0 {
        (p & (PAGE_SIZE - 1), span)
    } else {
        let seg = segment::seg_base(p);
        // SAFETY: the caller guarantees the segment is a committed runs
        // segment and the run live: its `run_start` is written only when the
        // run is carved or released, so no write races this plain read (an
        // atomic load here costs one more instruction on the hot free).
        let rs = unsafe { *(*SegHdr::ptr(seg)).descs[segment::page_index(p)].run_start.as_ptr() } as usize;
        (p.wrapping_sub(seg + rs * PAGE_SIZE), span & !MULTI_PAGE)
    };
    // SAFETY: as above.
    let recip = unsafe { *RECIP.get_unchecked(bin) };
    off < span as usize && (off as u64).wrapping_mul(recip) < recip
}

/// The keys of a hardened type: two words for the links, one for the
/// freed-block marks, written once at initialisation (before any block
/// exists) and never changed.
pub struct LinkKey {
    k: [AtomicUsize; 3],
}

impl LinkKey {
    /// Zero (no key yet).
    pub const fn new() -> Self {
        LinkKey { k: [AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)] }
    }
}

/// The link keys, loaded once per operation (atomic loads are not merged or
/// dropped by the compiler, so the mark key is loaded apart, by the free only).
#[derive(Clone, Copy)]
pub struct Keys {
    k0: usize,
    k1: usize,
}

impl Keys {
    /// The type's link keys.
    #[inline(always)]
    pub fn of<C: Config>() -> Keys {
        let k = &C::state().link_key.k;
        // Relaxed: written before the shards are published (release), which
        // every thread that holds a block has acquired.
        Keys { k0: k[0].load(Ordering::Relaxed), k1: k[1].load(Ordering::Relaxed) }
    }

    /// The stored form of link `next` in block `b`: keyed, and tied to `b`
    /// so the same link in two blocks is stored differently (mimalloc's
    /// secure mode: xor, rotate and add with the key). A write into a freed
    /// block that does not know the key decodes to a pointer the checks reject.
    #[inline(always)]
    pub fn encode(self, b: *mut u8, next: *mut u8) -> usize {
        (next as usize ^ b as usize ^ self.k0).rotate_left(self.k1 as u32 & 63).wrapping_add(self.k1)
    }

    /// The link stored as `raw` in block `b` (inverse of [`Keys::encode`]).
    #[inline(always)]
    pub fn decode(self, b: *mut u8, raw: usize) -> *mut u8 {
        (raw.wrapping_sub(self.k1).rotate_right(self.k1 as u32 & 63) ^ self.k0 ^ b as usize) as *mut u8
    }

}

/// The freed-block mark of `b`, kept in its second word while it is free
/// (blocks are at least 16 bytes). Its own key: reading a mark tells nothing
/// of the link keys.
#[inline(always)]
fn mark_of<C: Config>(b: *mut u8) -> usize {
    // Relaxed: as in `Keys::of`.
    b as usize ^ C::state().link_key.k[2].load(Ordering::Relaxed)
}

/// Fill the keys from the kernel's random source (`getrandom`, not
/// blocking; else the 16 random bytes the kernel gave the process at exec,
/// `AT_RANDOM`), mixed with addresses and the clock, so they differ between
/// processes and runs. Makes no allocation. Called from initialisation.
pub fn init_key<C: Config>(st: &State<C>) {
    if st.link_key.k[0].load(Ordering::Relaxed) != 0 {
        return;
    }
    let mut buf = [0usize; 2];
    // SAFETY: `buf` is a writable 16-byte buffer; GRND_NONBLOCK never waits.
    let got = unsafe { libc::syscall(libc::SYS_getrandom, buf.as_mut_ptr(), 16usize, libc::GRND_NONBLOCK) };
    if got != 16 {
        // SAFETY: getauxval has no preconditions; AT_RANDOM, when present,
        // points at 16 readable bytes for the life of the process.
        unsafe {
            let at = libc::getauxval(libc::AT_RANDOM) as *const usize;
            if !at.is_null() {
                buf = [at.read_unaligned(), at.add(1).read_unaligned()];
            }
        }
    }
    let here = &buf as *const _ as usize;
    let k0 = mix(buf[0] ^ here ^ crate::os::now_ms() as usize) | 1;
    let k1 = mix(buf[1] ^ (st as *const _ as usize).rotate_left(32)) | 1;
    let k2 = mix(k0 ^ k1.rotate_left(17)) | 1;
    st.link_key.k[2].store(k2, Ordering::Relaxed);
    st.link_key.k[1].store(k1, Ordering::Relaxed);
    st.link_key.k[0].store(k0, Ordering::Relaxed);
}

/// SplitMix64's finaliser: spreads every input bit over the word.
fn mix(mut z: usize) -> usize {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// [`Keys::encode`] with the type's keys.
#[inline(always)]
pub fn encode<C: Config>(b: *mut u8, next: *mut u8) -> usize {
    Keys::of::<C>().encode(b, next)
}

/// [`Keys::decode`] with the type's keys.
#[inline(always)]
pub fn decode<C: Config>(b: *mut u8, raw: usize) -> *mut u8 {
    Keys::of::<C>().decode(b, raw)
}

/// Abort unless the decoded link `next` of block `b` is null or a 16-byte
/// aligned arena address other than `b` (every pop, and every walk of a free
/// list). The rotation folds the alignment test into the range test: a
/// misaligned offset turns into one above the arena's length.
#[inline(always)]
pub fn check_link<C: Config>(b: *mut u8, next: *mut u8) {
    let st = C::state();
    let off = (next as usize).wrapping_sub(st.arena.base.load(Ordering::Relaxed));
    if !next.is_null() && (off.rotate_right(4) >= st.arena.len.load(Ordering::Relaxed) >> 4 || next == b) {
        corrupted::<C>(b);
    }
}

/// Abort unless `next`, the decoded link of `b` in a thread-cache bin of
/// `bin` owned by the shard whose tags have owner half `owner_half`, is null
/// or a block start of a live run of that bin and shard (the pop check).
///
/// # Safety
/// The state is initialised.
#[inline(always)]
pub unsafe fn check_bin_link<C: Config>(b: *mut u8, next: *mut u8, bin: usize, owner_half: u32) {
    if next.is_null() {
        return;
    }
    let st = C::state();
    let p = next as usize;
    let off = p.wrapping_sub(st.arena.base.load(Ordering::Relaxed));
    // (Alignment is implied by the block-start test below.)
    if off >= st.arena.len.load(Ordering::Relaxed) || next == b {
        corrupted::<C>(b);
    }
    // SAFETY: `off` is inside the arena (checked above), so its page has a tag
    // (or, without tags, the header route checks the slot before reading).
    let ok = unsafe {
        if C::PTAG != Ptag::Off {
            tagmap::load(st.arena.tag_array(), off >> PAGE_SHIFT) == (bin as u32 + 1) | owner_half
        } else {
            match crate::free_route::by_header::<C>(st, p) {
                crate::free_route::Route::Block { bin: b2, owner } => {
                    b2 == bin && tagmap::owner_half(owner) == owner_half
                }
                _ => false,
            }
        }
    };
    // SAFETY: a page of a live run of `bin` (checked just above).
    if !ok || unsafe { !is_block_start(p, bin) } {
        corrupted::<C>(b);
    }
}

#[cold]
#[inline(never)]
fn corrupted<C: Config>(b: *mut u8) -> ! {
    crate::failfast::fail::<C>(
        "malloc",
        b as usize,
        "free list corrupted (a freed block was written to after free, or freed twice)",
    )
}

/// On a local free: abort when `p` carries the freed-block mark (it is free
/// already: a double free), else mark it.
///
/// # Safety
/// `p` is a block of at least 16 bytes the program is freeing.
#[inline(always)]
pub unsafe fn mark_freed<C: Config>(p: *mut u8) {
    let m = mark_of::<C>(p);
    // SAFETY: the block has a second word (16 bytes at least).
    let w = unsafe { &mut *(p as *mut usize).add(1) };
    if *w == m {
        crate::failfast::fail::<C>("free", p as usize, "double free (the block is already free)");
    }
    *w = m;
}

/// On handing `p` to the program: clear the freed-block mark, so its next
/// free is not taken for a double free.
///
/// # Safety
/// `p` is a free block of at least 16 bytes being handed out.
#[inline(always)]
pub unsafe fn clear_mark(p: *mut u8) {
    // SAFETY: as above.
    unsafe { *(p as *mut usize).add(1) = 0 };
}

/// A refill's first block (handed to the program) and the head of the blocks
/// it put into bin `bin`: both must be block starts of live runs of the bin
/// and shard (`owner_half`); the first block's mark is cleared. The other
/// blocks are checked as pops reach them.
///
/// # Safety
/// `tc` is this thread's live cache; `p` is the refill's first block.
pub unsafe fn admit_refill<C: Config>(tc: *mut crate::tcache::ThreadCache, bin: usize, p: *mut u8) {
    if !C::HARDEN || p.is_null() {
        return;
    }
    // SAFETY: `tc` is live; the bin's head was just set by the refill.
    unsafe {
        let oh = (*tc).owner_half;
        check_bin_link::<C>(core::ptr::null_mut(), p, bin, oh);
        check_bin_link::<C>(p, (*tc).bins[bin].head, bin, oh);
        clear_mark(p);
    }
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
            assert_eq!((SPAN[i] & !MULTI_PAGE) as usize, b.blocks as usize * b.size as usize, "bin {i}");
            assert_eq!(SPAN[i] & MULTI_PAGE != 0, b.run_pages > 1, "bin {i}");
        }
    }

    #[test]
    fn reciprocal_test_is_exact_for_every_offset_of_every_run() {
        for (i, b) in BINS.iter().enumerate() {
            let (recip, span) = (RECIP[i], (SPAN[i] & !MULTI_PAGE) as u64);
            let run = b.run_pages as usize * PAGE_SIZE;
            for off in 0..run as u64 {
                let fast = off < span && off.wrapping_mul(recip) < recip;
                let slow = off % b.size as u64 == 0 && off / (b.size as u64) < b.blocks as u64;
                assert_eq!(fast, slow, "bin {i} offset {off}");
            }
        }
    }
}
