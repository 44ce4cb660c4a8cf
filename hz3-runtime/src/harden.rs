//! Checks against misuse that cost O(1) and no division: the exact block-start
//! test of a freed pointer (used by `failfast` and `harden`), and what only
//! `harden: true` adds — free-list links encoded with a per-process key and
//! checked when followed, and the freed-block mark that catches a double free.
//!
//! Owns: the per-class table of the block-start test (a multiplier and a
//! bound per class, so "is this offset a block start of the run" is one
//! multiply and one compare), the keys of a hardened type, the link encoding, the mark, and the
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

/// The exact block-start test of one bin, O(1) and without division: the
/// offset `off` of a pointer in its run is a block start iff
/// `off * mul <= bound` in 32-bit arithmetic (Lemire, Kaser and Kurz,
/// "Faster remainder by direct computation", 2019). With block size `d`,
/// `mul = ceil(2^32 / d)` and `e = mul * d - 2^32` (below `d`; zero for a
/// power of two), the offset `k * d + r` multiplies to `k * e + r * mul`
/// modulo 2^32: `k * e` for a block start (`r = 0`), at least `mul` for any
/// other offset, and no wrap for the offsets of our runs (two pages at most
/// when a run has several blocks). So `bound = last * e`, `last` the index of
/// the run's last block, also rejects the run's unused tail. A run of one
/// block tests `off == 0` (`mul = 1`, `bound = 0`). One multiply, one
/// compare, no rotate (a rotate by a loaded count costs two micro-operations
/// on Intel cores); the unit test below checks every offset of every bin.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct StartTest {
    /// `ceil(2^32 / size)` (1 for a run of one block).
    pub mul: u32,
    /// The product of the run's last block start.
    pub bound: u32,
    /// The run spans several pages: a block's offset in its run needs the
    /// run's first page from the page descriptor (for one-page runs it is
    /// the offset in the page).
    pub multi_page: bool,
}

impl StartTest {
    /// Whether offset `off` in a run of this bin is a block start (`off`
    /// is below the run's length: a pointer on one of the run's pages).
    #[inline(always)]
    pub fn admits(self, off: usize) -> bool {
        (off as u32).wrapping_mul(self.mul) <= self.bound
    }
}

/// The block-start test of each bin (each thread cache keeps a copy per bin).
pub static START: [StartTest; NBINS] = build_start();

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

const fn build_start() -> [StartTest; NBINS] {
    let mut t = [StartTest { mul: 0, bound: 0, multi_page: false }; NBINS];
    let mut i = 0;
    while i < NBINS {
        let (size, pages) = size_and_pages(i);
        let last = (pages * PAGE_SIZE / size - 1) as u64;
        let (mul, bound) = if last == 0 {
            (1, 0)
        } else {
            let mul = (u32::MAX as u64) / size as u64 + 1;
            let e = mul * size as u64 - (1u64 << 32);
            (mul as u32, (last * e) as u32)
        };
        t[i] = StartTest { mul, bound, multi_page: pages > 1 };
        i += 1;
    }
    t
}

/// Whether `p`, a pointer into a run of `bin` (the free route says so), is the
/// start of one of its blocks. O(1): a table load, at most one descriptor
/// load, one multiply, one compare.
///
/// # Safety
/// `p` lies on a page of a live run of `bin` in a committed runs segment.
#[inline(always)]
pub unsafe fn is_block_start(p: usize, bin: usize) -> bool {
    // SAFETY: callers pass `bin < NBINS` (a decoded route); the contract is ours.
    unsafe { starts_block(p, *START.get_unchecked(bin)) }
}

/// [`is_block_start`] with the bin's test at hand (a thread cache's copy).
///
/// # Safety
/// As [`is_block_start`], `t` being the test of the run's bin.
#[inline(always)]
pub unsafe fn starts_block(p: usize, t: StartTest) -> bool {
    let off = if !t.multi_page {
        p & (PAGE_SIZE - 1)
    } else {
        let seg = segment::seg_base(p);
        // SAFETY: the caller guarantees the segment is a committed runs
        // segment and the run live: its `run_start` is written only when the
        // run is carved or released, so no write races this plain read (an
        // atomic load here costs one more instruction on the hot free).
        let rs = unsafe { *(*SegHdr::ptr(seg)).descs[segment::page_index(p)].run_start.as_ptr() } as usize;
        p.wrapping_sub(seg + rs * PAGE_SIZE)
    };
    t.admits(off)
}

