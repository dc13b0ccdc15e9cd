//! An SVG picture of a lab run: every client connect as a bar over time, one lane per host
//! that answered and one lane for failures, with vertical lines for drills, role changes and
//! link events, and ticks for gratuitous ARPs. Hand-written SVG, no crate.

use std::fmt::Write as _;
use std::path::Path;

use super::timeline::{EventKind, Timeline};

/// Plot options.
#[derive(Debug, Clone)]
pub struct PlotOpts {
    /// Total width in pixels. Default 1200.
    pub width: u32,
    pub title: Option<String>,
    /// Plot only the connects of this source (default: every source).
    pub source: Option<String>,
}

impl Default for PlotOpts {
    fn default() -> PlotOpts {
        PlotOpts {
            width: 1200,
            title: None,
            source: None,
        }
    }
}

const PALETTE: [&str; 6] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#bcbd22",
];
const FAIL_COLOR: &str = "#d62728";
const LEFT: f64 = 110.0;
const RIGHT: f64 = 20.0;
const LANE_H: f64 = 22.0;
const BAR_H: f64 = 14.0;
/// Rows for marker labels above the lanes, so that close labels do not overlap.
const LABEL_ROWS: usize = 4;
const LABEL_ROW_H: f64 = 14.0;

/// Write the SVG for `tl` to `path`.
pub fn write_svg(path: &Path, tl: &Timeline, opts: &PlotOpts) -> std::io::Result<()> {
    std::fs::write(path, svg(tl, opts))
}

/// The SVG for `tl`, as a string.
pub fn svg(tl: &Timeline, opts: &PlotOpts) -> String {
    let events = tl.events();
    let width = f64::from(opts.width.max(300));
    let (t0, t1) = match (events.first(), events.last()) {
        (Some(a), Some(b)) => (a.at_ms, b.at_ms.max(a.at_ms + 1.0)),
        _ => (0.0, 1.0),
    };
    let plot_w = width - LEFT - RIGHT;
    let x = |t: f64| LEFT + (t - t0) / (t1 - t0) * plot_w;

    // Lanes: hosts in order of first appearance, then "no banner", then failures.
    let mine = |src: &str| opts.source.as_deref().map_or(true, |s| s == src);
    let mut lanes: Vec<Option<String>> = Vec::new();
    for e in events.iter().filter(|e| mine(&e.source)) {
        if let EventKind::ConnectOk { host } = &e.kind {
            if !lanes.contains(host) {
                lanes.push(host.clone());
            }
        }
    }
    lanes.sort_by_key(|h| h.is_none());
    let fail_lane = lanes.len();
    let title_h = if opts.title.is_some() { 24.0 } else { 8.0 };
    let lanes_top = title_h + LABEL_ROWS as f64 * LABEL_ROW_H + 12.0;
    let lanes_bottom = lanes_top + (fail_lane + 1) as f64 * LANE_H;
    let height = lanes_bottom + 50.0;
    let lane_y = |i: usize| lanes_top + i as f64 * LANE_H + (LANE_H - BAR_H) / 2.0;
    let color = |i: usize| PALETTE[i % PALETTE.len()];

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#
    );
    if let Some(t) = &opts.title {
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="16" font-size="14" font-weight="bold">{}</text>"#,
            esc(t)
        );
    }

    // Lane labels and backgrounds.
    for i in 0..=fail_lane {
        let (label, fill) = match lanes.get(i) {
            None => ("failed".to_string(), FAIL_COLOR),
            Some(Some(h)) => (format!("ok via {h}"), color(i)),
            Some(None) => ("ok".to_string(), color(i)),
        };
        let y = lanes_top + i as f64 * LANE_H;
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y:.1}" width="{plot_w:.1}" height="{LANE_H}" fill="{}"/>"##,
            if i % 2 == 0 { "#f7f7f7" } else { "#ffffff" }
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{fill}">{}</text>"#,
            LEFT - 6.0,
            y + LANE_H / 2.0 + 4.0,
            esc(&label)
        );
    }

    // One bar per attempt.
    s.push_str("<g>\n");
    for e in events.iter().filter(|e| mine(&e.source)) {
        let (lane, fill) = match &e.kind {
            EventKind::ConnectOk { host } => {
                let i = lanes.iter().position(|h| h == host).unwrap_or(0);
                (i, color(i))
            }
            EventKind::ConnectFail { .. } => (fail_lane, FAIL_COLOR),
            _ => continue,
        };
        let _ = writeln!(
            s,
            r#"<rect x="{:.2}" y="{:.1}" width="1.5" height="{BAR_H}" fill="{fill}"/>"#,
            x(e.at_ms) - 0.75,
            lane_y(lane)
        );
    }
    s.push_str("</g>\n");

    // Markers: vertical lines with labels in staggered rows; GARP ticks.
    let mut row = 0;
    for e in events {
        let (label, stroke, dash) = match &e.kind {
            EventKind::DrillStart(n) => (format!("start {n}"), "#000000", ""),
            EventKind::DrillEnd(n) => (format!("end {n}"), "#000000", r#" stroke-dasharray="2,3""#),
            EventKind::RoleChange { from, to } => (
                format!("{}: {from}\u{2192}{to}", e.source),
                "#ff7f0e",
                r#" stroke-dasharray="5,3""#,
            ),
            EventKind::LinkDown => (format!("{}: link down", e.source), "#7f7f7f", ""),
            EventKind::LinkUp => (
                format!("{}: link up", e.source),
                "#7f7f7f",
                r#" stroke-dasharray="1,2""#,
            ),
            EventKind::Garp { ip, .. } => {
                let _ = writeln!(
                    s,
                    r##"<path d="M{:.2},{:.1} l-3,-6 h6 z" fill="#e377c2"><title>{}</title></path>"##,
                    x(e.at_ms),
                    lanes_top - 1.0,
                    esc(&format!("{:.1} ms {} announces {ip}", e.at_ms, e.source))
                );
                continue;
            }
            _ => continue,
        };
        let xm = x(e.at_ms);
        // Labels in the right quarter grow to the left, so they stay inside the picture.
        let anchor = if xm > LEFT + plot_w * 0.75 {
            "end"
        } else {
            "start"
        };
        let ly = title_h + (row % LABEL_ROWS) as f64 * LABEL_ROW_H + 10.0;
        row += 1;
        let _ = writeln!(
            s,
            r#"<line x1="{xm:.2}" y1="{:.1}" x2="{xm:.2}" y2="{lanes_bottom:.1}" stroke="{stroke}"{dash}/>"#,
            ly + 2.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{ly:.1}" fill="{stroke}" text-anchor="{anchor}">{}</text>"#,
            if anchor == "end" { xm - 2.0 } else { xm + 2.0 },
            esc(&label)
        );
    }

    // Time axis.
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{lanes_bottom:.1}" x2="{:.1}" y2="{lanes_bottom:.1}" stroke="#000000"/>"##,
        LEFT + plot_w
    );
    let step = nice_step((t1 - t0) / 10.0);
    let mut t = (t0 / step).ceil() * step;
    while t <= t1 + 1e-9 {
        let xt = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{xt:.2}" y1="{lanes_bottom:.1}" x2="{xt:.2}" y2="{:.1}" stroke="#000000"/>"##,
            lanes_bottom + 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{xt:.2}" y="{:.1}" text-anchor="middle">{}</text>"#,
            lanes_bottom + 16.0,
            fmt_ms(t)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (ms since start)</text>"#,
        LEFT + plot_w / 2.0,
        lanes_bottom + 34.0
    );
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * p)
}

