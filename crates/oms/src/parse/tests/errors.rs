//! Each error kind, with the exact `file:line:column` it points at.

use super::*;

/// Asserts the error's origin and kind, and that it renders as `file:line:column: ...`.
fn assert_error(e: &LoadError, file: &str, line: u32, column: u32, kind: &LoadErrorKind) {
    // Kinds hold no `PartialEq` (an unreadable file keeps its `io::Error`); their `Debug`
    // says the same.
    assert_eq!(format!("{:?}", e.kind), format!("{kind:?}"), "{e}");
    assert_eq!(
        (e.origin.file.as_str(), e.origin.line, e.origin.column),
        (file, line, column),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with(&format!("{file}:{line}:{column}: ")),
        "{e}"
    );
}

#[test]
fn not_well_formed_xml_points_at_roxmltrees_position() {
    let xml = lines(&[
        r#"<statemachine><process name="P" main="true">"#,
        r#"  <states><state name="new"></states>"#,
        r#"</process></statemachine>"#,
    ]);
    let e = err(load(&xml, &[]));
    assert!(
        matches!(&e.kind, LoadErrorKind::Xml(m) if m.contains("state")),
        "{e}"
    );
    assert_eq!((e.origin.line, e.origin.column), (2, 29), "{e}");
    assert!(
        !e.to_string().ends_with("at 2:29"),
        "position is not repeated: {e}"
    );
}

#[test]
fn unknown_source_points_at_the_source_element() {
    let xml = lines(&[
        r#"<statemachine><process name="P" main="true">"#,
        r#"  <states><state name="new"/></states>"#,
        r#"  <transitions><transition>"#,
        r#"    <source>nowhere</source><target>new</target>"#,
        r#"  </transition></transitions>"#,
        r#"</process></statemachine>"#,
    ]);
    let e = err(load(&xml, &[]));
    assert_error(
        &e,
        "defs/main.xml",
        4,
        5,
        &LoadErrorKind::UnknownSource("nowhere".into()),
    );
    assert_eq!(
        e.to_string(),
        r#"defs/main.xml:4:5: unknown source state "nowhere""#
    );
}

#[test]
fn unknown_target_points_at_the_target_element() {
    let xml = lines(&[
        r#"<statemachine><process name="P" main="true">"#,
        r#"  <states><state name="new"/></states>"#,
        r#"  <transitions><transition>"#,
        r#"    <source>new</source>  <target> gone </target>"#,
        r#"  </transition></transitions>"#,
        r#"</process></statemachine>"#,
    ]);
    let e = err(load(&xml, &[]));
    assert_error(
        &e,
        "defs/main.xml",
        4,
        27,
        &LoadErrorKind::UnknownTarget("gone".into()),
    );
}

#[test]
fn unknown_event_points_at_the_event_element() {
    let xml = lines(&[
        r#"<statemachine><process name="P" main="true">"#,
        r#"  <states><state name="new"/></states>"#,
        r#"  <transitions><transition>"#,
        r#"    <source>new</source><target>new</target>"#,
        r#"      <event>undeclared</event>"#,
        r#"  </transition></transitions>"#,
        r#"  <events><event name="declared"/></events>"#,
        r#"</process></statemachine>"#,
    ]);
    let e = err(load(&xml, &[]));
    assert_error(
        &e,
        "defs/main.xml",
        5,
        7,
        &LoadErrorKind::UnknownEvent("undeclared".into()),
    );
}

#[test]
fn errors_in_an_included_file_name_that_file() {
    let main = r#"<statemachine><process name="P" main="true">
        <subprocesses><process>S</process></subprocesses>
        <states><state name="new"/></states></process>
        <process name="S" file="sub/S.xml"/></statemachine>"#;
    let s = lines(&[
        r#"<statemachine><process name="S">"#,
        r#"  <transitions><transition><source>new</source><target>missing</target></transition></transitions>"#,
        r#"</process></statemachine>"#,
    ]);
    let e = err(load(main, &[("sub/S.xml", &s)]));
    assert_error(
        &e,
        "defs/sub/S.xml",
        2,
        48,
        &LoadErrorKind::UnknownTarget("missing".into()),
    );
}

