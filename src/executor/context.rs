//! What every part of a run shares: its settings, targets, lanes, transport, the writer's
//! inbox, the cancel channel and the bounds on requests in flight.

use std::collections::HashMap;
use std::sync::Arc;

use crate::plan::pace::LaneMap;
use crate::plan::Row;

use super::cancel::Cancel;
use super::config::ExecConfig;
use super::host::HostCeilings;
use super::lane::Lane;
use super::output::OutputSender;
use super::target::{origin_of, OriginHealth, TargetRuntime};
use super::transport::Transport;

/// Everything a row task needs, shared.
pub(crate) struct RunContext<T: Transport> {
    pub config: ExecConfig,
    pub targets: Vec<TargetRuntime>,
    /// One per pace group; every target is a member of exactly one.
    pub lanes: Vec<Lane>,
    pub transport: T,
    pub out: OutputSender,
    pub cancel: Cancel,
    /// Requests in flight, at most `config.concurrency`.
    pub(super) slots: Arc<tokio::sync::Semaphore>,
    /// Rows sent and not yet in the report, at most [`RECORD_WINDOW`] times
    /// `config.concurrency`: the writer frees a row's permit once the report holds it.
    pub(super) unrecorded: Arc<tokio::sync::Semaphore>,
    /// Ceilings on what the lanes to one host send together (none unless given).
    pub hosts: HostCeilings,
    /// Which lane each row goes to, when rows carry their accounts (else its target's).
    lane_map: LaneMap,
    /// The lanes' senders, awaited at the end of the run (senders start more as needed).
    pub(super) workers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Rows sent and not yet in the report, per `--concurrency`: the requests in flight, and as
/// many answered rows on their way to the report. The writer batches the rows finished in one
/// scheduler turn into one write; with a window of only the requests in flight, every row
/// waiting for that write is a request not on the wire, and each sender waited for the writer
/// before its next request.
pub(crate) const RECORD_WINDOW: usize = 2;

impl<T: Transport> RunContext<T> {
    /// Ties each target to its lane. A target no lane names gets a lane of its own.
    pub(crate) fn new(
        config: ExecConfig,
        mut targets: Vec<TargetRuntime>,
        mut lanes: Vec<Lane>,
        transport: T,
        out: OutputSender,
        cancel: Cancel,
    ) -> RunContext<T> {
        for (i, lane) in lanes.iter().enumerate() {
            for &m in &lane.members {
                if let Some(t) = targets.get_mut(m) {
                    t.lane = i;
                }
            }
        }
        for (i, t) in targets.iter_mut().enumerate() {
            if !lanes.get(t.lane).is_some_and(|l| l.members.contains(&i)) {
                t.lane = lanes.len();
                lanes.push(Lane::new(
                    t.spec.name.clone(),
                    vec![i],
                    t.rate,
                    config.burst,
                ));
            }
        }
        // Targets on one origin share its health: connections belong to the origin.
        let mut origins: HashMap<String, Arc<OriginHealth>> = HashMap::new();
        for t in &mut targets {
            let name = origin_of(&t.spec.base_url);
            let shared = origins
                .entry(name.clone())
                .or_insert_with(|| Arc::new(OriginHealth::new(name)));
            t.origin = Arc::clone(shared);
        }
        let mut lanes_of = vec![0usize; targets.len()];
        for lane in &lanes {
            for &m in &lane.members {
                if let Some(n) = lanes_of.get_mut(m) {
                    *n += 1;
                }
            }
        }
        for lane in &mut lanes {
            lane.limiter.set_precise(config.precise_pacing);
            // One log for a lane and its only target, unless the target's rows go to other
            // lanes too (one lane per account).
            if let [only] = lane.members[..] {
                if lanes_of[only] == 1 {
                    lane.sends = Arc::clone(&targets[only].sends);
                }
            }
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
        let unrecorded = Arc::new(tokio::sync::Semaphore::new(
            RECORD_WINDOW * config.concurrency.max(1),
        ));
        RunContext {
            config,
            targets,
            lanes,
            transport,
            out,
            cancel,
            slots,
            unrecorded,
            hosts: HostCeilings::default(),
            lane_map: LaneMap::default(),
            workers: std::sync::Mutex::default(),
        }
    }

    /// The run with these host ceilings (see [`super::host`]).
    pub(crate) fn with_host_ceilings(mut self, hosts: HostCeilings) -> RunContext<T> {
        self.hosts = hosts;
        self
    }

    /// Routes rows by `map` (lanes made from the plan's rows, index-aligned with `lanes`):
    /// a row naming its own account goes to that account's lane.
    pub(crate) fn with_lane_map(mut self, map: LaneMap) -> RunContext<T> {
        self.lane_map = map;
        self
    }

    /// The lane `row` goes to: its account's, else its target's.
    pub(crate) fn lane_of(&self, row: &Row) -> usize {
        self.lane_map
            .lane_of(row)
            .filter(|&l| l < self.lanes.len())
            .unwrap_or(self.targets[row.target].lane)
    }
}
