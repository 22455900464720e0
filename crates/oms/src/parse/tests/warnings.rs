//! Each warning kind: raised where it should be, and not where it should not.

use super::*;
use crate::check::WarningCode;

fn codes(l: &Loaded) -> Vec<WarningCode> {
    l.warnings.iter().map(|w| w.code).collect()
}

fn only(l: &Loaded, code: WarningCode) -> Vec<&crate::check::Warning> {
    l.warnings.iter().filter(|w| w.code == code).collect()
}

#[test]
fn duplicate_state_keeps_the_first_and_names_both_origins() {
    let main = lines(&[
        r#"<statemachine><process name="P" main="true">"#,
        r#"  <subprocesses><process>S</process></subprocesses>"#,
        r#"  <states><state name="new"/><state name="closed" reserved="true"/></states>"#,
        r#"</process>"#,
        r#"<process name="S"><states><state name="closed"/></states></process>"#,
        r#"</statemachine>"#,
    ]);
    let l = load(&main, &[]).unwrap();
    assert_eq!(state_names(&l), ["new", "closed"]);
    assert!(
        state(&l, "closed").reserved,
        "the first declaration is kept"
    );
    assert_eq!(state(&l, "closed").process, "P");
    let w = only(&l, WarningCode::DuplicateState);
    assert_eq!(w.len(), 1, "{:?}", l.warnings);
    assert_eq!(w[0].origin.to_string(), "defs/main.xml:5:27");
    assert!(w[0].message.contains(r#""closed""#), "{}", w[0]);
    assert!(w[0].message.contains("defs/main.xml:3:30"), "{}", w[0]);
}

#[test]
fn duplicate_event_last_one_wins() {
    let main = lines(&[
        r#"<statemachine><process name="P" main="true">"#,
        r#"  <subprocesses><process>S</process></subprocesses>"#,
        r#"  <states><state name="new"/></states>"#,
        r#"  <transitions><transition><source>new</source><target>new</target><event>close</event></transition></transitions>"#,
        r#"  <events><event name="close" onEnter="true"/></events>"#,
        r#"</process>"#,
        r#"<process name="S"><events><event name="close" manual="true"/></events></process>"#,
        r#"</statemachine>"#,
    ]);
    let l = load(&main, &[]).unwrap();
    let close = event(&l, "close");
    assert!(
        close.manual && !close.on_enter,
        "Spryker's event map keeps the last"
    );
    assert_eq!(close.process, "S");
    assert_eq!(l.process.events().len(), 1);
    let w = only(&l, WarningCode::DuplicateEvent);
    assert_eq!(w.len(), 1, "{:?}", l.warnings);
    assert_eq!(w[0].origin.to_string(), "defs/main.xml:7:27");
    assert!(w[0].message.contains("defs/main.xml:5:11"), "{}", w[0]);
}

#[test]
fn several_on_enter_events_out_of_one_state() {
    let l = load(
        &main_with(
            r#"<states><state name="new"/><state name="a"/><state name="b"/></states>
            <transitions>
              <transition><source>new</source><target>a</target><event>first</event></transition>
              <transition><source>new</source><target>b</target><event>second</event></transition>
              <transition><source>a</source><target>b</target><event>first</event></transition>
            </transitions>
            <events><event name="first" onEnter="true"/><event name="second" onEnter="true"/></events>"#,
        ),
        &[],
    )
    .unwrap();
    let w = only(&l, WarningCode::SeveralOnEnter);
    assert_eq!(w.len(), 1, "{:?}", l.warnings);
    assert!(w[0].message.contains(r#"state "new""#), "{}", w[0]);
    assert!(w[0].message.contains("first, second"), "{}", w[0]);
}

#[test]
fn mixed_transitions_need_two_ways_out_of_different_kinds() {
    let l = load(
        &main_with(
            r#"<states><state name="new"/><state name="mixed"/><state name="single"/><state name="end"/></states>
            <transitions>
              <transition><source>new</source><target>mixed</target><event>go</event></transition>
              <transition><source>mixed</source><target>end</target><event>by hand</event></transition>
              <transition><source>mixed</source><target>end</target></transition>
              <transition><source>new</source><target>single</target></transition>
              <transition><source>single</source><target>end</target><event>pay</event></transition>
              <transition condition="C"><source>single</source><target>end</target><event>pay</event></transition>
              <transition><source>single</source><target>end</target><event>plain</event></transition>
            </transitions>
            <events><event name="go" onEnter="true"/><event name="by hand" manual="true"/>
              <event name="pay" manual="true" timeout="1 hour"/><event name="plain"/></events>"#,
        ),
        &[],
    )
    .unwrap();
    let w = only(&l, WarningCode::MixedTransitions);
    // `single` has one timed way out (pay, manual and timeout at once) and one plain event
    // (neither manual nor timeout): not a mix.
    assert_eq!(w.len(), 1, "{:?}", l.warnings);
    assert!(
        w[0].message
            .contains(r#"state "mixed" mixes manual and event-less"#),
        "{}",
        w[0]
    );
}

#[test]
fn unreachable_states_are_named() {
    let l = load(
        &main_with(
            r#"<states><state name="new"/><state name="a"/><state name="island"/></states>
            <transitions>
              <transition><source>new</source><target>a</target></transition>
              <transition><source>island</source><target>a</target></transition>
            </transitions>"#,
        ),
        &[],
    )
    .unwrap();
    let w = only(&l, WarningCode::Unreachable);
    assert_eq!(w.len(), 1, "{:?}", l.warnings);
    assert!(w[0].message.contains(r#"state "island""#), "{}", w[0]);
}

#[test]
fn unused_events_are_named() {
    let l = load(
        &main_with(
            r#"<states><state name="new"/></states>
            <transitions><transition><source>new</source><target>new</target><event>used</event></transition></transitions>
            <events><event name="used"/><event name="export" onEnter="true"/></events>"#,
        ),
        &[],
    )
    .unwrap();
    assert_eq!(codes(&l), [WarningCode::UnusedEvent]);
    assert!(l.warnings[0].message.contains(r#""export""#));
}
