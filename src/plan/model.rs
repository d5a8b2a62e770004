//! The validated plan as pure data: targets, settings and rows, each row carrying the source
//! position it came from. Nothing here does I/O; loading lives in the sibling modules.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::secret::SecretRef;

/// The closed set of chat providers reactbatch speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProviderKind {
    Kommo,
    Ogmma,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Kommo => "kommo",
            ProviderKind::Ogmma => "ogmma",
        }
    }

    /// The provider's documented rate limit: Kommo 7 requests/s per account, Ogmma 60/min per key.
    pub fn default_rate(self) -> Rate {
        match self {
            ProviderKind::Kommo => Rate::Limited {
                count: 7,
                per: Duration::from_secs(1),
            },
            ProviderKind::Ogmma => Rate::Limited {
                count: 60,
                per: Duration::from_secs(60),
            },
        }
    }

    /// The production base URL used when a target gives none.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::Kommo => "https://amojo.kommo.com",
            ProviderKind::Ogmma => "https://oapi.ogmma.com.br",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a row does to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    React,
    Unreact,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::React => "react",
            Action::Unreact => "unreact",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a row (or any plan node) was written: the file as the user named it, and a 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Source {
    pub file: Arc<str>,
    pub line: u32,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A send rate: `7/s`, `60/min`, `2000/s`, or `unlimited` (sandbox rehearsals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    Unlimited,
    Limited { count: u32, per: Duration },
}

impl Rate {
    /// Parses `N/s`, `N/sec`, `N/m`, `N/min`, `N/h`, or `unlimited`. `N` is a positive integer.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let text = text.trim();
        if text == "unlimited" {
            return Ok(Rate::Unlimited);
        }
        let expected =
            || format!("invalid rate `{text}`: expected `N/s`, `N/min`, `N/h` or `unlimited`");
        let (count, unit) = text.split_once('/').ok_or_else(expected)?;
        let count: u32 = count.trim().parse().map_err(|_| expected())?;
        if count == 0 {
            return Err(format!(
                "invalid rate `{text}`: the count must be at least 1"
            ));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(expected()),
        };
        Ok(Rate::Limited { count, per })
    }

    /// The even spacing between two sends, or `None` when unlimited.
    pub fn interval(self) -> Option<Duration> {
        match self {
            Rate::Unlimited => None,
            Rate::Limited { count, per } => Some(per / count),
        }
    }

    /// Requests per second, for summaries; infinite when unlimited.
    pub fn per_second(self) -> f64 {
        match self {
            Rate::Unlimited => f64::INFINITY,
            Rate::Limited { count, per } => f64::from(count) / per.as_secs_f64(),
        }
    }

    /// This rate divided among `n` shards (each shard paces to `rate/n`).
    pub fn divided(self, n: u32) -> Rate {
        match self {
            Rate::Unlimited => Rate::Unlimited,
            Rate::Limited { count, per } => Rate::Limited {
                count,
                per: per * n.max(1),
            },
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Unlimited => f.write_str("unlimited"),
            // As a person writes a rate: `5/3s` (a 5/s limit shared by three shards), not
            // `5/3000ms`; milliseconds only when the period is not whole seconds.
            Rate::Limited { count, per } => {
                let (secs, whole) = (per.as_secs(), per.subsec_nanos() == 0);
                match secs {
                    1 if whole => write!(f, "{count}/s"),
                    60 if whole => write!(f, "{count}/min"),
                    3600 if whole => write!(f, "{count}/h"),
                    s if whole && s > 0 && s % 3600 == 0 => write!(f, "{count}/{}h", s / 3600),
                    s if whole && s > 0 && s % 60 == 0 => write!(f, "{count}/{}min", s / 60),
                    s if whole && s > 0 => write!(f, "{count}/{s}s"),
                    _ => write!(f, "{count}/{}ms", per.as_millis()),
                }
            }
        }
    }
}

/// Parses `250ms`, `10s`, `2m`, `1h` (a whole number and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let expected = || format!("invalid duration `{text}`: expected e.g. `500ms`, `10s`, `2m`");
    let n: u64 = number.parse().map_err(|_| expected())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(expected()),
    };
    Ok(d)
}

