//! The arena page-tag map (S12-4): one 32-bit tag per arena page.
//!
//! Owns: tag encoding and the tag array. A tag is 0 when the page holds no block
//! start of ours, `(bin + 1) | (owner + 1) << 16` on a page of a small/medium
//! run, and [`LARGE`] (no owner half) on a page of a large block: a large tag
//! never matches a thread's [`owner_half`], so the free hot path decides "local
//! small/medium block" with one xor and one compare. Must never: be written on
//! the allocation or free hot path — tags change only when a run is assigned to
//! a bin (before any of its blocks is handed out) or released.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::size_class::LARGE_BIN;

/// The bin half of a tag (`bin + 1`); a value up to this is a tag without an
/// owner half.
pub const BIN_MASK: u32 = 0xffff;

/// The tag of a page of a large block (bin half only).
pub const LARGE: u32 = LARGE_BIN as u32 + 1;

/// The owner half of the tags of shard `owner`'s runs.
#[inline(always)]
pub const fn owner_half(owner: usize) -> u32 {
    ((owner as u32) + 1) << 16
}

/// Encode a small/medium bin and its owner shard into a non-zero tag.
#[inline(always)]
pub const fn encode(bin: usize, owner: usize) -> u32 {
    ((bin as u32) + 1) | owner_half(owner)
}

/// Decode a non-zero tag into `(bin, owner)` (owner 0 for [`LARGE`]); `None`
/// when it cannot be ours (a bin beyond the large marker, an owner beyond
/// `shards`, a small/medium bin without an owner or a large one with one).
#[inline(always)]
pub fn decode(tag: u32, shards: usize) -> Option<(usize, usize)> {
    if tag == LARGE {
        return Some((LARGE_BIN, 0));
    }
    let bin_plus1 = (tag & BIN_MASK) as usize;
    let owner_plus1 = (tag >> 16) as usize;
    if bin_plus1 == 0 || bin_plus1 > LARGE_BIN || owner_plus1 == 0 || owner_plus1 > shards {
        None
    } else {
        Some((bin_plus1 - 1, owner_plus1 - 1))
    }
}

/// Decode a non-zero tag written by this engine, without range checks (the
/// owner of [`LARGE`] reads as 0).
#[inline(always)]
pub fn decode_trusted(tag: u32) -> (usize, usize) {
    (((tag & BIN_MASK) - 1) as usize, (tag >> 16).saturating_sub(1) as usize)
}

/// Read the tag of arena page `page`.
///
/// # Safety
/// `tags` is the tag array of an initialised arena and `page` is below its page count.
#[inline(always)]
pub unsafe fn load(tags: *const AtomicU32, page: usize) -> u32 {
    // Acquire pairs with the release in `store`: a decoded tag's run is set up.
    // SAFETY: `page` is below the page count of the tag array `tags` (contract).
    unsafe { (*tags.add(page)).load(Ordering::Acquire) }
}

/// Write the tag of arena page `page` (life-cycle events only).
///
/// # Safety
/// As for [`load`].
#[inline]
pub unsafe fn store(tags: *const AtomicU32, page: usize, tag: u32) {
    // Release: the run's descriptor and meta written before are visible to a
    // thread that acquires this tag.
    // SAFETY: as in `load`.
    unsafe { (*tags.add(page)).store(tag, Ordering::Release) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_zero_is_never_a_tag() {
        for bin in [0, 1, 127, 131, 147, LARGE_BIN - 1] {
            for owner in [0, 1, 63, 4095] {
                let t = encode(bin, owner);
                assert_ne!(t, 0);
                assert_eq!(decode(t, 4096), Some((bin, owner)));
            }
        }
        assert_eq!(decode(0, 64), None);
        assert_eq!(decode(encode(3, 64), 64), None, "owner out of range");
        assert_eq!(decode(encode(LARGE_BIN + 1, 0), 64), None, "bin out of range");
        assert_eq!(decode(encode(LARGE_BIN, 0), 64), None, "a large tag has no owner half");
        assert_eq!(decode(0xffff_0000, 64), None);
        assert_eq!(decode(LARGE & BIN_MASK, 64), Some((LARGE_BIN, 0)));
        assert_eq!(decode(1, 64), None, "a small/medium tag has an owner half");
        assert_eq!(decode_trusted(encode(17, 5)), (17, 5));
        assert_eq!(decode_trusted(LARGE), (LARGE_BIN, 0));
        // The hot path's local test: xor with the thread's owner half leaves
        // bin + 1 exactly when the owner matches, and never for a large tag.
        assert_eq!(encode(17, 5) ^ owner_half(5), 18);
        assert!(encode(17, 5) ^ owner_half(4) > BIN_MASK);
        for owner in [0, 1, 63, 4095] {
            assert!(LARGE ^ owner_half(owner) > BIN_MASK);
        }
    }
}
