//! A row on its way through its lane, and how it ended.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::time::Instant;

use crate::outputs::report::Status;
use crate::plan::Row;
use crate::provider::PreparedRequest;

use super::message::{message_id, MessageId};

/// How a row ended, as data: the writer renders it, the tally counts it.
#[derive(Debug, Clone)]
pub(crate) struct RowOutcome {
    pub status: Status,
    pub http_status: Option<u16>,
    pub code: String,
    pub message: String,
    pub attempts: u32,
    /// From the first attempt to the end, 0 when nothing was sent.
    pub duration: Duration,
    /// The last attempt's latency, when one was answered.
    pub latency: Option<Duration>,
}

/// A row on its way through its lane, with its state between attempts.
pub(super) struct Job {
    pub(super) row: Row,
    pub(super) key: String,
    /// Built at the first attempt, so rows waiting in a lane hold only the row.
    pub(super) prepared: Option<PreparedRequest>,
    pub(super) attempts: u32,
    /// Retries used (429s within the budget use none).
    pub(super) retries: u32,
    pub(super) started: Option<Instant>,
    /// When the current run of 429 answers began.
    pub(super) limited_since: Option<Instant>,
    pub(super) latency: Option<Duration>,
    pub(super) rng: SmallRng,
}

impl Job {
    pub(super) fn new(row: Row, key: String) -> Job {
        let rng = SmallRng::seed_from_u64(row.number ^ 0x9e37_79b9_7f4a_7c15);
        Job {
            row,
            key,
            prepared: None,
            attempts: 0,
            retries: 0,
            started: None,
            limited_since: None,
            latency: None,
            rng,
        }
    }

    pub(super) fn message_id(&self) -> MessageId {
        message_id(&self.row)
    }

    /// Its outcome with `status`, counting the attempts and time it took.
    pub(super) fn outcome(
        &self,
        status: Status,
        http_status: Option<u16>,
        code: &str,
        message: String,
    ) -> RowOutcome {
        RowOutcome {
            status,
            http_status,
            code: code.to_string(),
            message,
            attempts: self.attempts,
            duration: self.started.map_or(Duration::ZERO, |s| s.elapsed()),
            latency: self.latency,
        }
    }
}
