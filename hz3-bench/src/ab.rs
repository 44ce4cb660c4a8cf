//! A/B mode: two hz3 allocators run interleaved (base, treat, base, treat, …), by default after
//! a discarded warm-up round; per workload the median delta with its 95% confidence interval
//! ([`crate::stats`]), and the GO / NO-GO / NEUTRAL / INCONCLUSIVE verdict of the rule below.
//!
//! A verdict is given only when the intervals clear the rule's thresholds: a delta whose
//! interval straddles ±1% says nothing either way, and the verdict is then INCONCLUSIVE, with
//! an estimate of the runs per side that would decide.

use crate::report::median;
use crate::runner::Results;
use crate::stats::{self, Estimate};
use std::fmt::Write as _;

/// A change beyond this many percent counts as a regression / an improvement.
pub const THRESHOLD_PCT: f64 = 1.0;

/// Below this many runs per side the report warns that intervals are unreliable.
pub const MIN_RUNS: usize = 10;

/// The rule, as printed with the verdict.
pub const RULE: &str = "delta = treat ÷ base − 1 of the medians (higher = treat better), with its 95% interval. \
NO-GO when the whole interval of any mt_remote R=50, dist_app, dist_uniform or cache_thrash workload lies below −1% \
(checked first). GO when none of those can be below −1% (every interval's lower end ≥ −1%) and the whole interval of \
at least one of mt_remote R=90, mt_remote R=0, cache_thrash or cache_scratch lies above +1%. NEUTRAL when no interval \
of those can be below −1% or above +1%. INCONCLUSIVE otherwise: more runs are needed.";

/// What is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Ops per second of the timed pass.
    Time,
    /// Instructions of the whole child (callgrind); compared as ops per instruction.
    Instructions,
}

/// One workload's comparison.
#[derive(Clone, Debug)]
pub struct AbRow {
    /// Workload name.
    pub workload: &'static str,
    /// Median of base / treat, in the report's unit (Mops/s, or instructions per op).
    pub base: f64,
    /// Median of treat.
    pub treat: f64,
    /// Delta and interval (`None` when a side has no successful run).
    pub est: Option<Estimate>,
    /// (max − min) ÷ median of base and treat runs, percent.
    pub spread_pct: (f64, f64),
    /// Successful runs of base / treat.
    pub n: (usize, usize),
}

/// The verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ship it.
    Go,
    /// Do not.
    NoGo,
    /// Neither: no change beyond the thresholds.
    Neutral,
    /// The intervals do not clear the thresholds: more runs needed.
    Inconclusive,
    /// The run lacks the workloads the rule reads (a `--workloads` selection without them).
    NotJudged,
}

impl Verdict {
    /// `GO` / `NO-GO` / `NEUTRAL` / `INCONCLUSIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Go => "GO",
            Verdict::NoGo => "NO-GO",
            Verdict::Neutral => "NEUTRAL",
            Verdict::Inconclusive => "INCONCLUSIVE",
            Verdict::NotJudged => "NOT JUDGED",
        }
    }
}

fn is_r50(w: &str) -> bool {
    w.starts_with("mt_remote_") && w.ends_with("_r50")
}
fn is_improve_set(w: &str) -> bool {
    (w.starts_with("mt_remote_") && (w.ends_with("_r90") || w.ends_with("_r0")))
        || w == "cache_thrash"
        || w == "cache_scratch"
}
fn is_nogo_set(w: &str) -> bool {
    is_r50(w) || w == "dist_app" || w == "dist_uniform" || w == "cache_thrash"
}

/// One workload's estimate as the rule reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The whole interval is above +1%.
    Better,
    /// The whole interval is below −1%.
    Worse,
    /// The whole interval is within ±1%.
    Same,
    /// The interval straddles +1% or −1%.
    Unclear,
    /// No result.
    Missing,
}

/// How the rule reads estimate `e`.
pub fn reading(e: Option<&Estimate>) -> Reading {
    let t = THRESHOLD_PCT;
    match e {
        None => Reading::Missing,
        Some(e) if e.lo > t => Reading::Better,
        Some(e) if e.hi < -t => Reading::Worse,
        Some(e) if e.lo >= -t && e.hi <= t => Reading::Same,
        Some(_) => Reading::Unclear,
    }
}

