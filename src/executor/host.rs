//! Host ceilings: a cap on what every lane to one base URL sends together.
//!
//! Lanes pace each account on its own, but a provider may also count what one client sends to
//! its host as a whole: Kommo documents 7 requests per second and restricts the IPs that
//! exceed its limits, and an integrator's thousand accounts at 7/s each would add up to
//! 7000/s. So the lanes to Kommo's own host ([`KOMMO_BASE_URL`]) share a ceiling of
//! [`KOMMO_HOST_RATE`] by default; `settings: host_rate:` sets the ceiling of any base URL
//! (`unlimited` lifts it); other hosts have none.
//!
//! In a run, each ceiling is one [`RateLimiter`] shared by every lane to that base URL: a
//! lane's sender, once its lane's pace gives it a slot, also takes a slot of its host's
//! limiter (a fair FIFO turn, so no lane starves the others) before it takes a concurrency
//! slot. `check` and the dry run state what each host's lanes add up to ([`host_loads`]).

use std::time::Duration;

use tokio::time::Instant;

use super::rate::RateLimiter;
use crate::plan::pace::PaceGroup;
use crate::plan::{Rate, Target};

/// Kommo's own API, the default `base_url` of Kommo targets.
pub(crate) const KOMMO_BASE_URL: &str = "https://amojo.kommo.com";

/// The default ceiling on Kommo's own host (amoCRM's guidance names 50/s per account; the
/// unit is not stated, so the whole host is held to it).
pub(crate) const KOMMO_HOST_RATE: Rate = Rate::Limited {
    count: 50,
    per: Duration::from_secs(1),
};

/// The ceiling on `base_url` (normalised, as on a [`Target`]): the plan's `host_rate` for it,
/// else the default for Kommo's host; `None` when there is none (or it is set `unlimited`).
pub(crate) fn ceiling(base_url: &str, host_rates: &[(String, Rate)]) -> Option<Rate> {
    let set = host_rates
        .iter()
        .find(|(b, _)| b == base_url)
        .map(|(_, r)| *r);
    match set {
        Some(Rate::Unlimited) => None,
        Some(rate) => Some(rate),
        None => (base_url == KOMMO_BASE_URL).then_some(KOMMO_HOST_RATE),
    }
}

/// `amojo.kommo.com`, `127.0.0.1:8080`: a base URL without its scheme, as people name a host.
pub(crate) fn host_name(base_url: &str) -> &str {
    base_url
        .strip_prefix("https://")
        .or_else(|| base_url.strip_prefix("http://"))
        .unwrap_or(base_url)
}

/// One host's ceiling while a run goes on.
pub(crate) struct HostCeiling {
    pub base_url: String,
    limiter: RateLimiter,
}

impl HostCeiling {
    /// Waits for a slot under the ceiling; true when it had to wait (the send then leaves
    /// later than its lane's slot).
    async fn wait(&self) -> bool {
        let before = Instant::now();
        self.limiter.next_slot(true).await;
        Instant::now() > before
    }
}

/// The run's host ceilings, and which one each target's requests pass.
#[derive(Default)]
pub(crate) struct HostCeilings {
    hosts: Vec<HostCeiling>,
    /// Per target (by index): its host's index in `hosts`, if that host has a ceiling.
    of_target: Vec<Option<usize>>,
}

impl HostCeilings {
    /// The ceilings on the hosts of `targets` (whose base URLs are those the run sends to),
    /// each divided among `shards` as the lanes' paces are: every shard runs its own.
    pub(crate) fn new(
        targets: &[Target],
        host_rates: &[(String, Rate)],
        shards: u32,
        precise: bool,
    ) -> HostCeilings {
        let mut ceilings = HostCeilings::default();
        for t in targets {
            let at = ceilings
                .hosts
                .iter()
                .position(|h| h.base_url == t.base_url)
                .or_else(|| {
                    let rate = ceiling(&t.base_url, host_rates)?.divided(shards);
                    // Burst 1: a ceiling protects the client's standing with the host, so no
                    // more than its rate in any second.
                    let mut limiter = RateLimiter::new(rate, 1);
                    limiter.set_precise(precise);
                    ceilings.hosts.push(HostCeiling {
                        base_url: t.base_url.clone(),
                        limiter,
                    });
                    Some(ceilings.hosts.len() - 1)
                });
            ceilings.of_target.push(at);
        }
        ceilings
    }

