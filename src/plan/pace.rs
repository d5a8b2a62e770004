//! Pace groups: which targets share one rate limiter (one lane), because the provider counts
//! their requests together.
//!
//! - By default, Ogmma targets with the same API key reference (`{ env: X }` / `{ file: Y }`)
//!   and base URL share one group (Ogmma limits per key, whatever channel a request posts to);
//!   Kommo targets with the same `scope_id` and base URL share one.
//! - `limit_group: NAME` puts targets into the group NAME explicitly; `limit_group: own` gives
//!   a target a group of its own.
//! - A named group joining targets of different providers is an error at the second
//!   provider's `limit_group`; a named group with a single member is a warning (likely a typo:
//!   it paces like `own`).
//! - A group's rate is the lowest of its members' rates (`check` says so when they differ).
//! - Rows may carry their account ([`LaneMap`]): a Kommo row's own `scope_id` sends it to that
//!   scope's lane (base URL + scope, whichever target the row is for), so one target yields a
//!   lane per account. Targets in a named group, or `own`, keep one lane whatever their rows
//!   say; an Ogmma row's `channel_id` changes no lane (Ogmma limits per key).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::model::{ProviderKind, Rate, Row, Target, TargetKind};
use super::problem::Problem;
use super::source::Pos;
use crate::secret::SecretRef;

/// `limit_group:` as written on a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitGroup {
    Named(String),
    Own,
}

/// Where a target's `limit_group:` was written.
#[derive(Clone, Debug)]
pub struct LimitGroupSite {
    pub group: LimitGroup,
    pub file: Arc<str>,
    pub pos: Pos,
}

/// Targets that share one pace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaceGroup {
    /// The `limit_group` name, or a description of what the members share.
    pub name: String,
    pub provider: ProviderKind,
    /// Indexes into the plan's targets, in plan order.
    pub members: Vec<usize>,
    /// Grouped by Kommo scope (the default): a row naming its own `scope_id` goes to that
    /// scope's lane instead ([`LaneMap`]).
    pub by_account: bool,
}

impl PaceGroup {
    /// The group's rate: the lowest of its members'.
    pub fn rate(&self, targets: &[Target]) -> Rate {
        self.members
            .iter()
            .map(|&i| targets[i].effective_rate())
            .min_by(|a, b| a.per_second().total_cmp(&b.per_second()))
            .unwrap_or(Rate::Unlimited)
    }

    /// Whether the members' own rates differ (the group then runs at the lowest).
    pub fn rates_differ(&self, targets: &[Target]) -> bool {
        let mut rates = self.members.iter().map(|&i| targets[i].effective_rate());
        let first = rates.next();
        rates.any(|r| Some(r) != first)
    }
}

/// The default group of a Kommo scope at a base URL.
fn scope_key(scope_id: &str, base_url: &str) -> String {
    format!("kommo scope {scope_id} at {base_url}")
}

/// The default group key of `t`; `None` for a Kommo target whose rows give their scopes
/// (its rows go to their scopes' lanes, so it joins no group by itself).
fn default_key(t: &Target) -> Option<String> {
    Some(match &t.kind {
        TargetKind::Kommo { scope_id, .. } => scope_key(scope_id.as_deref()?, &t.base_url),
        TargetKind::Ogmma { .. } => match &t.credential {
            SecretRef::Env(name) => format!("ogmma key {{ env: {name} }} at {}", t.base_url),
            SecretRef::File(path) => {
                format!("ogmma key {{ file: {} }} at {}", path.display(), t.base_url)
            }
        },
    })
}