/// Provider-specific addressing of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Kommo {
        /// `None`: every row for the target gives its own `scope_id` (checked per row).
        scope_id: Option<String>,
        /// Default `user.id` for rows that give none.
        user_id: Option<String>,
        /// Default `user.ref_id` for rows that give none.
        user_ref_id: Option<String>,
    },
    Ogmma {
        /// `None`: every row for the target gives its own `channel_id` (checked per row).
        channel_id: Option<String>,
    },
}

/// A named destination: one provider account/channel with its credential reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub kind: TargetKind,
    /// Scheme and host (and port), no trailing slash.
    pub base_url: String,
    /// `None` means the provider's documented limit.
    pub rate: Option<Rate>,
    /// Channel secret (Kommo) or API key (Ogmma), as a reference; resolved separately.
    pub credential: SecretRef,
    pub source: Source,
}

impl Target {
    pub fn provider(&self) -> ProviderKind {
        match self.kind {
            TargetKind::Kommo { .. } => ProviderKind::Kommo,
            TargetKind::Ogmma { .. } => ProviderKind::Ogmma,
        }
    }

    /// The account the target names itself: Kommo `scope_id`, Ogmma `channel_id`.
    pub fn account(&self) -> Option<&str> {
        match &self.kind {
            TargetKind::Kommo { scope_id, .. } => scope_id.as_deref(),
            TargetKind::Ogmma { channel_id } => channel_id.as_deref(),
        }
    }

    /// The rate this target is paced at when no `--rate` overrides it.
    pub fn effective_rate(&self) -> Rate {
        self.rate.unwrap_or_else(|| self.provider().default_rate())
    }
}

/// Output format of `--emit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EmitFormat {
    #[default]
    Jsonl,
    Curl,
}

/// `--shard I/N`: this run takes the rows whose (target, message) hash (with the row's own
/// account when it names one) falls in shard I of N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 1-based.
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn parse(text: &str) -> Result<Shard, String> {
        let expected = || format!("invalid shard `{text}`: expected `I/N` with 1 <= I <= N");
        let (i, n) = text.trim().split_once('/').ok_or_else(expected)?;
        let index: u32 = i.trim().parse().map_err(|_| expected())?;
        let count: u32 = n.trim().parse().map_err(|_| expected())?;
        if index == 0 || count == 0 || index > count {
            return Err(expected());
        }
        Ok(Shard { index, count })
    }
}

/// `settings:` from a plan. Every field is optional; the command line wins over each.
/// Paths are resolved relative to the plan file's directory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub report: Option<PathBuf>,
    pub emit: Option<PathBuf>,
    pub emit_format: Option<EmitFormat>,
    pub rate: Option<Rate>,
    pub burst: Option<u32>,
    pub concurrency: Option<usize>,
    pub retries: Option<u32>,
    pub timeout: Option<Duration>,
    pub resume: Option<PathBuf>,
    pub lock: Option<PathBuf>,
    pub shard: Option<Shard>,
    pub dry_run: Option<bool>,
    pub no_progress: Option<bool>,
    pub quiet: Option<bool>,
    pub summary_json: Option<PathBuf>,
    pub report_html: Option<PathBuf>,
    /// Extra CA certificates (PEM) for HTTPS, relative to the plan file.
    pub ca_cert: Option<PathBuf>,
    pub retry_failed: Option<bool>,
    pub overwrite: Option<bool>,
    pub rate_limit_budget: Option<Duration>,
    /// `host_rate:` ceilings on what every lane to one base URL sends together, by base URL
    /// as [`super::targets::check_base_url`] normalises it.
    pub host_rate: Vec<(String, Rate)>,
    /// `--metrics-file`: the node_exporter textfile a live run writes at its end.
    pub metrics_file: Option<PathBuf>,
    /// `--ping`: the healthchecks-style URL a live run pings.
    pub ping_url: Option<super::PingUrl>,
}

/// One validated row: defaults applied, target resolved, required fields present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// 1-based position in the whole plan, includes expanded in order.
    pub number: u64,
    pub source: Source,
    /// Index into [`crate::plan::Plan::targets`].
    pub target: usize,
    pub action: Action,
    pub emoji: Option<String>,
    /// Kommo `id` / Ogmma `messageId`.
    pub message_id: Option<String>,
    /// Kommo `msgid` (integration-side id).
    pub msgid: Option<String>,
    pub conversation_id: Option<String>,
    pub conversation_ref_id: Option<String>,
    /// Kommo `user.id`, after the target's default was applied.
    pub user_id: Option<String>,
    /// Kommo `user.ref_id`, after the target's default was applied.
    pub user_ref_id: Option<String>,
    pub not_before: Option<DateTime<Utc>>,
    pub previous_emoji: Option<String>,
    pub key: Option<String>,
    /// Kommo: the row's own `scope_id`, over the target's (one integration, many accounts).
    pub scope_id: Option<String>,
    /// Ogmma: the row's own `channel_id`, over the target's.
    pub channel_id: Option<String>,
}

