//! The validation pass on two threads. Before a run sends anything it reads, checks, digests
//! and spools every row; on one thread that pass keeps one core busy while the other idles.
//! Here a reader thread reads and checks the rows — and runs the caller's `beside` step on
//! each valid row — a few batches ahead of the calling thread, which does the rest. The
//! results are the serial pass's, row for row: rows travel in plan order through one bounded
//! channel, are never cloned, and each side sees them in the order the serial pass would.
//!
//! Memory stays flat: at most [`DEPTH`] full batches of [`BATCH`] rows wait in the channel,
//! plus the one each side holds, whatever the plan's size. Used batches go back to the reader
//! with their rows, which are dropped there: freeing memory on the thread that allocated it is
//! cheaper (glibc's per-thread arenas), and the batch's buffer is reused.
//!
//! When the OS refuses a thread, the pass runs serially ([`Threads::One`], also the choice on
//! a machine with one core: [`Threads::available`]), with the same results. A panic on the reader thread is not taken for
//! the end of the plan: [`stream`] returns it as an error, so the rows it never read cannot
//! pass for a shorter valid plan.

use std::sync::mpsc::sync_channel;
use std::thread;

use super::model::Row;
use super::problem::Problem;
use super::rows::Checked;
use super::Plan;

/// How a validation pass runs. The results are the same either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// Everything on the calling thread.
    One,
    /// Rows read and checked (and the caller's `beside` step run) on a thread of their own;
    /// [`Threads::One`] if no thread can be started.
    Two,
}

impl Threads {
    /// [`Threads::Two`] when the machine has a second core; on one core the second thread
    /// would only add hand-offs.
    pub fn available() -> Threads {
        match thread::available_parallelism() {
            Ok(n) if n.get() > 1 => Threads::Two,
            _ => Threads::One,
        }
    }
}

/// Rows per batch: enough that hand-offs between the threads are rare (a few hundred per
/// million rows), few enough that a batch (~140 KiB of rows) is cheap to hold.
const BATCH: usize = 512;
/// Full batches the reader may get ahead by: the bound that keeps memory flat. Measured on
/// 200 000 rows: 2 × 512 is as fast as 4 × 1024, and 0.7 MiB lighter.
const DEPTH: usize = 2;

/// One checked row, as the calling thread gets it.
// Nearly every item is a valid row: boxing it to shrink the rare `Invalid` would cost an
// allocation per row.
#[allow(clippy::large_enum_variant)]
pub(super) enum Item<T> {
    /// A valid row, with what `beside` made of it.
    Row(Row, T),
    /// Every problem of an invalid row.
    Invalid(Vec<Problem>),
}

/// Adds a checked row to `batch`, running `beside` on a valid one. Rows naming a broken
/// target are left out: that target's own errors say it all. (Pushed in place: a row is
/// ~270 bytes, and each move of it is a copy.)
fn push<T>(batch: &mut Vec<Item<T>>, checked: Checked, beside: &mut impl FnMut(&Row) -> T) {
    match checked {
        Checked::Row(row) => {
            let made = beside(&row);
            batch.push(Item::Row(row, made));
        }
        Checked::Invalid(problems) => batch.push(Item::Invalid(problems)),
        Checked::Suppressed(_) => {}
    }
}

/// Streams every row of `plan`, checked, to `each`, in plan order; `beside` sees each valid
/// row first (on the reader thread with [`Threads::Two`]). `each` gets the item by reference
/// (the rows are dropped on the thread that made them); it may take what it needs out of it.
/// Returns how many rows the plan has (valid or not), or, if the reader thread panicked, why:
/// the rows after the panic were never checked.
pub(super) fn stream<T: Send>(
    plan: &Plan,
    threads: Threads,
    mut beside: impl FnMut(&Row) -> T + Send,
    mut each: impl FnMut(&mut Item<T>),
) -> Result<u64, String> {
    if threads == Threads::Two {
        if let Some(read) = two_threads(plan, &mut beside, &mut each) {
            return read;
        }
    }
    let mut rows = plan.rows();
    let mut one = Vec::with_capacity(1);
    while let Some(checked) = rows.next_checked() {
        push(&mut one, checked, &mut beside);
        one.iter_mut().for_each(&mut each);
        one.clear();
    }
    Ok(rows.number)
}

