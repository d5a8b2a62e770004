//! The spool: validated rows, written in a compact binary form to a file in the OS temp
//! directory during the one validation pass, and read back by the executor. The plan files are
//! read once: a file edited while a run goes on cannot inject a row nobody validated, and
//! memory stays flat whatever the plan's size.
//!
//! The file is unlinked as soon as it is open for reading and writing, so it disappears when the
//! process ends, however it ends (on Unix; elsewhere it is removed when the spool is dropped).
//!
//! Record: a `u32` length, a `u64` link (the offset of the next record of the same lane,
//! `u64::MAX` for none), then `length` bytes: `number u64, line u32, file u32` (index into
//! the spool's file names), `target u32`, `action u8` (0 react, 1 unreact), `content_id u64` (the
//! row's content hash from the validation pass, which the run's row identities use; 0 for a
//! row with a `key`), eleven optional strings (`u32` length, `u32::MAX` for none) in [`Row::text_fields`]
//! order, and `not_before` (`u8` flag 0/1, then `i64` microseconds when 1). All little-endian.
//! The length lets the reader take a record in one read into a buffer it reuses and parse it
//! from memory, instead of some 25 small reads per row on the executor's thread.
//!
//! The links chain each lane's records ([`Spool::push_to`]) so that the executor can read
//! every lane on its own ([`SpoolRows::by_lane`]): an export sorted by account then runs all
//! its accounts side by side, with a few rows of each in memory. A link is written when the
//! lane's next record comes, into the buffer when the record is still there, else into the
//! file when the buffer next goes out.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::model::{Action, Row, Source};
use super::problem::Problem;

/// Validated rows on their way from validation to the executor.
pub struct Spool {
    file: File,
    /// Records not written yet; the first starts at file offset `bytes - buffer.len()`.
    buffer: Vec<u8>,
    /// Links of records already in the file: (offset of the link, what it points to).
    links: Vec<(u64, u64)>,
    /// Per lane: the offsets of its first and its last record.
    lanes: Vec<(u64, u64)>,
    path: PathBuf,
    files: Vec<Arc<str>>,
    rows: u64,
    /// Rows per target (by index), so a reader knows which targets still have rows ahead.
    per_target: Vec<u64>,
    /// Bytes written so far: a reader refuses a record length that runs past them.
    bytes: u64,
    /// The record being encoded, kept to reuse its allocation.
    record: Vec<u8>,
}

const NONE: u32 = u32::MAX;
/// A link to no record: the lane's last.
const END: u64 = u64::MAX;
/// The record header: its length and its link.
const HEADER: u64 = 12;
/// The buffer goes to the file when it holds this much.
const BUFFER: usize = 1 << 16;

