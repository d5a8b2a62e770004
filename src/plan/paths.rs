//! Where a plan may read files from: the path policy for `include:` entries and `{ file: }`
//! secrets.
//!
//! # Policy
//! - A **relative** path is resolved against the directory of the file that names it (the plan,
//!   an included YAML file, or the `--targets` file) and may not leave that directory: `..` is
//!   resolved lexically (`a/../b` is fine, `../b` is not), and where the file exists its real
//!   path (symlinks followed, [`std::fs::canonicalize`]) must still lie inside the directory's
//!   real path. A plan copied from elsewhere cannot make `check` or `run` read
//!   `../../.ssh/id_rsa` as a "secret" or `/etc/passwd` through a symlinked `rows.csv`.
//! - An **absolute** path is allowed: it is an explicit choice a reviewer can see (secrets often
//!   live in `/run/secrets/...`).
//! - What is read must be a **regular file**: a directory, FIFO, socket or device (`/dev/zero`,
//!   `/dev/stdin`) is refused before it is opened, so nothing can block `check` on a pipe or feed
//!   it an endless stream.

use std::path::{Component, Path, PathBuf};

/// The message when a relative path leaves its directory.
fn leaves(name: &str) -> String {
    format!(
        "`{}` leaves the plan's directory; give an absolute path if you mean it",
        super::source::shorten(name)
    )
}

/// Resolves `name`, written in a file whose directory is `dir`, under the policy above. The
/// error is a message for a problem located at the entry.
pub(super) fn resolve(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let path = Path::new(name);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return Err(leaves(name)),
            },
            // Not produced for a relative path on Unix; on Windows `C:x` or `\x` would be.
            Component::RootDir | Component::Prefix(_) => return Err(leaves(name)),
        }
    }
    let joined = dir.join(path);
    let base = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if let (Ok(real), Ok(real_dir)) = (std::fs::canonicalize(&joined), std::fs::canonicalize(base))
    {
        if !real.starts_with(&real_dir) {
            return Err(leaves(name));
        }
    }
    Ok(joined)
}

/// `Ok` if `path` (symlinks followed) is a regular file; otherwise what it is, for a message
/// like "`x` is a directory, not a regular file". A missing file is `Ok`: opening it reports
/// that with the OS error.
pub(super) fn regular_file(path: &Path) -> Result<(), &'static str> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let kind = meta.file_type();
    if kind.is_file() {
        return Ok(());
    }
    if kind.is_dir() {
        return Err("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return Err("a FIFO (named pipe)");
        }
        if kind.is_socket() {
            return Err("a socket");
        }
        if kind.is_char_device() || kind.is_block_device() {
            return Err("a device");
        }
    }
    Err("a special file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_parent_steps_may_not_leave() {
        let dir = Path::new("/nonexistent-dir-for-test");
        assert!(resolve(dir, "a/../b.csv").is_ok());
        assert!(resolve(dir, "./a/./b.csv").is_ok());
        assert!(resolve(dir, "../b.csv").is_err());
        assert!(resolve(dir, "a/../../b.csv").is_err());
        assert!(resolve(dir, "a/b/../../../etc/passwd").is_err());
        assert_eq!(
            resolve(dir, "/etc/passwd").as_deref(),
            Ok(Path::new("/etc/passwd"))
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_the_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let inside = tmp.path().join("plan");
        std::fs::create_dir(&inside).unwrap();
        std::fs::write(tmp.path().join("outside.csv"), "x").unwrap();
        std::fs::write(inside.join("ok.csv"), "x").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside.csv"), inside.join("link.csv"))
            .unwrap();
        std::os::unix::fs::symlink(inside.join("ok.csv"), inside.join("alias.csv")).unwrap();
        assert!(resolve(&inside, "link.csv").is_err());
        assert!(resolve(&inside, "alias.csv").is_ok());
        assert!(resolve(&inside, "missing.csv").is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files() {
        assert_eq!(regular_file(Path::new("/dev/null")), Err("a device"));
        assert_eq!(regular_file(Path::new("/")), Err("a directory"));
        assert_eq!(regular_file(Path::new("/no/such/file")), Ok(()));
    }
}
