//! The HTML page of a run: one self-contained file (styles, script and data inline, nothing
//! loaded from another host) made from the report and, when there is one, the summary JSON.
//!
//! With the summary it draws each lane's requests per second against its limit, 429s and
//! retries marked (from the lanes' series, [`super::series`]); without it, what the report
//! alone holds: rows finished over time by target. Both ways: counts by status, latency over
//! time (ok and failed) with its percentiles, the failed rows in a table with a filter, and
//! for a dry run the outline per target. Charts are SVG drawn here, so the page needs no
//! script to show them; the script only filters the failures table.
//!
//! Plan data is untrusted: every value goes through [`escape`] in the markup and
//! [`script_json`] in the inline data. The page stays small for any report: series are a
//! bounded number of buckets, at most [`LISTED_FAILURES`] failed rows are listed (with the
//! count of the rest), at most [`CHARTED_LANES`] lanes charted and [`LISTED_LANES`] tabled.
//! The report and summary hold no secret, and the page is made from nothing else.
//!
//! Here: the page's frame and its inline data. What it is made from is read in `data`; the
//! time charts (lanes, timeline, latency) are in `charts`, drawn on `svg`'s chart; the
//! overview, the failed rows and a dry run's outline in `tables`.

mod charts;
mod data;
mod svg;
mod tables;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use charts::{lanes, latency, timeline};
pub(crate) use data::{digest_report, read_summary, Failure, PageSummary, RowDigest};
use tables::{failures, outline, overview};

use crate::outputs::report::Status;

/// Failed or cancelled rows listed in the table, at most.
pub(crate) const LISTED_FAILURES: usize = 1000;
/// Lanes drawn one chart each, at most (those with 429s or failures first, then the busiest).
pub(crate) const CHARTED_LANES: usize = 12;
/// Lanes in the lanes table, at most.
pub(crate) const LISTED_LANES: usize = 200;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// JSON for a `<script type="application/json">` element: `<`, `>` and `&` as `\u` escapes,
/// so no value can close the element or open a comment, and U+2028/U+2029 too, which some
/// parsers take as line ends. All of them can only occur inside JSON strings, where the
/// escapes mean the same characters.
pub(crate) fn script_json(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".to_string());
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The page of a run that just ended: its summary and the report it wrote. A report that
/// cannot be read back still gives a page, from the summary, saying why the rows are missing.
pub(crate) fn page_of_run(summary: &crate::outputs::summary::Summary, report: &Path) -> String {
    let page: PageSummary = serde_json::to_value(summary)
        .and_then(serde_json::from_value)
        .unwrap_or_default();
    match digest_report(report) {
        Ok(rows) => render(Some(&page), &rows, None),
        Err(e) => render(Some(&page), &RowDigest::default(), Some(&e)),
    }
}

/// Writes `html` to `path`.
pub(crate) fn write_page(path: &Path, html: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(html.as_bytes())?;
    file.flush()
}

const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// The whole page.
pub(crate) fn render(
    summary: Option<&PageSummary>,
    rows: &RowDigest,
    note: Option<&str>,
) -> String {
    let dry = summary.map_or_else(|| rows.looks_dry(), |s| s.dry_run);
    let title = match summary {
        Some(s) if !s.plan.is_empty() => format!("reactbatch run: {}", s.plan),
        _ => "reactbatch run".to_string(),
    };
    let mut h = String::with_capacity(64 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    // Nothing may be fetched: no other host, and no inline script but ours.
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n",
    );
    let _ = writeln!(h, "<title>{}</title>", escape(&title));
    let _ = writeln!(h, "<style>\n{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(
        h,
        "<header><h1>{}</h1><span class=\"badge {}\">{}</span></header>",
        escape(&title),
        if dry { "dry" } else { "live" },
        if dry { "dry run" } else { "live run" }
    );
    if let Some(note) = note {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", escape(note));
    }
    overview(&mut h, summary, rows, dry);
    if dry {
        outline(&mut h, summary, rows);
    } else {
        let charted = summary.is_some_and(|s| s.lanes.iter().any(|l| l.series.is_some()));
        if let Some(s) = summary.filter(|_| charted) {
            lanes(&mut h, s);
        } else {
            timeline(&mut h, rows);
        }
        latency(&mut h, rows);
    }
    failures(&mut h, rows);
    let data = PageData {
        dry_run: dry,
        rows: summary.map_or(rows.rows, |s| s.rows.max(rows.rows)),
        counts: counts(summary, rows),
        failures_total: rows.failures_total,
        failures: &rows.failures,
    };
    let _ = writeln!(
        h,
        "<script type=\"application/json\" id=\"reactbatch-data\">{}</script>",
        script_json(&data)
    );
    let _ = writeln!(h, "<script>\n{SCRIPT}</script>\n</body>\n</html>");
    h
}

/// The page's figures as data, for tools that read the page.
#[derive(Serialize)]
struct PageData<'a> {
    dry_run: bool,
    rows: u64,
    counts: BTreeMap<&'static str, u64>,
    failures_total: u64,
    failures: &'a [Failure],
}

