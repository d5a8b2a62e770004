//! The open-file limit. Every connection is a file descriptor, as are the plan, the spool,
//! the report and the runtime's own; the common default soft limit (1 024) is far below what
//! the hard limit allows. At start the soft limit is raised to the hard one ([`raise`]), and
//! a live run fits its connection bound (`--concurrency`) under it with room to spare
//! ([`fit_concurrency`]), instead of failing rows with "Too many open files".

/// Descriptors kept for everything but the connections: standard streams, plan and include
/// files, spool, report, emit and lock files, the runtime's epoll and wake-up descriptors,
/// the system certificate store while it is read, a proxy connection.
pub(crate) const HEADROOM: u64 = 64;

/// Raises the soft open-file limit to the hard one; the soft limit in force afterwards
/// (`None` where it cannot be read).
pub(crate) fn raise() -> Option<u64> {
    let mut limit = current_limit()?;
    if limit.rlim_cur < limit.rlim_max {
        let mut raised = limit;
        raised.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            // An unlimited hard limit is not a value the soft one may take (Linux caps it at
            // `nr_open`); a large finite one is as good.
            raised.rlim_cur = limit.rlim_max.min(1 << 20);
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
    }
    Some(as_u64(limit.rlim_cur))
}

/// The soft open-file limit now (`None` where it cannot be read).
pub(crate) fn soft_limit() -> Option<u64> {
    current_limit().map(|l| as_u64(l.rlim_cur))
}

/// `rlim_t` is 64 bits on Linux and the BSDs but not everywhere the crate builds.
#[allow(clippy::unnecessary_cast)]
fn as_u64(value: libc::rlim_t) -> u64 {
    value as u64
}

fn current_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// The concurrency a run can have under an open-file limit of `soft`, keeping [`HEADROOM`]
/// for other files: each connection costs one descriptor, two when the sandbox runs in the
/// same process (it holds the other end). Never below 1.
pub(crate) fn fit_concurrency(concurrency: usize, soft: u64, in_process_sandbox: bool) -> usize {
    let per_connection = if in_process_sandbox { 2 } else { 1 };
    let room = soft.saturating_sub(HEADROOM) / per_connection;
    let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
    concurrency.min(room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_fits_under_the_limit_with_headroom() {
        assert_eq!(fit_concurrency(64, 1024, false), 64);
        assert_eq!(fit_concurrency(4096, 1024, false), 1024 - 64);
        assert_eq!(fit_concurrency(4096, 1024, true), (1024 - 64) / 2);
        assert_eq!(fit_concurrency(64, 100, false), 36);
        assert_eq!(fit_concurrency(64, 10, false), 1);
        assert_eq!(fit_concurrency(64, u64::MAX, false), 64);
    }

    #[test]
    fn the_soft_limit_after_raising_is_the_one_in_force() {
        let raised = raise().expect("getrlimit works on this system");
        assert_eq!(soft_limit(), Some(raised));
    }
}
