//! `settings:` → [`Settings`], with bounds on every number (zero, negative and absurd values are
//! errors): concurrency 1..=4096, retries 0..=100, burst 1..=100000, timeout 1ms..=10min,
//! rate at most 100000/s or `unlimited`, rate_limit_budget 0s..=24h; `host_rate` maps base URLs
//! to rates (each URL as a target's `base_url`, once). Paths are relative to the plan file's
//! directory.
//!
//! The bounds, the defaults and the value parsers here are the only ones: the command line
//! (`commands::run::config`) checks its flags with the same functions, so a flag accepts
//! exactly what a plan accepts.

use std::path::Path;
use std::time::Duration;

use super::doc::DocReader;
use super::model::{parse_duration, EmitFormat, Settings, Shard};
use super::yaml::Node;

/// Keys of `settings:` (the JSON Schema in [`super::schema`] is tested against it).
pub(super) const KEYS: &[&str] = &[
    "report",
    "emit",
    "emit_format",
    "rate",
    "burst",
    "concurrency",
    "retries",
    "timeout",
    "resume",
    "lock",
    "shard",
    "dry_run",
    "no_progress",
    "quiet",
    "summary_json",
    "report_html",
    "ca_cert",
    "retry_failed",
    "overwrite",
    "rate_limit_budget",
    "host_rate",
    "metrics_file",
    "ping_url",
];

pub const MAX_CONCURRENCY: usize = 4096;
pub const MAX_RETRIES: u32 = 100;
pub const MAX_BURST: u32 = 100_000;
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
pub const MAX_RATE_LIMIT_BUDGET: Duration = Duration::from_secs(24 * 3600);

pub const DEFAULT_CONCURRENCY: usize = 64;
pub const DEFAULT_RETRIES: u32 = 5;
pub const DEFAULT_BURST: u32 = 1;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a row may keep being answered 429 (the provider only limiting) before it fails.
pub const DEFAULT_RATE_LIMIT_BUDGET: Duration = Duration::from_secs(15 * 60);

/// `what` must be a whole number from `min` to `max`.
pub fn check_range<T: PartialOrd + std::fmt::Display>(
    what: &str,
    n: T,
    min: T,
    max: T,
) -> Result<T, String> {
    if n >= min && n <= max {
        Ok(n)
    } else {
        Err(format!(
            "`{what}` must be a whole number from {min} to {max}, found `{n}`"
        ))
    }
}

/// A `rate` value: `N/s`, `N/min`, `N/h` up to 100000/s, or `unlimited`.
pub fn parse_rate(text: &str) -> Result<super::Rate, String> {
    super::targets::parse_rate(text)
}

/// A `timeout` value: a duration from 1ms to 10m.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if (MIN_TIMEOUT..=MAX_TIMEOUT).contains(&d) => Ok(d),
        _ => Err(format!(
            "`timeout` must be from 1ms to 10m, found `{}`",
            super::source::shorten(text)
        )),
    }
}

/// A `rate_limit_budget` value: a duration from 0s (a 429 fails the row at once, after the
/// retries) to 24h.
pub fn parse_rate_limit_budget(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d <= MAX_RATE_LIMIT_BUDGET => Ok(d),
        _ => Err(format!(
            "`rate_limit_budget` must be from 0s to 24h, found `{}`",
            super::source::shorten(text)
        )),
    }
}

