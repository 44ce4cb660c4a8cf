//! `chart.svg`: a grouped bar chart of each allocator's ratio to mimalloc per workload
//! (x: workloads, y: ops/s ÷ mimalloc ops/s), with a dashed reference line at 1.0, axis
//! titles, a legend and per-bar tooltips. Hand-written SVG 1.1, no dependencies.

use crate::allocators::BASELINE;
use crate::report::Summary;
use std::fmt::Write as _;

/// Colours for hz3 presets, in the order they appear.
const HZ3_PALETTE: &[&str] = &["#1f77b4", "#9467bd", "#17becf", "#8c564b", "#e377c2"];

/// A fixed colour per reference allocator, the hz3 presets in blues/purples.
fn color(name: &str, hz3_index: usize) -> &'static str {
    match name {
        "jemalloc" => "#ff7f0e",
        "glibc" => "#2ca02c",
        "snmalloc" => "#bcbd22",
        "mimalloc" => "#d62728",
        _ => HZ3_PALETTE[hz3_index % HZ3_PALETTE.len()],
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step giving about 5–8 ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    for s in [0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0] {
        if max / s <= 8.0 {
            return s;
        }
    }
    100.0
}

/// Render the chart for `s`, titled with `subtitle` (mode, runs).
pub fn chart(s: &Summary, subtitle: &str) -> String {
    let allocs: Vec<&String> = s.allocs.iter().filter(|a| a.as_str() != BASELINE).collect();
    let colors: Vec<&str> = allocs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            color(
                a,
                allocs[..i].iter().filter(|b| b.starts_with("hz3")).count(),
            )
        })
        .collect();
    let have_base = s.allocs.iter().any(|a| a == BASELINE);
    let nw = s.workloads.len().max(1);
    let (ml, mr, mt, mb) = (80.0, 30.0, 90.0, 150.0);
    let bar_w = 14.0;
    let group_w = (allocs.len().max(1) as f64 * bar_w + 16.0).max(40.0);
    let plot_w = group_w * nw as f64;
    let plot_h = 380.0;
    let (w, h) = (ml + plot_w + mr, mt + plot_h + mb);

    let max_ratio = s
        .rows
        .iter()
        .filter(|r| r.alloc != BASELINE)
        .filter_map(|r| r.ratio)
        .fold(1.2f64, f64::max);
    let step = tick_step(max_ratio * 1.08);
    let y_max = ((max_ratio * 1.08) / step).ceil() * step;
    let y = |v: f64| mt + plot_h - (v / y_max) * plot_h;

    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="DejaVu Sans, Arial, Helvetica, sans-serif">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{:.0}" y="28" font-size="18" font-weight="bold" text-anchor="middle">hz3-bench: throughput relative to mimalloc (higher is better)</text>"#,
        w / 2.0
    );
    let _ = writeln!(
        o,
        r##"<text x="{:.0}" y="48" font-size="12" fill="#444" text-anchor="middle">{}</text>"##,
        w / 2.0,
        esc(subtitle)
    );

    // Grid and y ticks.
    let mut v = 0.0;
    while v <= y_max + 1e-9 {
        let yy = y(v);
        let _ = writeln!(
            o,
            r##"<line x1="{ml}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e4e4e4"/>"##,
            ml + plot_w
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{v:.2}</text>"#,
            ml - 6.0,
            yy + 4.0
        );
        v += step;
    }
    // Bars.
    for (wi, wl) in s.workloads.iter().enumerate() {
        let gx = ml + wi as f64 * group_w + 8.0;
        if wi % 2 == 1 {
            let _ = writeln!(
                o,
                r##"<rect x="{:.1}" y="{mt}" width="{group_w:.1}" height="{plot_h}" fill="#f6f6f6" fill-opacity="0.6"/>"##,
                gx - 8.0
            );
        }
        for (ai, a) in allocs.iter().enumerate() {
            let Some(r) = s.get(wl.name, a) else { continue };
            let color = colors[ai];
            let x = gx + ai as f64 * bar_w;
            match r.ratio {
                Some(ratio) => {
                    let (top, bottom) = (y(ratio), y(0.0));
                    let _ = writeln!(
                        o,
                        r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{} / {}: {ratio:.3}× mimalloc ({:.2} Mops/s)</title></rect>"#,
                        bar_w - 2.0,
                        bottom - top,
                        esc(wl.name),
                        esc(a),
                        r.ops_per_sec / 1e6
                    );
                }
                None => {
                    let _ = writeln!(
                        o,
                        r#"<text x="{:.1}" y="{:.1}" font-size="9" fill="{color}" text-anchor="middle">n/a</text>"#,
                        x + bar_w / 2.0,
                        y(0.0) - 4.0
                    );
                }
            }
        }
        // Workload label, rotated.
        let lx = gx - 8.0 + group_w / 2.0;
        let ly = mt + plot_h + 14.0;
        let _ = writeln!(
            o,
            r#"<text x="{lx:.1}" y="{ly:.1}" font-size="11" text-anchor="end" transform="rotate(-40 {lx:.1} {ly:.1})">{}</text>"#,
            esc(wl.name)
        );
    }
    // Axes.
    let _ = writeln!(
        o,
        r#"<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{:.1}" stroke="black"/>"#,
        mt + plot_h
    );
    let _ = writeln!(
        o,
        r#"<line x1="{ml}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        mt + plot_h,
        ml + plot_w,
        mt + plot_h
    );
    // Reference line at 1.0.
    if have_base {
        let y1 = y(1.0);
        let _ = writeln!(
            o,
            r##"<line x1="{ml}" y1="{y1:.1}" x2="{:.1}" y2="{y1:.1}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="6,4"/>"##,
            ml + plot_w
        );
    } else {
        let _ = writeln!(
            o,
            r##"<text x="{:.0}" y="{:.0}" font-size="14" fill="#d62728" text-anchor="middle">mimalloc was not in this run: no ratios</text>"##,
            ml + plot_w / 2.0,
            mt + plot_h / 2.0
        );
    }
    // Axis titles.
    let cy = mt + plot_h / 2.0;
    let _ = writeln!(
        o,
        r#"<text x="22" y="{cy:.1}" font-size="13" text-anchor="middle" transform="rotate(-90 22 {cy:.1})">ratio = ops/s ÷ mimalloc ops/s</text>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">workload</text>"#,
        ml + plot_w / 2.0,
        h - 12.0
    );
    // Legend (top, horizontal).
    let mut lx = ml;
    let ly = 66.0;
    for (ai, a) in allocs.iter().enumerate() {
        let color = colors[ai];
        let _ = writeln!(
            o,
            r#"<rect x="{lx:.1}" y="{ly:.1}" width="12" height="12" fill="{color}"/>"#
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            lx + 16.0,
            ly + 10.5,
            esc(a)
        );
        lx += 16.0 + 8.0 * a.len() as f64 + 22.0;
    }
    if have_base {
        let _ = writeln!(
            o,
            r##"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="6,4"/>"##,
            ly + 6.0,
            lx + 24.0,
            ly + 6.0
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="12">mimalloc = 1.0</text>"#,
            lx + 30.0,
            ly + 10.5
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks() {
        assert_eq!(tick_step(1.3), 0.2);
        assert_eq!(tick_step(3.0), 0.5);
        assert_eq!(tick_step(0.5), 0.1);
    }

    #[test]
    fn escapes() {
        assert_eq!(esc("a<b&\"c\">"), "a&lt;b&amp;&quot;c&quot;&gt;");
    }
}