/// Counts by status: the summary's when there is one (it counts the run's own rows), else
/// the report's.
fn counts(summary: Option<&PageSummary>, rows: &RowDigest) -> BTreeMap<&'static str, u64> {
    Status::ALL
        .iter()
        .filter_map(|st| {
            let n = match summary {
                Some(s) if !s.counts.is_empty() => s.counts.get(st.as_str()).copied().unwrap_or(0),
                _ => rows.count(*st),
            };
            (n > 0).then_some((st.as_str(), n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::charts::rate_per_second;
    use super::data::PageLane;
    use super::svg::nice_step;
    use super::*;
    use crate::outputs::report::RowResult;
    use crate::outputs::series::Series;

    const HOSTILE_ID: &str = "<script>alert(1)</script>";

    fn row(n: u64, status: Status, message_id: &str, finished_ms: i64, dur: u64) -> RowResult {
        let at =
            chrono::DateTime::from_timestamp_millis(1_765_000_000_000 + finished_ms).expect("time");
        RowResult {
            row: n,
            source: format!("p.yaml:{}", n + 5),
            target: if n.is_multiple_of(2) {
                "kommo-main"
            } else {
                "ogmma-br"
            }
            .into(),
            provider: "kommo".into(),
            action: "react".into(),
            message_id: message_id.into(),
            emoji: "👍".into(),
            status,
            http_status: (status != Status::Planned).then_some(if status == Status::Ok {
                200
            } else {
                404
            }),
            code: if status == Status::Failed {
                "not_found".into()
            } else {
                String::new()
            },
            message: String::new(),
            attempts: u32::from(status != Status::Planned),
            duration_ms: dur,
            finished_at: crate::outputs::report::timestamp(at),
            key: format!("k{n}"),
            scope_id: String::new(),
            channel_id: String::new(),
        }
    }

    #[test]
    fn markup_and_script_data_are_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        let json = script_json(&serde_json::json!({"id": "</script><!-- & \u{2028}\u{2029}"}));
        assert_eq!(
            json,
            r#"{"id":"\u003c/script\u003e\u003c!-- \u0026 \u2028\u2029"}"#
        );
        // The escapes still read back as the same text.
        let back: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(back["id"], "</script><!-- & \u{2028}\u{2029}");
    }

    #[test]
    fn a_hostile_message_id_is_text_in_the_page_and_its_data() {
        let mut rows = RowDigest::default();
        rows.add(row(1, Status::Ok, "m1", 0, 12));
        rows.add(row(2, Status::Failed, "<script>alert(1)</script>", 500, 30));
        let page = render(None, &rows, None);
        assert!(!page.contains("<script>alert(1)"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains(r#"\u003cscript\u003ealert(1)\u003c/script\u003e"#));
        // Our own two script elements, no other.
        assert_eq!(page.matches("<script").count(), 2);
        assert_eq!(page.matches("</script>").count(), 2);
    }

    #[test]
    fn extreme_times_and_numbers_make_a_page_without_panicking() {
        let mut rows = RowDigest::default();
        let mut far = row(1, Status::Ok, "m", 0, u64::MAX);
        far.finished_at = "9999-12-31T23:59:59.999Z".into();
        rows.add(far);
        let mut early = row(2, Status::Failed, "m", 0, 0);
        early.finished_at = "0001-01-01T00:00:00.000Z".into();
        rows.add(early);
        rows.add(row(3, Status::Ok, "m", 0, 5));
        let summary = PageSummary {
            lanes: vec![PageLane {
                rate: "1e400/s".into(),
                series: Some(Series {
                    bucket_s: u64::MAX,
                    t: vec![u64::MAX],
                    sends: vec![u32::MAX],
                    ok: vec![0],
                    rate_limited: vec![u32::MAX],
                    retries: vec![1],
                    latency_mean_ms: vec![1e300],
                    latency_max_ms: vec![f64::MAX],
                }),
                ..PageLane::default()
            }],
            ..PageSummary::default()
        };
        for page in [
            render(Some(&summary), &rows, None),
            render(None, &rows, None),
        ] {
            assert!(page.contains("<svg class=\"chart\""));
            assert!(!page.contains("NaN"));
        }
    }

    #[test]
    fn axes_step_at_round_values() {
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(3.4), 5.0);
        assert_eq!(nice_step(8.625), 10.0);
        assert_eq!(nice_step(20.0), 20.0);
        assert_eq!(nice_step(0.031), 0.05);
        assert_eq!(nice_step(f64::INFINITY), 1.0);
    }

    #[test]
    fn rates_are_read_as_the_summary_writes_them() {
        assert_eq!(rate_per_second("7/s"), Some(7.0));
        assert_eq!(rate_per_second("60/min"), Some(1.0));
        assert_eq!(rate_per_second("7/3s"), Some(7.0 / 3.0));
        assert_eq!(rate_per_second("5/1500ms"), Some(5.0 / 1.5));
        assert_eq!(rate_per_second("3600/h"), Some(1.0));
        assert_eq!(rate_per_second("unlimited"), None);
        assert_eq!(rate_per_second("x/s"), None);
        assert_eq!(rate_per_second("5/0s"), None);
    }

    #[test]
    fn a_dry_report_gives_the_outline_per_target_and_no_latency() {
        let mut rows = RowDigest::default();
        for n in 1..=5 {
            rows.add(row(n, Status::Planned, "m", 0, 0));
        }
        let page = render(None, &rows, None);
        assert!(page.contains("dry run"));
        assert!(page.contains("<section id=\"outline\">"));
        assert!(page.contains("<tr><td>ogmma-br</td><td></td><td></td><td class=\"num\">3</td>"));
        assert!(!page.contains("id=\"latency\""));
    }

    #[test]
    fn counts_show_percentages_and_failures_are_capped_with_the_rest_counted() {
        let mut rows = RowDigest::default();
        for n in 1..=(LISTED_FAILURES as u64 + 500) {
            rows.add(row(n, Status::Failed, "m", n as i64, 5));
        }
        for n in 0..500 {
            rows.add(row(n + 5000, Status::Ok, "m", n as i64, 5));
        }
        let page = render(None, &rows, None);
        assert!(page.contains("<td class=\"num\">1500</td><td class=\"num\">75.0%</td>"));
        assert!(page.contains("<td class=\"num\">500</td><td class=\"num\">25.0%</td>"));
        assert_eq!(page.matches("<td>not_found</td>").count(), LISTED_FAILURES);
        assert!(page.contains("The first 1000 are listed; 500 more are in the report."));
    }

    #[test]
    fn a_million_row_report_of_thousands_of_lanes_gives_a_page_under_5_mib() {
        // A worst case for size: a fifth of the rows failed with long hostile messages (every
        // character escaped), spread over three hours; a summary of 3000 lanes, each with a
        // full series.
        let mut rows = RowDigest::default();
        let long = "<b>&\"'".repeat(200);
        let start = chrono::DateTime::from_timestamp_millis(1_765_000_000_000).expect("time");
        for n in 0..1_000_000u64 {
            let failed = n.is_multiple_of(5);
            let at = start + chrono::Duration::milliseconds((n * 11) as i64);
            rows.add(RowResult {
                row: n + 1,
                source: format!("rows.csv:{}", n + 2),
                target: format!("t{}", n % 3000),
                provider: "kommo".into(),
                action: "react".into(),
                message_id: HOSTILE_ID.into(),
                emoji: "👍".into(),
                status: if failed { Status::Failed } else { Status::Ok },
                http_status: Some(if failed { 404 } else { 200 }),
                code: if failed {
                    "not_found".into()
                } else {
                    String::new()
                },
                message: if failed { long.clone() } else { String::new() },
                attempts: 1,
                duration_ms: 5 + n % 300,
                finished_at: crate::outputs::report::timestamp(at),
                key: String::new(),
                scope_id: String::new(),
                channel_id: String::new(),
            });
        }
        let full = Series {
            bucket_s: 32,
            t: (0..600).map(|i| i * 32).collect(),
            sends: vec![100; 600],
            ok: vec![90; 600],
            rate_limited: vec![3; 600],
            retries: vec![4; 600],
            latency_mean_ms: vec![12.345; 600],
            latency_max_ms: vec![123.456; 600],
        };
        let summary = PageSummary {
            plan: "plan.yaml".into(),
            rows: 1_000_000,
            elapsed_ms: 11_000_000,
            lanes: (0..3000)
                .map(|i| PageLane {
                    name: format!("{HOSTILE_ID}{i}"),
                    provider: "kommo".into(),
                    rate: "7/s".into(),
                    requests: 60_000,
                    achieved_rate: Some(6.9),
                    rate_limited: 1800,
                    failed: 60,
                    series: Some(full.clone()),
                })
                .collect(),
            ..PageSummary::default()
        };
        for page in [
            render(Some(&summary), &rows, None),
            render(None, &rows, None),
        ] {
            assert!(page.len() < 5 * 1024 * 1024, "{} bytes", page.len());
            assert!(page.contains("The first 1000 are listed; 199000 more are in the report."));
            assert!(!page.contains(HOSTILE_ID));
        }
    }
}
