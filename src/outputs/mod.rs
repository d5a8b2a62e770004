//! What a run writes, below the executor: the executor hands each row's result down here and
//! these modules turn results into files and lines; none of them reaches back up into the run.
//!
//! - [`report`]: report rows (built from row results) and the report files, CSV or JSON Lines.
//! - [`summary`]: the end-of-run summary (stderr and `--summary-json`).
//! - [`emit`]: the audit trail of signed requests (JSON Lines or curl).
//! - [`audit`]: what a plan will do per target and how long the live run takes (dry run).
//! - [`log`]: `run`'s stderr events: timestamped off a terminal, JSON with `--log-format json`.
//! - [`series`]: each lane's sends, 429s, retries and latency over time, kept while it runs.
//! - [`html`]: the self-contained HTML page of a run, from its report and summary.
//! - [`metrics`]: the node_exporter textfile a cron job's monitoring reads.

pub mod audit;
pub(crate) mod emit;
pub(crate) mod html;
pub(crate) mod log;
pub(crate) mod metrics;
pub mod report;
pub(crate) mod series;
pub mod summary;