#[test]
fn invalid_timeout_points_at_the_attribute() {
    let xml = lines(&[
        r#"<statemachine><process name="P" main="true">"#,
        r#"  <states><state name="new"/></states>"#,
        r#"  <events><event name="e" timeout="soon"/></events>"#,
        r#"</process></statemachine>"#,
    ]);
    let e = err(load(&xml, &[]));
    assert_eq!((e.origin.line, e.origin.column), (3, 27), "{e}");
    assert!(
        matches!(&e.kind, LoadErrorKind::InvalidTimeout { value, .. } if value == "soon"),
        "{e}"
    );
}

#[test]
fn missing_subprocess_points_at_its_entry() {
    let xml = lines(&[
        r#"<statemachine><process name="P" main="true">"#,
        r#"  <subprocesses>"#,
        r#"    <process>Known</process>"#,
        r#"    <process>Unknown</process>"#,
        r#"  </subprocesses>"#,
        r#"  <states><state name="new"/></states>"#,
        r#"</process>"#,
        r#"<process name="Known"/>"#,
        r#"</statemachine>"#,
    ]);
    let e = err(load(&xml, &[]));
    assert_error(
        &e,
        "defs/main.xml",
        4,
        5,
        &LoadErrorKind::MissingSubprocess("Unknown".into()),
    );
}

#[test]
fn unreadable_include_names_the_file_and_the_include_line() {
    let xml = lines(&[
        r#"<statemachine><process name="P" main="true">"#,
        r#"  <states><state name="new"/></states>"#,
        r#"</process>"#,
        r#"  <process name="S" file="sub/Nope.xml"/>"#,
        r#"</statemachine>"#,
    ]);
    let e = err(load(&xml, &[]));
    assert_eq!(
        (e.origin.file.as_str(), e.origin.line, e.origin.column),
        ("defs/main.xml", 4, 3)
    );
    assert!(
        matches!(&e.kind, LoadErrorKind::Unreadable { path, .. } if path == Path::new("defs/sub/Nope.xml")),
        "{e}"
    );
}

#[test]
fn a_file_without_main_process_is_refused() {
    let xml = r#"<statemachine><process name="Sub"><states><state name="new"/></states></process></statemachine>"#;
    assert_error(
        &err(load(xml, &[])),
        "defs/main.xml",
        1,
        1,
        &LoadErrorKind::NoMainProcess,
    );
}

#[test]
fn unknown_initial_state_points_at_the_main_process() {
    let xml = lines(&[
        r#"<statemachine>"#,
        r#"  <process name="P" main="true"><states><state name="start"/><state name="b"/></states></process>"#,
        r#"</statemachine>"#,
    ]);
    assert_error(
        &err(load(&xml, &[])),
        "defs/main.xml",
        2,
        3,
        &LoadErrorKind::NoInitialState(vec!["start".into(), "b".into()]),
    );
    let options = LoadOptions {
        initial: Some("begin".into()),
        ..Default::default()
    };
    assert_error(
        &err(load_with(&xml, &[], &options)),
        "defs/main.xml",
        2,
        3,
        &LoadErrorKind::UnknownInitialState("begin".into()),
    );
}

#[test]
fn structure_errors_say_what_is_missing() {
    let cases = [
        (
            r#"<process name="P" main="true"/>"#,
            "root element is <process>",
        ),
        (
            r#"<statemachine><process name="P" main="true"><states><state/></states></process></statemachine>"#,
            r#"<state> needs a "name" attribute"#,
        ),
        (
            r#"<statemachine><process name="P" main="true"><events><event manual="true"/></events></process></statemachine>"#,
            r#"<event> needs a "name" attribute"#,
        ),
        (
            r#"<statemachine><process name="P" main="true"><transitions><transition><target>x</target></transition></transitions></process></statemachine>"#,
            "<transition> needs a <source> element",
        ),
        (
            r#"<statemachine><process main="true"><states><state name="new"/></states></process></statemachine>"#,
            r#"the main <process> needs a "name" attribute"#,
        ),
    ];
    let state_without_name = err(load(cases[1].0, &[]));
    assert_eq!(state_without_name.origin.to_string(), "defs/main.xml:1:53");
    for (xml, want) in cases {
        let e = err(load(xml, &[]));
        assert!(
            matches!(&e.kind, LoadErrorKind::Structure(m) if m.contains(want)),
            "{xml}: {e}"
        );
    }
}