/// The verdict of the rule on (workload, estimate, runs per side), with the reason and, when
/// INCONCLUSIVE, the estimated runs per side that would decide (`None`: no feasible number).
pub fn verdict(rows: &[(&str, Option<Estimate>, usize)]) -> (Verdict, String, Option<usize>) {
    let t = THRESHOLD_PCT;
    let fmt = |w: &str, e: &Estimate| format!("{w} {:+.2}% {}", e.delta, e.interval_text());
    let worse: Vec<String> = rows
        .iter()
        .filter(|(w, e, _)| is_nogo_set(w) && reading(e.as_ref()) == Reading::Worse)
        .map(|(w, e, _)| fmt(w, e.as_ref().expect("Worse has an estimate")))
        .collect();
    if !worse.is_empty() {
        return (Verdict::NoGo, format!("regressed beyond 1%: {}", worse.join(", ")), None);
    }
    if !rows.iter().any(|(w, e, _)| is_r50(w) && e.is_some()) {
        return (
            Verdict::NotJudged,
            "the run has no mt_remote R=50 workload, which the rule needs to give GO or NEUTRAL \
             (run all workloads, or add mt_remote to --workloads); read the deltas above"
                .into(),
            None,
        );
    }
    // Workloads that could still regress beyond −1%: each must be decided (max of their needs).
    let maybe_worse: Vec<_> = rows
        .iter()
        .filter_map(|(w, e, n)| e.as_ref().map(|e| (*w, *e, *n)))
        .filter(|(w, e, _)| is_nogo_set(w) && e.lo < -t)
        .collect();
    let improved: Vec<String> = rows
        .iter()
        .filter(|(w, e, _)| is_improve_set(w) && reading(e.as_ref()) == Reading::Better)
        .map(|(w, e, _)| fmt(w, e.as_ref().expect("Better has an estimate")))
        .collect();
    // Workloads that could improve beyond +1%: one decided is enough (min of their needs).
    let maybe_better: Vec<_> = rows
        .iter()
        .filter_map(|(w, e, n)| e.as_ref().map(|e| (*w, *e, *n)))
        .filter(|(w, e, _)| is_improve_set(w) && e.hi > t && e.lo <= t)
        .collect();
    if maybe_worse.is_empty() {
        if !improved.is_empty() {
            return (
                Verdict::Go,
                format!("no regression beyond 1% possible; improved beyond 1%: {}", improved.join(", ")),
                None,
            );
        }
        if maybe_better.is_empty() {
            return (
                Verdict::Neutral,
                "every interval of the rule's workloads is within the ±1% thresholds on the side that matters".into(),
                None,
            );
        }
    }
    // Every possible regression must be decided; one possible improvement is enough.
    let need_worse: Option<usize> = maybe_worse
        .iter()
        .map(|(_, e, n)| stats::runs_to_clear(e, *n, -t))
        .try_fold(0, |acc, x| x.map(|x| acc.max(x)));
    let need_better: Option<usize> = if improved.is_empty() && !maybe_better.is_empty() {
        maybe_better.iter().filter_map(|(_, e, n)| stats::runs_to_clear(e, *n, t)).min()
    } else {
        Some(0)
    };
    let need = need_worse.zip(need_better).map(|(a, b)| a.max(b));
    let mut why: Vec<(&str, Estimate, Vec<&str>)> = maybe_worse.iter().map(|(w, e, _)| (*w, *e, vec!["below −1%"])).collect();
    if improved.is_empty() {
        for (w, e, _) in &maybe_better {
            match why.iter_mut().find(|x| x.0 == *w) {
                Some(x) => x.2.push("above +1%"),
                None => why.push((w, *e, vec!["above +1%"])),
            }
        }
    }
    let why: Vec<String> = why.iter().map(|(w, e, s)| format!("{} may be {}", fmt(w, e), s.join(" or "))).collect();
    (Verdict::Inconclusive, why.join("; "), need.filter(|n| *n > 0))
}

/// Per-workload rows from an A/B run whose allocators are `[base, treat]`.
pub fn rows(res: &Results, measure: Measure) -> Vec<AbRow> {
    let spread = |v: &[f64]| match median(v.to_vec()) {
        Some(m) if m > 0.0 => {
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            (hi - lo) / m * 100.0
        }
        _ => 0.0,
    };
    res.plan
        .workloads
        .iter()
        .enumerate()
        .map(|(wi, w)| {
            // Per-run values with higher = better: ops/s, or ops per instruction.
            let vals = |ai: usize| -> Vec<f64> {
                res.cell(wi, ai)
                    .ok
                    .iter()
                    .filter_map(|r| match measure {
                        Measure::Time => Some(r.ops_per_sec()),
                        Measure::Instructions => r.instructions.filter(|i| *i > 0).map(|i| r.ops as f64 / i as f64),
                    })
                    .filter(|v| *v > 0.0)
                    .collect()
            };
            let (b, t) = (vals(0), vals(1));
            let n = (b.len(), t.len());
            let est = stats::delta_interval(&b, &t).map(|e| {
                // Wall times need a spread to bound; instruction counts are repeatable.
                if measure == Measure::Time && n.0.min(n.1) < 3 {
                    Estimate::unbounded(e.delta)
                } else {
                    e
                }
            });
            let shown = |v: &[f64]| {
                median(v.to_vec())
                    .map(|m| match measure {
                        Measure::Time => m / 1e6,
                        Measure::Instructions => 1.0 / m,
                    })
                    .unwrap_or(0.0)
            };
            AbRow {
                workload: w.name,
                base: shown(&b),
                treat: shown(&t),
                est,
                spread_pct: (spread(&b), spread(&t)),
                n,
            }
        })
        .collect()
}

