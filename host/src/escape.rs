//! JSON string escaping, byte for byte what serde_json writes, eight bytes
//! at a time where nothing needs escaping: every message's text goes
//! through here on its way to stdout, and serde_json's byte loop was the
//! largest single cost of an inject (bench/README.md).

/// Appends `s` to `out` as a quoted JSON string.
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut done = 0; // bytes[..done] are in `out`
    while let Some(at) = find_escape(bytes, done) {
        out.extend_from_slice(&bytes[done..at]);
        escape(out, bytes[at]);
        done = at + 1;
    }
    out.extend_from_slice(&bytes[done..]);
    out.push(b'"');
}

/// The first byte at or after `from` that needs escaping.
fn find_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let rest = &bytes[from..];
    if rest.len() < 8 {
        return rest.iter().position(|&b| NEEDS_ESCAPE[b as usize]).map(|i| from + i);
    }
    let (words, tail) = rest.as_chunks::<8>();
    for (n, word) in words.iter().enumerate() {
        if let Some(i) = first_marked(escape_marks(u64::from_le_bytes(*word))) {
            return Some(from + n * 8 + i);
        }
    }
    if tail.is_empty() {
        return None;
    }
    // The last eight bytes, overlapping words already checked (clean, so
    // they mark nothing and borrow nothing).
    let last = rest.len() - 8;
    let word = u64::from_le_bytes(rest[last..].try_into().expect("eight bytes"));
    first_marked(escape_marks(word)).map(|i| from + last + i)
}

/// The high bit of each byte of `w` that needs escaping is set. Bytes above
/// a marked one may be marked falsely (a borrow carries upward), but the
/// lowest mark is always true, and that is the only one read.
fn escape_marks(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x & HIGH;
    below(w, 0x20) | below(w ^ (ONES * b'"' as u64), 1) | below(w ^ (ONES * b'\\' as u64), 1)
}

/// Which byte (0-7) of a little-endian word holds the lowest mark.
fn first_marked(marks: u64) -> Option<usize> {
    (marks != 0).then(|| marks.trailing_zeros() as usize / 8)
}

/// `"`, `\` and the control characters: what serde_json escapes.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

fn escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        json_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_ascii_character_at_every_offset_matches_serde_json() {
        for c in 0u8..=0x7f {
            for offset in 0..17 {
                for len in [offset + 1, offset + 9, 33] {
                    let s: String = (0..len).map(|i| if i == offset { c as char } else { 'a' }).collect();
                    assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{c:#x} at {offset}");
                }
            }
        }
    }

    #[test]
    fn every_pair_of_specials_in_a_word_matches_serde_json() {
        let specials = ['"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '!', '#', '[', ']', '\u{7f}', 'é'];
        for a in specials {
            for b in specials {
                for at_a in 0..12 {
                    for gap in 1..10 {
                        let mut s: Vec<char> = vec!['x'; 24];
                        s[at_a] = a;
                        s[at_a + gap] = b;
                        for len in [at_a + gap + 1, 24] {
                            let s: String = s[..len].iter().collect();
                            assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn mixed_text_matches_serde_json() {
        let samples = [
            "",
            "plain text that needs nothing",
            "quote \" and backslash \\ and\nnewline\r\ttab\u{8}\u{c}\u{1}\u{1f}\u{7f}",
            "unicode é 日本 🎉 and \u{2028}\u{2029} stay as they are",
            "\"\"\"\"\"\"\"\"\\\\\\\\\\\\\\\\",
            "ÿÿÿÿÿÿÿÿ\u{80}\u{a0}\u{ff}",
        ];
        for s in samples {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap(), "{s:?}");
        }
        // Every char below U+0800, in runs that straddle the word boundary.
        let all: String = (0u32..0x800).filter_map(char::from_u32).collect();
        for start in 0..8 {
            let s: String = all.chars().skip(start).collect();
            assert_eq!(ours(&s), serde_json::to_string(&s).unwrap());
        }
    }
}
