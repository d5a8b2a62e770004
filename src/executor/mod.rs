//! The executor: bounded concurrency, per-target pacing, per-message ordering, retries.