impl Spool {
    pub fn create() -> std::io::Result<Spool> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "reactbatch-{}-{nanos:08x}.spool",
            std::process::id()
        ));
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        // Unix keeps the open file; it is gone from the directory already.
        #[cfg(unix)]
        let _ = std::fs::remove_file(&path);
        Ok(Spool {
            file,
            buffer: Vec::with_capacity(BUFFER + 512),
            links: Vec::new(),
            lanes: Vec::new(),
            path,
            files: Vec::new(),
            rows: 0,
            per_target: Vec::new(),
            bytes: 0,
            record: Vec::with_capacity(256),
        })
    }

    /// Appends a validated row with its content id (from the validation pass;
    /// `None` for a row with a `key`). Readers hand the id to the [`LastContentId`] they
    /// share, so the run does not hash the row again for its identity. The row is in lane 0
    /// (see [`Spool::push_to`]).
    pub fn push(&mut self, row: &Row, content_id: Option<u64>) -> std::io::Result<()> {
        self.push_to(row, content_id, 0)
    }

    /// [`Spool::push`], in the chain of lane `lane` (the lane the executor sends it through:
    /// rows on one message are in one lane, so each lane's chain keeps their order).
    pub fn push_to(
        &mut self,
        row: &Row,
        content_id: Option<u64>,
        lane: usize,
    ) -> std::io::Result<()> {
        let file = match self
            .files
            .iter()
            .rposition(|f| Arc::ptr_eq(f, &row.source.file))
        {
            Some(i) => i,
            None => {
                self.files.push(Arc::clone(&row.source.file));
                self.files.len() - 1
            }
        };
        let r = &mut self.record;
        r.clear();
        r.extend_from_slice(&row.number.to_le_bytes());
        r.extend_from_slice(&row.source.line.to_le_bytes());
        r.extend_from_slice(&(file as u32).to_le_bytes());
        r.extend_from_slice(&(row.target as u32).to_le_bytes());
        r.push(matches!(row.action, Action::Unreact) as u8);
        r.extend_from_slice(&content_id.unwrap_or(0).to_le_bytes());
        for field in row.text_fields() {
            match field {
                None => r.extend_from_slice(&NONE.to_le_bytes()),
                Some(s) => {
                    r.extend_from_slice(&length(s.len())?.to_le_bytes());
                    r.extend_from_slice(s.as_bytes());
                }
            }
        }
        match row.not_before {
            None => r.push(0),
            Some(t) => {
                r.push(1);
                r.extend_from_slice(&t.timestamp_micros().to_le_bytes());
            }
        }
        let len = length(r.len())?;
        let at = self.bytes;
        self.buffer.extend_from_slice(&len.to_le_bytes());
        self.buffer.extend_from_slice(&END.to_le_bytes());
        self.buffer.extend_from_slice(r);
        self.bytes += HEADER + r.len() as u64;
        if self.lanes.len() <= lane {
            self.lanes.resize(lane + 1, (END, END));
        }
        let (first, last) = self.lanes[lane];
        if first == END {
            self.lanes[lane].0 = at;
        } else {
            self.link(last + 4, at);
        }
        self.lanes[lane].1 = at;
        if self.buffer.len() >= BUFFER {
            self.write_out()?;
        }
        self.rows += 1;
        if self.per_target.len() <= row.target {
            self.per_target.resize(row.target + 1, 0);
        }
        self.per_target[row.target] += 1;
        Ok(())
    }

    /// Points the link at `at` (a file offset) to the record at `to`.
    fn link(&mut self, at: u64, to: u64) {
        let start = self.bytes - self.buffer.len() as u64;
        match at.checked_sub(start) {
            Some(i) => {
                let i = i as usize;
                self.buffer[i..i + 8].copy_from_slice(&to.to_le_bytes());
            }
            None => self.links.push((at, to)),
        }
    }

    /// Writes the buffer out, then the links into records written before it.
    fn write_out(&mut self) -> std::io::Result<()> {
        self.file.write_all(&self.buffer)?;
        self.buffer.clear();
        if !self.links.is_empty() {
            for &(at, to) in &self.links {
                self.file.seek(SeekFrom::Start(at))?;
                self.file.write_all(&to.to_le_bytes())?;
            }
            self.links.clear();
            self.file.seek(SeekFrom::End(0))?;
        }
        Ok(())
    }

    /// Rows spooled so far.
    pub fn len(&self) -> u64 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Reads the rows back, in the order they were pushed.
    pub fn into_rows(mut self) -> std::io::Result<SpoolRows> {
        self.write_out()?;
        let Spool {
            mut file,
            lanes,
            path,
            files,
            rows,
            per_target,
            bytes,
            record,
            ..
        } = self;
        file.seek(SeekFrom::Start(0))?;
        Ok(SpoolRows {
            reader: BufReader::with_capacity(1 << 16, file),
            path,
            files,
            left: rows,
            total: rows,
            per_target: per_target.into(),
            lanes: lanes.iter().map(|&(first, _)| first).collect(),
            bytes_left: bytes,
            total_bytes: bytes,
            record,
            last: LastContentId::default(),
        })
    }
}

