//! The initial state: configured, `new`, or the one state no transition enters; and
//! StateMachine-module includes without `.xml`.

use super::*;
use crate::model::InitialSource;

/// States `draft`, `open`, `closed`; `draft -> open -> closed`.
fn draft_process(extra_states: &str) -> String {
    main_with(&format!(
        r#"<states><state name="draft"/><state name="open"/><state name="closed"/>{extra_states}</states>
        <transitions>
          <transition><source>draft</source><target>open</target><event>submit</event></transition>
          <transition><source>open</source><target>closed</target><event>close</event></transition>
        </transitions>
        <events><event name="submit" manual="true"/><event name="close" manual="true"/></events>"#
    ))
}

fn initial(l: &Loaded) -> (&str, InitialSource) {
    let p = &l.process;
    (p.state(p.initial()).name.as_str(), p.initial_source())
}

#[test]
fn the_only_state_no_transition_enters_is_initial() {
    let l = load(&draft_process(""), &[]).unwrap();
    assert_eq!(initial(&l), ("draft", InitialSource::NotEntered));
    // Not reported unreachable: it is the start.
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn new_wins_over_a_state_no_transition_enters() {
    let l = load(&draft_process(r#"<state name="new"/>"#), &[]).unwrap();
    assert_eq!(initial(&l), ("new", InitialSource::Default));
}

#[test]
fn configuration_wins_over_new_and_over_inference() {
    let mut options = LoadOptions::default();
    options.initial_states.insert("P".into(), "open".into());
    let l = load_with(&draft_process(r#"<state name="new"/>"#), &[], &options).unwrap();
    assert_eq!(initial(&l), ("open", InitialSource::Configured));
    // An entry for another process changes nothing here.
    let mut options = LoadOptions::default();
    options.initial_states.insert("Other".into(), "open".into());
    let l = load_with(&draft_process(""), &[], &options).unwrap();
    assert_eq!(initial(&l), ("draft", InitialSource::NotEntered));
}

#[test]
fn a_configured_state_the_process_lacks_is_an_error() {
    let mut options = LoadOptions::default();
    options.initial_states.insert("P".into(), "drfat".into());
    let e = err(load_with(&draft_process(""), &[], &options));
    assert!(
        matches!(&e.kind, LoadErrorKind::UnknownInitialState(s) if s == "drfat"),
        "{e}"
    );
    assert_eq!((e.origin.line, e.origin.column), (1, 15), "{e}");
    assert_eq!(
        e.to_string(),
        "defs/main.xml:1:15: initial state \"drfat\" is not defined"
    );
}

#[test]
fn ambiguous_or_missing_start_names_the_candidates() {
    let e = err(load(&draft_process(r#"<state name="archived"/>"#), &[]));
    assert!(
        matches!(&e.kind, LoadErrorKind::NoInitialState(c) if c == &["draft", "archived"]),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains(r#"2 states are entered by no transition ("draft", "archived")"#)
            && text.contains("[initial_states]"),
        "{text}"
    );
    // A cycle: every state is entered.
    let cycle = main_with(
        r#"<states><state name="a"/><state name="b"/></states>
        <transitions>
          <transition><source>a</source><target>b</target></transition>
          <transition><source>b</source><target>a</target></transition>
        </transitions>"#,
    );
    let e = err(load(&cycle, &[]));
    assert!(
        matches!(&e.kind, LoadErrorKind::NoInitialState(c) if c.is_empty()),
        "{e}"
    );
    assert!(e.to_string().contains("every state is entered"), "{e}");
}

#[test]
fn includes_without_an_extension_get_xml_appended() {
    let main = r#"<statemachine><process name="P" main="true">
        <subprocesses><process>MerchantReturn</process></subprocesses>
        <states><state name="new"/></states>
        <transitions><transition><source>new</source><target>return requested</target><event>return</event></transition></transitions>
        </process>
        <process name="MerchantReturn" file="Subprocess/MerchantReturn"/></statemachine>"#;
    let sub_file = sub(
        "MerchantReturn",
        r#"<states><state name="return requested"/></states><events><event name="return" manual="true"/></events>"#,
    );
    let l = load(main, &[("Subprocess/MerchantReturn.xml", &sub_file)]).unwrap();
    assert_eq!(state_names(&l), ["new", "return requested"]);
    // `.xml` in any case is kept as written; no second extension is added.
    let upper = main.replace(
        "Subprocess/MerchantReturn\"",
        "Subprocess/MerchantReturn.XML\"",
    );
    let l = load(&upper, &[("Subprocess/MerchantReturn.XML", &sub_file)]).unwrap();
    assert_eq!(state_names(&l), ["new", "return requested"]);
    // The error for a missing one names the file that was looked for.
    let e = err(load(main, &[]));
    assert!(
        e.to_string().contains("Subprocess/MerchantReturn.xml"),
        "{e}"
    );
}

#[test]
fn include_paths_follow_spryker() {
    let root = Path::new("defs");
    let p = |f: &str| merge::include_path(root, f).display().to_string();
    assert_eq!(
        p("Sub/Return"),
        Path::new("defs/Sub/Return.xml").display().to_string()
    );
    assert_eq!(
        p("Sub Dir/S.xml"),
        Path::new("defs/Sub_Dir/S.xml").display().to_string()
    );
    assert_eq!(
        p("Sub/v1.2"),
        Path::new("defs/Sub/v1.2.xml").display().to_string()
    );
}
