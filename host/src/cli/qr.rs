//! `open`'s sign-in link as a QR code in the terminal, for a phone's camera.

use qrcode::render::unicode::Dense1x2;
use qrcode::types::QrError;
use qrcode::{EcLevel, QrCode};

/// `link` as a QR code of block characters (' ', '▀', '▄', '█'; one
/// character is one module wide and two tall), with its quiet zone, lines
/// joined by '\n' and no newline at the end.
///
/// Colours: made for a dark terminal (light glyphs on a dark background).
/// A code's light modules, the quiet zone among them, are drawn as glyphs
/// (the terminal's light foreground) and its dark modules are left blank
/// (the dark background), so the phone sees dark on light, as a scanner
/// expects. Readers of the output (tests/support's `decode_qr`) therefore
/// take a drawn half as light and a blank half as dark.
///
/// Error correction is low: a screen is not smudged or torn, and the
/// smaller code fits more terminals.
pub fn render(link: &str) -> Result<String, QrError> {
    let code = QrCode::with_error_correction_level(link.as_bytes(), EcLevel::L)?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .module_dimensions(1, 1)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The modules the text shows (true: dark), reading a drawn half as light.
    fn modules(text: &str) -> Vec<Vec<bool>> {
        let mut rows = Vec::new();
        for line in text.lines() {
            let (top, bottom): (Vec<bool>, Vec<bool>) = line
                .chars()
                .map(|c| match c {
                    '█' => (false, false),
                    '▀' => (false, true),
                    '▄' => (true, false),
                    ' ' => (true, true),
                    other => panic!("unexpected character {other:?}"),
                })
                .unzip();
            rows.push(top);
            rows.push(bottom);
        }
        rows
    }

    #[test]
    fn renders_the_code_dark_on_light_inside_a_quiet_zone() {
        let link = format!("http://127.0.0.1:45678/#code={}", "ab12".repeat(16));
        let text = render(&link).unwrap();
        let code = QrCode::with_error_correction_level(link.as_bytes(), EcLevel::L).unwrap();
        let n = code.width();
        let rows = modules(&text);
        // 4 modules of quiet zone each side; an odd height leaves the last
        // line's lower half to the terminal's background.
        assert_eq!(text.lines().count(), (n + 8).div_ceil(2));
        assert!(text.lines().all(|l| l.chars().count() == n + 8));
        for (y, row) in rows.iter().take(n + 8).enumerate() {
            for (x, &dark) in row.iter().enumerate() {
                let inside = (4..n + 4).contains(&x) && (4..n + 4).contains(&y);
                let want = inside && code[(x - 4, y - 4)] == qrcode::Color::Dark;
                assert_eq!(dark, want, "module ({x}, {y})");
            }
        }
        assert!(!text.ends_with('\n'));
    }
}
