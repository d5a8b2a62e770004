//! Plans: the model ([`model`]), located problems ([`problem`]), and loading.
//!
//! INTERFACE (implemented by the plan-loading work):
//! - `Plan::load(path, targets_file) -> Result<Plan, Vec<Problem>>` parses the plan structure.
//! - `Plan::rows()` streams `Result<Row, Problem>` in plan order (CSV includes are streamed).
//! - `Plan::validate()` runs the full streaming pass and collects every error and warning.
//! - `Plan::resolve_secrets()` reads each target's `{ env }` / `{ file }` secret.

pub mod model;
pub mod problem;

use std::path::{Path, PathBuf};

pub use model::*;
pub use problem::{Problem, Severity};

use crate::secret::Secret;

/// A loaded plan: targets and settings in memory, rows streamed on demand.
#[derive(Debug)]
pub struct Plan {
    /// The plan file as the user named it.
    pub path: PathBuf,
    pub targets: Vec<Target>,
    pub settings: Settings,
}

/// The outcome of a full validation pass.
#[derive(Debug, Default)]
pub struct Validation {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub rows: u64,
}

impl Plan {
    pub fn load(path: &Path, _targets_file: Option<&Path>) -> Result<Plan, Vec<Problem>> {
        Err(vec![Problem::error(
            path.display().to_string(),
            None,
            None,
            "plan loading is not built yet",
        )])
    }

    pub fn rows(&self) -> std::vec::IntoIter<Result<Row, Problem>> {
        Vec::new().into_iter()
    }

    pub fn validate(&self) -> Validation {
        Validation::default()
    }

    pub fn resolve_secrets(&self) -> Result<Vec<Secret>, Vec<Problem>> {
        Ok(Vec::new())
    }
}

impl Plan {
    pub fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }
}
