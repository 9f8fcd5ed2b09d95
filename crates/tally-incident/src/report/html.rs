//! The report as one self-contained HTML page (no scripts, no external
//! resources), with the requests-per-minute chart as inline SVG.
//!
//! Invariant: the page is rendered from the Markdown report, and every piece
//! of text is escaped for HTML ([`esc`]) on its way in.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::markdown::{markdown, s};
use crate::timefmt::utc;

/// Undoes the Markdown escaping of [`s`] (for the HTML rendering, which
/// escapes for HTML itself).
fn unmd(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && "|*_`[]#\\".contains(n)
        {
            out.push(n);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out.replace("&lt;", "<").replace("&gt;", ">")
}

/// Escapes text for HTML (element content and quoted attributes).
pub fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Requests per minute by verdict as an inline SVG (stacked bars: exposed
/// verdicts in red, refused in grey).
pub fn chart_svg(per_minute: &BTreeMap<i64, BTreeMap<String, u64>>) -> String {
    let (w, h, pad) = (760.0f64, 220.0f64, 36.0f64);
    if per_minute.is_empty() {
        return format!(
            "<svg width=\"{w}\" height=\"40\" role=\"img\" aria-label=\"no attack requests\"><text x=\"4\" y=\"24\">No attack requests in the access log.</text></svg>"
        );
    }
    let first = *per_minute.keys().next().unwrap_or(&0);
    let last = *per_minute.keys().last().unwrap_or(&0);
    let span = (last - first + 1).max(1) as f64;
    let max = per_minute
        .values()
        .map(|v| v.values().sum::<u64>())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let bw = ((w - pad * 2.0) / span).max(1.0);
    let mut verdicts: BTreeSet<&str> = BTreeSet::new();
    for v in per_minute.values() {
        verdicts.extend(v.keys().map(String::as_str));
    }
    let palette = [
        "#b91c1c", "#6b7280", "#d97706", "#2563eb", "#7c3aed", "#059669",
    ];
    let colour = |v: &str| -> &str {
        if v == "ok" {
            return "#b91c1c";
        }
        let i = verdicts.iter().position(|x| *x == v).unwrap_or(0);
        palette[1 + i % (palette.len() - 1)]
    };
    let mut o = format!(
        "<svg width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"attack requests per minute by verdict\">",
        h + 40.0,
        h + 40.0
    );
    o.push_str(&format!(
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/>",
        h - pad + 10.0,
        w - pad,
        h - pad + 10.0
    ));
    o.push_str(&format!(
        "<text x=\"2\" y=\"14\" font-size=\"11\">{max} / min</text>"
    ));
    for (m, v) in per_minute {
        let x = pad + (m - first) as f64 * bw;
        let mut y = h - pad + 10.0;
        for (verdict, n) in v {
            let bh = (*n as f64 / max) * (h - pad - 10.0);
            y -= bh;
            o.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{} {}: {n}</title></rect>",
                (bw - 0.5).max(0.5),
                colour(verdict),
                esc(&utc(m * 60)),
                esc(verdict)
            ));
        }
    }
    o.push_str(&format!(
        "<text x=\"{pad}\" y=\"{}\" font-size=\"11\">{}</text>",
        h + 4.0,
        esc(&utc(first * 60))
    ));
    o.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
        w - pad,
        h + 4.0,
        esc(&utc(last * 60))
    ));
    let mut lx = pad;
    for v in &verdicts {
        o.push_str(&format!("<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>", h + 18.0, colour(v), lx + 14.0, h + 27.0, esc(if *v == "ok" { "ok (exposed)" } else { v })));
        lx += 120.0;
    }
    o.push_str("</svg>");
    o
}

/// The report as one self-contained HTML page (no scripts, no external
/// resources: it opens offline).
pub fn html(r: &Value, per_minute: &BTreeMap<i64, BTreeMap<String, u64>>) -> String {
    let md = markdown(r);
    let mut body = String::new();
    let mut in_list = false;
    let mut in_table = false;
    for line in md.lines() {
        let close_list = |body: &mut String, in_list: &mut bool| {
            if *in_list {
                body.push_str("</ul>\n");
                *in_list = false;
            }
        };
        if line.starts_with("| ---") {
            continue;
        }
        if let Some(row) = line.strip_prefix('|') {
            close_list(&mut body, &mut in_list);
            let cells: Vec<&str> = row
                .trim_end_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            if !in_table {
                body.push_str("<table>\n<tr>");
                for c in &cells {
                    body.push_str(&format!("<th>{}</th>", esc(&unmd(c))));
                }
                body.push_str("</tr>\n");
                in_table = true;
            } else {
                body.push_str("<tr>");
                for c in &cells {
                    body.push_str(&format!("<td>{}</td>", esc(&unmd(c))));
                }
                body.push_str("</tr>\n");
            }
            continue;
        }
        if in_table {
            body.push_str("</table>\n");
            in_table = false;
        }
        if let Some(item) = line.strip_prefix("- ") {
            if !in_list {
                body.push_str("<ul>\n");
                in_list = true;
            }
            body.push_str(&format!("<li>{}</li>\n", esc(&unmd(item))));
            continue;
        }
        close_list(&mut body, &mut in_list);
        if let Some(t) = line.strip_prefix("### ") {
            body.push_str(&format!("<h3>{}</h3>\n", esc(&unmd(t))));
        } else if let Some(t) = line.strip_prefix("## ") {
            body.push_str(&format!("<h2>{}</h2>\n", esc(&unmd(t))));
            if t == "Affected subjects and records" {
                body.push_str("<figure>");
                body.push_str(&chart_svg(per_minute));
                body.push_str("<figcaption>Attack requests per minute, by verdict (from the access log).</figcaption></figure>\n");
            }
        } else if let Some(t) = line.strip_prefix("# ") {
            body.push_str(&format!("<h1>{}</h1>\n", esc(&unmd(t))));
        } else if !line.trim().is_empty() {
            // **bold** (the report's own markup; values are escaped by `s`).
            let t = line.to_string();
            let mut out = String::new();
            for (i, part) in t.split("**").enumerate() {
                if i % 2 == 1 {
                    out.push_str(&format!("<strong>{}</strong>", esc(&unmd(part))));
                } else {
                    out.push_str(&esc(&unmd(part)));
                }
            }
            body.push_str(&format!("<p>{out}</p>\n"));
        }
    }
    if in_list {
        body.push_str("</ul>\n");
    }
    if in_table {
        body.push_str("</table>\n");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Incident {} report</title><style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#111;line-height:1.45}}table{{border-collapse:collapse;margin:0.5rem 0}}td,th{{border:1px solid #ccc;padding:0.25rem 0.5rem;text-align:left;vertical-align:top}}th{{background:#f3f4f6}}h2{{border-bottom:1px solid #ddd;margin-top:2rem}}figure{{margin:1rem 0;overflow-x:auto}}figcaption{{font-size:0.85rem;color:#444}}</style></head><body>\n{}</body></html>\n",
        esc(&s(&r["incident"]["id"])),
        body
    )
}