    /// The ceilings in force.
    #[cfg(test)]
    pub(crate) fn hosts(&self) -> &[HostCeiling] {
        &self.hosts
    }

    /// Whether `target`'s host has a ceiling.
    pub(crate) fn limits(&self, target: usize) -> bool {
        self.of_target.get(target).is_some_and(Option::is_some)
    }

    /// Waits until `target`'s host lets another request go; true when it had to wait. At
    /// once when the host has no ceiling.
    pub(crate) async fn wait(&self, target: usize) -> bool {
        match self.of_target.get(target).copied().flatten() {
            Some(h) => self.hosts[h].wait().await,
            None => false,
        }
    }
}

/// For the estimate ([`crate::outputs::audit::PaceModel`]): each lane's host ceiling, as an index into
/// the ceilings returned with it (one per base URL that has one, divided among `shards`). A
/// lane is counted at its first target's host.
pub(crate) fn lane_ceilings(
    targets: &[Target],
    groups: &[PaceGroup],
    host_rates: &[(String, Rate)],
    shards: u32,
) -> (Vec<Option<usize>>, Vec<Rate>) {
    let mut bases: Vec<&str> = Vec::new();
    let mut ceilings = Vec::new();
    let host_of = groups
        .iter()
        .map(|g| {
            let t = targets.get(*g.members.first()?)?;
            if let Some(at) = bases.iter().position(|b| *b == t.base_url) {
                return Some(at);
            }
            let rate = ceiling(&t.base_url, host_rates)?;
            bases.push(&t.base_url);
            ceilings.push(rate.divided(shards));
            Some(bases.len() - 1)
        })
        .collect();
    (host_of, ceilings)
}

/// What the lanes to one host add up to, for `check` and the dry run.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct HostLoad {
    pub base_url: String,
    /// Lanes sending to this host (a lane whose targets span hosts counts at each).
    pub lanes: usize,
    /// The sum of their paces, requests per second (infinite when one is unlimited).
    pub total_per_second: f64,
    pub ceiling: Option<Rate>,
}

impl HostLoad {
    /// `amojo.kommo.com: 12 lanes add up to 84/s; host ceiling 50/s holds them to it (…)`.
    pub(crate) fn describe(&self) -> String {
        let lanes = if self.lanes == 1 {
            "1 lane adds up".to_string()
        } else {
            format!("{} lanes add up", self.lanes)
        };
        let mut line = format!(
            "{}: {lanes} to {}",
            host_name(&self.base_url),
            per_second(self.total_per_second)
        );
        match self.ceiling {
            None => line.push_str(" (no host ceiling)"),
            Some(c) if c.per_second() < self.total_per_second => {
                line.push_str(&format!(
                    "; host ceiling {} holds them to it (~{} per lane when all are busy)",
                    per_second(c.per_second()),
                    per_second(c.per_second() / self.lanes.max(1) as f64)
                ));
            }
            Some(c) => line.push_str(&format!(
                "; host ceiling {}, not reached",
                per_second(c.per_second())
            )),
        }
        line
    }
}

/// Lanes to one host beyond which `check` and the dry run say what they add up to even when
/// the host has no ceiling (a few lanes are plain from the targets themselves).
pub(crate) const MANY_LANES: usize = 10;

/// The lines `check` and the dry run print: one per host with a ceiling and several lanes, a
/// ceiling its lanes exceed, or more than [`MANY_LANES`] lanes; at most `most`, then how many
/// more.
pub(crate) fn host_lines(loads: &[HostLoad], most: usize) -> Vec<String> {
    let worth: Vec<&HostLoad> = loads
        .iter()
        .filter(|l| match l.ceiling {
            Some(c) => l.lanes > 1 || c.per_second() < l.total_per_second,
            None => l.lanes > MANY_LANES,
        })
        .collect();
    let mut lines: Vec<String> = worth.iter().take(most).map(|l| l.describe()).collect();
    if worth.len() > most {
        lines.push(format!("and {} more host(s)", worth.len() - most));
    }
    lines
}

/// A ceiling as people read it, per second: `50/s` (a shard's share of `100/s` as well).
pub(crate) fn rate_text(rate: Rate) -> String {
    per_second(rate.per_second())
}

