//! CSV rows, streamed record by record (a million-row file is never held in memory).
//!
//! The header names row fields (unknown or repeated names are errors at line 1 and the header
//! cell's column). An empty cell means the field is absent. UTF-8 with an optional BOM, CRLF,
//! and quoted fields holding commas or newlines are accepted; a row's line is the physical line
//! its record starts on (header = line 1), so quoted newlines do not shift later rows. Ragged
//! records and non-UTF-8 bytes are errors on that row; a record longer than
//! [`MAX_CSV_RECORD_BYTES`] (e.g. an unclosed quote) stops reading the file with an error.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use csv::{ByteRecord, ErrorKind};

use super::fields::{suggest, Field, RawRow, RawValue, MAX_CSV_RECORD_BYTES};
use super::problem::Problem;
use super::source::Pos;

/// A reader that fails once more than [`MAX_CSV_RECORD_BYTES`] (plus the csv reader's buffer)
/// were read since the last [`LimitedRead::reset`]: the csv crate grows its record buffer without
/// bound, so this is what keeps one runaway record from taking all memory.
struct LimitedRead {
    inner: File,
    used: u64,
}

const CSV_BUFFER: usize = 64 * 1024;

impl LimitedRead {
    fn reset(&mut self) {
        self.used = 0;
    }
}

impl Read for LimitedRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.used > MAX_CSV_RECORD_BYTES + CSV_BUFFER as u64 {
            return Err(io::Error::other(RecordTooLong));
        }
        let n = self.inner.read(buf)?;
        self.used += n as u64;
        Ok(n)
    }
}

#[derive(Debug)]
struct RecordTooLong;

impl std::fmt::Display for RecordTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("record too long")
    }
}

impl std::error::Error for RecordTooLong {}

/// An open CSV file positioned after its header.
pub(super) struct CsvRows {
    file: Arc<str>,
    reader: csv::Reader<LimitedRead>,
    columns: Vec<Field>,
    record: ByteRecord,
    done: bool,
}

impl std::fmt::Debug for CsvRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsvRows").field("file", &self.file).finish()
    }
}

