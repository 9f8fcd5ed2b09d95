//! The attack requests per minute as an inline SVG chart (stacked bars by
//! verdict: `ok`, exposed, in red; refusals in other colours), laid out
//! here and drawn by the `chart.svg` template.
//!
//! Invariant: every text in the chart (times, verdict codes) is escaped by
//! the template's HTML escaping; only numbers and fixed colours are laid
//! out here.

use std::collections::BTreeSet;

use askama::Template;

use super::model::{Minute, Utc};

/// Width of the chart.
const W: f64 = 760.0;
/// Height of the plot area (the legend goes below).
const H: f64 = 220.0;
/// Margin around the plot.
const PAD: f64 = 36.0;
/// Colours of the verdicts other than `ok`, in order of their codes.
const PALETTE: [&str; 5] = ["#6b7280", "#d97706", "#2563eb", "#7c3aed", "#059669"];
/// The colour of exposed requests.
const EXPOSED: &str = "#b91c1c";

/// One bar segment: requests of one verdict in one minute.
#[derive(Debug)]
pub(super) struct Bar {
    /// Left edge.
    pub(super) x: f64,
    /// Top edge.
    pub(super) y: f64,
    /// Width.
    pub(super) width: f64,
    /// Height.
    pub(super) height: f64,
    /// Colour of the verdict.
    pub(super) fill: &'static str,
    /// The minute.
    pub(super) minute: Utc,
    /// The verdict code.
    pub(super) verdict: String,
    /// Requests.
    pub(super) count: u64,
}

/// One entry of the legend.
#[derive(Debug)]
pub(super) struct Key {
    /// Left edge.
    pub(super) x: f64,
    /// Colour.
    pub(super) fill: &'static str,
    /// The verdict code (`ok (exposed)` for `ok`).
    pub(super) label: String,
}

/// The chart, laid out.
#[derive(Debug)]
pub(super) struct Chart {
    /// Width of the image.
    pub(super) width: f64,
    /// Height of the image (plot and legend).
    pub(super) height: f64,
    /// Where the time axis runs (the bars' base).
    pub(super) axis_y: f64,
    /// Where the time axis ends.
    pub(super) axis_end: f64,
    /// Baseline of the first and last minutes' labels.
    pub(super) label_y: f64,
    /// Top of the legend's swatches.
    pub(super) legend_y: f64,
    /// Baseline of the legend's labels.
    pub(super) legend_text_y: f64,
    /// Left margin.
    pub(super) pad: f64,
    /// The busiest minute's requests (the scale).
    pub(super) max: u64,
    /// The first minute.
    pub(super) first: Utc,
    /// The last minute.
    pub(super) last: Utc,
    /// The bar segments.
    pub(super) bars: Vec<Bar>,
    /// The legend, one entry per verdict.
    pub(super) legend: Vec<Key>,
}

impl Chart {
    /// Lays out `per_minute` (in minute order).
    pub(super) fn of(per_minute: &[Minute]) -> Chart {
        let minute = |m: &Minute| m.minute.0.div_euclid(60);
        let first = per_minute.first().map_or(0, minute);
        let last = per_minute.last().map_or(0, minute);
        let span = (last - first + 1).max(1) as f64;
        let max = per_minute
            .iter()
            .map(|m| m.by_verdict.values().sum::<u64>())
            .max()
            .unwrap_or(1)
            .max(1);
        let bw = ((W - PAD * 2.0) / span).max(1.0);
        let verdicts: BTreeSet<&str> = per_minute
            .iter()
            .flat_map(|m| m.by_verdict.keys().map(String::as_str))
            .collect();
        let colour = |v: &str| -> &'static str {
            if v == "ok" {
                return EXPOSED;
            }
            let i = verdicts.iter().position(|x| *x == v).unwrap_or(0);
            PALETTE[i % PALETTE.len()]
        };
        let base = H - PAD + 10.0;
        let mut bars = Vec::new();
        for m in per_minute {
            let x = PAD + (minute(m) - first) as f64 * bw;
            let mut y = base;
            for (verdict, n) in &m.by_verdict {
                let height = (*n as f64 / max as f64) * (H - PAD - 10.0);
                y -= height;
                bars.push(Bar {
                    x,
                    y,
                    width: (bw - 0.5).max(0.5),
                    height,
                    fill: colour(verdict),
                    minute: m.minute,
                    verdict: verdict.clone(),
                    count: *n,
                });
            }
        }
        let legend = verdicts
            .iter()
            .enumerate()
            .map(|(i, v)| Key {
                x: PAD + 120.0 * i as f64,
                fill: colour(v),
                label: if *v == "ok" {
                    "ok (exposed)".to_string()
                } else {
                    v.to_string()
                },
            })
            .collect();
        Chart {
            width: W,
            height: H + 40.0,
            axis_y: base,
            axis_end: W - PAD,
            label_y: H + 4.0,
            legend_y: H + 18.0,
            legend_text_y: H + 27.0,
            pad: PAD,
            max,
            first: Utc(first * 60),
            last: Utc(last * 60),
            bars,
            legend,
        }
    }
}

#[derive(Template)]
#[template(path = "chart.svg")]
struct Svg<'a> {
    chart: &'a Chart,
}

/// Requests per minute by verdict as an inline SVG (stacked bars: exposed
/// requests in red, refused ones in other colours, with a legend).
pub fn chart_svg(per_minute: &[Minute]) -> String {
    Svg {
        chart: &Chart::of(per_minute),
    }
    .render()
    .unwrap_or_default()
}
