//! A live run's monitors, around the executor: what a cron job's watchers hear of it.
//!
//! - [`watch`]: the run's three moments (refused before sending, sending started, ended) told
//!   to the metrics file and the ping URL.
//! - [`ping`]: healthchecks-style pings, sent through the run's own HTTP stack.

pub mod ping;
pub(crate) mod watch;