/// A length as the record stores it; `u32::MAX` means "none", so it is not a length.
fn length(len: usize) -> std::io::Result<u32> {
    u32::try_from(len)
        .ok()
        .filter(|&l| l != NONE)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a row of 4 GiB or more does not fit in the spool",
            )
        })
}

/// The spooled rows, streamed.
pub struct SpoolRows {
    reader: BufReader<File>,
    path: PathBuf,
    files: Vec<Arc<str>>,
    left: u64,
    total: u64,
    per_target: Arc<[u64]>,
    /// Per lane: the offset of its first record.
    lanes: Arc<[u64]>,
    /// Spool bytes not read yet: a corrupt record length cannot make the reader allocate more.
    bytes_left: u64,
    total_bytes: u64,
    /// The record being parsed, kept to reuse its allocation.
    record: Vec<u8>,
    /// Where each row's content id goes as the row is read (shared by every reader).
    last: LastContentId,
}

impl SpoolRows {
    /// Where this reader (and every one [`SpoolRows::again`] makes) leaves the content id of
    /// the row it yielded last: link it to the run's row identities.
    pub fn content_ids(&self) -> LastContentId {
        self.last.clone()
    }

    /// How many of the rows are for target `target` (by index).
    pub fn rows_for(&self, target: usize) -> u64 {
        self.per_target.get(target).copied().unwrap_or(0)
    }

    /// The rows again from the first. The handles share one file offset: read one at a time
    /// (`--resume` copies done rows from one before the executor reads another).
    pub fn again(&self) -> std::io::Result<SpoolRows> {
        let mut file = self.reader.get_ref().try_clone()?;
        file.seek(SeekFrom::Start(0))?;
        Ok(SpoolRows {
            reader: BufReader::with_capacity(1 << 16, file),
            path: self.path.clone(),
            files: self.files.clone(),
            left: self.total,
            total: self.total,
            per_target: Arc::clone(&self.per_target),
            lanes: Arc::clone(&self.lanes),
            bytes_left: self.total_bytes,
            total_bytes: self.total_bytes,
            record: Vec::with_capacity(256),
            last: self.last.clone(),
        })
    }

    fn read_row(&mut self) -> std::io::Result<Row> {
        let mut header = [0; HEADER as usize];
        self.reader.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let after = self
            .bytes_left
            .checked_sub(HEADER + u64::from(len))
            .ok_or_else(|| corrupt("a record runs past the end of the spool"))?;
        self.bytes_left = after;
        // Only bytes past the current length are zeroed; they are overwritten at once.
        self.record.resize(len as usize, 0);
        self.reader.read_exact(&mut self.record)?;
        let (row, content_id) = parse(&self.record, &self.files)?;
        if content_id != 0 {
            self.last.set(row.number, content_id);
        }
        Ok(row)
    }
}

/// The spooled rows, read lane by lane: each lane's rows in plan order, any lane at any time
/// ([`LaneRows::next_in`]). Reads go through one small window of the file, so memory does not
/// grow with the lanes; a lane whose rows lie together (an export sorted by account) reads a
/// window's worth of them at a time.
pub struct LaneRows {
    file: File,
    path: PathBuf,
    files: Vec<Arc<str>>,
    /// Per lane: the offset of its next record ([`END`] when it has no more).
    next: Vec<u64>,
    left: u64,
    total_bytes: u64,
    /// Bytes of the file from offset `window_at`.
    window: Vec<u8>,
    window_at: u64,
    record: Vec<u8>,
    last: LastContentId,
}

/// How much of the file [`LaneRows`] reads at a time.
const WINDOW: usize = 8 << 10;

