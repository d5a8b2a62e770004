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

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::series::Series;
use crate::outputs::report::{RowResult, Status};

/// Failed or cancelled rows listed in the table, at most.
pub(crate) const LISTED_FAILURES: usize = 1000;
/// Lanes drawn one chart each, at most (those with 429s or failures first, then the busiest).
pub(crate) const CHARTED_LANES: usize = 12;
/// Lanes in the lanes table, at most.
pub(crate) const LISTED_LANES: usize = 200;
/// Targets drawn in the timeline without a summary, at most; the rest are one line, "other".
const TIMELINE_TARGETS: usize = 8;
/// Buckets of the charts made from report rows.
const ROW_BUCKETS: i64 = 300;
/// A listed message is cut to this many characters (a provider may answer with a page).
const MESSAGE_CHARS: usize = 200;

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

/// What the page takes from the summary JSON (a run's own, or a file given to `report`).
/// Every field has a default: a summary from an older version still makes a page.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PageSummary {
    pub plan: String,
    pub report: String,
    pub dry_run: bool,
    pub rows: u64,
    pub counts: BTreeMap<String, u64>,
    pub attempts: u64,
    pub retries: u64,
    pub elapsed_ms: u64,
    /// How long the live run takes at the lanes' pace (shown for a dry run).
    pub estimated_ms: Option<u64>,
    pub digest: Option<String>,
    pub interrupted: bool,
    pub exit_code: Option<u8>,
    pub targets: Vec<PageTarget>,
    pub lanes: Vec<PageLane>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PageTarget {
    pub name: String,
    pub provider: String,
    pub rate: String,
    pub reacts: u64,
    pub unreacts: u64,
    pub replacing: Option<u64>,
    pub deferred: u64,
    pub top_emoji: Vec<TopEmoji>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TopEmoji {
    pub emoji: String,
    pub rows: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PageLane {
    pub name: String,
    pub provider: String,
    pub rate: String,
    pub requests: u64,
    pub achieved_rate: Option<f64>,
    pub rate_limited: u64,
    pub failed: u64,
    pub series: Option<Series>,
}

/// A failed or cancelled row as the table lists it.
#[derive(Debug, Serialize)]
pub(crate) struct Failure {
    pub row: u64,
    pub source: String,
    pub target: String,
    pub message_id: String,
    pub status: &'static str,
    pub http_status: Option<u16>,
    pub code: String,
    pub message: String,
}

/// One row that was sent, for the latency chart and the timeline.
struct Sent {
    finished_ms: i64,
    duration_ms: u32,
    target: u32,
    ok: bool,
}

/// What the page needs from the report's rows, gathered in one pass: counts, the sent rows
/// (a few bytes each), the first failures, and per target the outline of a dry run.
pub(crate) struct RowDigest {
    counts: BTreeMap<Status, u64>,
    rows: u64,
    sent: Vec<Sent>,
    targets: Vec<String>,
    target_index: HashMap<String, u32>,
    outline: Vec<Outline>,
    failures: Vec<Failure>,
    failures_total: u64,
    ok_latency: Histogram<u64>,
    failed_latency: Histogram<u64>,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

#[derive(Default)]
struct Outline {
    reacts: u64,
    unreacts: u64,
    emoji: HashMap<String, u64>,
}

fn histogram() -> Histogram<u64> {
    // Milliseconds up to a day, three significant digits; saturating, never failing.
    Histogram::new_with_bounds(1, 86_400_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

impl Default for RowDigest {
    fn default() -> Self {
        RowDigest {
            counts: BTreeMap::new(),
            rows: 0,
            sent: Vec::new(),
            targets: Vec::new(),
            target_index: HashMap::new(),
            outline: Vec::new(),
            failures: Vec::new(),
            failures_total: 0,
            ok_latency: histogram(),
            failed_latency: histogram(),
            first_ms: None,
            last_ms: None,
        }
    }
}

/// Codes of rows this run did not send: copied from an earlier report.
const NOT_SENT_CODES: [&str; 3] = ["done_earlier", "failed_earlier", "not_in_plan"];

impl RowDigest {
    pub(crate) fn add(&mut self, row: RowResult) {
        self.rows += 1;
        *self.counts.entry(row.status).or_default() += 1;
        let target = match self.target_index.get(&row.target) {
            Some(&i) => i,
            None => {
                let i = self.targets.len() as u32;
                self.target_index.insert(row.target.clone(), i);
                self.targets.push(row.target.clone());
                self.outline.push(Outline::default());
                i
            }
        };
        if row.status == Status::Planned {
            if let Some(o) = self.outline.get_mut(target as usize) {
                if row.action == "unreact" {
                    o.unreacts += 1;
                } else {
                    o.reacts += 1;
                    *o.emoji.entry(row.emoji.clone()).or_default() += 1;
                }
            }
        }
        let finished = chrono::DateTime::parse_from_rfc3339(&row.finished_at)
            .ok()
            .map(|t| t.timestamp_millis());
        let sent = matches!(row.status, Status::Ok | Status::Failed)
            && row.attempts > 0
            && !NOT_SENT_CODES.contains(&row.code.as_str());
        if let (true, Some(finished_ms)) = (sent, finished) {
            let start =
                finished_ms.saturating_sub(i64::try_from(row.duration_ms).unwrap_or(i64::MAX));
            self.first_ms = Some(self.first_ms.map_or(start, |f| f.min(start)));
            self.last_ms = Some(self.last_ms.map_or(finished_ms, |l| l.max(finished_ms)));
            let ok = row.status == Status::Ok;
            let hist = if ok {
                &mut self.ok_latency
            } else {
                &mut self.failed_latency
            };
            hist.saturating_record(row.duration_ms.max(1));
            self.sent.push(Sent {
                finished_ms,
                duration_ms: u32::try_from(row.duration_ms).unwrap_or(u32::MAX),
                target,
                ok,
            });
        }
        if matches!(row.status, Status::Failed | Status::Cancelled) {
            self.failures_total += 1;
            if self.failures.len() < LISTED_FAILURES {
                let mut message: String = row.message.chars().take(MESSAGE_CHARS).collect();
                if message.len() < row.message.len() {
                    message.push('…');
                }
                self.failures.push(Failure {
                    row: row.row,
                    source: row.source,
                    target: row.target,
                    message_id: row.message_id,
                    status: row.status.as_str(),
                    http_status: row.http_status,
                    code: row.code,
                    message,
                });
            }
        }
    }

    fn count(&self, status: Status) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }

    /// A report of planned rows only is a dry run's.
    fn looks_dry(&self) -> bool {
        self.count(Status::Planned) > 0 && self.count(Status::Ok) + self.count(Status::Failed) == 0
    }
}

/// Reads a report (CSV or JSON Lines) into what the page needs.
pub(crate) fn digest_report(path: &Path) -> Result<RowDigest, String> {
    let mut digest = RowDigest::default();
    crate::outputs::report::for_each_report_row(path, |row| digest.add(row))?;
    Ok(digest)
}

/// Reads a summary JSON file; an error names the file, line and column.
pub(crate) fn read_summary(path: &Path) -> Result<PageSummary, String> {
    let text =
        std::fs::read(path).map_err(|e| format!("cannot read summary {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not a summary JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })
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

/// The colours of the statuses, in the order of [`Status::ALL`].
const STATUS_COLOURS: [&str; 6] = [
    "#2e9d5b", "#d1453b", "#8a8f98", "#c49a1b", "#3b7dd8", "#8e5cc2",
];
const TARGET_COLOURS: [&str; 9] = [
    "#3b7dd8", "#2e9d5b", "#c49a1b", "#8e5cc2", "#d1453b", "#1b9aa8", "#c2577f", "#6b7a2e",
    "#8a8f98",
];

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

fn overview(h: &mut String, summary: Option<&PageSummary>, rows: &RowDigest, dry: bool) {
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
    // One bar of the statuses, then the table.
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
    h.push_str("</tbody></table>\n</section>\n");
}

/// An SVG chart: data coordinates mapped into a plot area with axes and a few ticks.
struct Chart {
    width: f64,
    height: f64,
    x_max: f64,
    y_max: f64,
    body: String,
    /// Bars and marks each with its own element and tooltip; when there are many, they are
    /// drawn as one path per class (in `paths`), without tooltips, to keep the page small.
    titled: bool,
    paths: BTreeMap<&'static str, String>,
}

/// Buckets beyond which a chart's bars and marks lose their tooltips (see [`Chart::titled`]).
const TITLED_BUCKETS: usize = 120;

const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 24.0;

impl Chart {
    fn new(x_max: f64, y_max: f64) -> Chart {
        Chart {
            width: 900.0,
            height: 200.0,
            x_max: x_max.max(1e-9),
            // Four gridlines at round values.
            y_max: nice_step(y_max / 4.0) * 4.0,
            body: String::new(),
            titled: true,
            paths: BTreeMap::new(),
        }
    }

    fn x(&self, v: f64) -> f64 {
        LEFT + v / self.x_max * (self.width - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        self.height - BOTTOM - v.min(self.y_max) / self.y_max * (self.height - TOP - BOTTOM)
    }

    /// A bar over `[x0, x1]` up to `v`.
    fn bar(&mut self, x0: f64, x1: f64, v: f64, class: &'static str, title: &str) {
        let (px0, px1) = (self.x(x0), self.x(x1));
        let (top, base) = (self.y(v), self.y(0.0));
        if !self.titled {
            let d = self.paths.entry(class).or_default();
            let _ = write!(
                d,
                "M{px0:.1},{base:.1}V{top:.1}H{:.1}V{base:.1}Z",
                px0 + (px1 - px0 - 0.5).max(0.6)
            );
            return;
        }
        let _ = write!(
            self.body,
            "<rect class=\"{class}\" x=\"{px0:.1}\" y=\"{top:.1}\" width=\"{:.2}\" height=\"{:.1}\"><title>{}</title></rect>",
            (px1 - px0 - 0.5).max(0.6),
            (base - top).max(0.0),
            escape(title)
        );
    }

    /// A line through the points, broken where a point is missing.
    fn line(&mut self, points: &[(f64, Option<f64>)], class: &str) {
        let mut d = String::new();
        let mut pen_down = false;
        for &(x, y) in points {
            match y {
                Some(y) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        self.x(x),
                        self.y(y)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !d.is_empty() {
            let _ = write!(
                self.body,
                "<path class=\"{class}\" d=\"{}\"/>",
                d.trim_end()
            );
        }
    }

    /// A horizontal line at `v`, labelled.
    fn level(&mut self, v: f64, class: &str, label: &str) {
        let y = self.y(v);
        let _ = write!(
            self.body,
            "<path class=\"{class}\" d=\"M{LEFT:.1},{y:.1} H{:.1}\"/><text class=\"levellabel\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            self.width - RIGHT,
            self.width - RIGHT - 2.0,
            (y - 3.0).max(TOP + 8.0),
            escape(label)
        );
    }

    /// A marker above the bar at `x`: 429s (a red triangle) or retries (an orange dot).
    fn mark(&mut self, x: f64, class: &'static str, title: &str) {
        let px = self.x(x);
        if !self.titled {
            let d = self.paths.entry(class).or_default();
            let _ = if class == "limited" {
                write!(d, "M{:.1},{:.1}l4,-7l4,7z", px - 4.0, TOP + 7.0)
            } else {
                write!(d, "M{:.1},{:.1}h6v6h-6z", px - 3.0, TOP + 11.0)
            };
            return;
        }
        let shape = if class == "limited" {
            format!(
                "<path class=\"limited\" d=\"M{:.1},{:.1} l4,-7 l4,7 z\">",
                px - 4.0,
                TOP + 7.0
            )
        } else {
            format!(
                "<circle class=\"{class}\" cx=\"{px:.1}\" cy=\"{:.1}\" r=\"3\">",
                TOP + 14.0
            )
        };
        let tag = if class == "limited" { "path" } else { "circle" };
        let _ = write!(self.body, "{shape}<title>{}</title></{tag}>", escape(title));
    }

    fn finish(self, label: &str, x_unit: &str, y_unit: &str) -> String {
        let mut s = format!(
            "<svg class=\"chart\" viewBox=\"0 0 {w} {hgt}\" width=\"100%\" role=\"img\" aria-label=\"{}\">",
            escape(label),
            w = self.width,
            hgt = self.height
        );
        let base = self.y(0.0);
        for i in 0..=4 {
            let v = self.y_max * f64::from(i) / 4.0;
            let y = self.y(v);
            let _ = write!(
                s,
                "<path class=\"grid\" d=\"M{LEFT},{y:.1} H{:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                self.width - RIGHT,
                LEFT - 4.0,
                y + 4.0,
                tick(v)
            );
        }
        let step = nice_step(self.x_max / 5.0);
        for i in 0..=((self.x_max / step).floor() as u32).min(10) {
            let v = step * f64::from(i);
            let _ = write!(
                s,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}{x_unit}</text>",
                self.x(v),
                base + 16.0,
                tick(v)
            );
        }
        let _ = write!(
            s,
            "<text class=\"unit\" x=\"4\" y=\"{:.1}\">{}</text>",
            TOP - 8.0,
            escape(y_unit)
        );
        s.push_str(&self.body);
        for (class, d) in &self.paths {
            let _ = write!(s, "<path class=\"{class}\" d=\"{d}\"/>");
        }
        s.push_str("</svg>\n");
        s
    }
}

/// The smallest of 1, 2 or 5 times a power of ten that is at least `v` (1 for nothing).
fn nice_step(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&step| step >= v * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

fn tick(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Requests per second of a lane's configured pace (`7/s`, `60/min`, `7/3s`, `5/1500ms`);
/// `None` when unlimited or not understood.
fn rate_per_second(rate: &str) -> Option<f64> {
    let (count, per) = rate.trim().split_once('/')?;
    let count: f64 = count.trim().parse().ok()?;
    let per = per.trim();
    let (number, unit_s) = [("ms", 0.001), ("min", 60.0), ("s", 1.0), ("h", 3600.0)]
        .iter()
        .find_map(|(unit, secs)| per.strip_suffix(unit).map(|n| (n, *secs)))?;
    let number: f64 = if number.is_empty() {
        1.0
    } else {
        number.parse().ok()?
    };
    let secs = number * unit_s;
    (secs > 0.0 && count > 0.0).then(|| count / secs)
}

fn lanes(h: &mut String, s: &PageSummary) {
    let span = s
        .lanes
        .iter()
        .filter_map(|l| l.series.as_ref())
        .filter_map(|se| {
            let n = se.len();
            (n > 0).then(|| se.t[n - 1].saturating_add(se.bucket_s) as f64)
        })
        .fold(1.0, f64::max);
    // Lanes in trouble first, then the busiest.
    let mut order: Vec<&PageLane> = s.lanes.iter().collect();
    order.sort_by_key(|l| {
        (
            std::cmp::Reverse(l.rate_limited + l.failed > 0),
            std::cmp::Reverse(l.requests),
        )
    });
    h.push_str("<section id=\"lanes\"><h2>Lanes: requests per second</h2>\n");
    h.push_str(
        "<p class=\"legend\"><span class=\"swatch sends\"></span>requests/s \
         <span class=\"swatch limit\"></span>lane limit \
         <span class=\"limited-key\">▲</span>429 answers \
         <span class=\"retry-key\">●</span>retries</p>\n",
    );
    for lane in order.iter().take(CHARTED_LANES) {
        let Some(series) = lane.series.as_ref().filter(|se| !se.is_empty()) else {
            continue;
        };
        let width = series.bucket_s.max(1) as f64;
        let limit = rate_per_second(&lane.rate);
        let peak = (0..series.len())
            .map(|i| f64::from(series.sends[i]) / width)
            .fold(0.0, f64::max);
        let mut chart = Chart::new(span, peak.max(limit.unwrap_or(0.0)) * 1.15);
        chart.titled = series.len() <= TITLED_BUCKETS;
        for i in 0..series.len() {
            let t = series.t[i] as f64;
            let per_s = f64::from(series.sends[i]) / width;
            chart.bar(
                t,
                t + width,
                per_s,
                "sends",
                &format!(
                    "{}s: {} requests ({per_s:.2}/s), {} ok, {} answered 429, {} retries",
                    series.t[i],
                    series.sends[i],
                    series.ok[i],
                    series.rate_limited[i],
                    series.retries[i]
                ),
            );
        }
        if let Some(limit) = limit {
            chart.level(limit, "limit", &format!("limit {}", lane.rate));
        }
        for i in 0..series.len() {
            let mid = series.t[i] as f64 + width / 2.0;
            if series.rate_limited[i] > 0 {
                chart.mark(
                    mid,
                    "limited",
                    &format!("{}s: {} answered 429", series.t[i], series.rate_limited[i]),
                );
            }
            if series.retries[i] > 0 {
                chart.mark(
                    mid,
                    "retry",
                    &format!("{}s: {} retries", series.t[i], series.retries[i]),
                );
            }
        }
        let _ = writeln!(
            h,
            "<figure class=\"lane\"><figcaption><b>{}</b> ({}) · limit {} · {} requests{} · {} answered 429 · {} failed{}</figcaption>{}</figure>",
            escape(&lane.name),
            escape(&lane.provider),
            escape(&lane.rate),
            lane.requests,
            lane.achieved_rate
                .map(|r| format!(", achieved {r:.2}/s"))
                .unwrap_or_default(),
            lane.rate_limited,
            lane.failed,
            if series.bucket_s > 1 {
                format!(" · {} s buckets", series.bucket_s)
            } else {
                String::new()
            },
            chart.finish(&format!("requests per second of lane {}", lane.name), "s", "req/s")
        );
    }
    let charted = order
        .iter()
        .take(CHARTED_LANES)
        .filter(|l| l.series.is_some())
        .count();
    if s.lanes.len() > charted {
        let _ = writeln!(
            h,
            "<p class=\"more\">{charted} of {} lanes charted (those with 429s or failures first, then the busiest).</p>",
            s.lanes.len()
        );
    }
    if s.lanes.len() > 1 {
        h.push_str("<table class=\"lanes\"><thead><tr><th>lane</th><th>provider</th><th>limit</th><th>requests</th><th>achieved/s</th><th>429s</th><th>retries</th><th>failed</th></tr></thead><tbody>\n");
        for l in order.iter().take(LISTED_LANES) {
            let retries: u64 = l
                .series
                .as_ref()
                .map_or(0, |se| se.retries.iter().map(|&r| u64::from(r)).sum());
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{retries}</td><td class=\"num\">{}</td></tr>",
                escape(&l.name),
                escape(&l.provider),
                escape(&l.rate),
                l.requests,
                l.achieved_rate.map(|r| format!("{r:.2}")).unwrap_or_else(|| "—".into()),
                l.rate_limited,
                l.failed
            );
        }
        h.push_str("</tbody></table>\n");
        if s.lanes.len() > LISTED_LANES {
            let _ = writeln!(
                h,
                "<p class=\"more\">and {} more lanes (every lane is in the summary JSON).</p>",
                s.lanes.len() - LISTED_LANES
            );
        }
    }
    h.push_str("</section>\n");
}

/// The sent rows' time span and a bucket width giving at most [`ROW_BUCKETS`] buckets.
fn row_buckets(rows: &RowDigest) -> Option<(i64, i64, usize)> {
    let (first, last) = (rows.first_ms?, rows.last_ms?);
    // A hand-made report may hold any times: no arithmetic here can overflow.
    let span = last.saturating_sub(first).max(1);
    let width = (span / ROW_BUCKETS + 1).max(1);
    let n = (span / width + 1) as usize;
    Some((first, width, n))
}

fn timeline(h: &mut String, rows: &RowDigest) {
    let Some((first, width, n)) = row_buckets(rows) else {
        return;
    };
    // The busiest targets get a line each; the others share one.
    let mut per_target = vec![0u64; rows.targets.len()];
    for s in &rows.sent {
        per_target[s.target as usize] += 1;
    }
    let mut order: Vec<usize> = (0..rows.targets.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(per_target[i]));
    let mut line_of = vec![TIMELINE_TARGETS; rows.targets.len()];
    for (line, &t) in order.iter().take(TIMELINE_TARGETS).enumerate() {
        line_of[t] = line;
    }
    let lines = order.len().min(TIMELINE_TARGETS) + usize::from(order.len() > TIMELINE_TARGETS);
    let mut counts = vec![vec![0u64; n]; TIMELINE_TARGETS + 1];
    for s in &rows.sent {
        let b = (s.finished_ms.saturating_sub(first) / width).clamp(0, n as i64 - 1) as usize;
        counts[line_of[s.target as usize]][b] += 1;
    }
    let per_s = 1000.0 / width as f64;
    let peak = counts
        .iter()
        .flatten()
        .map(|&c| c as f64 * per_s)
        .fold(0.0, f64::max);
    let mut chart = Chart::new(n as f64 * width as f64 / 1000.0, peak * 1.15);
    h.push_str("<section id=\"timeline\"><h2>Rows finished over time, by target</h2>\n<p class=\"legend\">");
    for line in 0..lines {
        let name = if line < TIMELINE_TARGETS {
            rows.targets[order[line]].as_str()
        } else {
            "other targets"
        };
        let points: Vec<(f64, Option<f64>)> = (0..n)
            .map(|b| {
                (
                    b as f64 * width as f64 / 1000.0 + width as f64 / 2000.0,
                    Some(counts[line][b] as f64 * per_s),
                )
            })
            .collect();
        chart.line(&points, &format!("series c{line}"));
        let _ = write!(
            h,
            "<span class=\"swatch\" style=\"background:{}\"></span>{} ",
            TARGET_COLOURS[line.min(TARGET_COLOURS.len() - 1)],
            escape(name)
        );
    }
    h.push_str("</p>\n");
    h.push_str(&chart.finish("rows finished per second by target", "s", "rows/s"));
    h.push_str("</section>\n");
}

fn percentile_row(h: &mut String, name: &str, hist: &Histogram<u64>) {
    if hist.is_empty() {
        return;
    }
    let _ = writeln!(
        h,
        "<tr><td>{name}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
        hist.len(),
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.9),
        hist.value_at_quantile(0.95),
        hist.value_at_quantile(0.99),
        hist.max()
    );
}

fn latency(h: &mut String, rows: &RowDigest) {
    h.push_str("<section id=\"latency\"><h2>Latency</h2>\n");
    let Some((first, width, n)) = row_buckets(rows) else {
        h.push_str("<p class=\"more\">No request was sent.</p></section>\n");
        return;
    };
    // Per bucket, by outcome: sum, count, max.
    let mut sums = vec![[(0u64, 0u64, 0u64); 2]; n];
    for s in &rows.sent {
        let b = (s.finished_ms.saturating_sub(first) / width).clamp(0, n as i64 - 1) as usize;
        let cell = &mut sums[b][usize::from(!s.ok)];
        cell.0 += u64::from(s.duration_ms);
        cell.1 += 1;
        cell.2 = cell.2.max(u64::from(s.duration_ms));
    }
    let peak = sums
        .iter()
        .flat_map(|b| b.iter().map(|c| c.2))
        .max()
        .unwrap_or(0) as f64;
    let mut chart = Chart::new(n as f64 * width as f64 / 1000.0, peak * 1.1);
    let x = |b: usize| b as f64 * width as f64 / 1000.0 + width as f64 / 2000.0;
    for (kind, class) in [(0usize, "ok"), (1, "failed")] {
        let mean: Vec<(f64, Option<f64>)> = (0..n)
            .map(|b| {
                let (sum, count, _) = sums[b][kind];
                (x(b), (count > 0).then(|| sum as f64 / count as f64))
            })
            .collect();
        let max: Vec<(f64, Option<f64>)> = (0..n)
            .map(|b| {
                let (_, count, max) = sums[b][kind];
                (x(b), (count > 0).then_some(max as f64))
            })
            .collect();
        chart.line(&max, &format!("lat-max {class}"));
        chart.line(&mean, &format!("lat {class}"));
        if kind == 1 {
            // Failures are often few: a dot each bucket, so a lone one shows.
            for (b, cell) in sums.iter().enumerate() {
                let (sum, count, _) = cell[1];
                if count > 0 {
                    let (cx, cy) = (chart.x(x(b)), chart.y(sum as f64 / count as f64));
                    let _ = write!(
                        chart.body,
                        "<circle class=\"failed-dot\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"2.5\"><title>{count} failed, mean {} ms</title></circle>",
                        sum / count
                    );
                }
            }
        }
    }
    h.push_str(
        "<p class=\"legend\"><span class=\"swatch ok\"></span>ok, mean \
         <span class=\"swatch ok faint\"></span>ok, max \
         <span class=\"swatch failed\"></span>failed, mean \
         <span class=\"swatch failed faint\"></span>failed, max (per time bucket, by when the row finished)</p>\n",
    );
    h.push_str(&chart.finish("latency over time", "s", "ms"));
    h.push_str("<table class=\"percentiles\"><thead><tr><th>rows</th><th>sent</th><th>p50 ms</th><th>p90 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th></tr></thead><tbody>\n");
    percentile_row(h, "ok", &rows.ok_latency);
    percentile_row(h, "failed", &rows.failed_latency);
    let mut all = rows.ok_latency.clone();
    let _ = all.add(&rows.failed_latency);
    percentile_row(h, "all", &all);
    h.push_str("</tbody></table>\n<p class=\"more\">Latency is each sent row's <code>duration_ms</code> in the report: from its first attempt to its result, retries included.</p>\n</section>\n");
}

fn failures(h: &mut String, rows: &RowDigest) {
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

fn outline(h: &mut String, summary: Option<&PageSummary>, rows: &RowDigest) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