fn fmt_ms(t: f64) -> String {
    if t.fract().abs() < 1e-9 {
        format!("{t:.0}")
    } else {
        format!("{t:.1}")
    }
}

/// Escaping for XML content and attributes is the status page's (`&#39;` is valid in both).
use crate::admin::page::esc;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::client::FailReason;
    use crate::lab::sniff::Mac;

    /// Check that every tag is closed in order; returns the number of elements.
    fn balanced(svg: &str) -> Result<usize, String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut n = 0;
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            let j = rest[i..].find('>').ok_or("unclosed <")? + i;
            let tag = &rest[i + 1..j];
            rest = &rest[j + 1..];
            if tag.starts_with('?') || tag.starts_with('!') {
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("stray </{name}>"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
                continue;
            }
            let name = tag.split_whitespace().next().ok_or("empty tag")?;
            n += 1;
            if !tag.ends_with('/') {
                stack.push(name);
            }
            if tag.contains('<') {
                return Err(format!("'<' inside tag {tag}"));
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        Ok(n)
    }

    fn run() -> Timeline {
        let mut t = Timeline::new();
        for i in 0..40 {
            let ms = f64::from(i) * 10.0;
            let kind = match i {
                0..=14 => EventKind::ConnectOk {
                    host: Some("proxy1".into()),
                },
                15..=24 => EventKind::ConnectFail {
                    reason: FailReason::Refused,
                },
                _ => EventKind::ConnectOk {
                    host: Some("proxy2".into()),
                },
            };
            t.push(ms, "client", kind);
        }
        t.push(140.0, "lab", EventKind::DrillStart("crash <master>".into()));
        t.push(145.0, "switch", EventKind::LinkDown);
        t.push(
            240.0,
            "proxy2",
            EventKind::RoleChange {
                from: "backup".into(),
                to: "master".into(),
            },
        );
        t.push(
            241.0,
            "client",
            EventKind::Garp {
                mac: Mac([2, 0, 0, 0, 0, 2]),
                ip: "192.0.2.100".parse().unwrap(),
            },
        );
        t.push(390.0, "lab", EventKind::DrillEnd("crash <master>".into()));
        t
    }

    #[test]
    fn svg_is_balanced_and_labelled() {
        let opts = PlotOpts {
            title: Some("crash & burn".into()),
            ..PlotOpts::default()
        };
        let s = svg(&run(), &opts);
        let n = balanced(&s).unwrap_or_else(|e| panic!("{e}\n{s}"));
        assert!(n > 40, "{n} elements");
        assert!(s.starts_with("<svg "));
        for label in [
            "ok via proxy1",
            "ok via proxy2",
            "failed",
            "start crash &lt;master&gt;",
            "end crash &lt;master&gt;",
            "proxy2: backup\u{2192}master",
            "switch: link down",
            "crash &amp; burn",
            "announces 192.0.2.100",
        ] {
            assert!(s.contains(label), "missing {label:?}");
        }
        assert_eq!(s.matches(&format!("fill=\"{FAIL_COLOR}\"/>")).count(), 10);
    }

    #[test]
    fn empty_and_filtered_plots_are_valid() {
        balanced(&svg(&Timeline::new(), &PlotOpts::default())).unwrap();
        let opts = PlotOpts {
            source: Some("nobody".into()),
            ..PlotOpts::default()
        };
        let s = svg(&run(), &opts);
        balanced(&s).unwrap();
        assert!(!s.contains("ok via proxy1"));
        assert_eq!(nice_step(37.0), 50.0);
        assert_eq!(nice_step(0.7), 1.0);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.svg");
        write_svg(&p, &run(), &PlotOpts::default()).unwrap();
        assert!(std::fs::read_to_string(p).unwrap().ends_with("</svg>\n"));
    }
}
