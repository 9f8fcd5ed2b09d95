//! `tally incident report --format pdf`: the report printed by headless
//! Chromium, checked by rendering its first page to PNG with poppler's
//! `pdftoppm`. The incident is the forged-token incident of the upgrade
//! fixture (a data directory written by an earlier release).
//!
//! Skipped when Chromium or `pdftoppm` (poppler-utils) is missing; with
//! `CI=true` that fails.

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
    if !have("pdftoppm", "-v") {
        skip("pdftoppm is not installed (apt-get install poppler-utils)");
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

    // The PDF's text holds the report's title (pdftotext, also poppler).
    if have("pdftotext", "-v") {
        let text = Command::new("pdftotext").args([p, "-"]).output().unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("insider-v1"), "{text}");
    }
}
