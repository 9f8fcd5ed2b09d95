//! The report as Markdown, rendered by the `report.md` template.
//!
//! Invariant: every value the template shows goes through one escaper
//! ([`Markdown`], set for `.md` templates in `askama.toml`), so that a
//! hostile value (a forged subject with newlines, pipes or markup) cannot
//! fake a heading, a table cell or a link.

use std::fmt::{self, Write};

use askama::Template;

use super::model::Report;

/// The escaper of the Markdown templates: control characters (a forged
/// `sub` may carry newlines to fake a heading) become spaces, `<` and `>`
/// become `&lt;` and `&gt;`, and `|`, `*`, `_`, `` ` ``, `[`, `]`, `#` are
/// escaped with a backslash.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Markdown;

impl askama::filters::Escaper for Markdown {
    fn write_escaped_str<W: Write>(&self, mut out: W, text: &str) -> fmt::Result {
        for c in text.chars() {
            match c {
                c if c.is_control() => out.write_char(' ')?,
                '<' => out.write_str("&lt;")?,
                '>' => out.write_str("&gt;")?,
                '|' | '*' | '_' | '`' | '[' | ']' | '#' => {
                    out.write_char('\\')?;
                    out.write_char(c)?;
                }
                c => out.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[derive(Template)]
#[template(path = "report.md")]
struct Page<'a> {
    r: &'a Report,
}

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    Page { r }
        .render()
        .unwrap_or_else(|e| format!("The report could not be rendered: {e}\n"))
}
