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
    let mut i = 0;
    while i < bytes.len() {
        if let Some(word) = bytes.get(i..i + 8)
            && !any_needs_escape(u64::from_le_bytes(word.try_into().unwrap()))
        {
            i += 8;
            continue;
        }
        let b = bytes[i];
        if needs_escape(b) {
            out.extend_from_slice(&bytes[done..i]);
            escape(out, b);
            done = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[done..]);
    out.push(b'"');
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any of the eight bytes of `w` needs escaping. (It may say yes
/// for a word that does not, which only costs a byte-by-byte look; never
/// no for one that does.)
fn any_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH != 0;
    // A byte below 0x20.
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH != 0;
    control || has_zero(w ^ (ONES * b'"' as u64)) || has_zero(w ^ (ONES * b'\\' as u64))
}

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
