//! JSON strings written by hand, byte for byte as `serde_json` writes them, for the records
//! rendered on every row (the emit trail, the request bodies): `serde_json`'s serialiser
//! machinery was a fifth of a dry run's signing and rendering.

/// Whether `b` must be escaped in a JSON string: below 0x20, `"` or `\`.
fn must_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// The bytes of `w` (little-endian) that [`must_escape`], as the high bit of each (the classic
/// "has a zero byte" bit trick). Bytes above a flagged one may be flagged wrongly (a borrow
/// carries upwards), but the lowest flagged byte is always one to escape, and the mask is zero
/// exactly when none is.
fn escape_mask(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_in = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    below_space | zero_in(w ^ (ONES * u64::from(b'"'))) | zero_in(w ^ (ONES * u64::from(b'\\')))
}

/// Appends `s` as a JSON string exactly as `serde_json` writes it: `"` and `\` escaped, the
/// control characters below U+0020 as `\b`, `\f`, `\n`, `\r`, `\t` or `\u00xx` (lowercase
/// hex), everything else (DEL, non-ASCII) as is. The string is read 8 bytes at a time: a
/// word with nothing to escape is skipped whole, and one with something to escape is entered
/// at its first such byte.
pub(crate) fn push_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while let Some(word) = bytes.get(i..i + 8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let mask = escape_mask(u64::from_le_bytes(w));
        if mask == 0 {
            i += 8;
            continue;
        }
        i += (mask.trailing_zeros() / 8) as usize;
        out.extend_from_slice(&bytes[start..i]);
        push_escape(bytes[i], out);
        i += 1;
        start = i;
    }
    while let Some(&b) = bytes.get(i) {
        if must_escape(b) {
            out.extend_from_slice(&bytes[start..i]);
            push_escape(b, out);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends the escape of `b`, a byte that [`must_escape`].
fn push_escape(b: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x09 => b't',
        0x0A => b'n',
        0x0C => b'f',
        0x0D => b'r',
        _ => b'u',
    };
    out.push(b'\\');
    out.push(short);
    if short == b'u' {
        out.extend_from_slice(&[
            b'0',
            b'0',
            HEX[usize::from(b >> 4)],
            HEX[usize::from(b & 0xF)],
        ]);
    }
}

/// Appends `"name":` after a `,` unless `first`; the value is the caller's. Names are our
/// own constants, which need no escaping (checked in debug builds).
pub(crate) fn push_key(first: bool, name: &'static str, out: &mut Vec<u8>) {
    debug_assert!(!name.bytes().any(must_escape));
    if !first {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends `"name":` and the string `value` (JSON-escaped), after a `,` unless `first`.
pub(crate) fn push_member(first: bool, name: &'static str, value: &str, out: &mut Vec<u8>) {
    push_key(first, name, out);
    push_str(value, out);
}

/// Strings that need escaping, and the bytes around them: for tests comparing with
/// `serde_json`.
#[cfg(test)]
pub(crate) const HOSTILE: &[&str] = &[
    "",
    "plain",
    "quote \" and backslash \\ and \\\"",
    "\u{0}\u{1}\u{7}\u{8}\t\n\u{b}\u{c}\r\u{e}\u{1f} \u{7f}",
    "non-ASCII: café, Ünïcödé, 日本語, \u{2028}\u{2029}",
    "emoji: 👍🏽 ❤️ 🏳️‍🌈 \u{fe0f}\u{200d}",
    "</script><!-- & ' `",
    "\"",
    "\\",
    "\n",
    "12345678\"12345678\\1234567\u{1}",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_strings_match_serde_json() {
        for s in HOSTILE {
            let mut out = Vec::new();
            push_str(s, &mut out);
            assert_eq!(out, serde_json::to_vec(s).expect("serialises"), "{s:?}");
        }
    }

    proptest! {
        /// The lowest byte `escape_mask` flags is the first byte to escape; none is flagged
        /// when there is none.
        #[test]
        fn the_lowest_flagged_byte_is_the_first_to_escape(word in proptest::array::uniform8(
            prop_oneof![
                any::<u8>(),
                proptest::sample::select(vec![0x00, 0x1f, 0x20, b'!', b'"', b'#', b'[', b'\\', b']', 0x7f, 0x80, 0xa2, 0xdc, 0xff]),
            ],
        )) {
            let first = word.iter().position(|&b| must_escape(b));
            let mask = escape_mask(u64::from_le_bytes(word));
            let lowest = (mask != 0).then(|| (mask.trailing_zeros() / 8) as usize);
            prop_assert_eq!(lowest, first, "{:?}", word);
        }

        #[test]
        fn strings_match_serde_json(chars in proptest::collection::vec(prop_oneof![
            any::<char>(),
            // Mostly what needs escaping, and the bytes next to it, in runs of any length.
            proptest::sample::select(vec![
                '"', '\\', '\u{0}', '\u{8}', '\t', '\n', '\u{c}', '\r', '\u{1f}', ' ', '!', '#',
                '[', ']', '\u{7f}', 'é', '👍', 'a',
            ]),
        ], 0..40)) {
            let s: String = chars.into_iter().collect();
            let mut out = Vec::new();
            push_str(&s, &mut out);
            prop_assert_eq!(out, serde_json::to_vec(&s).expect("serialises"));
        }
    }
}
