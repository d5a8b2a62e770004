//! The time charts: each lane's requests per second against its limit (from the summary's
//! series), rows finished over time by target (from the report alone), and latency.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::data::{PageLane, PageSummary, RowDigest};
use super::svg::{Chart, TITLED_BUCKETS};
use super::{escape, CHARTED_LANES, LISTED_LANES};
use crate::outputs::series::Series;

/// Targets drawn in the timeline without a summary, at most; the rest are one line, "other".
const TIMELINE_TARGETS: usize = 8;
/// Buckets of the charts made from report rows.
const ROW_BUCKETS: i64 = 300;

const TARGET_COLOURS: [&str; 9] = [
    "#3b7dd8", "#2e9d5b", "#c49a1b", "#8e5cc2", "#d1453b", "#1b9aa8", "#c2577f", "#6b7a2e",
    "#8a8f98",
];

/// Requests per second of a lane's configured pace (`7/s`, `60/min`, `7/3s`, `5/1500ms`);
/// `None` when unlimited or not understood.
pub(super) fn rate_per_second(rate: &str) -> Option<f64> {
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

pub(super) fn lanes(h: &mut String, s: &PageSummary) {
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
            lane_chart(lane, series, span)
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
        lanes_table(h, &order);
    }
    h.push_str("</section>\n");
}

/// One lane's chart over the run's whole `span` (seconds), so the lanes' charts line up: its
/// requests per second per bucket, its limit, and a mark for each bucket with 429s or retries.
fn lane_chart(lane: &PageLane, series: &Series, span: f64) -> String {
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
    chart.finish(
        &format!("requests per second of lane {}", lane.name),
        "s",
        "req/s",
    )
}

/// The table of the lanes in the charts' order, at most [`LISTED_LANES`] of them.
fn lanes_table(h: &mut String, order: &[&PageLane]) {
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
    if order.len() > LISTED_LANES {
        let _ = writeln!(
            h,
            "<p class=\"more\">and {} more lanes (every lane is in the summary JSON).</p>",
            order.len() - LISTED_LANES
        );
    }
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

pub(super) fn timeline(h: &mut String, rows: &RowDigest) {
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

pub(super) fn latency(h: &mut String, rows: &RowDigest) {
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