impl CsvRows {
    /// Opens `path` and checks its header. `file` names it in problems.
    pub(super) fn open(path: &Path, file: Arc<str>) -> Result<CsvRows, Vec<Problem>> {
        let err = |line: Option<u32>, col: Option<u32>, msg: String| {
            Problem::error(&*file, line, col, msg)
        };
        let handle = File::open(path)
            .map_err(|e| vec![err(None, None, format!("cannot open CSV file: {e}"))])?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            // Not the default CRLF-or-LF terminator: with it, a record's start line is counted
            // before the `\n` of the previous CRLF, one too low. A trailing `\r` is stripped
            // from the last cell instead (see `cell`).
            .terminator(csv::Terminator::Any(b'\n'))
            .buffer_capacity(CSV_BUFFER)
            .from_reader(LimitedRead {
                inner: handle,
                used: 0,
            });
        let header = match reader.byte_headers() {
            Ok(h) => h.clone(),
            Err(e) => return Err(vec![err(Some(1), None, csv_error_message(&e))]),
        };
        if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
            return Err(vec![err(
                Some(1),
                None,
                "empty CSV: expected a header row naming the row fields".into(),
            )
            .with_hint("e.g. `target,message_id,conversation_id,emoji`")]);
        }
        // Whole-file mistakes that would otherwise read as a dozen odd column names.
        let cr_only = header
            .iter()
            .take(header.len().saturating_sub(1))
            .any(|c| c.contains(&b'\r'));
        if cr_only {
            return Err(vec![err(
                Some(1),
                None,
                "the file's lines end with a bare CR (old Mac line endings): its rows run \
                 into the header"
                    .into(),
            )
            .with_hint("save it with LF or CRLF line endings")]);
        }
        if header.len() == 1 && header[0].contains(&b'\t') {
            return Err(vec![err(
                Some(1),
                None,
                "the header has tabs and no commas: the file looks tab-separated".into(),
            )
            .with_hint("save it as comma-separated CSV")]);
        }
        let cols = header_columns(path);
        let mut problems = Vec::new();
        let mut columns = Vec::new();
        for (i, cell) in header.iter().enumerate() {
            let col = cols.get(i).copied();
            let name = match std::str::from_utf8(cell) {
                Ok(s) => s.trim_start_matches('\u{feff}').trim(),
                Err(_) => {
                    problems.push(err(Some(1), col, "header cell is not valid UTF-8".into()));
                    continue;
                }
            };
            match Field::from_name(name) {
                None if name.is_empty() => {
                    problems.push(err(Some(1), col, format!("column {} has no name", i + 1)));
                }
                Some(f) if columns.contains(&f) => {
                    problems.push(
                        err(Some(1), col, format!("duplicate column `{name}`"))
                            .with_code("duplicate_field"),
                    );
                }
                Some(f) => columns.push(f),
                None => {
                    let mut p = err(
                        Some(1),
                        col,
                        format!("unknown column `{}`", super::source::shorten(name)),
                    )
                    .with_code("unknown_field");
                    p.hint = suggest(name, Field::names()).or_else(|| {
                        Some(format!(
                            "columns are: {}",
                            Field::names().collect::<Vec<_>>().join(", ")
                        ))
                    });
                    problems.push(p);
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(CsvRows {
            file,
            reader,
            columns,
            record: ByteRecord::new(),
            done: false,
        })
    }

    /// The next record as a raw row, or `None` at the end. Problems ride in the row.
    pub(super) fn next_raw(&mut self) -> Option<RawRow> {
        if self.done {
            return None;
        }
        self.reader.get_mut().reset();
        let read = loop {
            let read = self.reader.read_byte_record(&mut self.record);
            // A blank CRLF line is one `\r` cell: skip it as csv skips blank LF lines.
            let blank = self.record.len() == 1 && cell(&self.record, 0).is_empty();
            let unequal =
                matches!(&read, Err(e) if matches!(e.kind(), ErrorKind::UnequalLengths { .. }));
            if !((matches!(read, Ok(true)) || unequal) && blank) {
                break read;
            }
        };
        match read {
            Ok(false) => {
                self.done = true;
                None
            }
            Ok(true) => Some(self.raw_row()),
            Err(e) => {
                let line = match e.kind() {
                    ErrorKind::UnequalLengths { pos: Some(p), .. } => p.line(),
                    _ => self.reader.position().line(),
                };
                let mut row = RawRow::new(self.file.clone(), pos(line));
                row.col = None;
                if !matches!(e.kind(), ErrorKind::UnequalLengths { .. }) {
                    // I/O errors and over-long records: the rest of the file is unreliable.
                    self.done = true;
                }
                row.problems.push(
                    Problem::error(&*self.file, Some(to_u32(line)), None, csv_error_message(&e))
                        .with_code("csv_syntax"),
                );
                Some(row)
            }
        }
    }

    fn raw_row(&self) -> RawRow {
        let line = self.record.position().map_or(0, |p| p.line());
        let mut row = RawRow::new(self.file.clone(), pos(line));
        row.col = None;
        let mut columns = CellColumns::default();
        for (i, field) in self.columns.iter().enumerate() {
            let cell = cell(&self.record, i);
            let col = columns.next(cell);
            if cell.is_empty() {
                continue;
            }
            match std::str::from_utf8(cell) {
                Ok(text) => row.set(
                    *field,
                    RawValue {
                        text: text.to_string(),
                        line: row.line,
                        col,
                    },
                ),
                Err(e) => row.problems.push(Problem::error(
                    &*self.file,
                    Some(row.line),
                    col,
                    format!(
                        "column `{field}` is not valid UTF-8 (bad byte at offset {} of the cell); \
                         save the file as UTF-8",
                        e.valid_up_to()
                    ),
                )),
            }
        }
        row
    }
}

/// Cell `i`, without the `\r` a CRLF line ending leaves on the last cell.
fn cell(record: &ByteRecord, i: usize) -> &[u8] {
    let value = record.get(i).unwrap_or(b"");
    if i + 1 == record.len() {
        value.strip_suffix(b"\r").unwrap_or(value)
    } else {
        value
    }
}

/// The 1-based character column of each cell of a record on the record's first line, from the
/// cells' contents (the csv crate reports no field positions), so a problem points at its
/// cell. A cell holding `,`, `"` or a line break was written quoted (its quotes doubled); a
/// cell quoted without needing it would shift the columns after it by two. The cells after a
/// line break are on a later line: no column for them.
#[derive(Default)]
struct CellColumns {
    /// Characters before the next cell.
    before: u32,
    past_line_break: bool,
}

impl CellColumns {
    fn next(&mut self, cell: &[u8]) -> Option<u32> {
        if self.past_line_break {
            return None;
        }
        let col = self.before.saturating_add(1);
        let chars = cell.iter().filter(|&&b| b & 0xC0 != 0x80).count() as u64;
        let quotes = cell.iter().filter(|&&b| b == b'"').count() as u64;
        let quoted = quotes > 0 || cell.iter().any(|b| matches!(b, b',' | b'\n' | b'\r'));
        self.past_line_break = cell.iter().any(|b| matches!(b, b'\n' | b'\r'));
        let width = chars + if quoted { 2 + quotes } else { 0 } + 1;
        self.before = self.before.saturating_add(to_u32(width));
        Some(col)
    }
}

fn pos(line: u64) -> Pos {
    Pos {
        line: to_u32(line),
        col: 1,
    }
}

fn to_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn csv_error_message(e: &csv::Error) -> String {
    match e.kind() {
        ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!(
            "row has {len} field{} but the header has {expected_len}",
            if *len == 1 { "" } else { "s" }
        ),
        ErrorKind::Io(io) if io.get_ref().is_some_and(|i| i.is::<RecordTooLong>()) => format!(
            "a CSV record is longer than {} KiB (an unclosed quote?); reading stopped here",
            MAX_CSV_RECORD_BYTES / 1024
        ),
        ErrorKind::Io(io) => format!("cannot read CSV file: {io}"),
        ErrorKind::Utf8 { .. } => "the CSV file is not valid UTF-8".to_string(),
        _ => format!("invalid CSV: {e}"),
    }
}

/// 1-based character columns of each header cell, read from the file's first line (the csv
/// crate does not report field positions). Best effort: an unreadable line gives no columns.
fn header_columns(path: &Path) -> Vec<u32> {
    let mut first = Vec::new();
    let Ok(f) = File::open(path) else {
        return Vec::new();
    };
    if f.take(64 * 1024).read_to_end(&mut first).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&first);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut cols = vec![1u32];
    let mut in_quotes = false;
    for (i, c) in text.chars().enumerate() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => cols.push(to_u32(i as u64) + 2),
            '\n' | '\r' if !in_quotes => break,
            _ => {}
        }
    }
    cols
}

#[cfg(test)]
mod tests {
    use super::CellColumns;

    #[test]
    fn cells_are_placed_by_their_written_width() {
        let mut c = CellColumns::default();
        // k,"a,b",👍👍,"say ""hi""",x
        let cells: [&[u8]; 5] = [b"k", b"a,b", "👍👍".as_bytes(), b"say \"hi\"", b"x"];
        let cols: Vec<Option<u32>> = cells.iter().map(|cell| c.next(cell)).collect();
        assert_eq!(cols, [Some(1), Some(3), Some(9), Some(12), Some(25)]);
        let mut c = CellColumns::default();
        let cols: Vec<Option<u32>> = [b"a" as &[u8], b"two\nlines", b"c"]
            .iter()
            .map(|cell| c.next(cell))
            .collect();
        assert_eq!(cols, [Some(1), Some(3), None]);
    }
}
