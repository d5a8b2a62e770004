//! `reactbatch report REPORT [--summary-json FILE] --html OUT`: the HTML page of a run made
//! afterwards, from its report (CSV or JSON Lines) and, when given, its summary JSON — the
//! same page `run --report-html` writes (see [`crate::outputs::html`]).
//!
//! A report or summary that cannot be read, or an OUT that is one of them, is exit 2 naming
//! the file (and line); a page that cannot be written is exit 74.

use std::path::Path;

use crate::cli::ReportArgs;
use crate::exit::Exit;
use crate::outputs::html;

pub(crate) fn run(args: &ReportArgs) -> Exit {
    match page(args) {
        Ok(page) => match html::write_page(&args.html, &page) {
            Ok(()) => Exit::Success,
            Err(e) => {
                eprintln!(
                    "reactbatch report: cannot write {}: {e}",
                    args.html.display()
                );
                Exit::OutputFailed
            }
        },
        Err(message) => {
            eprintln!("reactbatch report: {message}");
            Exit::Invalid
        }
    }
}

/// Whether `a` and `b` name the same file (only when both exist).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn page(args: &ReportArgs) -> Result<String, String> {
    let inputs = std::iter::once(&args.report).chain(&args.summary_json);
    for input in inputs {
        if same_file(input, &args.html) {
            return Err(format!(
                "--html {} is the file it would be made from",
                args.html.display()
            ));
        }
    }
    let summary = match &args.summary_json {
        Some(path) => Some(html::read_summary(path)?),
        None => None,
    };
    let rows = html::digest_report(&args.report)?;
    Ok(html::render(summary.as_ref(), &rows, None))
}
