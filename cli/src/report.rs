//! `sluice report ID`: what a circuit (or every occurrence of a series) delivered against
//! what was booked, from its stored measurements, and its path across domains. As a
//! table in the terminal, or with `--html FILE` one self-contained page: inline CSS and
//! SVG charts (throughput booked vs delivered, delay, loss per measurement) and the path
//! drawn domain by domain, with nothing fetched from anywhere when it is opened.

use std::fmt::Write as _;

use sluice_proto::v1;

use crate::output::{self, carried};
use crate::time::show;

/// Everything a report shows.
pub struct Report {
    /// The reservation, or the series' first occurrence (for the path and the booking).
    pub reservation: v1::Reservation,
    /// Set when the report is of a series.
    pub series_id: Option<String>,
    pub measurements: Vec<v1::Measurement>,
    /// Each domain's part, in order (one for a circuit within one domain).
    pub domains: Vec<v1::DomainStatus>,
}

/// How a measurement is labelled on a chart's axis: its occurrence, or its number.
fn label(m: &v1::Measurement, i: usize) -> String {
    if m.occurrence > 0 {
        format!("#{}", m.occurrence)
    } else {
        format!("{}", i + 1)
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

const W: f64 = 760.0;
const H: f64 = 240.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

/// One bar chart: a bar per measurement (`value`, colour by verdict), an optional
/// dashed reference line (`reference`, e.g. the booking) and whiskers (`range`).
struct Chart<'a> {
    id: &'a str,
    title: &'a str,
    unit: &'a str,
    reference: Option<(f64, &'a str)>,
}

fn chart(
    c: &Chart,
    ms: &[v1::Measurement],
    value: impl Fn(&v1::Measurement) -> Option<f64>,
    range: impl Fn(&v1::Measurement) -> Option<(f64, f64)>,
) -> String {
    // A value that is not a finite, non-negative number is shown as not measured.
    let value = |m: &v1::Measurement| value(m).filter(|v| v.is_finite() && *v >= 0.0);
    let range = |m: &v1::Measurement| {
        range(m).filter(|(lo, hi)| lo.is_finite() && hi.is_finite() && *lo >= 0.0)
    };
    let top = ms
        .iter()
        .filter_map(|m| {
            let v = value(m)?;
            Some(range(m).map_or(v, |(_, hi)| hi.max(v)))
        })
        .chain(c.reference.map(|r| r.0))
        .fold(0.0, f64::max);
    let max = nice_max(top * 1.1);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_h * (1.0 - v / max);
    let slot = plot_w / ms.len().max(1) as f64;
    let bar = (slot * 0.6).clamp(1.0, 48.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure><figcaption>{}</figcaption><svg class="chart" id="{}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}">"#,
        escape(c.title),
        c.id,
        escape(c.title)
    );
    // Round steps: fifths of 1 or 5 (×10ⁿ), quarters of 2.
    let mantissa = max / 10f64.powf(max.log10().floor());
    let steps = if (mantissa - 2.0).abs() < 1e-9 { 4 } else { 5 };
    for i in 0..=steps {
        let v = max * f64::from(i) / f64::from(steps);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            trim(v),
            y = y(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle" class="tick">{}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(c.unit)
    );
    // At most about 25 labels on the axis, however many measurements.
    let every = ms.len().div_ceil(25).max(1);
    for (i, m) in ms.iter().enumerate() {
        let cx = LEFT + slot * (i as f64 + 0.5);
        if i % every == 0 {
            let _ = write!(
                svg,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"#,
                H - BOTTOM + 16.0,
                escape(&label(m, i))
            );
        }
        let Some(v) = value(m) else {
            if ms.len() <= 25 {
                let _ = write!(
                    svg,
                    r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" class="none">not measured</text>"##,
                    y(max / 2.0)
                );
            }
            continue;
        };
        let _ = write!(
            svg,
            r#"<rect class="bar {}" x="{:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}"><title>{}: {} {}</title></rect>"#,
            escape(&m.verdict),
            cx - bar / 2.0,
            y(v),
            (y(0.0) - y(v)).max(0.5),
            escape(&label(m, i)),
            trim(v),
            escape(c.unit)
        );
        if let Some((lo, hi)) = range(m) {
            let _ = write!(
                svg,
                r##"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="#333" stroke-width="1.5"/>"##,
                y(lo),
                y(hi)
            );
        }
    }
    if let Some((v, what)) = c.reference {
        let _ = write!(
            svg,
            r##"<line class="reference" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#c0392b" stroke-dasharray="6 4" stroke-width="2"/><text x="{}" y="{:.1}" text-anchor="end" class="ref">{}</text>"##,
            W - RIGHT,
            W - RIGHT,
            y(v) - 6.0,
            escape(what),
            y = y(v)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn trim(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// The path across domains: a box per domain with its nodes, joined in order.
fn path_svg(domains: &[v1::DomainStatus]) -> String {
    let n = domains.len().max(1);
    // Boxes at least 90 wide: a long path makes a wider drawing, which scrolls.
    let box_w = ((W - 40.0) / n as f64 - 30.0).clamp(90.0, 220.0);
    let width = (40.0 + n as f64 * (box_w + 30.0) - 30.0).max(W);
    let rows = domains
        .iter()
        .map(|d| d.nodes.len().max(1))
        .max()
        .unwrap_or(1);
    let h = 90.0 + 20.0 * rows as f64;
    let mut svg = format!(
        r#"<svg class="path" id="path" viewBox="0 0 {width} {h}" width="{width}" height="{h}" role="img" aria-label="path across domains">"#
    );
    let x0 = |i: usize| 20.0 + i as f64 * (box_w + 30.0);
    for (i, d) in domains.iter().enumerate() {
        let x = x0(i);
        let st = d.states.clone().unwrap_or_default();
        let class = if !d.error.is_empty() {
            "unknown"
        } else if st.data_plane_active {
            "up"
        } else {
            "down"
        };
        let _ = write!(
            svg,
            r#"<rect class="domain {class}" x="{x:.1}" y="20" width="{box_w:.1}" height="{:.1}" rx="8"/><text x="{:.1}" y="40" text-anchor="middle" class="domain-name">{}</text><text x="{:.1}" y="58" text-anchor="middle" class="tick">{}</text>"#,
            h - 30.0,
            x + box_w / 2.0,
            escape(&d.domain),
            x + box_w / 2.0,
            escape(if d.error.is_empty() {
                &st.summary
            } else {
                "status not available"
            })
        );
        for (j, node) in d.nodes.iter().enumerate() {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="node">{} · {}</text>"#,
                x + box_w / 2.0,
                80.0 + 20.0 * j as f64,
                escape(&node.node),
                escape(if node.agent == "up" {
                    &node.state
                } else {
                    &node.agent
                })
            );
        }
        if i + 1 < domains.len() {
            let _ = write!(
                svg,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#555" stroke-width="3"/>"##,
                x + box_w,
                x0(i + 1),
                20.0 + (h - 30.0) / 2.0,
                20.0 + (h - 30.0) / 2.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

pub fn html(rep: &Report) -> String {
    let r = &rep.reservation;
    let ms = &rep.measurements;
    let booked = r.capacity_mbps as f64;
    let what = match &rep.series_id {
        Some(s) => format!("series {s}"),
        None => format!("circuit {}", r.id),
    };
    let title = format!("Sluice report: {what}");
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{}</h1><p class=\"sub\">{} → {} · {} Mb/s booked · {} .. {}{}</p>",
        escape(&title),
        escape(&r.src),
        escape(&r.dst),
        r.capacity_mbps,
        escape(&show(&r.start)),
        escape(&show(&r.end)),
        if r.description.is_empty() {
            String::new()
        } else {
            format!(" · {}", escape(&r.description))
        }
    );
    body.push_str("<h2>Path across domains</h2>");
    body.push_str(&path_svg(&rep.domains));
    let passed = ms.iter().filter(|m| m.verdict == "pass").count();
    let _ = write!(
        body,
        "<h2>Measurements</h2><p>{} measurement{}: {passed} passed, {} failed, {} could not be made.</p>",
        ms.len(),
        if ms.len() == 1 { "" } else { "s" },
        ms.iter().filter(|m| m.verdict == "fail").count(),
        ms.iter().filter(|m| m.verdict == "error").count(),
    );
    if ms.is_empty() {
        body.push_str("<p>No measurements yet: <code>sluice verify ID</code>, or book with <code>--verify-each</code>.</p>");
    } else {
        let measured = |m: &v1::Measurement| m.verdict != "error";
        let booked_label = format!("booked {} Mb/s", r.capacity_mbps);
        body.push_str(&chart(
            &Chart {
                id: "throughput",
                title: "Throughput delivered A→Z (IP packets) against the booking",
                unit: "Mb/s",
                reference: Some((booked, &booked_label)),
            },
            ms,
            |m| (measured(m) && m.duration_ms > 0).then(|| carried(m)),
            |_| None,
        ));
        body.push_str(&chart(
            &Chart {
                id: "delay",
                title: "Round trip: mean, with min and max",
                unit: "ms",
                reference: None,
            },
            ms,
            |m| (measured(m) && m.probes_received > 0).then(|| m.rtt_avg_us as f64 / 1e3),
            |m| {
                (measured(m) && m.probes_received > 0)
                    .then(|| (m.rtt_min_us as f64 / 1e3, m.rtt_max_us as f64 / 1e3))
            },
        ));
        body.push_str(&chart(
            &Chart {
                id: "loss",
                title: "Probe loss",
                unit: "%",
                reference: None,
            },
            ms,
            |m| measured(m).then_some(100.0 * m.loss),
            |_| None,
        ));
        body.push_str("<table><thead><tr><th>#</th><th>at</th><th>kind</th><th>booked</th><th>delivered</th><th>%</th><th>rtt mean</th><th>jitter</th><th>loss</th><th>verdict</th></tr></thead><tbody>");
        for (i, m) in ms.iter().enumerate() {
            let ok = measured(m);
            let rate = (ok && m.duration_ms > 0 && carried(m).is_finite()).then(|| carried(m));
            let _ = write!(
                body,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{} Mb/s</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&m.verdict),
                escape(&label(m, i)),
                escape(&show(&m.at)),
                escape(&m.kind),
                m.booked_mbps,
                rate.map_or("-".into(), |v| format!("{v:.1} Mb/s")),
                rate.map_or("-".into(), |v| format!(
                    "{:.1}",
                    100.0 * v / m.booked_mbps.max(1) as f64
                )),
                if ok {
                    output::ms(m.rtt_avg_us)
                } else {
                    "-".into()
                },
                if ok {
                    output::ms(m.jitter_us)
                } else {
                    "-".into()
                },
                if ok {
                    format!("{:.1} %", 100.0 * m.loss)
                } else {
                    "-".into()
                },
                escape(&if m.reasons.is_empty() {
                    m.verdict.clone()
                } else {
                    format!("{}: {}", m.verdict, m.reasons.join("; "))
                })
            );
        }
        body.push_str("</tbody></table>");
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 820px; }}
h1 {{ font-size: 22px; margin-bottom: 4px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
.sub {{ color: #555; margin-top: 0; }}
figure {{ margin: 16px 0; }} figcaption {{ font-weight: 600; margin-bottom: 4px; }}
.tick {{ font-size: 11px; fill: #555; }} .ref {{ font-size: 12px; fill: #c0392b; }}
.none {{ font-size: 11px; fill: #999; }}
.bar.pass {{ fill: #2e86c1; }} .bar.fail {{ fill: #e67e22; }} .bar.error {{ fill: #999; }}
.domain {{ fill: #eef5fb; stroke: #2e86c1; stroke-width: 2; }}
.domain.down {{ fill: #f4f4f4; stroke: #888; }} .domain.unknown {{ fill: #fff; stroke: #bbb; stroke-dasharray: 4 3; }}
.domain-name {{ font-weight: 700; font-size: 14px; }} .node {{ font-size: 12px; }}
table {{ border-collapse: collapse; font-size: 13px; margin-top: 12px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
tr.fail td {{ background: #fdf2e9; }} tr.error td {{ color: #777; }}
</style></head>
<body data-charts="0">
{body}
<script>
// Marks the page with how many charts the browser laid out with a real size (a check
// that they render; the page needs nothing else to show).
document.body.dataset.charts = String(Array.from(document.querySelectorAll("svg.chart, svg.path"))
  .filter(s => s.getBBox().width > 0 && s.querySelectorAll("rect").length > 0).length);
</script>
</body></html>
"#,
        title = escape(&title)
    )
}

/// The report as a table, for the terminal.
pub fn text(rep: &Report, history: &str) -> String {
    let r = &rep.reservation;
    let mut out = format!(
        "report of {}\n  {} → {}  {} Mb/s booked  {} .. {}\n  path: {}\n",
        rep.series_id
            .as_ref()
            .map_or(format!("circuit {}", r.id), |s| format!("series {s}")),
        r.src,
        r.dst,
        r.capacity_mbps,
        show(&r.start),
        show(&r.end),
        rep.domains
            .iter()
            .map(|d| {
                let nodes: Vec<&str> = d.nodes.iter().map(|n| n.node.as_str()).collect();
                if nodes.is_empty() {
                    d.domain.clone()
                } else {
                    format!("{} ({})", d.domain, nodes.join(" – "))
                }
            })
            .collect::<Vec<_>>()
            .join(" ⇄ ")
    );
    out += history;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(seq: u64, mbps: f64, verdict: &str) -> v1::Measurement {
        v1::Measurement {
            seq,
            booked_mbps: 200,
            duration_ms: 1000,
            throughput_mbps: mbps * 0.96,
            ip_throughput_mbps: mbps,
            probes_sent: 100,
            probes_received: 99,
            loss: 0.01,
            rtt_min_us: 100,
            rtt_avg_us: 200,
            rtt_max_us: 400,
            verdict: verdict.into(),
            kind: "verify".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_page_has_every_chart_a_bar_per_measurement_and_escapes_what_users_wrote() {
        let rep = Report {
            reservation: v1::Reservation {
                id: "r1".into(),
                src: "lab:r1:a".into(),
                dst: "lab:r2:b".into(),
                capacity_mbps: 200,
                description: "<script>alert(1)</script>".into(),
                ..Default::default()
            },
            series_id: None,
            measurements: vec![
                m(1, 199.0, "pass"),
                m(2, 96.0, "fail"),
                v1::Measurement {
                    verdict: "error".into(),
                    ..m(3, 0.0, "error")
                },
            ],
            domains: vec![v1::DomainStatus {
                domain: "lab".into(),
                nodes: vec![v1::NodeStatus {
                    node: "r1".into(),
                    agent: "up".into(),
                    state: "applied".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let page = html(&rep);
        assert!(!page.contains("<script>alert"), "user text is escaped");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        for id in ["throughput", "delay", "loss", "path"] {
            assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
        }
        // Two measured bars in each chart, the third marked as not measured.
        assert_eq!(page.matches("class=\"bar pass\"").count(), 3);
        assert_eq!(page.matches("class=\"bar fail\"").count(), 3);
        assert_eq!(page.matches("not measured").count(), 3);
        assert!(page.contains("booked 200 Mb/s"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "self-contained"
        );
    }

    #[test]
    fn odd_values_and_long_series_still_make_a_valid_page() {
        let mut ms: Vec<v1::Measurement> = (0..300).map(|i| m(i, 190.0, "pass")).collect();
        ms[0].ip_throughput_mbps = f64::NAN;
        ms[1].ip_throughput_mbps = f64::INFINITY;
        ms[2].rtt_max_us = u64::MAX;
        let rep = Report {
            reservation: v1::Reservation {
                capacity_mbps: 200,
                ..Default::default()
            },
            series_id: Some("s".into()),
            measurements: ms,
            domains: (0..40)
                .map(|i| v1::DomainStatus {
                    domain: format!("d{i}"),
                    ..Default::default()
                })
                .collect(),
        };
        let page = html(&rep);
        assert!(
            !page.contains("NaN") && !page.contains("inf"),
            "no bad numbers"
        );
        assert!(!page.contains("width=\"-"), "no negative sizes");
        // The axis labels thinned to every 12th of 300.
        let start = page.find("id=\"throughput\"").unwrap();
        let chart = &page[start..start + page[start..].find("</svg>").unwrap()];
        assert!(chart.contains(">1<") && chart.contains(">13<") && !chart.contains(">2<"));
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(187.0), 200.0);
        assert_eq!(nice_max(201.0), 500.0);
        assert_eq!(nice_max(0.23), 0.5);
        assert_eq!(nice_max(1000.0), 1000.0);
    }

    #[test]
    fn ticks_are_round() {
        let rep = |mbps: f64| Report {
            reservation: v1::Reservation {
                capacity_mbps: 200,
                ..Default::default()
            },
            series_id: None,
            measurements: vec![m(1, mbps, "pass")],
            domains: Vec::new(),
        };
        // 199 Mb/s: the axis ends at 500, in fifths.
        let page = html(&rep(199.0));
        for t in [">100<", ">200<", ">300<", ">400<", ">500<"] {
            assert!(page.contains(t), "{t}");
        }
        // The booking is on the chart too: 150 delivered, 200 booked, the axis to 500.
        assert!(html(&rep(150.0)).contains(">500<"));
    }
}
