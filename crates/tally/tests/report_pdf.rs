//! `tally incident report --format pdf`: the report printed by headless
//! Chromium, checked by rendering its first page to PNG with poppler's
//! `pdftoppm`. The incident is the forged-token incident of the upgrade
//! fixture (a data directory written by an earlier release).
//!
//! The HTML report also fits a 1280-pixel-wide window without a horizontal
//! scrollbar (measured in Chromium through playwright-core, as the dashboard
//! test does).
//!
//! Skipped when Chromium, `pdftoppm` (poppler-utils), Node.js or
//! playwright-core is missing; with `CI=true` that fails.

mod support;

use std::process::Command;

use support::*;

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_report_prints_to_a_pdf_whose_first_page_renders() {
    if !have("chromium", "--version") {
        skip("chromium is not installed (apt-get install chromium)");
        return;
    }
    if !have("pdftoppm", "-v") || !have("pdftotext", "-v") {
        skip("pdftoppm or pdftotext is not installed (apt-get install poppler-utils)");
        return;
    }
    let tmp = TempDir::new("report-pdf");
    let data = unpack(&tmp);
    let d = data.to_str().unwrap();
    let pdf = tmp.path().join("report-1.pdf");
    let p = pdf.to_str().unwrap();

    // Without --output a PDF is refused, saying what to add.
    let out = tally(
        &["incident", "report", "1", "--format", "pdf", "--data", d],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output"));

    tally_ok(
        &[
            "incident", "report", "1", "--format", "pdf", "--output", p, "--data", d,
        ],
        None,
    );
    let bytes = std::fs::read(&pdf).unwrap();
    assert!(bytes.starts_with(b"%PDF-"), "not a PDF");
    assert!(
        bytes.len() > 10_000,
        "{} bytes: an empty page?",
        bytes.len()
    );

    let png = tmp.path().join("page");
    let rendered = Command::new("pdftoppm")
        .args(["-png", "-r", "50", "-f", "1", "-l", "1", "-singlefile", p])
        .arg(&png)
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "pdftoppm: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let image = std::fs::read(png.with_extension("png")).unwrap();
    assert!(image.starts_with(b"\x89PNG"), "not a PNG");
    assert!(image.len() > 2_000, "{} bytes: a blank page?", image.len());

    // The PDF's text holds the report's title and its figures.
    let text = Command::new("pdftotext").args([p, "-"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Incident 1"), "{text}");
    assert!(text.contains("insider-v1"), "{text}");
}

#[test]
fn the_html_report_fits_a_1280_pixel_window() {
    let ui = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui"));
    if !have("chromium", "--version")
        || !have("node", "--version")
        || !ui.join("node_modules/playwright-core").exists()
    {
        skip("chromium, node or playwright-core (npm ci in tests/ui) is missing");
        return;
    }
    let tmp = TempDir::new("report-layout");
    let data = unpack(&tmp);
    let d = data.to_str().unwrap();
    let html = tmp.path().join("report-1.html");
    let h = html.to_str().unwrap();
    tally_ok(
        &[
            "incident", "report", "1", "--format", "html", "--output", h, "--data", d,
        ],
        None,
    );
    for width in ["1280", "800"] {
        let out = Command::new("node")
            .arg(ui.join("layout.mjs"))
            .arg(format!("file://{h}"))
            .arg(width)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "layout.mjs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let size: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            size["scroll"].as_i64() <= size["client"].as_i64(),
            "at {width} px the report is wider than the window: {size}"
        );
    }
}