/// [`stream`] on two threads; `None` when the OS would not start the reader (nothing was
/// read then: the caller reads serially instead).
fn two_threads<T: Send>(
    plan: &Plan,
    beside: &mut (impl FnMut(&Row) -> T + Send),
    each: &mut impl FnMut(&mut Item<T>),
) -> Option<Result<u64, String>> {
    let mut rows = plan.rows();
    thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<Vec<Item<T>>>(DEPTH);
        // Used batches on their way back. Room for every batch that can exist, so giving one
        // back never blocks the calling thread.
        let (used_tx, used_rx) = sync_channel::<Vec<Item<T>>>(DEPTH + 2);
        let reader = move || {
            let mut end = false;
            while !end {
                let mut batch = used_rx
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(BATCH));
                batch.clear();
                while batch.len() < BATCH {
                    match rows.next_checked() {
                        Some(checked) => push(&mut batch, checked, beside),
                        None => {
                            end = true;
                            break;
                        }
                    }
                }
                // A closed channel: the calling thread is gone (it panicked). Stop reading.
                if !batch.is_empty() && full_tx.send(batch).is_err() {
                    break;
                }
            }
            rows.number
        };
        let reader = thread::Builder::new()
            .name("reactbatch-rows".into())
            .spawn_scoped(scope, reader)
            .ok()?;
        // Ends when the reader drops its sender: at the end of the plan, or when it panicked.
        // If `each` panics instead, `full_rx` is dropped as this unwinds, which stops the
        // reader, so the scope's join cannot hang.
        for mut batch in full_rx.iter() {
            batch.iter_mut().for_each(&mut *each);
            let _ = used_tx.try_send(batch);
        }
        Some(reader.join().map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            format!("the thread reading the rows stopped ({why})")
        }))
    })
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use super::*;

    /// A CSV plan of `rows` rows (several batches) and its directory.
    fn plan(rows: u32) -> (tempfile::TempDir, Plan) {
        let dir = tempfile::tempdir().expect("tempdir");
        let targets = dir.path().join("targets.yaml");
        std::fs::write(
            &targets,
            "targets:\n  ogmma-br:\n    provider: ogmma\n    channel_id: ch_1\n    api_key: { env: REACTBATCH_TEST_SECRET }\n",
        )
        .expect("targets");
        let mut csv = String::from("message_id,emoji\n");
        for i in 0..rows {
            writeln!(csv, "m-{i},👍").expect("write");
        }
        let path = dir.path().join("rows.csv");
        std::fs::write(&path, csv).expect("csv");
        let plan = Plan::load(&path, Some(&targets)).expect("plan loads");
        (dir, plan)
    }

    #[test]
    fn a_panic_on_the_reader_thread_is_an_error_not_a_shorter_plan() {
        let (_dir, plan) = plan(5000);
        let mut seen = 0u64;
        let v = plan.validate_split(
            true,
            Threads::Two,
            |row| {
                if row.number == 3000 {
                    panic!("row 3000 is cursed");
                }
            },
            |_, ()| seen += 1,
        );
        assert!(seen < 3000, "{seen}");
        assert_eq!(v.errors.len(), 1, "{:?}", v.errors);
        assert_eq!(
            v.errors[0].message,
            "internal error: the thread reading the rows stopped (row 3000 is cursed); the plan \
             was not fully checked"
        );
        // The same plan, read whole, is valid: the error came from the panic alone.
        let v = plan.validate_split(true, Threads::Two, |_| (), |_, ()| {});
        assert!(v.errors.is_empty(), "{:?}", v.errors);
        assert_eq!(v.rows, 5000);
    }

    #[test]
    fn a_panic_on_the_calling_thread_stops_the_reader_and_unwinds() {
        // The reader is blocked on a full channel when the consumer panics: the pass must
        // unwind (not wait forever on the reader), with the panic it had.
        let (_dir, plan) = plan(20 * BATCH as u32);
        let mut beside_rows = 0u64;
        let result = catch_unwind(AssertUnwindSafe(|| {
            plan.validate_split(
                true,
                Threads::Two,
                |_| beside_rows += 1,
                |row, ()| {
                    if row.number == 10 {
                        panic!("consumer gave up");
                    }
                },
            )
        }));
        let panic = result.expect_err("the panic reaches the caller");
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"consumer gave up"));
        // The reader stopped a bounded distance ahead, not at the end of the plan.
        assert!(beside_rows <= ((DEPTH + 2) * BATCH) as u64, "{beside_rows}");
    }
}