/// `7000/s`, `0.5/s`, `unlimited`.
fn per_second(r: f64) -> String {
    if r.is_infinite() {
        "unlimited".to_string()
    } else if (r - r.round()).abs() < 1e-9 {
        format!("{r:.0}/s")
    } else {
        let text = format!("{r:.2}");
        format!("{}/s", text.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Per host (in the order first used by the plan's targets): the lanes to it, what their
/// paces (`rates`, index-aligned with `groups`) add up to, and its ceiling.
pub(crate) fn host_loads<'a>(
    targets: &[Target],
    lanes: impl IntoIterator<Item = (&'a [usize], Rate)>,
    host_rates: &[(String, Rate)],
    shards: u32,
) -> Vec<HostLoad> {
    let mut loads: Vec<HostLoad> = Vec::new();
    for (members, rate) in lanes {
        let mut seen: Vec<&str> = Vec::new();
        for &m in members {
            let Some(t) = targets.get(m) else {
                continue;
            };
            if seen.contains(&t.base_url.as_str()) {
                continue;
            }
            seen.push(&t.base_url);
            let at = match loads.iter().position(|l| l.base_url == t.base_url) {
                Some(at) => at,
                None => {
                    loads.push(HostLoad {
                        base_url: t.base_url.clone(),
                        lanes: 0,
                        total_per_second: 0.0,
                        ceiling: ceiling(&t.base_url, host_rates).map(|c| c.divided(shards)),
                    });
                    loads.len() - 1
                }
            };
            loads[at].lanes += 1;
            loads[at].total_per_second += rate.per_second();
        }
    }
    loads
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Source, TargetKind};
    use crate::secret::SecretRef;

    fn per(count: u32) -> Rate {
        Rate::Limited {
            count,
            per: Duration::from_secs(1),
        }
    }

    fn kommo(name: &str, base_url: &str) -> Target {
        Target {
            name: name.into(),
            kind: TargetKind::Kommo {
                scope_id: Some(name.into()),
                user_id: None,
                user_ref_id: None,
            },
            base_url: base_url.into(),
            rate: None,
            credential: SecretRef::Env("S".into()),
            source: Source {
                file: "p.yaml".into(),
                line: 1,
            },
        }
    }

    #[test]
    fn kommos_host_has_a_ceiling_by_default_and_host_rate_sets_any() {
        let local = "http://127.0.0.1:8080";
        assert_eq!(ceiling(KOMMO_BASE_URL, &[]), Some(KOMMO_HOST_RATE));
        assert_eq!(ceiling(local, &[]), None);
        let set = [
            (KOMMO_BASE_URL.to_string(), Rate::Unlimited),
            (local.to_string(), per(20)),
        ];
        assert_eq!(ceiling(KOMMO_BASE_URL, &set), None);
        assert_eq!(ceiling(local, &set), Some(per(20)));
        assert_eq!(host_name(KOMMO_BASE_URL), "amojo.kommo.com");
        assert_eq!(host_name(local), "127.0.0.1:8080");
    }

    fn lanes<'a>(
        groups: &'a [PaceGroup],
        rates: &'a [Rate],
    ) -> impl Iterator<Item = (&'a [usize], Rate)> {
        groups.iter().zip(rates).map(|(g, r)| (&g.members[..], *r))
    }

    #[test]
    fn the_lanes_on_each_host_add_up_and_the_ceiling_says_what_it_makes_of_it() {
        let local = "http://127.0.0.1:8080";
        let targets: Vec<Target> = (0..12)
            .map(|i| kommo(&format!("k{i}"), KOMMO_BASE_URL))
            .chain((0..3).map(|i| kommo(&format!("l{i}"), local)))
            .collect();
        let groups: Vec<PaceGroup> = (0..targets.len())
            .map(|i| PaceGroup {
                name: targets[i].name.clone(),
                provider: crate::plan::ProviderKind::Kommo,
                members: vec![i],
                by_account: false,
            })
            .collect();
        let rates = vec![per(7); targets.len()];
        let loads = host_loads(&targets, lanes(&groups, &rates), &[], 1);
        let lines: Vec<String> = loads.iter().map(HostLoad::describe).collect();
        assert_eq!(
            lines,
            [
                "amojo.kommo.com: 12 lanes add up to 84/s; host ceiling 50/s holds them to it (~4.17/s per lane when all are busy)",
                "127.0.0.1:8080: 3 lanes add up to 21/s (no host ceiling)",
            ]
        );
        let capped = host_loads(
            &targets,
            lanes(&groups, &rates),
            &[(local.into(), per(100))],
            2,
        );
        assert_eq!(
            capped[1].describe(),
            "127.0.0.1:8080: 3 lanes add up to 21/s; host ceiling 50/s, not reached"
        );
    }
}
