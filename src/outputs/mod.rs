//! What a run leaves for others to read besides its report: here, what a cron job's monitors
//! read — the node_exporter textfile ([`metrics`]) and healthchecks-style pings ([`ping`]),
//! both driven at the run's start and end by [`watch`].

pub mod metrics;
pub mod ping;
pub mod watch;