/// Groups `targets` (`sites[i]` is target i's `limit_group:`, if written). Errors and warnings
/// are located at the `limit_group:` value.
pub fn group(
    targets: &[Target],
    sites: &[Option<LimitGroupSite>],
    problems: &mut Vec<Problem>,
    warnings: &mut Vec<Problem>,
) -> Vec<PaceGroup> {
    let mut groups: Vec<PaceGroup> = Vec::new();
    let mut by_key: BTreeMap<(bool, String), usize> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        let site = sites.get(i).and_then(Option::as_ref);
        let by_account = site.is_none() && t.provider() == ProviderKind::Kommo;
        let key = match site.map(|s| &s.group) {
            Some(LimitGroup::Own) => None,
            Some(LimitGroup::Named(name)) => Some((true, name.clone())),
            None => default_key(t).map(|k| (false, k)),
        };
        let Some(key) = key else {
            groups.push(PaceGroup {
                name: t.name.clone(),
                provider: t.provider(),
                members: vec![i],
                by_account,
            });
            continue;
        };
        match by_key.get(&key) {
            Some(&g) => {
                let group = &mut groups[g];
                if group.provider != t.provider() {
                    if let Some(site) = site {
                        problems.push(Problem::error(
                            &*site.file,
                            Some(site.pos.line),
                            Some(site.pos.col),
                            format!(
                                "limit_group `{}` joins target `{}` ({}) with {} targets ({}); a pace group is one provider's limit",
                                key.1,
                                t.name,
                                t.provider(),
                                group.provider,
                                names(targets, &group.members[..group.members.len().min(10)])
                            ),
                        ));
                    }
                    continue;
                }
                group.members.push(i);
            }
            None => {
                by_key.insert(key.clone(), groups.len());
                groups.push(PaceGroup {
                    name: if key.0 { key.1 } else { t.name.clone() },
                    provider: t.provider(),
                    members: vec![i],
                    by_account,
                });
            }
        }
    }
    for (i, site) in sites.iter().enumerate() {
        let Some(LimitGroupSite {
            group: LimitGroup::Named(name),
            file,
            pos,
        }) = site
        else {
            continue;
        };
        let alone = groups.iter().any(|g| g.members == [i] && g.name == *name);
        if alone {
            warnings.push(
                Problem::warning(
                    &**file,
                    Some(pos.line),
                    Some(pos.col),
                    format!(
                        "limit_group `{name}` has only target `{}`: it paces on its own (a typo?)",
                        targets[i].name
                    ),
                )
                .with_hint("give the same `limit_group` to the targets that share a limit, or write `limit_group: own`"),
            );
        }
    }
    // Default groups are named after their first member; say who else is in them.
    for g in &mut groups {
        if g.members.len() > 1 && targets[g.members[0]].name == g.name {
            g.name = format!("{}+{}", g.name, g.members.len() - 1);
        }
    }
    groups
}

