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

use std::collections::BTreeMap;
use std::sync::Arc;

use super::model::{ProviderKind, Rate, Target, TargetKind};
use super::problem::Problem;
use super::yaml::Pos;
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

fn default_key(t: &Target) -> String {
    match &t.kind {
        TargetKind::Kommo { scope_id, .. } => format!("kommo scope {scope_id} at {}", t.base_url),
        TargetKind::Ogmma { .. } => match &t.credential {
            SecretRef::Env(name) => format!("ogmma key {{ env: {name} }} at {}", t.base_url),
            SecretRef::File(path) => {
                format!("ogmma key {{ file: {} }} at {}", path.display(), t.base_url)
            }
        },
    }
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
        let key = match site.map(|s| &s.group) {
            Some(LimitGroup::Own) => None,
            Some(LimitGroup::Named(name)) => Some((true, name.clone())),
            None => Some((false, default_key(t))),
        };
        let Some(key) = key else {
            groups.push(PaceGroup {
                name: t.name.clone(),
                provider: t.provider(),
                members: vec![i],
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
