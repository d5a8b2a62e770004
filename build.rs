//! Puts the git commit into `--version` when built from a checkout: `reactbatch 0.1.0 (1a2b3c4)`.
//!
//! Outside a git checkout (a crates.io tarball), or without git, the version is just
//! `reactbatch 0.1.0`: nothing here may fail the build. Packagers can set
//! `REACTBATCH_GIT_COMMIT` to provide the commit themselves.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=REACTBATCH_GIT_COMMIT");
    let commit = std::env::var("REACTBATCH_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit);
    let suffix = commit
        .map(|c| format!(" ({})", c.trim()))
        .unwrap_or_default();
    println!("cargo:rustc-env=REACTBATCH_VERSION_SUFFIX={suffix}");
}

/// `git rev-parse --short HEAD`, and the files whose change moves HEAD, for rerun-if-changed.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    // In a worktree `.git` is a file; `--git-path` finds HEAD and refs wherever they live.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])?];
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &head_ref])?);
    }
    // A ref may be packed: then it changes in packed-refs.
    watch.extend(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watch {
        // A missing file would make cargo rerun this script on every build.
        if PathBuf::from(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    Some(commit)
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}
