//! Summaries of the collected runs and their text forms: the markdown report (stdout and
//! `results.md`), `results.csv` (one row per workload × allocator), `runs.csv` (every run),
//! and the `--check` verifier that re-reads `results.csv`.
//!
//! "ratio" (×mi) is always allocator ops/s ÷ mimalloc ops/s (medians, same run); > 1 is faster than
//! mimalloc. The RSS ratio is peak RSS ÷ mimalloc's peak RSS; < 1 uses less memory.

use crate::allocators::{is_hz3, BASELINE};
use crate::runner::Results;
use crate::workloads::Workload;
use std::fmt::Write as _;
use std::path::Path;

/// Median of `v` (mean of the middle two for an even count); `None` when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Geometric mean; `None` when empty.
pub fn geomean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

/// Medians of one (workload, allocator) cell.
#[derive(Clone, Debug)]
pub struct Row {
    /// Workload.
    pub workload: &'static Workload,
    /// Allocator name.
    pub alloc: String,
    /// Successful / failed runs.
    pub runs_ok: usize,
    /// Failed runs.
    pub runs_failed: usize,
    /// Median ops/s (0 when no run succeeded).
    pub ops_per_sec: f64,
    /// Median ops/s ÷ mimalloc's median ops/s.
    pub ratio: Option<f64>,
    /// Median peak RSS, KiB.
    pub rss_kib: f64,
    /// Median peak RSS ÷ mimalloc's.
    pub rss_ratio: Option<f64>,
    /// Median measured remote-free share (workloads that count frees).
    pub remote_share: Option<f64>,
    /// ns per malloc/free pair (pair and batch loops): 2e9 / ops/s.
    pub ns_per_pair: Option<f64>,
    /// hz3 allocators: ops/s ÷ the fastest non-hz3 allocator's ops/s on this workload.
    pub x_best: Option<f64>,
    /// hz3 allocators: peak RSS ÷ the lowest non-hz3 allocator's peak RSS on this workload.
    pub rss_x_lowest: Option<f64>,
}

/// All rows, workload-major in plan order.
pub struct Summary {
    /// Rows.
    pub rows: Vec<Row>,
    /// Allocator names in order.
    pub allocs: Vec<String>,
    /// Workloads in order.
    pub workloads: Vec<&'static Workload>,
}

impl Summary {
    /// Summarise `res`.
    pub fn new(res: &Results) -> Summary {
        let base = res.alloc_index(BASELINE);
        let mut rows = Vec::new();
        for (wi, w) in res.plan.workloads.iter().enumerate() {
            let med = |ai: usize| {
                let c = res.cell(wi, ai);
                let ops = median(c.ok.iter().map(|r| r.ops_per_sec()).collect()).unwrap_or(0.0);
                let rss = median(c.ok.iter().map(|r| r.maxrss_kib as f64).collect()).unwrap_or(0.0);
                (ops, rss)
            };
            let (base_ops, base_rss) = base.map(med).unwrap_or((0.0, 0.0));
            for (ai, a) in res.plan.allocs.iter().enumerate() {
                let c = res.cell(wi, ai);
                let (ops, rss) = med(ai);
                let div = |x: f64, b: f64| (x > 0.0 && b > 0.0).then(|| x / b);
                rows.push(Row {
                    workload: w,
                    alloc: a.clone(),
                    runs_ok: c.ok.len(),
                    runs_failed: c.failed.len(),
                    ops_per_sec: ops,
                    ratio: div(ops, base_ops),
                    rss_kib: rss,
                    rss_ratio: div(rss, base_rss),
                    remote_share: if w.reports_remote_share() {
                        median(c.ok.iter().filter_map(|r| r.remote_share()).collect())
                    } else {
                        None
                    },
                    ns_per_pair: (w.reports_ns_per_pair() && ops > 0.0).then(|| 2e9 / ops),
                    x_best: None,
                    rss_x_lowest: None,
                });
            }
            // × best and ÷ lowest against the non-hz3 allocators of this workload.
            let first = rows.len() - res.plan.allocs.len();
            let others: Vec<&Row> = rows[first..].iter().filter(|r| !is_hz3(&r.alloc) && r.runs_ok > 0).collect();
            let best_ops = others.iter().map(|r| r.ops_per_sec).fold(0.0, f64::max);
            let low_rss = others.iter().map(|r| r.rss_kib).filter(|x| *x > 0.0).fold(f64::INFINITY, f64::min);
            for r in rows[first..].iter_mut().filter(|r| is_hz3(&r.alloc) && r.runs_ok > 0) {
                r.x_best = (best_ops > 0.0).then(|| r.ops_per_sec / best_ops);
                r.rss_x_lowest = (low_rss.is_finite() && r.rss_kib > 0.0).then(|| r.rss_kib / low_rss);
            }
        }
        Summary {
            rows,
            allocs: res.plan.allocs.clone(),
            workloads: res.plan.workloads.clone(),
        }
    }

