//! The spool: validated rows, written in a compact binary form to a file in the OS temp
//! directory during the one validation pass, and read back by the executor. The plan files are
//! read once: a file edited while a run goes on cannot inject a row nobody validated, and
//! memory stays flat whatever the plan's size.
//!
//! The file is unlinked as soon as it is open for reading and writing, so it disappears when the
//! process ends, however it ends (on Unix; elsewhere it is removed when the spool is dropped).
//!
//! Record: `number u64, line u32, file u32` (index into the spool's file names), `target u32`,
//! `action u8`, `content_id u64` (the row's content hash from the validation pass, see
//! [`crate::identity`]; 0 for a row with a `key`), ten optional strings (`u32` length, `u32::MAX` for none) in [`Row`] field order,
//! and `not_before` (`u8` flag + `i64` microseconds).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::model::{Action, Row, Source};
use super::problem::Problem;
use crate::identity::LastContentId;

/// Validated rows on their way from validation to the executor.
pub struct Spool {
    writer: BufWriter<File>,
    path: PathBuf,
    files: Vec<Arc<str>>,
    rows: u64,
}

const NONE: u32 = u32::MAX;

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
            writer: BufWriter::with_capacity(1 << 16, file),
            path,
            files: Vec::new(),
            rows: 0,
        })
    }

    /// Appends a validated row with its content id ([`crate::identity::IdentityScan::observe`];
    /// `None` for a row with a `key`). Readers hand the id to the [`LastContentId`] they
    /// share, so the run does not hash the row again for its identity.
    pub fn push(&mut self, row: &Row, content_id: Option<u64>) -> std::io::Result<()> {
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
        let w = &mut self.writer;
        w.write_all(&row.number.to_le_bytes())?;
        w.write_all(&row.source.line.to_le_bytes())?;
        w.write_all(&(file as u32).to_le_bytes())?;
        w.write_all(&(row.target as u32).to_le_bytes())?;
        w.write_all(&[matches!(row.action, Action::Unreact) as u8])?;
        w.write_all(&content_id.unwrap_or(0).to_le_bytes())?;
        for field in row.text_fields() {
            match field {
                None => w.write_all(&NONE.to_le_bytes())?,
                Some(s) => {
                    w.write_all(&(s.len() as u32).to_le_bytes())?;
                    w.write_all(s.as_bytes())?;
                }
            }
        }
        match row.not_before {
            None => w.write_all(&[0])?,
            Some(t) => {
                w.write_all(&[1])?;
                w.write_all(&t.timestamp_micros().to_le_bytes())?;
            }
        }
        self.rows += 1;
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
    pub fn into_rows(self) -> std::io::Result<SpoolRows> {
        let Spool {
            writer,
            path,
            files,
            rows,
        } = self;
        let mut file = writer.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(SpoolRows {
            reader: BufReader::with_capacity(1 << 16, file),
            path,
            files,
            left: rows,
            total: rows,
            last: LastContentId::default(),
        })
    }
}

/// The spooled rows, streamed.
pub struct SpoolRows {
    reader: BufReader<File>,
    path: PathBuf,
    files: Vec<Arc<str>>,
    left: u64,
    total: u64,
    /// Where each row's content id goes as the row is read (shared by every reader).
    last: LastContentId,
}

impl SpoolRows {
    /// Where this reader (and every one [`SpoolRows::again`] makes) leaves the content id of
    /// the row it yielded last: link it to the run's [`crate::identity::Identities`].
    pub fn content_ids(&self) -> LastContentId {
        self.last.clone()
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
            last: self.last.clone(),
        })
    }

    fn read_row(&mut self) -> std::io::Result<Row> {
        let r = &mut self.reader;
        let number = u64::from_le_bytes(read_n(r)?);
        let line = u32::from_le_bytes(read_n(r)?);
        let file = u32::from_le_bytes(read_n(r)?) as usize;
        let target = u32::from_le_bytes(read_n(r)?) as usize;
        let [action] = read_n::<1>(r)?;
        let content_id = u64::from_le_bytes(read_n(r)?);
        let mut fields: [Option<String>; 9] = Default::default();
        for f in &mut fields {
            let len = u32::from_le_bytes(read_n(r)?);
            if len != NONE {
                let mut buf = vec![0; len as usize];
                r.read_exact(&mut buf)?;
                *f = Some(String::from_utf8(buf).map_err(std::io::Error::other)?);
            }
        }
        let [flag] = read_n::<1>(r)?;
        let not_before = if flag == 1 {
            let micros = i64::from_le_bytes(read_n(r)?);
            Some(
                DateTime::<Utc>::from_timestamp_micros(micros)
                    .ok_or_else(|| std::io::Error::other("bad time"))?,
            )
        } else {
            None
        };
        if content_id != 0 {
            self.last.set(number, content_id);
        }
        let file = self
            .files
            .get(file)
            .cloned()
            .ok_or_else(|| std::io::Error::other("bad file index"))?;
        // The order `Row::text_fields` writes them in.
        let [emoji, message_id, msgid, conversation_id, conversation_ref_id, user_id, user_ref_id, previous_emoji, key] =
            fields;
        Ok(Row {
            number,
            source: Source { file, line },
            target,
            action: if action == 1 {
                Action::Unreact
            } else {
                Action::React
            },
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
        })
    }
}

