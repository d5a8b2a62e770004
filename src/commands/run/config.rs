//! [`RunConfig`]: every run setting, resolved once — the command line, then the plan's
//! `settings:`, then the defaults. Bounds, defaults and parsers are those of
//! [`crate::plan::settings`], so a flag accepts exactly what a plan accepts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cli::{EmitFormatArg, RunArgs};
use crate::executor::transport::Trust;
use crate::executor::{Clock, ExecConfig};
use crate::plan::settings::{
    self, check_range, DEFAULT_BURST, DEFAULT_CONCURRENCY, DEFAULT_RATE_LIMIT_BUDGET,
    DEFAULT_RETRIES, DEFAULT_TIMEOUT, MAX_BURST, MAX_CONCURRENCY, MAX_RETRIES,
};
use crate::plan::{EmitFormat, Plan, Rate, Shard, Target};

/// Every run setting, resolved: command line, then the plan's `settings:`, then defaults.
#[derive(Debug)]
pub(crate) struct RunConfig {
    pub report: PathBuf,
    pub emit: Option<PathBuf>,
    pub emit_format: EmitFormat,
    /// Overrides every target's rate.
    pub rate: Option<Rate>,
    pub burst: u32,
    pub concurrency: usize,
    pub retries: u32,
    pub timeout: Duration,
    /// How long a row may keep being answered 429 before it fails.
    pub rate_limit_budget: Duration,
    pub resume: Option<PathBuf>,
    pub lock: Option<PathBuf>,
    pub shard: Option<Shard>,
    pub now: Option<DateTime<Utc>>,
    pub dry_run: bool,
    pub sandbox: bool,
    pub no_progress: bool,
    pub quiet: bool,
    pub summary_json: Option<PathBuf>,
    pub report_html: Option<PathBuf>,
    pub expect_digest: Option<String>,
    /// `--sandbox --tls`: the in-process sandbox serves HTTPS.
    pub sandbox_tls: bool,
    /// Whom HTTPS trusts beyond the system store and bundled roots (`--ca-cert`, `ca_cert:`).
    pub trust: Trust,
    /// With `resume`: run rows whose earlier result was a final failure again.
    pub retry_failed: bool,
    /// Replace a report that holds live results without resuming from it.
    pub overwrite: bool,
    /// Live runs: the node_exporter textfile written at the end (`--metrics-file`).
    pub metrics_file: Option<PathBuf>,
    /// Live runs: the healthchecks-style URL pinged at the start and the end (`--ping`).
    pub ping: Option<crate::plan::PingUrl>,
}