    /// The best value of `f` on `workload` over the allocators that ran (highest when `high`,
    /// else lowest), as the table prints it, so ties at the printed precision are all marked.
    pub fn best(&self, workload: &str, f: impl Fn(&Row) -> f64, high: bool) -> Option<String> {
        let vals = self.rows.iter().filter(|r| r.workload.name == workload && r.runs_ok > 0).map(f);
        let v = if high { vals.fold(f64::MIN, f64::max) } else { vals.fold(f64::MAX, f64::min) };
        let prec = if high { 2 } else { 1 };
        (v != f64::MIN && v != f64::MAX).then(|| format!("{v:.prec$}"))
    }

    /// Geometric mean of `f` over the workloads of allocator `alloc` (`None` if any is missing).
    pub fn geomean(&self, alloc: &str, f: impl Fn(&Row) -> Option<f64>) -> Option<f64> {
        let v: Option<Vec<f64>> = self.rows.iter().filter(|r| r.alloc == alloc).map(|r| f(r).filter(|x| *x > 0.0)).collect();
        geomean(&v?)
    }

    /// The row of (workload, allocator).
    pub fn get(&self, workload: &str, alloc: &str) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.workload.name == workload && r.alloc == alloc)
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

/// Header facts printed above the tables.
pub struct Meta {
    /// `quick` / `default` / `full`.
    pub mode: String,
    /// Runs per cell.
    pub runs: usize,
    /// When the run started (UTC).
    pub started: String,
    /// Wall time of the whole run.
    pub wall: String,
    /// Free-form machine line (cores, load).
    pub machine: String,
}

/// One table of the report: a value per (workload, allocator) with its ratio to mimalloc in
/// parentheses, the best of the row in bold, one `x` column per hz3 allocator, and a
/// geomean row.
struct Table {
    /// Header of the per-hz3 column (`× best`).
    x_name: &'static str,
    /// The cell's value.
    value: fn(&Row) -> f64,
    /// Decimals of the value.
    prec: usize,
    /// Whether higher values are better (bold marks the highest, else the lowest).
    high: bool,
    /// The ratio to mimalloc in parentheses.
    ratio: fn(&Row) -> Option<f64>,
    /// The per-hz3 column.
    x: fn(&Row) -> Option<f64>,
}

fn table(o: &mut String, s: &Summary, hz3: &[&String], have_others: bool, t: &Table) {
    let _ = write!(o, "| workload |");
    for a in &s.allocs {
        let _ = write!(o, " {a} |");
    }
    if have_others {
        for a in hz3 {
            let _ = write!(o, " {a} {} |", t.x_name);
        }
    }
    let ncols = s.allocs.len() + if have_others { hz3.len() } else { 0 };
    let _ = write!(o, "\n|---|{}\n", "---:|".repeat(ncols));
    for w in &s.workloads {
        let best = s.best(w.name, t.value, t.high);
        let _ = write!(o, "| {} |", w.name);
        for a in &s.allocs {
            let r = s.get(w.name, a).expect("row");
            if r.runs_ok == 0 {
                let _ = write!(o, " FAILED |");
                continue;
            }
            let v = format!("{:.prec$}", (t.value)(r), prec = t.prec);
            let v = if Some(v.as_str()) == best.as_deref() { format!("**{v}**") } else { v };
            let _ = write!(o, " {v} ({}) |", opt((t.ratio)(r), 2));
        }
        if have_others {
            for a in hz3 {
                let r = s.get(w.name, a).expect("row");
                let _ = write!(o, " {} |", opt((t.x)(r), 2));
            }
        }
        o.push('\n');
    }
    let _ = write!(o, "| geomean |");
    for a in &s.allocs {
        let _ = write!(o, " ({}) |", opt(s.geomean(a, t.ratio), 2));
    }
    if have_others {
        for a in hz3 {
            let _ = write!(o, " {} |", opt(s.geomean(a, t.x), 2));
        }
    }
    o.push('\n');
}