/// The keys of a hardened type: one word for the links, one for the
/// freed-block marks, written once at initialisation (before any block
/// exists) and never changed.
pub struct LinkKey {
    k: [AtomicUsize; 2],
}

impl LinkKey {
    /// Zero (no key yet).
    pub const fn new() -> Self {
        LinkKey { k: [AtomicUsize::new(0), AtomicUsize::new(0)] }
    }
}

/// The link key, loaded once per operation (atomic loads are not merged or
/// dropped by the compiler, so the mark key is loaded apart, by the free only).
#[derive(Clone, Copy)]
pub struct Keys {
    k0: usize,
}

impl Keys {
    /// The type's link key.
    #[inline(always)]
    pub fn of<C: Config>() -> Keys {
        // Relaxed: written before the shards are published (release), which
        // every thread that holds a block has acquired.
        Keys { k0: C::state().link_key.k[0].load(Ordering::Relaxed) }
    }

    /// The stored form of link `next` in block `b`: keyed, and tied to `b`
    /// so the same link in two blocks is stored differently (the link xored
    /// with [`Keys::block_key`]; glibc's safe-linking xors with the block's
    /// address only, mimalloc's secure mode adds a second key as a
    /// rotation). A write into a freed block that does not know the key
    /// decodes to a pointer whose high bits are the key's, which the checks
    /// reject: a value the program writes (a small number, a pointer) is
    /// xored with the random key. A rotation by a second key would make a
    /// write of the low byte alone land at an unknown bit position; it was
    /// dropped as it cost two micro-operations on every push and pop (a
    /// rotate by a loaded count) and 5% of the bare malloc/free pair.
    #[inline(always)]
    pub fn encode(self, b: *mut u8, next: *mut u8) -> usize {
        next as usize ^ self.block_key(b)
    }

    /// The word a link stored in block `b` is xored with: the block's
    /// address xored with the key. It depends on the address only, so a pop
    /// computes it while the block's first word is still loading: the decode
    /// adds one xor to the chain from one pop to the next.
    #[inline(always)]
    fn block_key(self, b: *mut u8) -> usize {
        b as usize ^ self.k0
    }

    /// The link stored as `raw` in block `b` (inverse of [`Keys::encode`]).
    /// One xor after the load: a pop's decode is on the chain from one pop
    /// to the next, and the block's key is ready before `raw`.
    #[inline(always)]
    pub fn decode(self, b: *mut u8, raw: usize) -> *mut u8 {
        (raw ^ self.block_key(b)) as *mut u8
    }

}

/// The freed-block mark, kept in a free block's second word (blocks are at
/// least 16 bytes). Its own key: reading a mark tells nothing of the link
/// keys. (Not tied to the block's address: the mark only has to be a value a
/// live block's second word holds with probability 2^-64, and one xor less
/// on every free.)
#[inline(always)]
fn mark_of<C: Config>() -> usize {
    // Relaxed: as in `Keys::of`.
    C::state().link_key.k[1].load(Ordering::Relaxed)
}

/// A thread cache's copy of what the hardened hot paths read on every pop
/// and push: the link key, the mark, and the arena's bounds. Plain words in
/// the thread's own cache, so the hot paths fold them into their arithmetic
/// (a key in a shared atomic costs one more instruction per use). The keys
/// never change after initialisation, which comes before any cache; the
/// arena's bounds are copied when the cache is set up and again on the slow
/// pop, so an arena reserved late (after a failed first try) only sends the
/// pops of caches made before it through the slow path once.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct CacheKeys {
    k0: usize,
    mark: usize,
    base: usize,
    len16: usize,
}