impl SpoolRows {
    /// The rows again, lane by lane (as [`Spool::push_to`] chained them).
    pub fn by_lane(&self) -> std::io::Result<LaneRows> {
        Ok(LaneRows {
            file: self.reader.get_ref().try_clone()?,
            path: self.path.clone(),
            files: self.files.clone(),
            next: self.lanes.to_vec(),
            left: self.total,
            total_bytes: self.total_bytes,
            window: Vec::with_capacity(WINDOW),
            window_at: 0,
            record: Vec::with_capacity(256),
            last: self.last.clone(),
        })
    }
}

impl LaneRows {
    /// How many lanes the rows are chained in.
    pub fn lanes(&self) -> usize {
        self.next.len()
    }

    /// Whether lane `lane` has rows not read yet.
    pub fn has_more(&self, lane: usize) -> bool {
        self.next.get(lane).is_some_and(|&at| at != END)
    }

    /// The next row of lane `lane`, `None` when it has no more. After a record that cannot be
    /// read, no lane has any more: nothing after it can be trusted.
    pub fn next_in(&mut self, lane: usize) -> Option<Result<Row, Problem>> {
        let at = *self.next.get(lane).filter(|&&at| at != END)?;
        match self.read_at(at) {
            Ok((row, next)) => {
                self.next[lane] = next;
                self.left = self.left.saturating_sub(1);
                Some(Ok(row))
            }
            Err(e) => {
                self.next.iter_mut().for_each(|n| *n = END);
                self.left = 0;
                Some(Err(unreadable(&self.path, &e)))
            }
        }
    }

    /// The record at `at`, and the offset of the next record of its lane.
    fn read_at(&mut self, at: u64) -> std::io::Result<(Row, u64)> {
        if self.left == 0 {
            return Err(corrupt("more records chained than spooled"));
        }
        let header = self.bytes(at, HEADER as usize)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut link = [0; 8];
        link.copy_from_slice(&header[4..]);
        let next = u64::from_le_bytes(link);
        // A link only ever points forward, so a corrupt one cannot make a lane loop.
        if next != END && next <= at {
            return Err(corrupt("a record links backwards"));
        }
        let body = at + HEADER;
        if body + u64::from(len) > self.total_bytes {
            return Err(corrupt("a record runs past the end of the spool"));
        }
        let files = std::mem::take(&mut self.files);
        let parsed = self
            .bytes(body, len as usize)
            .and_then(|record| parse(record, &files));
        self.files = files;
        let (row, content_id) = parsed?;
        if content_id != 0 {
            self.last.set(row.number, content_id);
        }
        Ok((row, next))
    }

    /// `len` bytes of the file from `at`, through the window (or, for a record larger than
    /// it, read on their own).
    fn bytes(&mut self, at: u64, len: usize) -> std::io::Result<&[u8]> {
        let end = at
            .checked_add(len as u64)
            .filter(|&e| e <= self.total_bytes)
            .ok_or_else(|| corrupt("a record runs past the end of the spool"))?;
        let window_end = self.window_at + self.window.len() as u64;
        if at >= self.window_at && end <= window_end {
            let from = (at - self.window_at) as usize;
            return Ok(&self.window[from..from + len]);
        }
        self.file.seek(SeekFrom::Start(at))?;
        if len > WINDOW {
            self.record.resize(len, 0);
            self.file.read_exact(&mut self.record)?;
            return Ok(&self.record);
        }
        let fill = (self.total_bytes - at).min(WINDOW as u64) as usize;
        self.window.resize(fill, 0);
        self.file.read_exact(&mut self.window)?;
        self.window_at = at;
        Ok(&self.window[..len])
    }
}

