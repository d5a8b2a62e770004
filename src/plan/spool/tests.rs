//! The spool's round trip, and what a broken spool file reads back as.

use super::*;
use chrono::TimeZone;

#[test]
fn rows_come_back_as_they_went_in() {
    let file: Arc<str> = Arc::from("rows.csv");
    let mut rows = Vec::new();
    for i in 1..=50u64 {
        rows.push(Row {
            source: Source {
                file: Arc::clone(&file),
                line: i as u32 + 1,
            },
            emoji: (i % 4 != 0).then(|| "👍🏽".to_string()),
            conversation_id: Some(String::new()),
            user_id: Some("u".into()),
            not_before: (i % 5 == 0).then(|| {
                Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
                    .single()
                    .expect("time")
            }),
            key: Some(format!("k{i}")),
            scope_id: (i % 3 == 1).then(|| format!("acct-{i}")),
            channel_id: (i % 7 == 2).then(|| format!("ch-{i}")),
            ..Row::test(i)
                .on((i % 3) as usize)
                .action(if i % 2 == 0 {
                    Action::Unreact
                } else {
                    Action::React
                })
                .message(format!("m-{i}"))
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
            source: Source {
                file: Arc::clone(&file),
                line: i as u32 + 1,
            },
            not_before: (i % 3 == 0).then(|| {
                Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
                    .single()
                    .expect("time")
            }),
            key: (i % 10 == 0).then(|| format!("k{i}")),
            ..Row::test(i)
                .on((i % 2) as usize)
                .message(format!("m-{}", i % 13))
                .emoji("👍")
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

/// Every text field set (non-ASCII, empty), or none; keys; `not_before` before and after 1970.
/// Written out field by field, unlike other tests' rows: a field added to [`Row`] must be added
/// here too, to be carried through the spool.
fn varied_rows(files: &[Arc<str>]) -> Vec<Row> {
    (1..=40u64)
        .map(|i| {
            let all = i % 2 == 0;
            let text = |s: &str| all.then(|| s.to_string());
            Row {
                number: i,
                source: Source {
                    file: Arc::clone(&files[i as usize % files.len()]),
                    line: u32::MAX - i as u32,
                },
                target: i as usize * 1000,
                action: if i % 3 == 0 {
                    Action::Unreact
                } else {
                    Action::React
                },
                emoji: text("👍🏽"),
                message_id: text(&format!("mid-ü-{i}")),
                msgid: text(""),
                conversation_id: text("чат-日本"),
                conversation_ref_id: text(&"r".repeat(i as usize * 50)),
                user_id: text(""),
                user_ref_id: text("🙂 \u{0}\t,\"\n"),
                not_before: match i % 4 {
                    0 => Some(
                        Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0)
                            .single()
                            .expect("time")
                            + chrono::Duration::microseconds(123_456),
                    ),
                    1 => Some(
                        Utc.with_ymd_and_hms(1969, 7, 20, 20, 17, 40)
                            .single()
                            .expect("time"),
                    ),
                    _ => None,
                },
                previous_emoji: text("❤️"),
                key: (i % 5 == 0).then(|| format!("key-é-{i}")),
                scope_id: None,
                channel_id: None,
            }
        })
        .collect()
}

fn spooled(rows: &[Row]) -> SpoolRows {
    let mut spool = Spool::create().expect("spool");
    for r in rows {
        spool
            .push(r, r.key.is_none().then_some(r.number * 31))
            .expect("push");
    }
    spool.into_rows().expect("rows")
}

/// What a reader yields, errors as their message.
fn read_back(rows: &SpoolRows) -> Vec<Result<Row, String>> {
    rows.again()
        .expect("again")
        .map(|r| r.map_err(|p| p.message.clone()))
        .collect()
}

/// Puts `bytes` in place of the spool file's contents.
fn replace_contents(rows: &SpoolRows, bytes: &[u8]) {
    let mut file = rows.reader.get_ref().try_clone().expect("clone");
    file.set_len(0).expect("truncate");
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.write_all(bytes).expect("write");
}

fn contents(rows: &SpoolRows) -> Vec<u8> {
    let mut file = rows.reader.get_ref().try_clone().expect("clone");
    file.seek(SeekFrom::Start(0)).expect("seek");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).expect("read");
    bytes
}

/// The rows before `at` come back as written, then one spool error, then nothing.
fn assert_breaks_at(got: &[Result<Row, String>], rows: &[Row], at: usize, case: &str) {
    assert_eq!(got.len(), at + 1, "{case}: {got:?}");
    for (g, r) in got[..at].iter().zip(rows) {
        assert_eq!(g.as_ref().expect("row before the break"), r, "{case}");
    }
    let e = got[at].as_ref().expect_err(case);
    assert!(
        e.starts_with("cannot read the validated rows back from the spool: "),
        "{case}: {e}"
    );
}

#[test]
fn every_field_present_or_absent_comes_back_from_many_files() {
    let files: Vec<Arc<str>> = (0..7).map(|i| Arc::from(format!("plan-{i}.csv"))).collect();
    let rows = varied_rows(&files);
    let spooled = spooled(&rows);
    assert_eq!(spooled.files.len(), files.len());
    let ids = spooled.content_ids();
    let mut reader = spooled.again().expect("again");
    for r in &rows {
        assert_eq!(&reader.next().expect("a row").expect("row"), r);
        if r.key.is_none() {
            // The content id came along (a keyed row leaves the previous one).
            let mut linked = crate::identity::IdentityScan::new()
                .finish()
                .linked_to(ids.clone());
            let key = linked.key(r, "t");
            assert_eq!(key, format!("#{:016x}.1", r.number * 31));
        }
    }
    assert!(reader.next().is_none());
    // The buffer a reader keeps does not carry one record's bytes into the next.
    let lens: Vec<usize> = rows
        .iter()
        .map(|r| r.conversation_ref_id.as_ref().map_or(0, String::len))
        .collect();
    assert!(lens.windows(2).any(|w| w[0] > w[1]), "{lens:?}");
}

#[test]
fn a_truncated_spool_is_an_error_at_the_first_incomplete_row() {
    let files: Vec<Arc<str>> = vec![Arc::from("a.csv"), Arc::from("b.csv")];
    let rows = varied_rows(&files)[..4].to_vec();
    let spooled = spooled(&rows);
    let bytes = contents(&spooled);
    // Where each record ends.
    let mut ends = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
        at += 12 + len;
        ends.push(at);
    }
    assert_eq!(ends.len(), rows.len());
    assert_eq!(at, bytes.len());
    for cut in (0..bytes.len()).rev() {
        replace_contents(&spooled, &bytes[..cut]);
        let whole = ends.iter().take_while(|&&e| e <= cut).count();
        assert_breaks_at(&read_back(&spooled), &rows, whole, &format!("cut at {cut}"));
    }
    replace_contents(&spooled, &bytes);
    let all: Vec<Row> = read_back(&spooled)
        .into_iter()
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(all, rows);
}

#[test]
fn a_corrupt_record_is_an_error_not_a_wrong_row() {
    let files: Vec<Arc<str>> = vec![Arc::from("a.csv")];
    // Row 2 has every text field; its record starts after row 1's.
    let rows = varied_rows(&files)[..3].to_vec();
    let spooled = spooled(&rows);
    let bytes = contents(&spooled);
    let second = 12 + u32::from_le_bytes(bytes[..4].try_into().expect("4")) as usize;
    let second_len = u32::from_le_bytes(bytes[second..second + 4].try_into().expect("4"));
    // Offsets inside row 2's record (after its length and link): number 0, line 8, file 12, target 16,
    // action 20, content id 21, then the emoji's length at 29 and its bytes at 33.
    let field = |off: usize| second + 12 + off;
    let emoji_len = "👍🏽".len() as u32;
    let cases: Vec<(&str, usize, Vec<u8>)> = vec![
        (
            "length past the end",
            second,
            (u32::MAX - 1).to_le_bytes().to_vec(),
        ),
        (
            "length one short",
            second,
            (second_len - 1).to_le_bytes().to_vec(),
        ),
        (
            "length one long",
            second,
            (second_len + 1).to_le_bytes().to_vec(),
        ),
        ("length zero", second, 0u32.to_le_bytes().to_vec()),
        ("file index", field(12), 1u32.to_le_bytes().to_vec()),
        ("action", field(20), vec![7]),
        (
            "string past the record",
            field(29),
            (second_len).to_le_bytes().to_vec(),
        ),
        (
            "string longer",
            field(29),
            (emoji_len + 1).to_le_bytes().to_vec(),
        ),
        (
            "string shorter",
            field(29),
            (emoji_len - 1).to_le_bytes().to_vec(),
        ),
        ("not UTF-8", field(33), vec![0xff]),
        // Row 2 has no `not_before`: its record ends with the flag.
        ("time flag", field(second_len as usize - 1), vec![2]),
    ];
    assert!(rows[1].emoji.is_some() && rows[1].not_before.is_none());
    assert_eq!(bytes[field(29)..field(33)], emoji_len.to_le_bytes());
    assert_eq!(bytes[field(second_len as usize - 1)], 0);
    for (case, at, patch) in cases {
        let mut broken = bytes.clone();
        broken[at..at + patch.len()].copy_from_slice(&patch);
        replace_contents(&spooled, &broken);
        assert_breaks_at(&read_back(&spooled), &rows, 1, case);
    }
}

#[test]
fn rows_are_counted_per_target_for_every_reader() {
    let files: Vec<Arc<str>> = vec![Arc::from("plan.csv")];
    let rows: Vec<Row> = varied_rows(&files)
        .into_iter()
        .map(|mut r| {
            r.target = [0, 2, 2, 5][r.number as usize % 4];
            r
        })
        .collect();
    let spooled = spooled(&rows);
    let again = spooled.again().expect("again");
    for reader in [&spooled, &again] {
        let counts: Vec<u64> = (0..7).map(|t| reader.rows_for(t)).collect();
        assert_eq!(counts, [10, 0, 20, 0, 0, 10, 0]);
    }
}

/// 6 000 rows: the first 3 000 sorted by lane (lanes 0–5, 500 each), the rest round-robin
/// over lanes 0–6; every 1 000th row larger than the reader's window.
fn laned_rows() -> Vec<(Row, usize)> {
    (1..=6000u64)
        .map(|i| {
            let lane = if i <= 3000 {
                ((i - 1) / 500) as usize
            } else {
                (i % 7) as usize
            };
            let mut row = Row::test(i).message(format!("m-{i}")).emoji("👍");
            if i % 1000 == 0 {
                row.conversation_ref_id = Some("r".repeat(20 << 10));
            }
            (row, lane)
        })
        .collect()
}

fn spooled_in_lanes(rows: &[(Row, usize)]) -> SpoolRows {
    let mut spool = Spool::create().expect("spool");
    for (r, lane) in rows {
        spool.push_to(r, Some(r.number * 31), *lane).expect("push");
    }
    spool.into_rows().expect("rows")
}

#[test]
fn each_lane_reads_its_own_rows_in_plan_order_whatever_the_others_do() {
    let rows = laned_rows();
    let spooled = spooled_in_lanes(&rows);
    let mut lanes = spooled.by_lane().expect("by lane");
    assert_eq!(lanes.lanes(), 7);
    let mut got: Vec<Vec<Row>> = vec![Vec::new(); 7];
    // Lanes in turn, a different number of rows from each at a time, lane 6 all at once.
    while let Some(row) = lanes.next_in(6) {
        got[6].push(row.expect("row"));
    }
    let mut turn = 0;
    while (0..7).any(|l| lanes.has_more(l)) {
        let lane = turn % 6;
        for _ in 0..=(turn % 5) {
            if let Some(row) = lanes.next_in(lane) {
                got[lane].push(row.expect("row"));
            }
        }
        turn += 1;
    }
    assert!(lanes.next_in(7).is_none());
    for (lane, got) in got.iter().enumerate() {
        let want: Vec<&Row> = rows
            .iter()
            .filter(|(_, l)| *l == lane)
            .map(|(r, _)| r)
            .collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "lane {lane}");
    }
    // The plan-order reader still reads them all, in plan order.
    let again: Vec<Row> = spooled
        .again()
        .expect("again")
        .map(|r| r.expect("row"))
        .collect();
    let want: Vec<Row> = rows.into_iter().map(|(r, _)| r).collect();
    assert_eq!(again, want);
}

#[test]
fn a_link_backwards_is_an_error_and_ends_every_lane() {
    let rows: Vec<(Row, usize)> = (1..=6u64)
        .map(|i| (Row::test(i).message(format!("m-{i}")), (i % 2) as usize))
        .collect();
    let spooled = spooled_in_lanes(&rows);
    let bytes = contents(&spooled);
    // Row 1 (lane 1) links to row 3; point it at itself.
    let mut broken = bytes.clone();
    broken[4..12].copy_from_slice(&0u64.to_le_bytes());
    replace_contents(&spooled, &broken);
    let mut lanes = spooled.by_lane().expect("by lane");
    assert_eq!(lanes.next_in(0).expect("row").expect("row 2").number, 2);
    let e = lanes
        .next_in(1)
        .expect("an error")
        .expect_err("row 1's link");
    assert!(e.message.contains("links backwards"), "{}", e.message);
    assert!(!lanes.has_more(0) && !lanes.has_more(1));
    assert!(lanes.next_in(0).is_none());
}