impl Row {
    /// The optional text fields in one fixed order, for the passes that walk them all (the
    /// digest, the spool): adding a field here adds it everywhere. The row's account comes
    /// last: the digest takes it only when the row gives one, so plans without per-row
    /// accounts keep their digests.
    pub fn text_fields(&self) -> [&Option<String>; 11] {
        [
            &self.emoji,
            &self.message_id,
            &self.msgid,
            &self.conversation_id,
            &self.conversation_ref_id,
            &self.user_id,
            &self.user_ref_id,
            &self.previous_emoji,
            &self.key,
            &self.scope_id,
            &self.channel_id,
        ]
    }

    /// The account the row names itself (`scope_id` or `channel_id`; validation allows only
    /// its provider's), over its target's.
    pub fn own_account(&self) -> Option<&str> {
        self.scope_id.as_deref().or(self.channel_id.as_deref())
    }

    /// The account the row's request goes to: its own, else its target's (validation makes
    /// sure one of them is there; `""` only for a row that was never validated).
    pub fn account<'a>(&'a self, target: &'a Target) -> &'a str {
        self.own_account()
            .or_else(|| target.account())
            .unwrap_or_default()
    }

    /// The message this row acts on, as the provider identifies it: `id` wins over `msgid`.
    /// Used for per-message ordering and sharding together with the target index.
    pub fn message_ref(&self) -> &str {
        self.message_id
            .as_deref()
            .or(self.msgid.as_deref())
            .unwrap_or("")
    }
}

/// Rows for tests, built from one place: a field added to [`Row`] is added here only, not in
/// every test that makes a row.
#[cfg(test)]
impl Row {
    /// Row `number` of `p.csv` (on line `number + 1`, under a header): a `react` on target 0
    /// with no emoji, message or other field set yet.
    pub(crate) fn test(number: u64) -> Row {
        Row {
            number,
            source: Source {
                file: "p.csv".into(),
                line: u32::try_from(number + 1).unwrap_or(u32::MAX),
            },
            target: 0,
            action: Action::React,
            emoji: None,
            message_id: None,
            msgid: None,
            conversation_id: None,
            conversation_ref_id: None,
            user_id: None,
            user_ref_id: None,
            not_before: None,
            previous_emoji: None,
            key: None,
            scope_id: None,
            channel_id: None,
        }
    }

    /// On target `target` (an index into the run's targets).
    pub(crate) fn on(mut self, target: usize) -> Row {
        self.target = target;
        self
    }

    /// Acting on message `id` (Kommo `id`, Ogmma `messageId`).
    pub(crate) fn message(mut self, id: impl Into<String>) -> Row {
        self.message_id = Some(id.into());
        self
    }

    pub(crate) fn emoji(mut self, emoji: impl Into<String>) -> Row {
        self.emoji = Some(emoji.into());
        self
    }

    pub(crate) fn action(mut self, action: Action) -> Row {
        self.action = action;
        self
    }
}

#[cfg(test)]
mod rate_display_tests {
    use super::*;

    #[test]
    fn rates_print_as_a_person_writes_them() {
        let r = |count, ms| Rate::Limited {
            count,
            per: Duration::from_millis(ms),
        };
        assert_eq!(r(7, 1000).to_string(), "7/s");
        assert_eq!(r(5, 3000).to_string(), "5/3s");
        assert_eq!(r(60, 60_000).to_string(), "60/min");
        assert_eq!(r(100, 120_000).to_string(), "100/2min");
        assert_eq!(r(9, 7_200_000).to_string(), "9/2h");
        assert_eq!(r(3, 1500).to_string(), "3/1500ms");
        assert_eq!(
            Rate::parse("7/s").map(|r| r.divided(3).to_string()),
            Ok("7/3s".to_string())
        );
        assert_eq!(Rate::Unlimited.to_string(), "unlimited");
    }
}
