//! The plan digest (the Terraform plan/apply habit): a SHA-256 over what a run would send —
//! every validated row, the targets without their secrets (credential *references* only), and
//! the plan's `settings:`. `run --dry-run` prints it; `run --expect-digest HASH` refuses to
//! run when the plan or any include changed since the audit. Row source positions are not
//! part of it (a comment added to the plan does not change what is sent); command-line flags
//! are not either.
//!
//! Beside the plan digest, one digest per file ([`FileDigest`]): the targets defined in it,
//! the `settings:` (in the plan file) and its rows, without row numbers (a row added to one
//! include does not make the later ones look changed). The dry run's `--summary-json` holds
//! them; given that file as `--expect-digest`, a mismatch names the files that changed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::plan::{Plan, Row, Settings, Target, TargetKind};

pub struct PlanDigest {
    h: Sha256,
    /// Per file (as rows name it): the same fields as the plan digest, without row numbers.
    files: BTreeMap<String, Sha256>,
    /// Target names by index, for the per-file digests.
    target_names: Vec<String>,
    /// The file rows of the last call came from, and its hasher's key (rows come file by file).
    last_file: Option<std::sync::Arc<str>>,
    /// A row's bytes for the plan digest and for its file's, gathered before hashing.
    row_bytes: Vec<u8>,
    file_bytes: Vec<u8>,
}

/// The digest of one file of the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub file: String,
    pub digest: String,
}

/// The plan digest and the per-file digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digests {
    pub plan: String,
    pub files: Vec<FileDigest>,
}

/// Where digested bytes go: a hasher, or a buffer that a hasher takes whole. A row's fields
/// are gathered in a buffer first: a hasher fed a few bytes at a time spends more on each
/// feeding than on the hashing, and the digest is the same either way.
pub(crate) trait Feed {
    fn feed(&mut self, bytes: &[u8]);
}

