//! `reactbatch check`: load and validate plans, print every problem, send nothing.
//!
//! For each plan: structural problems, row problems (one streaming pass), secret problems (a
//! missing env var is an error of `check` too), then warnings. Human output (stderr): each
//! problem rendered with its source line and a caret ([`crate::diagnostic`]), then a one-line
//! summary `plan.yaml: 120 rows, 2 targets, 0 errors, 1 warning`. `--format json` prints one
//! JSON document on stdout instead (schema in `docs/check-json.md`) and nothing on stderr.
//! Exit 2 if any plan has an error, in both formats.

use serde::Serialize;

use crate::cli::{CheckArgs, CheckFormat};
use crate::executor::host::HostLoad;
use crate::exit::Exit;
use std::collections::HashSet;

use crate::plan::pace::LaneMap;
use crate::plan::{Plan, Problem, Severity};

/// The version of the `--format json` document; bumped only on incompatible changes.
pub(crate) const JSON_VERSION: u32 = 1;

pub(crate) fn run(args: &CheckArgs) -> Exit {
    let outcomes: Vec<Outcome> = args
        .plans
        .iter()
        .map(|path| {
            let outcome = check_one(path, args.targets.as_deref());
            if args.format == CheckFormat::Human {
                outcome.print();
            }
            outcome
        })
        .collect();
    if args.format == CheckFormat::Json {
        let doc = JsonDoc::new(&outcomes);
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("reactbatch check: cannot render JSON: {e}");
                return Exit::Invalid;
            }
        }
    }
    if outcomes.iter().all(|o| o.errors == 0) {
        Exit::Success
    } else {
        Exit::Invalid
    }
}

/// What checking one plan found.
struct Outcome {
    plan: String,
    /// False when the plan's structure was too broken to read its rows.
    loaded: bool,
    rows: u64,
    targets: usize,
    errors: u64,
    warnings: u64,
    /// Errors first, then warnings, in the order found.
    problems: Vec<Problem>,
    /// Which targets share a pace (groups of more than one), one line each; then what the
    /// lanes on each host add up to. Both bounded in number.
    pace: Vec<String>,
    /// What the lanes to each host add up to (every host, for `--format json`).
    hosts: Vec<HostLoad>,
    /// Targets whose rows name their accounts, with the lanes those make.
    accounts: Vec<AccountLanes>,
}

/// A target whose rows name their own accounts (`scope_id`/`channel_id`).
#[derive(Serialize)]
struct AccountLanes {
    target: String,
    /// Distinct accounts its rows name.
    accounts: usize,
    /// Lanes its rows go to (one per Kommo scope; Ogmma keeps one per key).
    lanes: usize,
}

impl Outcome {
    fn print(&self) {
        // One batch, so a line hidden for one problem (it may hold a secret) is hidden for all.
        crate::diagnostic::eprint(&self.problems);
        if self.loaded {
            eprintln!(
                "{}: {}, {}, {}, {}",
                self.plan,
                count(self.rows, "row"),
                count(self.targets as u64, "target"),
                count(self.errors, "error"),
                count(self.warnings, "warning"),
            );
            for line in &self.pace {
                eprintln!("  {line}");
            }
            for a in &self.accounts {
                eprintln!(
                    "  target {}: its rows name {}, paced in {}",
                    a.target,
                    count(a.accounts as u64, "account"),
                    count(a.lanes as u64, "lane"),
                );
            }
        } else {
            eprintln!("{}: not loaded, {}", self.plan, count(self.errors, "error"));
        }
    }
}