/// The markdown report.
pub fn markdown(s: &Summary, m: &Meta) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# hz3-bench results\n");
    let _ = writeln!(
        o,
        "mode `{}`, median of {} run(s) per cell, one child process per run, runs interleaved across allocators, \
         every allocator reached through one out-of-line call per operation; \
         started {}, wall time {}; {}.\n",
        m.mode, m.runs, m.started, m.wall, m.machine
    );
    let hz3: Vec<&String> = s.allocs.iter().filter(|a| is_hz3(a)).collect();
    let have_others = s.allocs.iter().any(|a| !is_hz3(a));
    let _ = writeln!(
        o,
        "Each cell: million counted ops per second of the timed pass (median), and in parentheses ×mi = the \
         allocator's ops/s ÷ mimalloc's in this run (> 1 = faster than mimalloc). **Bold**: the fastest allocator \
         of the row. × best = the hz3 allocator's ops/s ÷ the fastest non-hz3 allocator's ops/s on that row \
         (> 1 = hz3 is ahead of every other allocator). geomean = geometric mean over the workloads of the ratios.\n"
    );
    // Throughput table.
    let throughput = Table {
        x_name: "× best",
        value: |r| r.ops_per_sec / 1e6,
        prec: 2,
        high: true,
        ratio: |r| r.ratio,
        x: |r| r.x_best,
    };
    table(&mut o, s, &hz3, have_others, &throughput);
    // Peak RSS table.
    let _ = writeln!(
        o,
        "\n## Peak RSS\n\nPeak resident set of the child process in MiB (getrusage ru_maxrss, median; it includes \
         the process's own ~2–4 MiB floor), and in parentheses its ratio to mimalloc's (< 1 = less memory). \
         **Bold**: the lowest of the row. ÷ lowest = the hz3 allocator's peak RSS ÷ the lowest non-hz3 allocator's.\n"
    );
    let rss = Table {
        x_name: "÷ lowest",
        value: |r| r.rss_kib / 1024.0,
        prec: 1,
        high: false,
        ratio: |r| r.rss_ratio,
        x: |r| r.rss_x_lowest,
    };
    table(&mut o, s, &hz3, have_others, &rss);
    // Remote share.
    let remote: Vec<_> = s
        .workloads
        .iter()
        .filter(|w| w.reports_remote_share())
        .collect();
    if !remote.is_empty() {
        let _ = writeln!(
            o,
            "\n## Remote frees\n\nMeasured share of frees that really were remote (went through a ring and were freed \
             by another thread) ÷ all frees of the timed pass, median. When the neighbour's ring stays \
             full (after a few drain-and-yield retries) mt_remote frees the block locally, so the share can fall \
             short of R.\n"
        );
        let _ = write!(o, "| workload |");
        for a in &s.allocs {
            let _ = write!(o, " {a} |");
        }
        let _ = write!(o, "\n|---|{}\n", "---:|".repeat(s.allocs.len()));
        for w in remote {
            let _ = write!(o, "| {} |", w.name);
            for a in &s.allocs {
                let r = s.get(w.name, a).expect("row");
                let _ = write!(
                    o,
                    " {} |",
                    r.remote_share
                        .map(|x| format!("{:.1}%", x * 100.0))
                        .unwrap_or("-".into())
                );
            }
            o.push('\n');
        }
    }
    // ns per pair.
    let pairs: Vec<_> = s
        .workloads
        .iter()
        .filter(|w| w.reports_ns_per_pair())
        .collect();
    if !pairs.is_empty() {
        let _ = writeln!(o, "\n## ns per malloc/free pair\n\nWall time of the timed pass ÷ malloc/free pairs (median; lower is better).\n");
        let _ = write!(o, "| workload |");
        for a in &s.allocs {
            let _ = write!(o, " {a} |");
        }
        let _ = write!(o, "\n|---|{}\n", "---:|".repeat(s.allocs.len()));
        for w in pairs {
            let _ = write!(o, "| {} |", w.name);
            for a in &s.allocs {
                let r = s.get(w.name, a).expect("row");
                let _ = write!(o, " {} |", opt(r.ns_per_pair, 2));
            }
            o.push('\n');
        }
    }
    // Preloaded vs in-process.
    for pre in s.allocs.iter().filter(|a| a.ends_with(crate::allocators::PRELOAD_SUFFIX)) {
        let Some(inproc) = pre.strip_suffix(crate::allocators::PRELOAD_SUFFIX) else { continue };
        if !s.allocs.iter().any(|a| a == inproc) {
            continue;
        }
        let lib = format!("libhz3_{}.so", inproc.trim_start_matches("hz3-").replace('-', "_"));
        let _ = writeln!(
            o,
            "\n## {pre} vs {inproc}\n\nThe same engine and flags through the C interface (`LD_PRELOAD={lib}`, the \
             workload calling glibc's malloc symbols through the PLT) and in-process (the Rust type called through \
             `GlobalAlloc`, one direct call per operation like every allocator of the table). time ratio = in-process ops/s ÷ preloaded ops/s (medians; > 1: the preloaded \
             library is slower).\n\n| workload | {inproc} Mops/s | {pre} Mops/s | time ratio |\n|---|---:|---:|---:|"
        );
        for w in &s.workloads {
            let (Some(a), Some(b)) = (s.get(w.name, inproc), s.get(w.name, pre)) else { continue };
            let ratio = (a.runs_ok > 0 && b.runs_ok > 0 && b.ops_per_sec > 0.0).then(|| a.ops_per_sec / b.ops_per_sec);
            let _ = writeln!(
                o,
                "| {} | {:.2} | {:.2} | {} |",
                w.name,
                a.ops_per_sec / 1e6,
                b.ops_per_sec / 1e6,
                opt(ratio, 2)
            );
        }
    }
    // Parameters.
    let _ = writeln!(
        o,
        "\n## Workload parameters ({})\n\n| workload | parameters |\n|---|---|",
        m.mode
    );
    let mode = crate::workloads::Mode::parse(&m.mode).unwrap_or(crate::workloads::Mode::Default);
    for w in &s.workloads {
        let _ = writeln!(o, "| {} | {} |", w.name, w.describe(mode));
    }
    // Failures.
    let failed: Vec<_> = s.rows.iter().filter(|r| r.runs_failed > 0).collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "\n## Failed runs\n");
        for r in failed {
            let _ = writeln!(
                o,
                "- {}/{}: {} of {} runs failed",
                r.workload.name,
                r.alloc,
                r.runs_failed,
                r.runs_failed + r.runs_ok
            );
        }
    }
    o
}