impl Feed for Sha256 {
    fn feed(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl Feed for Vec<u8> {
    fn feed(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Feeds length-prefixed fields to a hasher, so `("ab","c")` and `("a","bc")` differ.
fn put(h: &mut impl Feed, v: &str) {
    h.feed(&(v.len() as u64).to_le_bytes());
    h.feed(v.as_bytes());
}

/// An optional field: `1` and the field as [`put`] feeds it, or `0`. The identity scan's
/// content digest takes its fields the same way.
pub(crate) fn put_opt(h: &mut impl Feed, v: Option<&str>) {
    match v {
        Some(v) => {
            h.feed(&[1]);
            put(h, v);
        }
        None => h.feed(&[0]),
    }
}

/// A target's fields as both digests take them: secrets as references only.
fn put_target(h: &mut impl Feed, t: &Target) {
    put(h, "target");
    put(h, &t.name);
    put(h, t.provider().as_str());
    put(h, &t.base_url);
    match &t.kind {
        TargetKind::Kommo {
            scope_id,
            user_id,
            user_ref_id,
        } => {
            put_account(h, scope_id.as_deref());
            put_opt(h, user_id.as_deref());
            put_opt(h, user_ref_id.as_deref());
        }
        TargetKind::Ogmma { channel_id } => put_account(h, channel_id.as_deref()),
    }
    put_opt(h, t.rate.map(|r| r.to_string()).as_deref());
    put(h, &t.credential.to_string());
}

/// The plan's `settings:` that change what is sent or how fast.
fn put_settings(h: &mut impl Feed, s: &Settings) {
    put(h, "settings");
    put_opt(h, s.rate.map(|r| r.to_string()).as_deref());
    put_opt(h, s.burst.map(|v| v.to_string()).as_deref());
    put_opt(h, s.concurrency.map(|v| v.to_string()).as_deref());
    put_opt(h, s.retries.map(|v| v.to_string()).as_deref());
    put_opt(h, s.timeout.map(|v| v.as_millis().to_string()).as_deref());
    put_opt(
        h,
        s.shard
            .map(|v| format!("{}/{}", v.index, v.count))
            .as_deref(),
    );
}

/// A target's account as the digest took it when every target had one (the same bytes), or
/// a marker when its rows give theirs.
fn put_account(h: &mut impl Feed, account: Option<&str>) {
    match account {
        Some(a) => put(h, a),
        None => h.feed(&[0xff]),
    }
}

/// A row's content fields, the part both digests share. The row's own account only when it
/// gives one: a plan without per-row accounts digests as it always did.
fn put_row_fields(h: &mut impl Feed, row: &Row) {
    let [fields @ .., scope_id, channel_id] = row.text_fields();
    for v in fields {
        put_opt(h, v.as_deref());
    }
    put_opt(h, row.not_before.map(|t| t.to_rfc3339()).as_deref());
    if scope_id.is_some() || channel_id.is_some() {
        put(h, "account");
        put_opt(h, scope_id.as_deref());
        put_opt(h, channel_id.as_deref());
    }
}

impl PlanDigest {
    pub fn new(plan: &Plan) -> PlanDigest {
        let mut d = PlanDigest {
            h: Sha256::new(),
            files: BTreeMap::new(),
            target_names: plan.targets.iter().map(|t| t.name.clone()).collect(),
            last_file: None,
            row_bytes: Vec::with_capacity(512),
            file_bytes: Vec::with_capacity(512),
        };
        d.field("reactbatch-plan-digest-v1");
        for (i, t) in plan.targets.iter().enumerate() {
            put_target(&mut d.h, t);
            // The same fields again, into the digest of the file that defines the target.
            let file = d.files.entry(plan.target_file(i).to_string()).or_default();
            put_target(file, t);
        }
        put_settings(&mut d.h, &plan.settings);
        d.field("rows");
        // The settings belong to the plan file.
        let file = d.files.entry(plan_file_name(plan)).or_default();
        put_settings(file, &plan.settings);
        d
    }

    fn field(&mut self, v: &str) {
        put(&mut self.h, v);
    }

    pub fn row(&mut self, row: &Row) {
        let (bytes, file_bytes) = (&mut self.row_bytes, &mut self.file_bytes);
        bytes.clear();
        bytes.feed(&row.number.to_le_bytes());
        bytes.feed(&(row.target as u64).to_le_bytes());
        put(bytes, row.action.as_str());
        let fields = bytes.len();
        put_row_fields(bytes, row);
        // Rows arrive file by file: look the file's hasher up only when the file changes.
        if self.last_file.as_ref() != Some(&row.source.file) {
            self.last_file = Some(row.source.file.clone());
            self.files.entry(row.source.file.to_string()).or_default();
        }
        if let Some(file) = self.files.get_mut(&*row.source.file) {
            file_bytes.clear();
            put(file_bytes, "row");
            put(
                file_bytes,
                self.target_names.get(row.target).map_or("", String::as_str),
            );
            put(file_bytes, row.action.as_str());
            file_bytes.feed(&bytes[fields..]);
            file.update(&file_bytes[..]);
        }
        self.h.update(&bytes[..]);
    }

    /// `sha256:` and 64 lowercase hex digits.
    pub fn finish(self) -> String {
        self.finish_all().plan
    }

    /// The plan digest and one digest per file, files in name order.
    pub fn finish_all(self) -> Digests {
        Digests {
            plan: format!("sha256:{}", hex::encode(self.h.finalize())),
            files: self
                .files
                .into_iter()
                .map(|(file, h)| FileDigest {
                    file,
                    digest: format!("sha256:{}", hex::encode(h.finalize())),
                })
                .collect(),
        }
    }
}

/// The plan file as rows name their source (the path as given).
fn plan_file_name(plan: &Plan) -> String {
    plan.path.display().to_string()
}

/// What `--expect-digest` was given: a digest, or the audit's `--summary-json` file (which
/// also holds the per-file digests, so a mismatch can name what changed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub plan: String,
    /// Empty when only a digest was given.
    pub files: Vec<FileDigest>,
}

/// Whether `text` is `sha256:` and 64 lowercase hex digits.
pub fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

impl Expected {
    /// Reads an `--expect-digest` value: a digest as `--dry-run` prints it, or the path of a
    /// `--summary-json` file a dry run wrote. Anything else is an error saying what is expected.
    pub fn parse(value: &str) -> Result<Expected, String> {
        let text = value.trim();
        if is_digest(text) {
            return Ok(Expected {
                plan: text.to_string(),
                files: Vec::new(),
            });
        }
        let expected = "expected `sha256:` and 64 lowercase hex digits, as `run --dry-run` prints \
                        it, or the --summary-json file of that dry run";
        let path = Path::new(text);
        if text.starts_with("sha256:") || !path.is_file() {
            return Err(format!(
                "--expect-digest `{}` is not a digest ({expected})",
                crate::plan::fields::shorten(text)
            ));
        }
        #[derive(Deserialize)]
        struct Audit {
            digest: Option<String>,
            #[serde(default)]
            files: Vec<FileDigest>,
        }
        let bytes = std::fs::read(path)
            .map_err(|e| format!("--expect-digest: cannot read {}: {e}", path.display()))?;
        let audit: Audit = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "--expect-digest: {} is not a --summary-json file ({e}); {expected}",
                path.display()
            )
        })?;
        match audit.digest {
            Some(plan) if is_digest(&plan) => Ok(Expected {
                plan,
                files: audit.files,
            }),
            _ => Err(format!(
                "--expect-digest: {} holds no plan digest; {expected}",
                path.display()
            )),
        }
    }

