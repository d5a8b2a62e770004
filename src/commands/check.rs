//! `reactbatch check`: load and validate plans, print every problem, send nothing.
//!
//! For each plan: structural problems, row problems (one streaming pass), secret problems (a
//! missing env var is an error of `check` too), then warnings, each as one line
//! `file:line:col: error: message (hint)` on stderr, and a one-line summary
//! `plan.yaml: 120 rows, 2 targets, 0 errors, 1 warning`. Exit 2 if any plan has an error.

use crate::cli::CheckArgs;
use crate::exit::Exit;
use crate::plan::{Plan, Problem};

pub fn run(args: &CheckArgs) -> Exit {
    let mut exit = Exit::Success;
    for path in &args.plans {
        if !check_one(path, args.targets.as_deref()) {
            exit = Exit::Invalid;
        }
    }
    exit
}

/// Checks one plan and prints its problems and summary; `true` when it has no error.
fn check_one(path: &std::path::Path, targets: Option<&std::path::Path>) -> bool {
    let name = path.display();
    let (plan, mut errors) = Plan::load_lenient(path, targets);
    let Some(plan) = plan else {
        print(&errors);
        eprintln!(
            "{name}: not loaded, {}",
            count(errors.len() as u64, "error")
        );
        return false;
    };
    let validation = plan.validate();
    let warning_count = validation.warning_count();
    let mut error_count = errors.len() as u64 + validation.error_count();
    errors.extend(validation.errors);
    if let Err(secret_problems) = plan.resolve_secrets() {
        error_count += secret_problems.len() as u64;
        errors.extend(secret_problems);
    }
    // One batch, so a line hidden for one problem (it may hold a secret) is hidden for all.
    errors.extend(validation.warnings.iter().cloned());
    print(&errors);
    eprintln!(
        "{name}: {}, {}, {}, {}",
        count(validation.rows, "row"),
        count(plan.targets.len() as u64, "target"),
        count(error_count, "error"),
        count(warning_count, "warning"),
    );
    error_count == 0
}

fn print(problems: &[Problem]) {
    crate::diagnostic::eprint(problems);
}

fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
