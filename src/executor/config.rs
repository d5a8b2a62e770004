//! The run's settings as the executor takes them, and its clock.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::plan::{settings, EmitFormat};

/// Where "now" comes from: the wall clock, or a fixed instant (`--now` for `not_before` and
/// for signing in a dry run; a test's own instant). The executor reads the wall clock only
/// through this.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Clock {
    System,
    Fixed(DateTime<Utc>),
}

impl Clock {
    pub(crate) fn now(self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed(t) => t,
        }
    }
}

/// Validated run settings (command line over plan settings over defaults).
#[derive(Clone, Debug)]
pub(crate) struct ExecConfig {
    /// Rows in flight at once (≥ 1).
    pub concurrency: usize,
    /// Attempts after the first, for retryable outcomes.
    pub retries: u32,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// How long a row may keep being answered 429 before it fails (429s use no retries).
    pub rate_limit_budget: Duration,
    /// Requests allowed ahead of the even schedule (≥ 1).
    pub burst: u32,
    /// Build and sign, send nothing.
    pub dry_run: bool,
    /// Clock for `not_before` (and for signing in a dry run).
    pub clock: Clock,
    /// Clock for what happens on the wire in a live run: each attempt's signature and a sent
    /// row's finish time. The wall clock even under `--now`, which fixes only the run's
    /// decisions: a request signed for another instant is refused.
    pub wire_clock: Clock,
    pub emit_format: Option<EmitFormat>,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How long in-flight requests may finish after a soft cancel before they are abandoned.
    pub grace: Duration,
    /// Fast lanes wait for their pace with sub-millisecond wake-ups (see `pacer`). Off by
    /// default: tests drive the limiter under tokio's paused clock.
    pub precise_pacing: bool,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            concurrency: settings::DEFAULT_CONCURRENCY,
            retries: settings::DEFAULT_RETRIES,
            timeout: settings::DEFAULT_TIMEOUT,
            rate_limit_budget: settings::DEFAULT_RATE_LIMIT_BUDGET,
            burst: settings::DEFAULT_BURST,
            dry_run: false,
            clock: Clock::System,
            wire_clock: Clock::System,
            emit_format: None,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            grace: Duration::from_secs(3),
            precise_pacing: false,
        }
    }
}
