//! The executor: streams validated rows through per-message ordering, bounded concurrency and
//! per-target pacing to the provider (or, in a dry run, to the renderer), and every row's
//! result to the report.
//!
//! - The dispatcher reads rows lazily and tracks only messages with a row on its way; a row for
//!   a message that is busy waits in that message's queue, so rows on one (target, message) go
//!   in plan order and never overlap. From a spool chained by lane ([`RowSource`]) it reads
//!   each lane's rows on their own, a few ahead of each lane ([`lane_read_ahead`]), so a plan
//!   sorted by account runs every lane side by side. From rows in plan order only (the dry
//!   run), reading pauses while [`MAX_QUEUED`] rows are on their way or waiting, or while
//!   every lane with rows still to come has [`LANE_AHEAD`] waiting to be sent. Either way
//!   memory does not grow with the plan.
//! - A row whose message is free goes to its target's [`lane::Lane`] (one per pace group):
//!   one of the lane's senders paces it, takes one of `concurrency` slots for the request
//!   only, and runs the attempt ([`task`]): sign afresh, send over the run's one HTTP client,
//!   whose connections belong to the origin ([`transport`]), classify ([`retry`]), finish or
//!   go back to the front of the lane.
//! - Finished rows go to the writer task ([`output`], `writer`), which appends them to the
//!   report. No more than twice `concurrency` rows are sent and not yet in the report
//!   ([`context::RECORD_WINDOW`]), and the first
//!   write error stops dispatching (as a Ctrl-C does): no more is sent than the report can
//!   record.
//!
//! The modules stand in layers, each importing only from those below it: the dispatcher
//! (`dispatch`) on top, then the dry-run pool (`dry`), the lanes' senders (`sender`) and the
//! writer task (`writer`), a row's attempt (`task`), and below them what they share: the run's
//! context (`context`: settings, targets, lanes, transport, the writer's inbox), the lanes and
//! their queues (`lane`), a row on its way (`job`), its message (`message`), the settings and
//! clock (`config`), what is handed to the writer (`output`), and the pacing, retry, host and
//! transport parts. Report rows are built by [`crate::outputs::report`], below the executor.

pub(crate) mod cancel;
mod config;
mod context;
mod dispatch;
mod dry;
pub(crate) mod host;
mod job;
pub(crate) mod lane;
mod message;
pub(crate) mod output;
mod pacer;
pub(crate) mod progress;
pub(crate) mod rate;
pub(crate) mod retry;
mod sender;
mod tally;
mod target;
mod task;
pub(crate) mod transport;
mod writer;

pub(crate) use cancel::Cancel;
pub(crate) use config::{Clock, ExecConfig};
pub(crate) use context::RunContext;
pub(crate) use dispatch::{execute, Admission};
pub(crate) use lane::Lane;
pub(crate) use output::OutputSender;
pub(crate) use tally::Tally;
pub(crate) use target::TargetRuntime;
pub(crate) use transport::HttpTransport;
pub(crate) use writer::OutputThread;

// What the executor's own tests reach through `super::*`.
#[cfg(test)]
use dispatch::{lane_read_ahead, RowSource, LANE_AHEAD, MAX_QUEUED};
#[cfg(test)]
use retry::AttemptOutcome;
#[cfg(test)]
use target::{AUTH_FAILURES_TO_STOP, UNREACHABLE_TO_STOP};
#[cfg(test)]
use transport::Transport;

#[cfg(test)]
mod citizen_tests;
#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
mod tests;