pub fn read_settings(r: &mut DocReader<'_>, node: &Node, dir: &Path) -> Settings {
    let mut s = Settings::default();
    if node.is_null() {
        return s;
    }
    let Some(entries) = r.map(node, "settings") else {
        return s;
    };
    // The line of `ping_url`: it holds the check's key, so no diagnostic shows that line.
    let mut ping_line = None;
    for (key, value) in entries {
        let k = key.text.as_str();
        if k == "ping_url" {
            ping_line = Some(value.pos.line);
        }
        if !KEYS.contains(&k) {
            r.unknown_key(key, "settings", KEYS);
            continue;
        }
        if value.is_null() {
            continue;
        }
        match k {
            "report" | "emit" | "resume" | "lock" | "summary_json" | "report_html" | "ca_cert"
            | "metrics_file" => {
                let Some(text) = r.string(value, k) else {
                    continue;
                };
                if text.is_empty() {
                    r.error(value.pos, format!("`{k}` is an empty path"));
                    continue;
                }
                let path = Some(dir.join(text));
                match k {
                    "report" => s.report = path,
                    "emit" => s.emit = path,
                    "resume" => s.resume = path,
                    "lock" => s.lock = path,
                    "ca_cert" => s.ca_cert = path,
                    "report_html" => s.report_html = path,
                    "metrics_file" => s.metrics_file = path,
                    _ => s.summary_json = path,
                }
            }
            "emit_format" => match r.string(value, k) {
                Some("jsonl") => s.emit_format = Some(EmitFormat::Jsonl),
                Some("curl") => s.emit_format = Some(EmitFormat::Curl),
                Some(other) => {
                    let other = super::source::shorten(other);
                    r.error(
                        value.pos,
                        format!("`emit_format` must be `jsonl` or `curl`, found `{other}`"),
                    );
                }
                None => {}
            },
            "rate" => {
                if let Some(text) = r.string(value, k) {
                    match parse_rate(text) {
                        Ok(rate) => s.rate = Some(rate),
                        Err(msg) => {
                            r.error(value.pos, msg);
                        }
                    }
                }
            }
            "burst" => s.burst = r.number(value, k, 1, MAX_BURST),
            "concurrency" => s.concurrency = r.number(value, k, 1, MAX_CONCURRENCY),
            "retries" => s.retries = r.number(value, k, 0, MAX_RETRIES),
            "timeout" | "rate_limit_budget" => {
                if let Some(text) = r.string(value, k) {
                    let parsed = if k == "timeout" {
                        parse_timeout(text).map(|d| s.timeout = Some(d))
                    } else {
                        parse_rate_limit_budget(text).map(|d| s.rate_limit_budget = Some(d))
                    };
                    if let Err(msg) = parsed {
                        r.error(value.pos, msg);
                    }
                }
            }
            "shard" => {
                if let Some(text) = r.string(value, k) {
                    match Shard::parse(text) {
                        Ok(shard) => s.shard = Some(shard),
                        Err(msg) => {
                            r.error(value.pos, msg);
                        }
                    }
                }
            }
            "host_rate" => s.host_rate = read_host_rates(r, value),
            "ping_url" => {
                if let Some(text) = r.string(value, k) {
                    match super::PingUrl::parse(text) {
                        Ok(url) => s.ping_url = Some(url),
                        Err(msg) => {
                            r.error(value.pos, format!("`ping_url`: {msg}"));
                        }
                    }
                }
            }
            "dry_run" => s.dry_run = r.boolean(value, k),
            "no_progress" => s.no_progress = r.boolean(value, k),
            "quiet" => s.quiet = r.boolean(value, k),
            "retry_failed" => s.retry_failed = r.boolean(value, k),
            "overwrite" => s.overwrite = r.boolean(value, k),
            _ => {}
        }
    }
    if let Some(line) = ping_line {
        let file = r.file.clone();
        for p in r.problems.iter_mut() {
            if p.line == Some(line) && *p.file == *file {
                p.hide_source = true;
            }
        }
    }
    s
}

/// `host_rate: { https://amojo.kommo.com: 40/s, http://127.0.0.1:8080: unlimited }`: each key a
/// base URL (normalised as a target's `base_url` is, so `…/` and `…` are one), each value a
/// rate. Errors are located at the key or the value at fault.
fn read_host_rates(r: &mut DocReader<'_>, node: &Node) -> Vec<(String, super::Rate)> {
    let mut rates: Vec<(String, super::Rate)> = Vec::new();
    let Some(entries) = r.map(node, "host_rate") else {
        return rates;
    };
    for (key, value) in entries {
        let base = match super::targets::check_base_url(&key.text) {
            Ok(base) => base,
            Err(msg) => {
                r.error(key.pos, format!("`host_rate`: {msg}")).code = "invalid_value";
                continue;
            }
        };
        if rates.iter().any(|(b, _)| *b == base) {
            r.error(
                key.pos,
                format!("`host_rate` names {base} twice (a base URL has one ceiling)"),
            )
            .code = "invalid_value";
            continue;
        }
        let Some(text) = r.string(value, "host_rate") else {
            continue;
        };
        match parse_rate(text) {
            Ok(rate) => rates.push((base, rate)),
            Err(msg) => {
                r.error(value.pos, format!("`host_rate` for {base}: {msg}"))
                    .code = "invalid_value";
            }
        }
    }
    rates
}