/// The A/B report (markdown) with the verdict; also returns the verdict.
pub fn report(res: &Results, rows: &[AbRow], header: &str, measure: Measure) -> (String, Verdict) {
    let (base, treat) = (&res.plan.allocs[0], &res.plan.allocs[1]);
    let unit = match measure {
        Measure::Time => "Mops/s",
        Measure::Instructions => "instr/op",
    };
    let mut o = String::new();
    let _ = writeln!(o, "# hz3-bench A/B: base `{base}` vs treat `{treat}`\n\n{header}\n");
    let min_n = rows.iter().map(|r| r.n.0.min(r.n.1)).min().unwrap_or(0);
    if min_n < MIN_RUNS && measure == Measure::Time {
        let _ = writeln!(
            o,
            "**Warning: {min_n} run(s) per side.** With fewer than {MIN_RUNS} the 95% intervals are wide and \
             themselves uncertain; use `--runs 20` (or `--metric instructions`) for a decision.\n"
        );
    }
    let _ = writeln!(
        o,
        "| workload | base {unit} | treat {unit} | delta | 95% interval | reading | base spread | treat spread | runs |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---|---:|---:|---:|");
    for r in rows {
        let rd = match reading(r.est.as_ref()) {
            Reading::Better => "better",
            Reading::Worse => "worse",
            Reading::Same => "within ±1%",
            Reading::Unclear => "unclear",
            Reading::Missing => "no result",
        };
        let prec = if measure == Measure::Time { 2 } else { 1 };
        let _ = writeln!(
            o,
            "| {} | {:.prec$} | {:.prec$} | {} | {} | {rd} | {:.1}% | {:.1}% | {}/{} |",
            r.workload,
            r.base,
            r.treat,
            r.est.map(|e| format!("{:+.2}%", e.delta)).unwrap_or("-".into()),
            r.est.map(|e| e.interval_text()).unwrap_or("-".into()),
            r.spread_pct.0,
            r.spread_pct.1,
            r.n.0,
            r.n.1
        );
    }
    let input: Vec<(&str, Option<Estimate>, usize)> =
        rows.iter().map(|r| (r.workload, r.est, r.n.0.min(r.n.1))).collect();
    let (v, why, need) = verdict(&input);
    let _ = writeln!(
        o,
        "\ndelta > 0: treat is better ({}). 95% interval: bootstrap over the runs ({} resamples, fixed \
         generator start, so the same runs give the same interval); n/a = fewer than 3 runs of wall time. \
         spread = (max − min) ÷ median of that side's runs.\n",
        match measure {
            Measure::Time => "more ops/s",
            Measure::Instructions => "fewer instructions per op; counted by callgrind over the whole child process",
        },
        stats::RESAMPLES
    );
    let _ = writeln!(o, "**Verdict: {}** ({why})\n", v.as_str());
    if v == Verdict::Inconclusive {
        let _ = match need {
            Some(n) => writeln!(o, "About {n} runs per side would decide (`--runs {n}`), if the deltas stay where they are.\n"),
            None => writeln!(o, "A delta sits on a threshold: no number of runs is likely to decide.\n"),
        };
    }
    let _ = writeln!(o, "Rule: {RULE}");
    (o, v)
}

