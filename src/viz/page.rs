//! One self-contained HTML page: the data as JSON in a `<script type="application/json">`
//! element, the styles and scripts inline (`assets/`), nothing fetched from a network.

use crate::base::Result;
use serde_json::Value as Json;
use std::path::Path;

const STYLE: &str = include_str!("assets/style.css");
const SCRIPTS: [&str; 4] = [
    include_str!("assets/heatmap.js"),
    include_str!("assets/tree.js"),
    include_str!("assets/plot.js"),
    include_str!("assets/main.js"),
];

/// Standard base64 (with padding) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].iter().enumerate() {
            if i <= c.len() {
                s.push(char::from(A[((n >> shift) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page for `data` (its `page` field says which view the scripts draw).
pub fn html(title: &str, data: &Json) -> String {
    // `</` would end the script element early; `<\/` is the same JSON string.
    let json = data.to_string().replace("</", "<\\/");
    let mut s = String::with_capacity(json.len() + 64 * 1024);
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    s.push_str("<meta name=\"generator\" content=\"pzt\">\n");
    s.push_str(&format!("<title>{}</title>\n<style>\n", escape_html(title)));
    s.push_str(STYLE);
    s.push_str("</style>\n</head>\n<body>\n<div id=\"app\"></div>\n");
    s.push_str("<script id=\"pzt-data\" type=\"application/json\">");
    s.push_str(&json);
    s.push_str("</script>\n<script>\n\"use strict\";\n");
    for js in SCRIPTS {
        s.push_str(js);
        s.push('\n');
    }
    s.push_str("</script>\n</body>\n</html>\n");
    s
}

/// Writes the page for `data` to `path`.
pub fn write(path: &Path, title: &str, data: &Json) -> Result<()> {
    crate::base::outputs::write(path, html(title, data).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x3f]), "//4/");
    }

    #[test]
    fn the_data_cannot_close_its_script() {
        let p = html(
            "<x>",
            &serde_json::json!({ "s": "</script><script>alert(1)" }),
        );
        assert_eq!(p.matches("</script>").count(), 2);
        assert!(p.contains("<title>&lt;x&gt;</title>"));
    }
}
