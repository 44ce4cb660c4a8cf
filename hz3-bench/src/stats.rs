//! Statistics of an A/B: the percent delta of treat over base (ratio of medians) with a 95%
//! bootstrap confidence interval, and how many runs would make an interval narrow enough to
//! clear a threshold.
//!
//! The bootstrap resamples each side's runs with replacement (independently: the sides are two
//! samples) from a fixed-start pseudo-random generator, so the same runs always give the same
//! interval. Percentile method, [`RESAMPLES`] resamples.

use crate::report::median;

/// Bootstrap resamples per interval.
pub const RESAMPLES: usize = 4000;

/// Fixed start of the generator: reproducible intervals.
const RNG_START: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64: small, fast, good enough to pick resample indices.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n ≤ 2^32; the modulo bias is far below the interval's own error).
    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 32) as usize * n) >> 32
    }
}

/// A percent delta with its 95% interval (`lo`/`hi` infinite when the runs cannot bound it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// median(treat) ÷ median(base) − 1, in percent.
    pub delta: f64,
    /// Lower end of the 95% interval, percent.
    pub lo: f64,
    /// Upper end, percent.
    pub hi: f64,
}

impl Estimate {
    /// An estimate whose interval is unknown (too few runs).
    pub fn unbounded(delta: f64) -> Estimate {
        Estimate { delta, lo: f64::NEG_INFINITY, hi: f64::INFINITY }
    }
    /// `[-1.23%, +0.45%]`, or `n/a` when unbounded.
    pub fn interval_text(&self) -> String {
        if self.lo.is_finite() && self.hi.is_finite() {
            format!("[{:+.2}%, {:+.2}%]", self.lo, self.hi)
        } else {
            "n/a".into()
        }
    }
}

fn ratio_delta(b: &[f64], t: &[f64]) -> Option<f64> {
    let (mb, mt) = (median(b.to_vec())?, median(t.to_vec())?);
    (mb > 0.0 && mt > 0.0).then(|| (mt / mb - 1.0) * 100.0)
}

/// Delta of `t` over `b` (each a list of per-run values, higher = better) with its 95%
/// bootstrap interval; `None` when a side has no positive value.
pub fn delta_interval(b: &[f64], t: &[f64]) -> Option<Estimate> {
    let delta = ratio_delta(b, t)?;
    let mut rng = SplitMix(RNG_START);
    let (mut rb, mut rt) = (vec![0.0; b.len()], vec![0.0; t.len()]);
    let mut d: Vec<f64> = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        for x in rb.iter_mut() {
            *x = b[rng.below(b.len())];
        }
        for x in rt.iter_mut() {
            *x = t[rng.below(t.len())];
        }
        if let Some(x) = ratio_delta(&rb, &rt) {
            d.push(x);
        }
    }
    d.sort_by(|x, y| x.total_cmp(y));
    let at = |q: f64| d[((d.len() - 1) as f64 * q).round() as usize];
    Some(Estimate { delta, lo: at(0.025), hi: at(0.975) })
}

/// Runs per side after which an interval like `e` (measured with `n` runs per side) would
/// no longer straddle `threshold` (percent), assuming its width shrinks as 1/√runs;
/// `None` when the delta sits on the threshold (no number of runs decides).
pub fn runs_to_clear(e: &Estimate, n: usize, threshold: f64) -> Option<usize> {
    if !(e.lo.is_finite() && e.hi.is_finite()) {
        return Some(10.max(n * 2));
    }
    let dist = (e.delta - threshold).abs();
    if dist < 1e-9 {
        return None;
    }
    // The half of the interval facing the threshold.
    let half = if threshold < e.delta { e.delta - e.lo } else { e.hi - e.delta };
    let need = (n as f64 * (half / dist).powi(2)).ceil();
    (need.is_finite() && need < 1e6).then(|| (need as usize).max(n + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_sides_give_zero_inside_a_tight_interval() {
        let b = [100.0, 101.0, 99.0, 100.5, 99.5, 100.0, 100.2, 99.8, 100.1, 99.9];
        let e = delta_interval(&b, &b).unwrap();
        assert_eq!(e.delta, 0.0);
        assert!(e.lo < 0.0 && e.hi > 0.0 && e.lo > -2.0 && e.hi < 2.0, "{e:?}");
    }

    #[test]
    fn a_clear_shift_excludes_zero() {
        let b: Vec<f64> = (0..12).map(|i| 100.0 + (i % 3) as f64).collect();
        let t: Vec<f64> = b.iter().map(|x| x * 1.10).collect();
        let e = delta_interval(&b, &t).unwrap();
        assert!((e.delta - 10.0).abs() < 1e-9);
        assert!(e.lo > 5.0 && e.hi < 15.0, "{e:?}");
    }

    #[test]
    fn noisy_runs_give_a_wide_interval_and_more_runs_narrow_it() {
        let b = [100.0, 150.0, 70.0];
        let t = [105.0, 60.0, 140.0];
        let e = delta_interval(&b, &t).unwrap();
        assert!(e.hi - e.lo > 30.0, "{e:?}");
        let b10: Vec<f64> = b.iter().cycle().take(30).copied().collect();
        let t10: Vec<f64> = t.iter().cycle().take(30).copied().collect();
        let e10 = delta_interval(&b10, &t10).unwrap();
        assert!(e10.hi - e10.lo < e.hi - e.lo, "{e10:?} vs {e:?}");
    }

    #[test]
    fn reproducible() {
        let b = [1.0, 2.0, 3.0, 4.0, 5.0];
        let t = [2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(delta_interval(&b, &t), delta_interval(&b, &t));
    }

    #[test]
    fn exact_values_give_a_point_interval() {
        let e = delta_interval(&[200.0], &[190.0]).unwrap();
        assert!((e.delta + 5.0).abs() < 1e-9 && e.lo == e.delta && e.hi == e.delta);
        assert!(delta_interval(&[], &[1.0]).is_none());
    }

    #[test]
    fn runs_needed_grows_near_the_threshold() {
        // delta +2 %, interval ±3 % at 10 runs: to clear +1 % the lower half (3) must shrink to 1.
        let e = Estimate { delta: 2.0, lo: -1.0, hi: 5.0 };
        assert_eq!(runs_to_clear(&e, 10, 1.0), Some(90));
        let near = Estimate { delta: 1.1, lo: -1.9, hi: 4.1 };
        assert!(runs_to_clear(&near, 10, 1.0).unwrap() > 5000);
        assert_eq!(runs_to_clear(&Estimate { delta: 1.0, lo: 0.0, hi: 2.0 }, 10, 1.0), None);
        assert_eq!(runs_to_clear(&Estimate::unbounded(0.0), 2, 1.0), Some(10));
    }
}
