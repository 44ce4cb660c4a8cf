//! A/B mode: two hz3 presets run interleaved (base, treat, base, treat, …) after a discarded
//! warm-up round; medians and delta per workload, and the seeds' GO / NO-GO / NEUTRAL verdict.

use crate::report::median;
use crate::runner::Results;
use std::fmt::Write as _;

/// A change beyond this many percent counts as a regression / an improvement.
pub const THRESHOLD_PCT: f64 = 1.0;

/// The rule, as printed with the verdict.
pub const RULE: &str = "GO when every mt_remote R=50 workload regresses by no more than 1% and at least one of \
mt_remote R=90, mt_remote R=0, cache_thrash or cache_scratch improves by more than 1%; \
NO-GO when any mt_remote R=50, dist_app, dist_uniform or cache_thrash workload regresses by more than 1% \
(NO-GO is checked first); otherwise NEUTRAL. Delta = treat median ops/s ÷ base median ops/s − 1.";

/// One workload's comparison.
#[derive(Clone, Debug)]
pub struct AbRow {
    /// Workload name.
    pub workload: &'static str,
    /// Median ops/s of base / treat (0 when no run succeeded).
    pub base: f64,
    /// Median ops/s of treat.
    pub treat: f64,
    /// (max − min) ÷ median of base and treat runs, percent.
    pub spread_pct: (f64, f64),
    /// Successful runs of base / treat.
    pub n: (usize, usize),
}

impl AbRow {
    /// Percent change of treat over base, if both ran.
    pub fn delta_pct(&self) -> Option<f64> {
        (self.base > 0.0 && self.treat > 0.0).then(|| (self.treat / self.base - 1.0) * 100.0)
    }
}

/// The verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ship it.
    Go,
    /// Do not.
    NoGo,
    /// Neither.
    Neutral,
}

impl Verdict {
    /// `GO` / `NO-GO` / `NEUTRAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Go => "GO",
            Verdict::NoGo => "NO-GO",
            Verdict::Neutral => "NEUTRAL",
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

/// Apply the rule to (workload, delta %) pairs; returns the verdict and why.
pub fn verdict(deltas: &[(&str, Option<f64>)]) -> (Verdict, String) {
    let regress: Vec<String> = deltas
        .iter()
        .filter(|(w, _)| is_nogo_set(w))
        .filter_map(|(w, d)| {
            d.filter(|d| *d < -THRESHOLD_PCT)
                .map(|d| format!("{w} {d:+.2}%"))
        })
        .collect();
    if !regress.is_empty() {
        return (Verdict::NoGo, format!("regressed: {}", regress.join(", ")));
    }
    let r50: Vec<_> = deltas
        .iter()
        .filter(|(w, d)| is_r50(w) && d.is_some())
        .collect();
    if r50.is_empty() {
        return (
            Verdict::Neutral,
            "no mt_remote R=50 result: GO cannot be judged".into(),
        );
    }
    let improved: Vec<String> = deltas
        .iter()
        .filter(|(w, _)| is_improve_set(w))
        .filter_map(|(w, d)| {
            d.filter(|d| *d > THRESHOLD_PCT)
                .map(|d| format!("{w} {d:+.2}%"))
        })
        .collect();
    if improved.is_empty() {
        (Verdict::Neutral, "no R=50 regression beyond 1%, but none of R=90 / R=0 / cache-* improved by more than 1%".into())
    } else {
        (
            Verdict::Go,
            format!(
                "no R=50 regression beyond 1%; improved: {}",
                improved.join(", ")
            ),
        )
    }
}

/// Per-workload rows from an A/B run whose allocators are `[base, treat]`.
pub fn rows(res: &Results) -> Vec<AbRow> {
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
            let b: Vec<f64> = res.cell(wi, 0).ok.iter().map(|r| r.ops_per_sec()).collect();
            let t: Vec<f64> = res.cell(wi, 1).ok.iter().map(|r| r.ops_per_sec()).collect();
            AbRow {
                workload: w.name,
                base: median(b.clone()).unwrap_or(0.0),
                treat: median(t.clone()).unwrap_or(0.0),
                spread_pct: (spread(&b), spread(&t)),
                n: (b.len(), t.len()),
            }
        })
        .collect()
}

