//! The sections that are mostly tables: the overview with its counts by status, the failed
//! rows, and a dry run's outline per target.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::data::{PageSummary, RowDigest, TopEmoji};
use super::{counts, escape};
use crate::outputs::report::Status;

/// The colours of the statuses, in the order of [`Status::ALL`].
const STATUS_COLOURS: [&str; 6] = [
    "#2e9d5b", "#d1453b", "#8a8f98", "#c49a1b", "#3b7dd8", "#8e5cc2",
];

fn duration_text(ms: u64) -> String {
    let secs = ms as f64 / 1000.0;
    if secs < 60.0 {
        format!("{secs:.2} s")
    } else if secs < 3600.0 {
        format!("{}m {:02}s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{}h {:02}m", ms / 3_600_000, ms / 60_000 % 60)
    }
}

pub(super) fn overview(h: &mut String, summary: Option<&PageSummary>, rows: &RowDigest, dry: bool) {
    let counts = counts(summary, rows);
    let total: u64 = counts.values().sum();
    h.push_str("<section id=\"overview\"><h2>Overview</h2>\n<dl class=\"facts\">");
    let mut fact = |k: &str, v: String| {
        let _ = write!(h, "<div><dt>{}</dt><dd>{v}</dd></div>", escape(k));
    };
    fact("rows", total.to_string());
    fact("mode", if dry { "dry run" } else { "live" }.to_string());
    let elapsed = match summary {
        Some(s) => Some(s.elapsed_ms),
        None => rows
            .first_ms
            .zip(rows.last_ms)
            .map(|(f, l)| l.saturating_sub(f).max(0) as u64),
    };
    if let Some(ms) = elapsed {
        fact("duration", escape(&duration_text(ms)));
    }
    if let Some(s) = summary {
        if !dry {
            fact(
                "requests",
                format!("{} ({} retries)", s.attempts, s.retries),
            );
        }
        if let (true, Some(ms)) = (dry, s.estimated_ms) {
            fact(
                "live run would take",
                escape(&format!("~{}", duration_text(ms))),
            );
        }
        if let Some(code) = s.exit_code {
            fact("exit code", code.to_string());
        }
        if s.interrupted {
            fact("interrupted", "yes".to_string());
        }
        if !s.report.is_empty() {
            fact("report", format!("<code>{}</code>", escape(&s.report)));
        }
        fact(
            "plan digest",
            match &s.digest {
                Some(d) => format!("<code>{}</code>", escape(d)),
                None => "—".to_string(),
            },
        );
    } else {
        fact(
            "plan digest",
            "— (give <code>--summary-json</code> for it)".to_string(),
        );
    }
    h.push_str("</dl>\n");
    status_counts(h, &counts, total);
    h.push_str("</section>\n");
}

/// The rows by status: one bar of them, then the table with each one's share.
fn status_counts(h: &mut String, counts: &BTreeMap<&'static str, u64>, total: u64) {
    let _ = write!(
        h,
        "<svg class=\"statusbar\" viewBox=\"0 0 1000 24\" width=\"100%\" height=\"24\" \
         preserveAspectRatio=\"none\" role=\"img\" aria-label=\"rows by status\">"
    );
    let mut x = 0.0;
    for (i, st) in Status::ALL.iter().enumerate() {
        let n = counts.get(st.as_str()).copied().unwrap_or(0);
        if n == 0 || total == 0 {
            continue;
        }
        let w = n as f64 / total as f64 * 1000.0;
        let _ = write!(
            h,
            "<rect x=\"{x:.2}\" y=\"0\" width=\"{w:.2}\" height=\"24\" fill=\"{}\"><title>{st}: {n}</title></rect>",
            STATUS_COLOURS[i]
        );
        x += w;
    }
    h.push_str("</svg>\n<table class=\"counts\"><thead><tr><th>status</th><th>rows</th><th>share</th></tr></thead><tbody>\n");
    for (i, st) in Status::ALL.iter().enumerate() {
        let Some(&n) = counts.get(st.as_str()) else {
            continue;
        };
        let pct = if total == 0 {
            0.0
        } else {
            n as f64 * 100.0 / total as f64
        };
        let _ = writeln!(
            h,
            "<tr data-status=\"{st}\"><td><span class=\"swatch\" style=\"background:{}\"></span>{st}</td><td class=\"num\">{n}</td><td class=\"num\">{pct:.1}%</td></tr>",
            STATUS_COLOURS[i]
        );
    }
    h.push_str("</tbody></table>\n");
}

pub(super) fn failures(h: &mut String, rows: &RowDigest) {
    h.push_str("<section id=\"failures\"><h2>Failed and cancelled rows</h2>\n");
    if rows.failures_total == 0 {
        h.push_str("<p class=\"more\">None.</p></section>\n");
        return;
    }
    h.push_str("<p><input id=\"filter\" type=\"search\" placeholder=\"filter: target, message id, code, text…\" aria-label=\"filter the failed rows\"> <span id=\"shown\"></span></p>\n");
    h.push_str("<table id=\"failed-rows\"><thead><tr><th>row</th><th>source</th><th>target</th><th>message id</th><th>status</th><th>HTTP</th><th>code</th><th>message</th></tr></thead><tbody>\n");
    for f in &rows.failures {
        let _ = writeln!(
            h,
            "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            f.row,
            escape(&f.source),
            escape(&f.target),
            escape(&f.message_id),
            f.status,
            f.http_status.map(|s| s.to_string()).unwrap_or_default(),
            escape(&f.code),
            escape(&f.message)
        );
    }
    h.push_str("</tbody></table>\n");
    let rest = rows.failures_total - rows.failures.len() as u64;
    if rest > 0 {
        let _ = writeln!(
            h,
            "<p class=\"more\" id=\"failures-more\">The first {} are listed; {rest} more are in the report.</p>",
            rows.failures.len()
        );
    }
    h.push_str("</section>\n");
}

pub(super) fn outline(h: &mut String, summary: Option<&PageSummary>, rows: &RowDigest) {
    h.push_str("<section id=\"outline\"><h2>What the plan does, per target</h2>\n");
    h.push_str("<table class=\"outline\"><thead><tr><th>target</th><th>provider</th><th>rate</th><th>reacts</th><th>unreacts</th><th>replacing</th><th>deferred</th><th>top emoji</th></tr></thead><tbody>\n");
    let top = |emoji: &[TopEmoji]| {
        emoji
            .iter()
            .map(|e| format!("{} ×{}", escape(&e.emoji), e.rows))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match summary.filter(|s| !s.targets.is_empty()) {
        Some(s) => {
            for t in &s.targets {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                    escape(&t.name),
                    escape(&t.provider),
                    escape(&t.rate),
                    t.reacts,
                    t.unreacts,
                    t.replacing.map_or_else(|| "—".to_string(), |r| r.to_string()),
                    t.deferred,
                    top(&t.top_emoji)
                );
            }
        }
        None => {
            for (name, o) in rows.targets.iter().zip(&rows.outline) {
                let mut emoji: Vec<TopEmoji> = o
                    .emoji
                    .iter()
                    .map(|(e, &n)| TopEmoji {
                        emoji: e.clone(),
                        rows: n,
                    })
                    .collect();
                emoji.sort_by(|a, b| b.rows.cmp(&a.rows).then_with(|| a.emoji.cmp(&b.emoji)));
                emoji.truncate(5);
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td></td><td></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">—</td><td class=\"num\">—</td><td>{}</td></tr>",
                    escape(name),
                    o.reacts,
                    o.unreacts,
                    top(&emoji)
                );
            }
        }
    }
    h.push_str("</tbody></table>\n</section>\n");
}