impl CacheKeys {
    /// The type's keys and arena bounds now.
    pub fn of<C: Config>() -> CacheKeys {
        let st = C::state();
        let k = Keys::of::<C>();
        // Relaxed: as in `Keys::of`; an arena that appears later is seen by a
        // later copy (the slow pop makes one).
        CacheKeys {
            k0: k.k0,
            mark: mark_of::<C>(),
            base: st.arena.base.load(Ordering::Relaxed),
            len16: st.arena.len.load(Ordering::Relaxed) >> 4,
        }
    }

    /// The link key.
    #[inline(always)]
    pub fn keys(self) -> Keys {
        Keys { k0: self.k0 }
    }

    /// The pop's quick test of a decoded link: a 16-byte aligned address in
    /// the arena (the rotation folds the alignment test into the range
    /// test). Null fails it (the hot pop admits null apart), and so does
    /// every link when the copy is stale: the slow pop then applies the
    /// whole test ([`link_ok`]) with the state's own bounds.
    #[inline(always)]
    pub fn link_in_arena(self, next: *mut u8) -> bool {
        (next as usize).wrapping_sub(self.base).rotate_right(4) < self.len16
    }

    /// On a local free of `p`: false when `p` carries the freed-block mark
    /// (it is free already: a double free), else mark it and answer true.
    ///
    /// # Safety
    /// `p` is a block of at least 16 bytes the program is freeing.
    #[inline(always)]
    pub unsafe fn mark_freed(self, p: *mut u8) -> bool {
        // SAFETY: the block has a second word (16 bytes at least).
        let w = unsafe { &mut *(p as *mut usize).add(1) };
        if *w == self.mark {
            return false;
        }
        *w = self.mark;
        true
    }
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
    // Each key from its own random word: a mark, which every free block
    // shows, tells nothing of the link key.
    let link = mix(buf[0] ^ here ^ crate::os::now_ms() as usize) | 1;
    let mark = mix(buf[1] ^ (st as *const _ as usize).rotate_left(32)) | 1;
    st.link_key.k[1].store(mark, Ordering::Relaxed);
    st.link_key.k[0].store(link, Ordering::Relaxed);
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
    if !link_ok::<C>(b, next) {
        corrupted::<C>(b);
    }
}

/// [`check_link`]'s test: whether `next` may follow `b` in a free list.
#[inline(always)]
pub fn link_ok<C: Config>(b: *mut u8, next: *mut u8) -> bool {
    let st = C::state();
    let off = (next as usize).wrapping_sub(st.arena.base.load(Ordering::Relaxed));
    next.is_null() || (off.rotate_right(4) < st.arena.len.load(Ordering::Relaxed) >> 4 && next != b)
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

/// Abort: the free list holding `b` is corrupted.
#[cold]
#[inline(never)]
pub fn corrupted<C: Config>(b: *mut u8) -> ! {
    crate::failfast::fail::<C>(
        "malloc",
        b as usize,
        "free list corrupted (a freed block was written to after free, or freed twice)",
    )
}

/// Abort: `p` is freed a second time.
#[cold]
#[inline(never)]
pub fn double_free<C: Config>(p: usize) -> ! {
    crate::failfast::fail::<C>("free", p, "double free (the block is already free)")
}

/// Abort: `p` is not the start of a block of its run.
#[cold]
#[inline(never)]
pub fn interior_free<C: Config>(p: usize) -> ! {
    crate::failfast::fail::<C>("free", p, "interior pointer (not a block start)")
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
        let oh = (*tc).owner_half as u32;
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
            assert_eq!(START[i].multi_page, b.run_pages > 1, "bin {i}");
        }
    }

    #[test]
    fn start_test_is_exact_for_every_offset_of_every_run() {
        for (i, b) in BINS.iter().enumerate() {
            // Every byte offset of the run (a pointer on one of its pages).
            let run = b.run_pages as usize * PAGE_SIZE;
            for off in 0..run {
                let fast = START[i].admits(off);
                let slow = off % b.size as usize == 0 && off / (b.size as usize) < b.blocks as usize;
                assert_eq!(fast, slow, "bin {i} offset {off}");
            }
        }
    }
}
