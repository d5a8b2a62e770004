//! `--lock FILE`: an OS advisory lock (flock) held for the whole run, so two runs of a cron job
//! never overlap. The holder writes its pid and start time into the file for the message the
//! second run prints. The OS releases the lock when the holder dies, so a stale file left by a
//! crashed run does not block.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// A held lock; released when dropped (or when the process ends, however it ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; the text names the holder as it described itself.
    Held(String),
    Io(std::io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held(holder) => write!(f, "held by another run ({holder})"),
            LockError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl RunLock {
    /// Takes the lock without waiting.
    pub fn acquire(path: &Path) -> Result<RunLock, LockError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(LockError::Held(if holder.is_empty() {
                    "holder unknown".to_string()
                } else {
                    holder.to_string()
                }));
            }
            Err(TryLockError::Error(e)) => return Err(LockError::Io(e)),
        }
        let me = format!(
            "pid {}, started {}",
            std::process::id(),
            crate::outputs::report::timestamp(chrono::Utc::now())
        );
        file.set_len(0).map_err(LockError::Io)?;
        file.seek(SeekFrom::Start(0)).map_err(LockError::Io)?;
        file.write_all(me.as_bytes()).map_err(LockError::Io)?;
        file.flush().map_err(LockError::Io)?;
        Ok(RunLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_ones_pid_then_freed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run.lock");
        let first = RunLock::acquire(&path).expect("first");
        match RunLock::acquire(&path) {
            Err(LockError::Held(who)) => assert!(
                who.contains(&format!("pid {}", std::process::id())),
                "{who}"
            ),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        assert!(RunLock::acquire(&path).is_ok());
    }
}