/// Quote a CSV field when needed.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Split one CSV line (RFC 4180 quoting, no embedded newlines).
pub fn csv_split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Column names of `results.csv`.
pub const CSV_HEADER: &str =
    "workload,allocator,mode,runs_ok,runs_failed,ops_per_sec,mops_per_sec,ratio_vs_mimalloc,\
peak_rss_kib,rss_ratio_vs_mimalloc,remote_share,ns_per_pair,x_best,rss_x_lowest,params";

/// `results.csv`: one row per (workload, allocator), medians.
pub fn results_csv(s: &Summary, mode: crate::workloads::Mode) -> String {
    let mut o = String::from(CSV_HEADER);
    o.push('\n');
    for r in &s.rows {
        let _ = writeln!(
            o,
            "{},{},{},{},{},{:.0},{:.4},{},{:.0},{},{},{},{},{},{}",
            r.workload.name,
            r.alloc,
            mode.name(),
            r.runs_ok,
            r.runs_failed,
            r.ops_per_sec,
            r.ops_per_sec / 1e6,
            opt(r.ratio, 4),
            r.rss_kib,
            opt(r.rss_ratio, 4),
            opt(r.remote_share, 4),
            opt(r.ns_per_pair, 3),
            opt(r.x_best, 4),
            opt(r.rss_x_lowest, 4),
            csv_field(&r.workload.describe(mode))
        );
    }
    o
}