    /// `Ok` when the plan is what was audited; otherwise the message for the user, naming the
    /// files whose digests differ when the audit's per-file digests are known.
    pub fn check(&self, actual: &Digests) -> Result<(), String> {
        if self.plan == actual.plan {
            return Ok(());
        }
        let mut msg = format!(
            "plan digest is {}, expected {}: the plan changed since the audit",
            actual.plan, self.plan
        );
        if self.files.is_empty() {
            msg.push_str(
                " (give the audit's --summary-json file as --expect-digest to see which files changed)",
            );
            return Err(msg);
        }
        let before: BTreeMap<&str, &str> = self
            .files
            .iter()
            .map(|f| (f.file.as_str(), f.digest.as_str()))
            .collect();
        let now: BTreeMap<&str, &str> = actual
            .files
            .iter()
            .map(|f| (f.file.as_str(), f.digest.as_str()))
            .collect();
        let mut changes = Vec::new();
        for (file, digest) in &now {
            match before.get(file) {
                None => changes.push(format!("{file} (new)")),
                Some(d) if d != digest => changes.push(format!("{file} (changed)")),
                _ => {}
            }
        }
        for file in before.keys().filter(|f| !now.contains_key(*f)) {
            changes.push(format!("{file} (no longer part of the plan)"));
        }
        if changes.is_empty() {
            // Same files, same content, different digest: the rows moved between files, or
            // the numbering changed.
            msg.push_str("; every file's content is as audited, but rows moved between them");
        } else {
            msg.push_str(": ");
            msg.push_str(&changes.join(", "));
        }
        Err(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(files: &[(&str, &str)]) -> Digests {
        Digests {
            plan: format!("sha256:{}", "1".repeat(64)),
            files: files
                .iter()
                .map(|(f, d)| FileDigest {
                    file: f.to_string(),
                    digest: d.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_value_that_is_not_a_digest_says_so() {
        for bad in [
            "",
            "abc",
            "sha256:xyz",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            let e = Expected::parse(bad).expect_err(bad);
            assert!(e.contains("is not a digest"), "{e}");
        }
        let good = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            Expected::parse(&format!(" {good}\n")).expect("digest").plan,
            good
        );
    }

    #[test]
    fn a_mismatch_names_the_files_that_changed() {
        let audit = Expected {
            plan: format!("sha256:{}", "0".repeat(64)),
            files: digests(&[("p.yaml", "a"), ("rows.csv", "b"), ("old.csv", "c")]).files,
        };
        let now = digests(&[("p.yaml", "a"), ("rows.csv", "B"), ("new.csv", "d")]);
        let e = audit.check(&now).expect_err("mismatch");
        assert!(
            e.ends_with(
                ": new.csv (new), rows.csv (changed), old.csv (no longer part of the plan)"
            ),
            "{e}"
        );
        assert!(!e.contains("p.yaml"), "{e}");
        let same = Expected {
            plan: now.plan.clone(),
            files: vec![],
        };
        assert_eq!(same.check(&now), Ok(()));
        let bare = Expected {
            plan: audit.plan.clone(),
            files: vec![],
        };
        assert!(bare
            .check(&now)
            .expect_err("mismatch")
            .contains("--summary-json"));
    }
}
