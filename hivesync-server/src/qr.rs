//! QR codes of preview URLs: an SVG document for the API, block characters for a terminal.

use qrcode::{Color, EcLevel, QrCode};

/// The modules of `text`'s QR code with a four-module quiet zone: `(size, dark)`, row by row.
fn modules(text: &str) -> Result<(usize, Vec<bool>), qrcode::types::QrError> {
    let code = QrCode::with_error_correction_level(text, EcLevel::M)?;
    let width = code.width();
    let size = width + 8;
    let mut dark = vec![false; size * size];
    for (i, color) in code.to_colors().iter().enumerate() {
        if *color == Color::Dark {
            dark[(i / width + 4) * size + i % width + 4] = true;
        }
    }
    Ok((size, dark))
}

/// `text` as a QR code in an SVG document: one unit per module, each dark module a `M{x} {y}h1v1h-1z`
/// square of one path.
pub fn svg(text: &str) -> Result<String, qrcode::types::QrError> {
    let (size, dark) = modules(text)?;
    let mut path = String::with_capacity(dark.len() * 4);
    for (i, _) in dark.iter().enumerate().filter(|(_, d)| **d) {
        path.push_str(&format!("M{} {}h1v1h-1z", i % size, i / size));
    }
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {size} {size}\" \
         width=\"{px}\" height=\"{px}\" shape-rendering=\"crispEdges\">\
         <rect width=\"{size}\" height=\"{size}\" fill=\"#fff\"/>\
         <path d=\"{path}\" fill=\"#000\"/></svg>",
        px = size * 8
    ))
}

/// Black on white whatever the terminal's theme: scanners read dark modules on a light ground.
const COLOURS: &str = "\x1b[30;107m";
const RESET: &str = "\x1b[0m";

/// `text` as a QR code for a terminal: two rows of modules per line in half blocks, drawn dark on
/// a light background with explicit colours, so it scans on dark and light themes alike.
pub fn terminal(text: &str) -> Result<String, qrcode::types::QrError> {
    let (size, dark) = modules(text)?;
    let mut out = String::new();
    for top in (0..size).step_by(2) {
        out.push_str(COLOURS);
        for x in 0..size {
            let upper = dark[top * size + x];
            let lower = top + 1 < size && dark[(top + 1) * size + x];
            out.push(match (upper, lower) {
                (false, false) => ' ',
                (true, false) => '▀',
                (false, true) => '▄',
                (true, true) => '█',
            });
        }
        out.push_str(RESET);
        out.push('\n');
    }
    Ok(out)
}