fn check_one(path: &std::path::Path, targets: Option<&std::path::Path>) -> Outcome {
    let name = path.display().to_string();
    let (plan, mut problems) = Plan::load_lenient(path, targets);
    let Some(plan) = plan else {
        return Outcome {
            plan: name,
            loaded: false,
            rows: 0,
            targets: 0,
            errors: problems.len() as u64,
            warnings: 0,
            problems,
            pace: Vec::new(),
            hosts: Vec::new(),
            accounts: Vec::new(),
        };
    };
    // Which lanes the rows make, and which accounts each target's rows name.
    let mut lanes = LaneMap::new(&plan.pace_groups, &plan.targets);
    let mut named: Vec<HashSet<String>> = vec![HashSet::new(); plan.targets.len()];
    let mut validation = plan.validate_with(|row| {
        lanes.route(row, &plan.targets);
        if let (Some(account), Some(set)) = (row.own_account(), named.get_mut(row.target)) {
            if !set.contains(account) {
                set.insert(account.to_string());
            }
        }
    });
    let accounts = named
        .iter()
        .enumerate()
        .filter(|(_, set)| !set.is_empty())
        .map(|(t, set)| AccountLanes {
            target: plan.targets[t].name.clone(),
            accounts: set.len(),
            lanes: lanes.lanes_of_target(t),
        })
        .collect();
    // `run` refuses these unless --allow-insecure-http; `check` points them out.
    let insecure = plan.insecure_http().into_iter().map(|mut p| {
        p.severity = Severity::Warning;
        p
    });
    validation
        .warnings
        .extend(insecure.chain(plan.secret_warnings()));
    validation
        .warnings
        .extend(plan.pace_warnings.iter().cloned());
    let mut errors = problems.len() as u64 + validation.error_count();
    problems.extend(validation.errors.iter().cloned());
    if let Err(secret_problems) = plan.resolve_secrets() {
        errors += secret_problems.len() as u64;
        problems.extend(secret_problems);
    }
    problems.extend(validation.warnings.iter().cloned());
    // Notes last: they change nothing about whether the plan may run.
    problems.extend(plan.emoji_notes());
    let hosts = host_loads(&plan, &lanes.lanes);
    Outcome {
        plan: name,
        loaded: true,
        rows: validation.rows,
        targets: plan.targets.len(),
        errors,
        warnings: validation.warning_count(),
        problems,
        pace: pace_lines(&plan)
            .into_iter()
            .chain(crate::executor::host::host_lines(&hosts, MAX_LISTED))
            .collect(),
        hosts,
        accounts,
    }
}

/// What the lanes (`lanes`: one per pace group and per account the rows name) to each host
/// add up to at the plan's paces, and its ceiling.
fn host_loads(plan: &Plan, lanes: &[crate::plan::pace::PaceGroup]) -> Vec<HostLoad> {
    let shards = plan.settings.shard.map_or(1, |s| s.count);
    let rates: Vec<crate::plan::Rate> = lanes
        .iter()
        .map(|g| {
            plan.settings
                .rate
                .unwrap_or_else(|| g.rate(&plan.targets).divided(shards))
        })
        .collect();
    crate::executor::host::host_loads(
        &plan.targets,
        lanes.iter().zip(rates).map(|(g, r)| (&g.members[..], r)),
        &plan.settings.host_rate,
        shards,
    )
}

/// The first [`MAX_LISTED`] of `lines`, then how many more.
fn bounded(mut lines: Vec<String>) -> Vec<String> {
    if lines.len() > MAX_LISTED {
        let more = lines.len() - MAX_LISTED;
        lines.truncate(MAX_LISTED);
        lines.push(format!("and {more} more pace group(s) of several targets"));
    }
    lines
}

/// Targets named in one pace line, at most.
const MAX_LISTED: usize = 10;

/// `targets a, b share one pace (group g): 7/s`, and when their rates differ, which is used.
fn pace_lines(plan: &Plan) -> Vec<String> {
    let targets = &plan.targets;
    let lines = plan
        .pace_groups
        .iter()
        .filter(|g| g.members.len() > 1)
        .map(|g| {
            // A long list is cut: the line must stay readable (and short).
            let shown = &g.members[..g.members.len().min(MAX_LISTED)];
            let mut names = crate::plan::pace::names(targets, shown);
            if g.members.len() > shown.len() {
                names.push_str(&format!(" and {} more", g.members.len() - shown.len()));
            }
            let mut line = format!(
                "targets {names} share one pace (group {}): {}",
                g.name,
                g.rate(targets)
            );
            if g.rates_differ(targets) {
                let each: Vec<String> = shown
                    .iter()
                    .map(|&i| format!("{} {}", targets[i].name, targets[i].effective_rate()))
                    .collect();
                line.push_str(&format!(
                    ", the lowest of their rates ({})",
                    each.join(", ")
                ));
            }
            line
        })
        .collect();
    // Thousands of accounts grouped in pairs must not print thousands of lines.
    bounded(lines)
}

fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// `check --format json`: every plan's problems and counts, plus totals.
#[derive(Serialize)]
struct JsonDoc<'a> {
    version: u32,
    /// True when no plan has an error (the exit code is then 0).
    ok: bool,
    errors: u64,
    warnings: u64,
    plans: Vec<JsonPlan<'a>>,
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    plan: &'a str,
    loaded: bool,
    /// `null` when the plan was not loaded.
    rows: Option<u64>,
    targets: Option<usize>,
    errors: u64,
    warnings: u64,
    problems: Vec<JsonProblem<'a>>,
    /// Targets whose rows name their own accounts; absent when none do.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    accounts: &'a [AccountLanes],
    /// What the lanes to each host add up to; `null` when the plan was not loaded.
    hosts: Option<Vec<JsonHost>>,
}

/// What the lanes to one host add up to (see [`crate::executor::host`]).
#[derive(Serialize)]
struct JsonHost {
    host: String,
    base_url: String,
    lanes: usize,
    /// Requests per second; `null` when a lane is unlimited.
    rate_sum: Option<f64>,
    ceiling: Option<String>,
}

impl JsonHost {
    fn of(h: &HostLoad) -> JsonHost {
        JsonHost {
            host: crate::executor::host::host_name(&h.base_url).to_string(),
            base_url: h.base_url.clone(),
            lanes: h.lanes,
            rate_sum: h.total_per_second.is_finite().then_some(h.total_per_second),
            ceiling: h.ceiling.map(crate::executor::host::rate_text),
        }
    }
}

#[derive(Serialize)]
struct JsonProblem<'a> {
    file: &'a str,
    line: Option<u32>,
    column: Option<u32>,
    severity: &'static str,
    /// Stable machine code, e.g. `unknown_field` (see docs/check-json.md).
    code: &'static str,
    message: &'a str,
    hint: Option<&'a str>,
    /// The problems that are the same mistake (the same message on many rows) share one id,
    /// numbered from 1 per plan; human output shows each group as one diagnostic.
    group: usize,
}

impl<'a> JsonDoc<'a> {
    fn new(outcomes: &'a [Outcome]) -> JsonDoc<'a> {
        let plans: Vec<JsonPlan<'a>> = outcomes
            .iter()
            .map(|o| {
                let mut group = vec![0; o.problems.len()];
                for (id, members) in crate::diagnostic::groups(&o.problems).iter().enumerate() {
                    for &i in members {
                        group[i] = id + 1;
                    }
                }
                JsonPlan {
                    plan: &o.plan,
                    loaded: o.loaded,
                    rows: o.loaded.then_some(o.rows),
                    targets: o.loaded.then_some(o.targets),
                    errors: o.errors,
                    warnings: o.warnings,
                    problems: o
                        .problems
                        .iter()
                        .zip(group)
                        .map(|(p, group)| JsonProblem {
                            file: &p.file,
                            line: p.line,
                            column: p.column,
                            severity: match p.severity {
                                Severity::Error => "error",
                                Severity::Warning => "warning",
                                Severity::Note => "note",
                            },
                            code: p.code,
                            message: &p.message,
                            hint: p.hint.as_deref(),
                            group,
                        })
                        .collect(),
                    accounts: &o.accounts,
                    hosts: o.loaded.then(|| o.hosts.iter().map(JsonHost::of).collect()),
                }
            })
            .collect();
        let errors = outcomes.iter().map(|o| o.errors).sum();
        JsonDoc {
            version: JSON_VERSION,
            ok: errors == 0,
            errors,
            warnings: outcomes.iter().map(|o| o.warnings).sum(),
            plans,
        }
    }
}