/// The A/B report (markdown) with the verdict; also returns the verdict.
pub fn report(res: &Results, rows: &[AbRow], header: &str) -> (String, Verdict) {
    let (base, treat) = (&res.plan.allocs[0], &res.plan.allocs[1]);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# hz3-bench A/B: base `{base}` vs treat `{treat}`\n\n{header}\n"
    );
    let _ = writeln!(
        o,
        "| workload | base Mops/s | treat Mops/s | delta | base spread | treat spread | runs |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            o,
            "| {} | {:.2} | {:.2} | {} | {:.1}% | {:.1}% | {}/{} |",
            r.workload,
            r.base / 1e6,
            r.treat / 1e6,
            r.delta_pct()
                .map(|d| format!("{d:+.2}%"))
                .unwrap_or("-".into()),
            r.spread_pct.0,
            r.spread_pct.1,
            r.n.0,
            r.n.1
        );
    }
    let deltas: Vec<(&str, Option<f64>)> =
        rows.iter().map(|r| (r.workload, r.delta_pct())).collect();
    let (v, why) = verdict(&deltas);
    let _ = writeln!(o, "\nspread = (max − min) ÷ median of that side's runs.\n");
    let _ = writeln!(o, "**Verdict: {}** ({why})\n\nRule: {RULE}", v.as_str());
    (o, v)
}

/// `ab.csv`.
pub fn csv(rows: &[AbRow]) -> String {
    let mut o = String::from("workload,base_ops_per_sec,treat_ops_per_sec,delta_pct,base_spread_pct,treat_spread_pct,base_runs,treat_runs\n");
    for r in rows {
        let _ = writeln!(
            o,
            "{},{:.0},{:.0},{},{:.2},{:.2},{},{}",
            r.workload,
            r.base,
            r.treat,
            r.delta_pct()
                .map(|d| format!("{d:.3}"))
                .unwrap_or("-".into()),
            r.spread_pct.0,
            r.spread_pct.1,
            r.n.0,
            r.n.1
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(d: &[(&str, f64)]) -> Verdict {
        let d: Vec<_> = d.iter().map(|(w, x)| (*w, Some(*x))).collect();
        verdict(&d).0
    }

    #[test]
    fn rule() {
        assert_eq!(
            v(&[("mt_remote_t2_r50", -0.5), ("mt_remote_t2_r90", 2.0)]),
            Verdict::Go
        );
        assert_eq!(
            v(&[("mt_remote_t2_r50", 0.0), ("cache_scratch", 1.5)]),
            Verdict::Go
        );
        assert_eq!(
            v(&[("mt_remote_t2_r50", -1.5), ("mt_remote_t2_r90", 5.0)]),
            Verdict::NoGo
        );
        assert_eq!(
            v(&[
                ("mt_remote_t4_r50", 0.0),
                ("mt_remote_t2_r90", 5.0),
                ("dist_app", -2.0)
            ]),
            Verdict::NoGo
        );
        assert_eq!(
            v(&[("mt_remote_t2_r50", 0.0), ("cache_thrash", -1.1)]),
            Verdict::NoGo
        );
        assert_eq!(
            v(&[("mt_remote_t2_r50", 0.0), ("mt_remote_t2_r90", 0.9)]),
            Verdict::Neutral
        );
        assert_eq!(v(&[("mt_remote_t2_r90", 9.0)]), Verdict::Neutral);
        assert_eq!(
            v(&[
                ("mt_remote_t2_r50", 0.2),
                ("mt_remote_t2_r0", 1.2),
                ("pair", -30.0)
            ]),
            Verdict::Go
        );
        assert_eq!(
            v(&[("mt_remote_t2_r50", 0.2), ("dist_uniform", -1.01)]),
            Verdict::NoGo
        );
    }
}