/// `ab.csv`.
pub fn csv(rows: &[AbRow]) -> String {
    let mut o = String::from(
        "workload,base,treat,delta_pct,ci95_lo_pct,ci95_hi_pct,base_spread_pct,treat_spread_pct,base_runs,treat_runs\n",
    );
    let num = |x: f64| if x.is_finite() { format!("{x:.3}") } else { "-".into() };
    for r in rows {
        let (d, lo, hi) = r.est.map(|e| (num(e.delta), num(e.lo), num(e.hi))).unwrap_or(("-".into(), "-".into(), "-".into()));
        let _ = writeln!(
            o,
            "{},{:.4},{:.4},{d},{lo},{hi},{:.2},{:.2},{},{}",
            r.workload, r.base, r.treat, r.spread_pct.0, r.spread_pct.1, r.n.0, r.n.1
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(delta: f64, half: f64) -> Option<Estimate> {
        Some(Estimate { delta, lo: delta - half, hi: delta + half })
    }
    fn v(d: &[(&str, Option<Estimate>)]) -> (Verdict, Option<usize>) {
        let d: Vec<_> = d.iter().map(|(w, x)| (*w, *x, 20)).collect();
        let (v, _, n) = verdict(&d);
        (v, n)
    }

    #[test]
    fn clear_intervals_decide() {
        assert_eq!(v(&[("mt_remote_t2_r50", e(0.0, 0.5)), ("mt_remote_t2_r90", e(3.0, 1.0))]).0, Verdict::Go);
        assert_eq!(v(&[("mt_remote_t2_r50", e(0.0, 0.3)), ("cache_scratch", e(1.5, 0.4))]).0, Verdict::Go);
        assert_eq!(v(&[("mt_remote_t2_r50", e(-3.0, 1.0)), ("mt_remote_t2_r90", e(5.0, 1.0))]).0, Verdict::NoGo);
        assert_eq!(
            v(&[("mt_remote_t4_r50", e(0.0, 0.1)), ("mt_remote_t2_r90", e(5.0, 1.0)), ("dist_app", e(-2.0, 0.5))]).0,
            Verdict::NoGo
        );
        assert_eq!(v(&[("mt_remote_t2_r50", e(0.0, 0.2)), ("mt_remote_t2_r90", e(0.2, 0.5))]).0, Verdict::Neutral);
        // Workloads outside the rule never decide.
        assert_eq!(
            v(&[("mt_remote_t2_r50", e(0.2, 0.2)), ("mt_remote_t2_r0", e(2.0, 0.5)), ("pair", e(-30.0, 1.0))]).0,
            Verdict::Go
        );
        // Without an R=50 workload the rule cannot give GO or NEUTRAL.
        assert_eq!(v(&[("mt_remote_t2_r90", e(9.0, 1.0))]).0, Verdict::NotJudged);
        assert_eq!(v(&[("pair", e(-19.8, 0.1))]).0, Verdict::NotJudged);
    }

    #[test]
    fn straddling_intervals_are_inconclusive() {
        // The old rule said NO-GO on this point estimate (−1.5%); its interval reaches +0.5%.
        let (verdict, need) = v(&[("mt_remote_t2_r50", e(-1.5, 2.0)), ("mt_remote_t2_r90", e(5.0, 1.0))]);
        assert_eq!(verdict, Verdict::Inconclusive);
        // Half-width 2 must shrink to 0.5 (the distance to −1%): 16 × the runs.
        assert_eq!(need, Some(320));
        // A possible improvement that is not yet sure: INCONCLUSIVE, not NEUTRAL.
        assert_eq!(v(&[("mt_remote_t2_r50", e(0.0, 0.2)), ("cache_thrash", e(1.5, 1.0))]).0, Verdict::Inconclusive);
        // Wide intervals from noisy runs (cache_thrash spread 50%): never NO-GO on a −3% point.
        assert_eq!(v(&[("mt_remote_t2_r50", e(0.0, 0.5)), ("cache_thrash", e(-3.0, 25.0))]).0, Verdict::Inconclusive);
        // Too few runs to bound: INCONCLUSIVE with a run estimate.
        let (verdict, need) = v(&[("mt_remote_t2_r50", Some(Estimate::unbounded(0.0)))]);
        assert_eq!(verdict, Verdict::Inconclusive);
        assert!(need.unwrap() >= 10);
        // A delta right on the threshold: no feasible number of runs.
        assert_eq!(v(&[("mt_remote_t2_r50", e(-1.0, 1.0))]), (Verdict::Inconclusive, None));
    }

    #[test]
    fn readings() {
        assert_eq!(reading(e(2.0, 0.5).as_ref()), Reading::Better);
        assert_eq!(reading(e(-2.0, 0.5).as_ref()), Reading::Worse);
        assert_eq!(reading(e(0.0, 0.5).as_ref()), Reading::Same);
        assert_eq!(reading(e(0.5, 1.0).as_ref()), Reading::Unclear);
        assert_eq!(reading(None), Reading::Missing);
    }
}
