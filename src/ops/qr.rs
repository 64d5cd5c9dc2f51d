//! QR codes of the links `frontgate link` hands out: as terminal text that reads the same on
//! dark and light terminal themes, and as PNG images.

use qrcode::{Color, QrCode};

/// Light modules around the code on each side: the quiet zone ISO/IEC 18004 asks for, without
/// which readers do not find the code's edge.
const QUIET_ZONE: usize = 4;

/// Pixels per module side in a PNG: 8 keeps a 57-module link code near 500 px, sharp on a
/// phone screen and in print.
const PNG_SCALE: usize = 8;

/// SGR for black foreground on bright white background. The terminal code sets both colours
/// itself: a dark theme (light text on black) would otherwise invert it, and most readers
/// find nothing in an inverted code.
const BLACK_ON_WHITE: &str = "\x1b[30;107m";

/// SGR reset, at the end of every line so the colours never bleed past the code.
const RESET: &str = "\x1b[0m";

/// A code could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// The text is too long for the largest QR code.
    #[error("the text ({len} bytes) does not fit in a QR code: {source}")]
    TooLong {
        /// Length of the text.
        len: usize,
        /// The encoder's reason.
        source: qrcode::types::QrError,
    },
    /// The PNG encoder failed.
    #[error("encoding the PNG failed: {0}")]
    Png(#[from] png::EncodingError),
}

/// The code of a text as a square of modules, quiet zone included.
struct Modules {
    /// Modules per side.
    side: usize,
    /// Row by row, `true` for a dark module.
    dark: Vec<bool>,
}

impl Modules {
    fn of(text: &str) -> Result<Self, QrError> {
        let code = QrCode::new(text.as_bytes()).map_err(|source| QrError::TooLong {
            len: text.len(),
            source,
        })?;
        let inner = code.width();
        let colors = code.to_colors();
        let side = inner + 2 * QUIET_ZONE;
        let mut dark = vec![false; side * side];
        for (i, color) in colors.iter().enumerate() {
            let (y, x) = (i / inner, i % inner);
            dark[(y + QUIET_ZONE) * side + x + QUIET_ZONE] = *color == Color::Dark;
        }
        Ok(Modules { side, dark })
    }

    /// Whether the module at row `y`, column `x` is dark; rows past the bottom are light.
    fn is_dark(&self, y: usize, x: usize) -> bool {
        y < self.side && self.dark[y * self.side + x]
    }
}

/// `text` as a QR code for a terminal: two module rows per line drawn with half blocks
/// (`▀`, `▄`, `█`, space) in black on bright white, each line setting those colours first and
/// resetting them at its end, with the quiet zone; reads the same whatever the theme.
pub fn terminal(text: &str) -> Result<String, QrError> {
    let modules = Modules::of(text)?;
    let mut out = String::new();
    for y in (0..modules.side).step_by(2) {
        out.push_str(BLACK_ON_WHITE);
        for x in 0..modules.side {
            out.push(match (modules.is_dark(y, x), modules.is_dark(y + 1, x)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push_str(RESET);
        out.push('\n');
    }
    Ok(out)
}

/// `text` as a PNG image: 8-bit grayscale, black modules on white, 8 pixels per module, with
/// the quiet zone.
pub fn png(text: &str) -> Result<Vec<u8>, QrError> {
    let modules = Modules::of(text)?;
    let pixels_per_side = modules.side * PNG_SCALE;
    let mut pixels = Vec::with_capacity(pixels_per_side * pixels_per_side);
    for y in 0..pixels_per_side {
        for x in 0..pixels_per_side {
            let dark = modules.is_dark(y / PNG_SCALE, x / PNG_SCALE);
            pixels.push(if dark { 0 } else { 255 });
        }
    }
    // A code has at most 177 + 8 modules a side: the size always fits in u32.
    let side = u32::try_from(pixels_per_side).expect("a QR code is at most 1480 px wide");
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_lines_set_their_colours_and_keep_a_quiet_zone() {
        let code = terminal("tg://proxy?server=a&port=443&secret=ee00").unwrap();
        let lines: Vec<&str> = code.lines().collect();
        assert!(lines.len() > 10);
        for line in &lines {
            let inner = line
                .strip_prefix(BLACK_ON_WHITE)
                .and_then(|l| l.strip_suffix(RESET))
                .unwrap_or_else(|| panic!("{line:?} does not set and reset its colours"));
            assert!(
                inner.starts_with("    ") && inner.ends_with("    "),
                "{inner:?}"
            );
            assert_eq!(inner.chars().count(), lines.len() * 2 - 1);
        }
        // Two module rows per line: the first two lines are all quiet zone.
        assert!(lines[..2]
            .iter()
            .all(|l| l[BLACK_ON_WHITE.len()..l.len() - RESET.len()]
                .trim()
                .is_empty()));
    }

    #[test]
    fn png_has_the_png_signature_and_a_too_long_text_is_an_error() {
        let image = png("tg://proxy?server=a&port=443&secret=ee00").unwrap();
        assert!(image.starts_with(b"\x89PNG\r\n\x1a\n"));
        let long = "x".repeat(8000);
        assert!(matches!(
            png(&long),
            Err(QrError::TooLong { len: 8000, .. })
        ));
        assert!(matches!(terminal(&long), Err(QrError::TooLong { .. })));
    }
}