/// A flag's value through the plan setting's parser, the error naming the flag.
fn flag<T>(name: &str, text: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, String> {
    parse(text).map_err(|e| format!("--{name}: {e}"))
}

/// A flag's number checked against the plan setting's bounds.
fn bounded<T: PartialOrd + std::fmt::Display>(
    name: &str,
    n: T,
    min: T,
    max: T,
) -> Result<T, String> {
    check_range(&name.replace('-', "_"), n, min, max).map_err(|e| format!("--{name}: {e}"))
}

impl RunConfig {
    pub(crate) fn resolve(args: &RunArgs, plan: &Plan) -> Result<RunConfig, String> {
        let s = &plan.settings;
        let rate = match &args.rate {
            Some(r) => Some(flag("rate", r, settings::parse_rate)?),
            None => s.rate,
        };
        let timeout = match &args.timeout {
            Some(t) => flag("timeout", t, settings::parse_timeout)?,
            None => s.timeout.unwrap_or(DEFAULT_TIMEOUT),
        };
        let rate_limit_budget = match &args.rate_limit_budget {
            Some(t) => flag("rate-limit-budget", t, settings::parse_rate_limit_budget)?,
            None => s.rate_limit_budget.unwrap_or(DEFAULT_RATE_LIMIT_BUDGET),
        };
        let shard = match &args.shard {
            Some(text) => Some(flag("shard", text, Shard::parse)?),
            None => s.shard,
        };
        let now = match &args.now {
            Some(text) => Some(
                DateTime::parse_from_rfc3339(text)
                    .map_err(|e| format!("--now `{text}` is not an RFC 3339 time ({e}), e.g. 2026-12-01T09:00:00Z"))?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        let concurrency = match args.concurrency {
            Some(n) => bounded("concurrency", n, 1, MAX_CONCURRENCY)?,
            None => s.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        };
        let retries = match args.retries {
            Some(n) => bounded("retries", n, 0, MAX_RETRIES)?,
            None => s.retries.unwrap_or(DEFAULT_RETRIES),
        };
        let burst = match args.burst {
            Some(n) => bounded("burst", n, 1, MAX_BURST)?,
            None => s.burst.unwrap_or(DEFAULT_BURST),
        };
        let emit = args.emit.clone().or_else(|| s.emit.clone());
        let emit_format = match args.emit_format {
            Some(EmitFormatArg::Curl) => EmitFormat::Curl,
            Some(EmitFormatArg::Jsonl) => EmitFormat::Jsonl,
            // The plan's setting, or the file's extension (`.sh`: curl).
            None => s.emit_format.unwrap_or_else(|| {
                emit.as_deref()
                    .map_or(EmitFormat::default(), crate::outputs::emit::format_for_path)
            }),
        };
        if args.emit_format.is_some() && emit.is_none() {
            return Err("--emit-format needs --emit FILE".into());
        }
        let resume = args.resume.clone().or_else(|| s.resume.clone());
        let retry_failed = args.retry_failed || s.retry_failed.unwrap_or(false);
        if retry_failed && resume.is_none() {
            // Without a report to resume from there is no earlier failure to send again: the
            // flag would do nothing, and the run would send every row.
            return Err(if args.retry_failed {
                "--retry-failed needs --resume REPORT (it sends again the rows REPORT shows failed for good)".into()
            } else {
                "settings.retry_failed needs --resume REPORT (it sends again the rows REPORT shows failed for good)".into()
            });
        }
        let report = args
            .report
            .clone()
            .or_else(|| s.report.clone())
            .unwrap_or_else(|| default_report_path(&plan.path));
        Ok(RunConfig {
            report,
            emit,
            emit_format,
            rate,
            burst,
            concurrency,
            retries,
            timeout,
            rate_limit_budget,
            resume,
            lock: args.lock.clone().or_else(|| s.lock.clone()),
            shard,
            now,
            dry_run: args.dry_run || s.dry_run.unwrap_or(false),
            sandbox: args.sandbox,
            no_progress: args.no_progress || s.no_progress.unwrap_or(false),
            quiet: args.quiet || s.quiet.unwrap_or(false),
            summary_json: args.summary_json.clone().or_else(|| s.summary_json.clone()),
            report_html: args.report_html.clone().or_else(|| s.report_html.clone()),
            expect_digest: args.expect_digest.clone(),
            sandbox_tls: args.tls,
            trust: match args.ca_cert.as_ref().or(s.ca_cert.as_ref()) {
                Some(path) => Trust::from_pem_file(path).map_err(|e| format!("--ca-cert: {e}"))?,
                None => Trust::default(),
            },
            retry_failed,
            overwrite: args.overwrite || s.overwrite.unwrap_or(false),
            // A `--sandbox` rehearsal of a cron plan must not report to its monitors: only
            // the command line's own flags apply there.
            metrics_file: args
                .metrics_file
                .clone()
                .or_else(|| s.metrics_file.clone().filter(|_| !args.sandbox)),
            ping: match &args.ping {
                Some(text) => Some(flag("ping", text, crate::plan::PingUrl::parse)?),
                None => s.ping_url.clone().filter(|_| !args.sandbox),
            },
        })
    }

    /// A pace in this run: `--rate` if given, else `rate`, shared among the shards.
    pub(crate) fn pace(&self, rate: Rate) -> Rate {
        let shards = self.shard.map_or(1, |s| s.count);
        self.rate.unwrap_or_else(|| rate.divided(shards))
    }

    /// The pace of `target` in this run (see [`RunConfig::pace`]).
    pub(crate) fn target_rate(&self, target: &Target) -> Rate {
        self.pace(target.effective_rate())
    }

    /// The executor's share of the settings.
    pub(crate) fn exec_config(&self) -> ExecConfig {
        ExecConfig {
            concurrency: self.concurrency,
            retries: self.retries,
            timeout: self.timeout,
            burst: self.burst,
            rate_limit_budget: self.rate_limit_budget,
            dry_run: self.dry_run,
            clock: match self.now {
                Some(t) => Clock::Fixed(t),
                None => Clock::System,
            },
            emit_format: self.emit.as_ref().map(|_| self.emit_format),
            ..ExecConfig::default()
        }
    }
}

/// `<plan-stem>.report.csv` in the current directory.
pub(crate) fn default_report_path(plan: &Path) -> PathBuf {
    let stem = plan
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan".into());
    PathBuf::from(format!("{stem}.report.csv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_held_to_the_plans_bounds() {
        assert!(flag("rate", "200000/s", settings::parse_rate).is_err());
        assert!(flag("rate", "7/s", settings::parse_rate).is_ok());
        assert!(flag("timeout", "11m", settings::parse_timeout).is_err());
        assert!(flag(
            "rate-limit-budget",
            "25h",
            settings::parse_rate_limit_budget
        )
        .is_err());
        assert!(bounded("concurrency", 0usize, 1, MAX_CONCURRENCY).is_err());
        assert!(bounded("retries", 101u32, 0, MAX_RETRIES).is_err());
    }
}
