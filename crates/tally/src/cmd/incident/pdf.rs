//! The report as a PDF, for authorities that take PDFs: its HTML printed by
//! headless Chromium (the same page a browser shows, with the report's print
//! stylesheet).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long Chromium may take to print one report.
const PRINT_LIMIT: Duration = Duration::from_secs(120);

/// The Chromium binary: `TALLY_CHROMIUM`, else the first of `chromium`,
/// `chromium-browser`, `google-chrome` on the PATH.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TALLY_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// Prints `html` to the PDF file `output`.
pub(super) fn write_pdf(html: &str, output: &Path) -> Result<()> {
    let browser = chromium().context(
        "a PDF is printed by headless Chromium, which is not installed here \
         (apt-get install chromium, or set TALLY_CHROMIUM to its path); \
         --format html writes the same report",
    )?;
    let work = tempfile::Builder::new()
        .prefix("tally-report-pdf-")
        .tempdir()
        .context("cannot create a temporary directory for the PDF")?;
    let page = work.path().join("report.html");
    std::fs::write(&page, html).with_context(|| format!("cannot write {}", page.display()))?;
    let pdf = work.path().join("report.pdf");
    let mut child = Command::new(&browser)
        .arg("--headless")
        .arg("--no-sandbox")
        .arg("--disable-gpu")
        .arg("--no-pdf-header-footer")
        .arg(format!(
            "--user-data-dir={}",
            work.path().join("profile").display()
        ))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", browser.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().context("cannot wait for Chromium")? {
            break s;
        }
        if started.elapsed() > PRINT_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("Chromium did not print the report within {PRINT_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let bytes = std::fs::read(&pdf).unwrap_or_default();
    if !status.success() || !bytes.starts_with(b"%PDF-") {
        bail!(
            "Chromium ({}) did not print the report ({status}); --format html writes the same report",
            browser.display()
        );
    }
    std::fs::write(output, bytes).with_context(|| format!("cannot write {}", output.display()))
}