/// `runs.csv`: every successful or failed child run.
pub fn runs_csv(res: &Results) -> String {
    let mut o = String::from("workload,allocator,run,ops,secs,ops_per_sec,peak_rss_kib,remote_frees,frees,hz3_stats,instructions,error\n");
    for (wi, w) in res.plan.workloads.iter().enumerate() {
        for (ai, a) in res.plan.allocs.iter().enumerate() {
            let c = res.cell(wi, ai);
            for (i, r) in c.ok.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "{},{},{},{},{:.6},{:.0},{},{},{},{},{},",
                    w.name,
                    a,
                    i,
                    r.ops,
                    r.secs,
                    r.ops_per_sec(),
                    r.maxrss_kib,
                    r.remote_frees,
                    r.frees,
                    csv_field(&r.hz3),
                    r.instructions.map(|i| i.to_string()).unwrap_or_default()
                );
            }
            for e in &c.failed {
                let _ = writeln!(o, "{},{},-,0,0,0,0,0,0,,,{}", w.name, a, csv_field(e));
            }
        }
    }
    o
}

/// Re-read `results.csv` in `dir` and verify that every expected (workload, allocator) row is
/// there with ops/s > 0 (empty expectations: the grid found in the file must be complete), and
/// that `results.md` and `chart.svg` exist and look whole. Returns the number of rows checked.
pub fn check_outputs(
    dir: &Path,
    workloads: &[&str],
    allocs: &[String],
) -> Result<usize, Vec<String>> {
    let mut errs = Vec::new();
    let csv = match std::fs::read_to_string(dir.join("results.csv")) {
        Ok(s) => s,
        Err(e) => {
            return Err(vec![format!(
                "read {}: {e}",
                dir.join("results.csv").display()
            )])
        }
    };
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or("");
    let cols = csv_split(header);
    if header != CSV_HEADER {
        errs.push(format!("results.csv: unexpected header {header:?}"));
    }
    let idx = |name: &str| cols.iter().position(|c| c == name);
    let (Some(iw), Some(ia), Some(io)) = (idx("workload"), idx("allocator"), idx("ops_per_sec"))
    else {
        errs.push("results.csv: missing workload/allocator/ops_per_sec columns".into());
        return Err(errs);
    };
    let mut found: Vec<(String, String, f64)> = Vec::new();
    for (n, l) in lines.enumerate() {
        let f = csv_split(l);
        if f.len() != cols.len() {
            errs.push(format!(
                "results.csv line {}: {} fields, expected {}",
                n + 2,
                f.len(),
                cols.len()
            ));
            continue;
        }
        match f[io].parse::<f64>() {
            Ok(v) => found.push((f[iw].clone(), f[ia].clone(), v)),
            Err(_) => errs.push(format!(
                "results.csv line {}: ops_per_sec {:?} is not a number",
                n + 2,
                f[io]
            )),
        }
    }
    let mut ws: Vec<String> = workloads.iter().map(|s| s.to_string()).collect();
    let mut als: Vec<String> = allocs.to_vec();
    if ws.is_empty() {
        ws = found.iter().map(|r| r.0.clone()).collect();
        ws.dedup();
    }
    if als.is_empty() {
        for r in &found {
            if !als.contains(&r.1) {
                als.push(r.1.clone());
            }
        }
    }
    for w in &ws {
        for a in &als {
            match found.iter().find(|r| &r.0 == w && &r.1 == a) {
                None => errs.push(format!("results.csv: no row for {w}/{a}")),
                Some(r) if r.2.is_nan() || r.2 <= 0.0 => {
                    errs.push(format!("results.csv: {w}/{a} has ops/s {}", r.2))
                }
                Some(_) => {}
            }
        }
    }
    match std::fs::read_to_string(dir.join("results.md")) {
        Ok(md)
            if md.contains("| workload |")
                && ws.iter().all(|w| md.contains(&format!("| {w} |"))) => {}
        Ok(_) => errs.push("results.md: table or workload rows missing".into()),
        Err(e) => errs.push(format!("results.md: {e}")),
    }
    match std::fs::read_to_string(dir.join("chart.svg")) {
        Ok(svg) if svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>") => {}
        Ok(_) => errs.push("chart.svg: not a complete <svg> document".into()),
        Err(e) => errs.push(format!("chart.svg: {e}")),
    }
    if errs.is_empty() {
        Ok(ws.len() * als.len())
    } else {
        Err(errs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One workload, hz3 fastest but not the lowest RSS; a second where jemalloc is fastest.
    fn fake() -> Summary {
        use crate::child::RunResult;
        use crate::runner::{Cell, Plan, Results};
        let allocs: Vec<String> = ["hz3-scale", "mimalloc", "jemalloc", "glibc"].map(String::from).to_vec();
        let ws = vec![&crate::workloads::ALL[0], &crate::workloads::ALL[1]];
        // (ops per second, peak RSS KiB) per allocator, per workload.
        let data = [
            [(300.0, 4096), (100.0, 8192), (200.0, 3072), (50.0, 3072)],
            [(100.0, 4096), (100.0, 8192), (400.0, 4096), (50.0, 2048)],
        ];
        let cells = data
            .iter()
            .map(|row| {
                row.iter()
                    .map(|&(ops, rss)| Cell {
                        ok: vec![RunResult { ops: (ops * 1e6) as u64, secs: 1.0, maxrss_kib: rss, ..Default::default() }],
                        failed: vec![],
                    })
                    .collect()
            })
            .collect();
        let plan = Plan {
            mode: crate::workloads::Mode::Quick,
            runs: 1,
            workloads: ws,
            allocs: allocs.clone(),
            warmup_round: false,
            preloads: vec![None; 4],
            callgrind: false,
        };
        Summary::new(&Results { plan, cells, wall: std::time::Duration::from_secs(1) })
    }

    #[test]
    fn best_marks_and_x_best() {
        let s = fake();
        let w0 = crate::workloads::ALL[0].name;
        let w1 = crate::workloads::ALL[1].name;
        let h = s.get(w0, "hz3-scale").unwrap();
        assert_eq!(h.x_best, Some(1.5)); // 300 ÷ jemalloc's 200
        assert_eq!(h.rss_x_lowest, Some(4096.0 / 3072.0));
        assert_eq!(s.get(w1, "hz3-scale").unwrap().x_best, Some(0.25));
        assert_eq!(s.get(w0, "mimalloc").unwrap().x_best, None);
        let gm = s.geomean("hz3-scale", |r| r.x_best).unwrap();
        assert!((gm - (1.5f64 * 0.25).sqrt()).abs() < 1e-12);
        let md = markdown(&s, &Meta { mode: "quick".into(), runs: 1, started: "-".into(), wall: "-".into(), machine: "-".into() });
        let line = |w: &str, nth: usize| md.lines().filter(|l| l.starts_with(&format!("| {w} |"))).nth(nth).unwrap().to_string();
        // Throughput: only the fastest is bold.
        let t0 = line(w0, 0);
        assert_eq!(t0.matches("**").count(), 2, "{t0}");
        assert!(t0.contains("| **300.00** (3.00) |"), "{t0}");
        let t1 = line(w1, 0);
        assert_eq!(t1.matches("**").count(), 2, "{t1}");
        assert!(t1.contains("| 100.00 (1.00) |") && t1.contains("| **400.00** (4.00) |"), "{t1}");
        // RSS: the two 3.0 MiB allocators tie for lowest on the first workload.
        let r0 = line(w0, 1);
        assert_eq!(r0.matches("**3.0**").count(), 2, "{r0}");
        assert!(r0.contains("| 4.0 (0.50) |"), "{r0}");
        assert!(md.contains("| geomean |"));
    }

    #[test]
    fn geomeans() {
        assert_eq!(geomean(&[]), None);
        assert!((geomean(&[2.0, 8.0]).unwrap() - 4.0).abs() < 1e-12);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn csv_quoting_roundtrip() {
        let fields = ["a", "b,c", "say \"hi\"", ""];
        let line = fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(csv_split(&line), fields);
    }
}
