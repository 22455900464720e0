//! Escaping for DOT and XML, and text width estimates for the SVG layout.

/// Escapes `s` for a double-quoted DOT string. Graphviz treats `\` as the start of an escape
/// sequence in labels (`\n`, `\l`, `\N`), so a literal backslash is doubled; line breaks in
/// the text become `\n` so a label never spans raw lines.
pub(crate) fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            _ => out.push(c),
        }
    }
    out
}

/// Escapes `s` for XML text and attribute values. Control characters that XML 1.0 forbids
/// are dropped: a state name from a file must never make the document unreadable.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// Approximate advance width of `s` in a DejaVu Sans / Verdana-like font at `size` px.
///
/// The SVG is laid out without access to fonts, so widths come from per-character classes
/// measured on DejaVu Sans and rounded up: a box may be a little wider than its text, never
/// narrower.
pub(crate) fn text_width(s: &str, size: f64) -> f64 {
    let em: f64 = s
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '.' | ',' | ':' | ';' | '\'' | '!' | '|' | 'I' => 0.30,
            ' ' | 'f' | 'r' | 't' | '-' | '/' | '[' | ']' | '(' | ')' => 0.42,
            'm' | 'w' | 'M' | 'W' => 0.98,
            'A'..='Z' => 0.72,
            '0'..='9' | 'a'..='z' | '_' | '=' | '+' | '<' | '>' => 0.64,
            c if c.is_ascii() => 0.64,
            _ => 1.05,
        })
        .sum();
    em * size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_escape_handles_quotes_backslashes_and_newlines() {
        assert_eq!(dot_escape(r#"a "b" \c"#), r#"a \"b\" \\c"#);
        assert_eq!(dot_escape("x\r\ny"), "x\\ny");
    }

    #[test]
    fn xml_escape_handles_markup_and_control_characters() {
        assert_eq!(
            xml_escape("<a & 'b'>\u{1}"),
            "&lt;a &amp; &apos;b&apos;&gt;"
        );
    }

    #[test]
    fn wider_text_measures_wider() {
        assert!(text_width("mmmm", 10.0) > text_width("iiii", 10.0));
        assert_eq!(text_width("", 12.0), 0.0);
    }
}
