//! XML errors without a position of their own point at the real place: the end of a
//! truncated input, the DOCTYPE.

use super::*;

fn xml_error_at(text: &str) -> (u32, u32, String) {
    let e = err(load(text, &[]));
    assert!(matches!(e.kind, LoadErrorKind::Xml(_)), "{e}");
    (e.origin.line, e.origin.column, e.to_string())
}

const GOOD: &str = "<statemachine>\n  <process name=\"P\" main=\"true\">\n    <states><state name=\"new\"/></states>\n  </process>\n</statemachine>\n";

#[test]
fn a_truncated_file_points_at_its_end() {
    // Cut after a complete line: the root element is never closed.
    let cut = &GOOD[..GOOD.find("  </process>").unwrap()];
    let (line, col, _) = xml_error_at(cut);
    assert_eq!((line, col), (4, 1));
    // Cut inside a tag (`    <states><state name="n`): just after the last character.
    let cut = &GOOD[..GOOD.find("name=\"new\"").unwrap() + 7];
    let (line, col, text) = xml_error_at(cut);
    assert_eq!((line, col), (3, 27), "{text}");
    assert!(text.starts_with("defs/main.xml:3:27: "), "{text}");
}

#[test]
fn an_empty_or_whitespace_file_points_at_its_end() {
    assert_eq!(xml_error_at("\n\n  ").0, 3);
}

#[test]
fn a_doctype_points_at_the_doctype() {
    let text =
        format!("<?xml version=\"1.0\"?>\n  <!DOCTYPE statemachine [<!ENTITY x \"y\">]>\n{GOOD}");
    let (line, col, text) = xml_error_at(&text);
    assert_eq!((line, col), (2, 3), "{text}");
    assert!(text.contains("DOCTYPE"), "{text}");
}

#[test]
fn every_truncation_points_inside_the_input() {
    // Wherever the file is cut, the error position is a real place in what was read.
    for end in 1..GOOD.len() {
        let cut = &GOOD[..end];
        let Err(e) = load(cut, &[]) else { continue };
        let lines: Vec<&str> = cut.split('\n').collect();
        let line = e.origin.line as usize;
        assert!(line >= 1 && line <= lines.len(), "cut at {end}: {e}");
        let width = lines[line - 1].chars().count() + 1;
        assert!(
            (e.origin.column as usize) <= width,
            "cut at {end}: {e} (line is {width} wide)"
        );
        if !matches!(e.kind, LoadErrorKind::Xml(_)) {
            continue;
        }
        assert!(
            (e.origin.line, e.origin.column) != (1, 1) || end < 3,
            "cut at {end}: {e}"
        );
    }
}
