//! The arena page-tag map (S12-4): one 32-bit tag per arena page.
//!
//! Owns: tag encoding and the tag array. A tag is 0 when the page holds no block
//! start of ours, else `(bin + 1) | (owner + 1) << 16`. Must never: be written on
//! the allocation or free hot path — tags change only when a run is assigned to
//! a bin (before any of its blocks is handed out) or released.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::size_class::LARGE_BIN;

/// Encode a bin and an owner shard into a non-zero tag.
#[inline(always)]
pub const fn encode(bin: usize, owner: usize) -> u32 {
    ((bin as u32) + 1) | (((owner as u32) + 1) << 16)
}

/// Decode a non-zero tag into `(bin, owner)`; `None` when it cannot be ours
/// (a bin beyond the large marker or an owner beyond `shards`).
#[inline(always)]
pub fn decode(tag: u32, shards: usize) -> Option<(usize, usize)> {
    let bin_plus1 = (tag & 0xffff) as usize;
    let owner_plus1 = (tag >> 16) as usize;
    if bin_plus1 == 0 || bin_plus1 > LARGE_BIN + 1 || owner_plus1 == 0 || owner_plus1 > shards {
        None
    } else {
        Some((bin_plus1 - 1, owner_plus1 - 1))
    }
}

/// Decode a non-zero tag written by this engine, without range checks.
#[inline(always)]
pub fn decode_trusted(tag: u32) -> (usize, usize) {
    (((tag & 0xffff) - 1) as usize, ((tag >> 16) - 1) as usize)
}

/// Read the tag of arena page `page`.
///
/// # Safety
/// `tags` is the tag array of an initialised arena and `page` is below its page count.
#[inline(always)]
pub unsafe fn load(tags: *const AtomicU32, page: usize) -> u32 {
    // Acquire pairs with the release in `store`: a decoded tag's run is set up.
    (*tags.add(page)).load(Ordering::Acquire)
}

/// Write the tag of arena page `page` (life-cycle events only).
///
/// # Safety
/// As for [`load`].
#[inline]
pub unsafe fn store(tags: *const AtomicU32, page: usize, tag: u32) {
    // Release: the run's descriptor and meta written before are visible to a
    // thread that acquires this tag.
    (*tags.add(page)).store(tag, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_zero_is_never_a_tag() {
        for bin in [0, 1, 127, 131, 147, LARGE_BIN] {
            for owner in [0, 1, 63, 4095] {
                let t = encode(bin, owner);
                assert_ne!(t, 0);
                assert_eq!(decode(t, 4096), Some((bin, owner)));
            }
        }
        assert_eq!(decode(0, 64), None);
        assert_eq!(decode(encode(3, 64), 64), None, "owner out of range");
        assert_eq!(decode(encode(LARGE_BIN + 1, 0), 64), None, "bin out of range");
        assert_eq!(decode(0xffff_0000, 64), None);
        assert_eq!(decode_trusted(encode(17, 5)), (17, 5));
    }
}