impl Drop for LaneRows {
    fn drop(&mut self) {
        #[cfg(not(unix))]
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One record's bytes, parsed into the row and its content id (0 for none). Every field is
/// checked against what is left of the record, and the record must end where its last field
/// does: a short or corrupt record is an error, never a panic or a wrong row.
fn parse(record: &[u8], files: &[Arc<str>]) -> std::io::Result<(Row, u64)> {
    let mut r = Record(record);
    let number = u64::from_le_bytes(r.array()?);
    let line = u32::from_le_bytes(r.array()?);
    let file = u32::from_le_bytes(r.array()?) as usize;
    let target = u32::from_le_bytes(r.array()?) as usize;
    let action = match r.array()? {
        [0] => Action::React,
        [1] => Action::Unreact,
        _ => return Err(corrupt("bad action")),
    };
    let content_id = u64::from_le_bytes(r.array()?);
    let mut fields: [Option<String>; 11] = Default::default();
    for f in &mut fields {
        let len = u32::from_le_bytes(r.array()?);
        if len != NONE {
            let bytes = r.take(len as usize)?;
            // One allocation of the exact size, from text checked to be UTF-8.
            *f = Some(
                std::str::from_utf8(bytes)
                    .map_err(|e| corrupt(&e.to_string()))?
                    .to_owned(),
            );
        }
    }
    let not_before = match r.array()? {
        [0] => None,
        [1] => Some(
            DateTime::<Utc>::from_timestamp_micros(i64::from_le_bytes(r.array()?))
                .ok_or_else(|| corrupt("bad time"))?,
        ),
        _ => return Err(corrupt("bad time flag")),
    };
    if !r.0.is_empty() {
        return Err(corrupt("a record longer than its fields"));
    }
    let file = files
        .get(file)
        .cloned()
        .ok_or_else(|| corrupt("bad file index"))?;
    // The order `Row::text_fields` writes them in.
    let [emoji, message_id, msgid, conversation_id, conversation_ref_id, user_id, user_ref_id, previous_emoji, key, scope_id, channel_id] =
        fields;
    let row = Row {
        number,
        source: Source { file, line },
        target,
        action,
        emoji,
        message_id,
        msgid,
        conversation_id,
        conversation_ref_id,
        user_id,
        user_ref_id,
        not_before,
        previous_emoji,
        key,
        scope_id,
        channel_id,
    };
    Ok((row, content_id))
}

/// What a reader says of a spool record it cannot read back (the file changed or the disk
/// failed under it): one problem naming the spool file.
fn unreadable(path: &Path, e: &std::io::Error) -> Problem {
    Problem::error(
        path.display().to_string(),
        None,
        None,
        format!("cannot read the validated rows back from the spool: {e}"),
    )
}

/// What is left of a record being parsed.
struct Record<'a>(&'a [u8]);

impl<'a> Record<'a> {
    fn take(&mut self, n: usize) -> std::io::Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(corrupt("a record shorter than its fields"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or_else(|| corrupt("a record shorter than its fields"))?;
        self.0 = rest;
        Ok(*head)
    }
}

fn corrupt(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned())
}

impl Iterator for SpoolRows {
    type Item = Result<Row, Problem>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match self.read_row() {
            Ok(row) => Some(Ok(row)),
            Err(e) => {
                // Nothing after a broken record can be trusted.
                self.left = 0;
                Some(Err(unreadable(&self.path, &e)))
            }
        }
    }
}

impl Drop for SpoolRows {
    fn drop(&mut self) {
        #[cfg(not(unix))]
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The content id of the row a spool reader yielded last, with that row's number: how the id
/// computed in the first pass reaches `Identities::key` without a field on every [`Row`].
/// Readers of one spool share it (they read one after another, never interleaved).
#[derive(Clone, Debug, Default)]
pub struct LastContentId(Arc<Mutex<(u64, u64)>>);

impl LastContentId {
    /// Row `number` (≥ 1) has content id `id`.
    pub fn set(&self, number: u64, id: u64) {
        if let Ok(mut last) = self.0.lock() {
            *last = (number, id);
        }
    }

    /// The id of row `number`, if it is the row read last.
    pub(crate) fn get(&self, number: u64) -> Option<u64> {
        let last = *self.0.lock().ok()?;
        (last.0 == number && number != 0).then_some(last.1)
    }
}

#[cfg(test)]
mod tests;