fn read_n<const N: usize>(r: &mut impl Read) -> std::io::Result<[u8; N]> {
    let mut buf = [0; N];
    r.read_exact(&mut buf)?;
    Ok(buf)
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
                Some(Err(Problem::error(
                    self.path.display().to_string(),
                    None,
                    None,
                    format!("cannot read the validated rows back from the spool: {e}"),
                )))
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn rows_come_back_as_they_went_in() {
        let file: Arc<str> = Arc::from("rows.csv");
        let mut rows = Vec::new();
        for i in 1..=50u64 {
            rows.push(Row {
                number: i,
                source: Source {
                    file: Arc::clone(&file),
                    line: i as u32 + 1,
                },
                target: (i % 3) as usize,
                action: if i % 2 == 0 {
                    Action::Unreact
                } else {
                    Action::React
                },
                emoji: (i % 4 != 0).then(|| "👍🏽".to_string()),
                message_id: Some(format!("m-{i}")),
                msgid: None,
                conversation_id: Some(String::new()),
                conversation_ref_id: None,
                user_id: Some("u".into()),
                user_ref_id: None,
                not_before: (i % 5 == 0).then(|| {
                    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
                        .single()
                        .expect("time")
                }),
                previous_emoji: None,
                key: Some(format!("k{i}")),
            });
        }
        let mut spool = Spool::create().expect("spool");
        for r in &rows {
            spool.push(r, Some(r.number * 7)).expect("push");
        }
        let first = spool.into_rows().expect("rows");
        let back: Vec<Row> = first
            .again()
            .expect("again")
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(back, rows);
        let twice: Vec<Row> = first
            .again()
            .expect("again")
            .map(|r| r.expect("row"))
            .collect();
        assert_eq!(twice, rows);
    }

    #[test]
    fn identities_from_the_spool_match_hashing_each_row_again() {
        use crate::identity::IdentityScan;
        let file: Arc<str> = Arc::from("rows.csv");
        // Repeated rows (occurrence numbers), `not_before` (hashed as text), explicit keys.
        let rows: Vec<Row> = (1..=60u64)
            .map(|i| Row {
                number: i,
                source: Source {
                    file: Arc::clone(&file),
                    line: i as u32 + 1,
                },
                target: (i % 2) as usize,
                action: Action::React,
                emoji: Some("👍".into()),
                message_id: Some(format!("m-{}", i % 13)),
                msgid: None,
                conversation_id: None,
                conversation_ref_id: None,
                user_id: None,
                user_ref_id: None,
                not_before: (i % 3 == 0).then(|| {
                    Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
                        .single()
                        .expect("time")
                }),
                previous_emoji: None,
                key: (i % 10 == 0).then(|| format!("k{i}")),
            })
            .collect();
        let names = ["a", "b"];
        let mut scan = IdentityScan::new();
        let mut spool = Spool::create().expect("spool");
        for r in &rows {
            let id = scan.observe(r, names[r.target]);
            assert_eq!(id.is_none(), r.key.is_some());
            spool.push(r, id).expect("push");
        }
        let ids = scan.finish();
        let spooled = spool.into_rows().expect("rows");
        let mut hashed = ids.clone();
        let expected: Vec<String> = rows
            .iter()
            .map(|r| hashed.key(r, names[r.target]))
            .collect();
        // Twice, as a resumed run reads the spool (the copy of done rows, then the run).
        for _ in 0..2 {
            let mut linked = ids.clone().linked_to(spooled.content_ids());
            let got: Vec<String> = spooled
                .again()
                .expect("again")
                .map(|r| {
                    let r = r.expect("row");
                    linked.key(&r, names[r.target])
                })
                .collect();
            assert_eq!(got, expected);
        }
        assert!(expected.iter().any(|k| k.ends_with(".2")), "{expected:?}");
        // The id really comes from the spool (not hashed again): a planted one shows.
        let mut spool = Spool::create().expect("spool");
        spool.push(&rows[0], Some(0xdead)).expect("push");
        let spooled = spool.into_rows().expect("rows");
        let mut linked = IdentityScan::new()
            .finish()
            .linked_to(spooled.content_ids());
        let row = spooled
            .again()
            .expect("again")
            .next()
            .expect("one")
            .expect("row");
        assert_eq!(linked.key(&row, "a"), "#000000000000dead.1");
    }
}