/// `a, b, c`
pub fn names(targets: &[Target], members: &[usize]) -> String {
    members
        .iter()
        .map(|&i| targets[i].name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The lanes a plan's rows go to: the plan's pace groups, plus a lane per Kommo scope that
/// rows name themselves ([`LaneMap::route`] adds them as the validation pass meets them).
/// A group none of whose targets can take a row of its own (every member leaves its scope to
/// its rows) is no lane.
#[derive(Clone, Debug, Default)]
pub struct LaneMap {
    /// The lanes, each as the group of targets whose rows it paces.
    pub lanes: Vec<PaceGroup>,
    /// Rows routed to each lane.
    pub rows: Vec<u64>,
    /// Per target: the lane of its rows that name no account of their own.
    own_lane: Vec<Option<usize>>,
    /// Per target whose rows' scopes pick their lanes: its base URL's index in `scopes`.
    base_of: Vec<Option<usize>>,
    /// Per base URL: scope → lane.
    scopes: Vec<HashMap<Box<str>, usize, foldhash::fast::FixedState>>,
}

impl LaneMap {
    /// The lanes of the plan's `groups` before any row is routed.
    pub fn new(groups: &[PaceGroup], targets: &[Target]) -> LaneMap {
        let mut map = LaneMap {
            own_lane: vec![None; targets.len()],
            base_of: vec![None; targets.len()],
            ..LaneMap::default()
        };
        let mut bases: HashMap<&str, usize> = HashMap::new();
        for g in groups {
            if g.by_account {
                for &m in &g.members {
                    let Some(t) = targets.get(m) else { continue };
                    let next = bases.len();
                    let base = *bases.entry(t.base_url.as_str()).or_insert(next);
                    map.base_of[m] = Some(base);
                }
            }
        }
        map.scopes = vec![HashMap::default(); bases.len()];
        for g in groups {
            let takes_rows = g
                .members
                .iter()
                .any(|&m| !g.by_account || targets.get(m).is_some_and(|t| t.account().is_some()));
            if !takes_rows {
                continue;
            }
            let lane = map.lanes.len();
            map.lanes.push(g.clone());
            map.rows.push(0);
            for &m in &g.members {
                if let Some(slot) = map.own_lane.get_mut(m) {
                    *slot = Some(lane);
                }
                if let (Some(base), Some(scope)) = (
                    map.base_of.get(m).copied().flatten(),
                    targets.get(m).and_then(Target::account),
                ) {
                    map.scopes[base].insert(scope.into(), lane);
                }
            }
        }
        map
    }

    /// The lane of `row`, made when the row is the first to name its scope; counts the row.
    pub fn route(&mut self, row: &Row, targets: &[Target]) -> Option<usize> {
        let lane = match self.lane_of(row) {
            Some(lane) => lane,
            None => {
                let base = self.base_of.get(row.target).copied().flatten()?;
                let scope = row.own_account()?;
                let t = targets.get(row.target)?;
                let lane = self.lanes.len();
                self.lanes.push(PaceGroup {
                    name: format!("{}/{scope}", t.name),
                    provider: t.provider(),
                    members: vec![row.target],
                    by_account: true,
                });
                self.rows.push(0);
                self.scopes[base].insert(scope.into(), lane);
                lane
            }
        };
        let l = &mut self.lanes[lane];
        // A named group lists all its targets already; only a scope's lane gains members.
        if l.by_account && !l.members.contains(&row.target) {
            let members = &mut l.members;
            // Another target's rows on the same account: one pace for both.
            members.push(row.target);
            members.sort_unstable();
        }
        self.rows[lane] += 1;
        Some(lane)
    }

    /// The lane of `row`, as routed; `None` for a row naming a scope no routed row named.
    pub fn lane_of(&self, row: &Row) -> Option<usize> {
        match (
            self.base_of.get(row.target).copied().flatten(),
            row.own_account(),
        ) {
            (Some(base), Some(scope)) => self.scopes[base].get(scope).copied(),
            _ => self.own_lane.get(row.target).copied().flatten(),
        }
    }

    /// How many lanes the rows of target `t` go to.
    pub fn lanes_of_target(&self, t: usize) -> usize {
        self.lanes.iter().filter(|l| l.members.contains(&t)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::model::Source;

    fn target(name: &str, kind: TargetKind, credential: &str) -> Target {
        Target {
            name: name.into(),
            kind,
            base_url: "http://127.0.0.1:9".into(),
            rate: None,
            credential: SecretRef::Env(credential.into()),
            source: Source {
                file: "p.yaml".into(),
                line: 1,
            },
        }
    }

    fn kommo(name: &str, scope: Option<&str>) -> Target {
        let kind = TargetKind::Kommo {
            scope_id: scope.map(Into::into),
            user_id: Some("u".into()),
            user_ref_id: None,
        };
        target(name, kind, "SECRET")
    }

    fn row(target: usize, scope: Option<&str>, channel: Option<&str>) -> Row {
        Row {
            conversation_id: Some("c".into()),
            scope_id: scope.map(Into::into),
            channel_id: channel.map(Into::into),
            ..Row::test(1).on(target).message("m").emoji("👍")
        }
    }

    #[test]
    fn rows_naming_a_scope_get_that_scopes_lane_whichever_target_they_are_for() {
        let targets = vec![
            kommo("main", Some("s1")),
            kommo("integration", None),
            target(
                "ogmma",
                TargetKind::Ogmma {
                    channel_id: Some("ch".into()),
                },
                "KEY",
            ),
            kommo("pinned", None),
            // Leaves its scope to its rows and has none: no lane at all.
            kommo("idle", None),
        ];
        let own = LimitGroupSite {
            group: LimitGroup::Own,
            file: "p.yaml".into(),
            pos: Pos { line: 9, col: 5 },
        };
        let sites = vec![None, None, None, Some(own), None];
        let (mut problems, mut warnings) = (Vec::new(), Vec::new());
        let groups = group(&targets, &sites, &mut problems, &mut warnings);
        assert!(problems.is_empty() && warnings.is_empty());
        let mut map = LaneMap::new(&groups, &targets);
        // main's, ogmma's and pinned's groups are lanes; integration's and idle's are not.
        let names = |m: &LaneMap| m.lanes.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&map), ["main", "ogmma", "pinned"]);

        let rows = [
            row(1, Some("s2"), None),
            row(1, Some("s1"), None),
            row(0, None, None),
            row(1, Some("s2"), None),
            row(0, Some("s3"), None),
            // Ogmma limits per key: a row's channel changes no lane.
            row(2, None, Some("other-channel")),
            // An explicit group keeps one lane whatever its rows say.
            row(3, Some("s4"), None),
        ];
        let lanes: Vec<Option<usize>> = rows.iter().map(|r| map.route(r, &targets)).collect();
        assert_eq!(
            lanes,
            [
                Some(3),
                Some(0),
                Some(0),
                Some(3),
                Some(4),
                Some(1),
                Some(2)
            ]
        );
        assert_eq!(
            names(&map),
            ["main", "ogmma", "pinned", "integration/s2", "main/s3"]
        );
        assert_eq!(map.rows, [2, 1, 1, 2, 1]);
        // s1 is main's scope: integration's row on it shares main's lane (one account).
        assert_eq!(map.lanes[0].members, [0, 1]);
        assert_eq!(map.lanes[3].members, [1]);
        for (r, lane) in rows.iter().zip(&lanes) {
            assert_eq!(map.lane_of(r), *lane, "lookup agrees with routing");
        }
        assert_eq!(map.lanes_of_target(1), 2);
        assert_eq!(map.lanes_of_target(0), 2);
        assert_eq!(map.lanes_of_target(4), 0);
        // A scope no routed row named has no lane to look up.
        assert_eq!(map.lane_of(&row(1, Some("s9"), None)), None);
    }
}
