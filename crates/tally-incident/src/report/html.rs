//! The report as one self-contained HTML page (no scripts, no external
//! resources: it opens offline), rendered by the `report.html` template
//! with the requests-per-minute chart inline as SVG (`chart.svg`).
//!
//! Invariant: every value reaches the page through askama's HTML escaping;
//! the page is made from the typed report, never from its Markdown.

use askama::Template;

use super::chart::Chart;
use super::model::Report;

#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    r: &'a Report,
    chart: Chart,
}

/// The report as one self-contained HTML page.
pub fn html(r: &Report) -> String {
    Page {
        r,
        chart: Chart::of(&r.per_minute),
    }
    .render()
    .unwrap_or_else(|_| "<!doctype html>\n<p>The report could not be rendered.</p>\n".to_string())
}
