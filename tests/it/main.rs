//! The integration suite: one test binary (linked once), one module per area. Every test runs
//! the real binary or the library against servers it starts on 127.0.0.1.

mod accounts;
mod common;

mod citizen;
mod cron;
mod diagnostics;
mod dry_run;
mod ecosystem;
mod hostile_input;
mod hostile_server;
mod html;
mod lanes;
mod operations;
mod operators;
mod pacing;
mod perf;
mod plan;
mod proptest_plans;
mod run;
mod sandbox;
mod scale;
mod scale_summary;
mod secrets;
mod soak;
mod trust;
mod wire;
