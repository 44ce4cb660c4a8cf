//! Tiny deterministic generators: an LCG and the size distributions drawn from it.
//!
//! Every allocator sees the same seed for the same (workload, thread, phase), so single-thread
//! workloads replay the identical malloc/free sequence for each allocator.

/// 64-bit linear congruential generator (Knuth's MMIX constants); yields 31 high bits.
#[derive(Clone, Debug)]
pub struct Lcg(u64);

impl Lcg {
    /// A generator for `stream` (mixed so neighbouring streams do not correlate).
    pub fn new(stream: u64) -> Self {
        let mut g = Lcg(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491_4F6C_DD1D);
        g.next();
        g
    }

    /// Next 31 random bits.
    #[inline(always)]
    pub fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    /// Uniform in `0..n` (multiply-shift, no division).
    #[inline(always)]
    pub fn below(&mut self, n: u32) -> u32 {
        ((self.next() as u64 * n as u64) >> 31) as u32
    }
}

/// Where block sizes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeDist {
    /// Uniform over `lo..=hi` bytes.
    Range(u32, u32),
    /// The `app` mix: 80% 16–256, 15% 257–2048, 5% 2049–32768 (each part uniform).
    App,
}

impl SizeDist {
    /// Draw one size (always ≥ 16, so a block can hold its 8-byte size header).
    #[inline(always)]
    pub fn draw(self, rng: &mut Lcg) -> usize {
        match self {
            SizeDist::Range(lo, hi) => (lo + rng.below(hi - lo + 1)) as usize,
            SizeDist::App => {
                let c = rng.below(100);
                let s = if c < 80 {
                    16 + rng.below(256 - 16 + 1)
                } else if c < 95 {
                    257 + rng.below(2048 - 257 + 1)
                } else {
                    2049 + rng.below(32768 - 2049 + 1)
                };
                s as usize
            }
        }
    }

    /// Human description for the parameter tables.
    pub fn describe(self) -> String {
        match self {
            SizeDist::Range(lo, hi) => format!("{lo}-{hi} uniform"),
            SizeDist::App => "app: 80% 16-256, 15% 257-2048, 5% 2049-32768".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range() {
        let mut g = Lcg::new(7);
        for n in [1u32, 2, 3, 100, 400, 30720] {
            for _ in 0..10_000 {
                assert!(g.below(n) < n);
            }
        }
    }

    #[test]
    fn app_dist_shares() {
        let mut g = Lcg::new(1);
        let (mut a, mut b, mut c) = (0, 0, 0);
        for _ in 0..100_000 {
            match SizeDist::App.draw(&mut g) {
                16..=256 => a += 1,
                257..=2048 => b += 1,
                2049..=32768 => c += 1,
                s => panic!("size {s} out of range"),
            }
        }
        assert!((78_000..82_000).contains(&a), "{a}");
        assert!((14_000..16_000).contains(&b), "{b}");
        assert!((4_000..6_000).contains(&c), "{c}");
    }

    #[test]
    fn range_bounds_hit() {
        let mut g = Lcg::new(3);
        let d = SizeDist::Range(16, 20);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            seen[d.draw(&mut g) - 16] = true;
        }
        assert!(seen.iter().all(|&x| x));
    }
}
