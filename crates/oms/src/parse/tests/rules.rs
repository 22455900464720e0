//! What the loader reads, one rule per test.

use super::*;

const NEW_DONE: &str = r#"<states><state name="new"/><state name="done"/></states>
    <transitions><transition><source>new</source><target>done</target><event>go</event></transition></transitions>
    <events><event name="go"/></events>"#;

#[test]
fn every_namespace_and_none_is_accepted() {
    for ns in [
        r#" xmlns="spryker:oms-01""#,
        r#" xmlns="http://static.spryker.com""#,
        r#" xmlns="https://static.spryker.com""#,
        "",
    ] {
        let xml = format!(
            r#"<statemachine{ns}><process name="P" main="true">{NEW_DONE}</process></statemachine>"#
        );
        let l = load(&xml, &[]).unwrap_or_else(|e| panic!("{ns}: {e}"));
        assert_eq!(state_names(&l), ["new", "done"], "{ns}");
        assert_eq!(l.process.transitions().len(), 1, "{ns}");
    }
}

#[test]
fn a_prefixed_namespace_is_matched_by_local_name() {
    let xml = format!(
        r#"<oms:statemachine xmlns:oms="spryker:oms-01"><oms:process name="P" main="true">{}</oms:process></oms:statemachine>"#,
        NEW_DONE.replace('<', "<oms:").replace("<oms:/", "</oms:")
    );
    let l = load(&xml, &[]).unwrap();
    assert_eq!(state_names(&l), ["new", "done"]);
}

#[test]
fn include_by_name_and_file_uses_the_include_name() {
    let main = r#"<statemachine><process name="P" main="true">
        <subprocesses><process>Pay</process></subprocesses>
        <states><state name="new"/></states>
        <transitions><transition><source>new</source><target>paid</target><event>pay</event></transition></transitions>
        </process>
        <process name="Pay" file="Payment/Pay01.xml"/></statemachine>"#;
    // The file calls its process differently: as in Spryker, the include's name wins.
    let pay = sub(
        "SomethingElse",
        r#"<states><state name="paid"/></states><events><event name="pay" manual="true"/></events>"#,
    );
    let l = load(main, &[("Payment/Pay01.xml", &pay)]).unwrap();
    assert_eq!(state_names(&l), ["new", "paid"]);
    assert_eq!(l.process.subprocesses(), ["Pay"]);
    assert_eq!(state(&l, "paid").process, "Pay");
    assert_eq!(state(&l, "paid").origin.file, "defs/Payment/Pay01.xml");
    assert!(event(&l, "pay").manual);
}

#[test]
fn include_without_name_declares_the_process_in_the_file() {
    let main = r#"<statemachine><process name="P" main="true">
        <subprocesses><process>Auth</process></subprocesses>
        <states><state name="new"/></states>
        <transitions><transition><source>new</source><target>authorized</target></transition></transitions>
        </process>
        <process file="Auth01.xml"/></statemachine>"#;
    let auth = sub("Auth", r#"<states><state name="authorized"/></states>"#);
    let l = load(main, &[("Auth01.xml", &auth)]).unwrap();
    assert_eq!(state(&l, "authorized").process, "Auth");
    assert_eq!(l.process.subprocesses(), ["Auth"]);
}

#[test]
fn spaces_in_file_become_underscores() {
    let main = r#"<statemachine><process name="P" main="true">
        <subprocesses><process>S</process></subprocesses>
        <states><state name="new"/></states></process>
        <process name="S" file="My Sub/Sub 01.xml"/></statemachine>"#;
    let s = sub("S", r#"<states><state name="s1"/></states>"#);
    let l = load(main, &[("My_Sub/Sub_01.xml", &s)]).unwrap();
    assert_eq!(state(&l, "s1").origin.file, "defs/My_Sub/Sub_01.xml");
}

#[test]
fn nested_includes_resolve_against_the_main_folder_and_cycles_stop() {
    let main = r#"<statemachine><process name="P" main="true">
        <subprocesses><process>A</process></subprocesses>
        <states><state name="new"/></states></process>
        <process name="A" file="sub/A.xml"/></statemachine>"#;
    // A includes B by a path relative to the definitions root, not to sub/; B includes A
    // again, which must not loop.
    let a = r#"<statemachine><process name="A"><subprocesses><process>B</process></subprocesses>
        <states><state name="a"/></states></process>
        <process name="B" file="sub/B.xml"/></statemachine>"#;
    let b = r#"<statemachine><process name="B"><subprocesses><process>A</process></subprocesses>
        <states><state name="b"/></states>
        <transitions><transition><source>new</source><target>a</target></transition></transitions></process>
        <process name="A" file="sub/A.xml"/></statemachine>"#;
    let l = load(main, &[("sub/A.xml", a), ("sub/B.xml", b)]).unwrap();
    assert_eq!(state_names(&l), ["new", "a", "b"]);
    assert_eq!(l.process.subprocesses(), ["A", "B"]);
    assert_eq!(state(&l, "b").origin.file, "defs/sub/B.xml");
}

#[test]
fn merge_order_is_main_then_subprocesses_depth_first() {
    let main = r#"<statemachine><process name="P" main="true">
        <subprocesses><process>X</process><process>Y</process></subprocesses>
        <states><state name="new"/></states></process>
        <process name="Y"><states><state name="y"/></states></process>
        <process name="X"><subprocesses><process>Z</process></subprocesses><states><state name="x"/></states></process>
        <process name="Z"><states><state name="z"/></states></process>
        </statemachine>"#;
    let l = load(main, &[]).unwrap();
    assert_eq!(state_names(&l), ["new", "x", "z", "y"]);
    assert_eq!(l.process.subprocesses(), ["X", "Z", "Y"]);
}

#[test]
fn prefix_is_applied_to_the_included_names_as_spryker_does() {
    let main = r#"<statemachine><process name="P" main="true">
        <subprocesses><process>Pay</process></subprocesses>
        <states><state name="new"/></states>
        <transitions><transition><source>new</source><target>Pay - pending</target><event>start</event></transition></transitions>
        <events><event name="start" onEnter="true"/></events></process>
        <process name="Pay" prefix="Pay" file="Pay.xml"/></statemachine>"#;
    let pay = sub(
        "Pay",
        r#"<states><state name="pending"/><state name="paid"/></states>
        <transitions><transition><source>pending</source><target>paid</target><event>pay</event></transition></transitions>
        <events><event name="pay"/></events>"#,
    );
    let l = load(main, &[("Pay.xml", &pay)]).unwrap();
    assert_eq!(state_names(&l), ["new", "Pay - pending", "Pay - paid"]);
    assert!(l.process.event_id("Pay - pay").is_some());
    assert!(l.process.event_id("pay").is_none());
    let t = &l.process.transitions()[1];
    assert_eq!(l.process.state(t.source).name, "Pay - pending");
    assert_eq!(l.process.state(t.target).name, "Pay - paid");
}

#[test]
fn states_read_flags_reserved_and_display() {
    let l = load(
        &main_with(
            r#"<states>
            <state name="new" reserved="true" display="oms.state.new">
                <flag>exclude from customer</flag>
                <flag>  not auth  </flag>
                <flag>anything at all!</flag>
            </state>
            <state name="plain"/>
            </states>"#,
        ),
        &[],
    )
    .unwrap();
    let s = state(&l, "new");
    assert!(s.reserved);
    assert_eq!(s.display.as_deref(), Some("oms.state.new"));
    assert_eq!(
        s.flags,
        ["exclude from customer", "not auth", "anything at all!"]
    );
    let p = state(&l, "plain");
    assert!(!p.reserved);
    assert_eq!(p.display, None);
    assert!(p.flags.is_empty());
}

#[test]
fn transitions_read_happy_condition_and_optional_event() {
    let l = load(
        &main_with(
            r#"<states><state name="new"/><state name="a"/><state name="b"/></states>
            <transitions>
              <transition happy="true" condition="Payment/IsAuthorized"><source>new</source><target>a</target><event>go</event></transition>
              <transition><source>
                  new
              </source><target>b</target></transition>
            </transitions>
            <events><event name="go"/></events>"#,
        ),
        &[],
    )
    .unwrap();
    let [t1, t2] = l.process.transitions() else {
        panic!("two transitions expected")
    };
    assert!(t1.happy);
    assert_eq!(t1.condition.as_deref(), Some("Payment/IsAuthorized"));
    assert_eq!(t1.event, l.process.event_id("go"));
    assert!(!t2.happy);
    assert_eq!(t2.condition, None);
    assert_eq!(t2.event, None, "event-less transition");
    assert_eq!(l.process.state(t2.source).name, "new", "text is trimmed");
    assert_eq!(l.process.eventless_from(t2.source).len(), 1);
}

#[test]
fn events_read_every_attribute() {
    let l = load(
        &main_with(
            r#"<states><state name="new"/></states>
            <events>
              <event name="pay" manual="true" timeout="1 hour" command="DummyPayment/Pay"/>
              <event name="enter" onEnter="true" timeout="PT30M" timeoutProcessor="OmsTimeout/Initiation"/>
              <event name="bare"/>
            </events>"#,
        ),
        &[],
    )
    .unwrap();
    let pay = event(&l, "pay");
    assert!(pay.manual && !pay.on_enter);
    assert_eq!(pay.command.as_deref(), Some("DummyPayment/Pay"));
    assert_eq!(
        pay.timeout.as_ref().map(|t| t.approx_seconds()),
        Some(3_600)
    );
    let enter = event(&l, "enter");
    assert!(enter.on_enter && !enter.manual);
    assert_eq!(
        enter.timeout_processor.as_deref(),
        Some("OmsTimeout/Initiation")
    );
    let bare = event(&l, "bare");
    assert!(!bare.manual && !bare.on_enter);
    assert_eq!(
        (&bare.command, &bare.timeout, &bare.timeout_processor),
        (&None, &None, &None)
    );
}

#[test]
fn only_the_exact_string_true_is_true() {
    for v in ["True", "1", "TRUE", "yes", " true"] {
        let l = load(
            &main_with(&format!(
                r#"<states><state name="new" reserved="{v}"/><state name="x"/></states>
                <transitions><transition happy="{v}"><source>new</source><target>x</target><event>e</event></transition></transitions>
                <events><event name="e" manual="{v}" onEnter="{v}"/></events>"#
            )),
            &[],
        )
        .unwrap();
        assert!(!state(&l, "new").reserved, "{v:?}");
        assert!(!l.process.transitions()[0].happy, "{v:?}");
        assert!(!event(&l, "e").manual && !event(&l, "e").on_enter, "{v:?}");
        let not_main = format!(
            r#"<statemachine><process name="P" main="{v}"><states><state name="new"/></states></process></statemachine>"#
        );
        assert!(
            matches!(err(load(&not_main, &[])).kind, LoadErrorKind::NoMainProcess),
            "{v:?}"
        );
    }
}

#[test]
fn timeouts_in_spryker_and_iso_forms() {
    for (raw, secs) in [
        ("1hour", 3_600),
        ("1 hour", 3_600),
        ("14days", 14 * 86_400),
        (" 1 minute", 60),
        ("183days", 183 * 86_400),
        ("PT30M", 1_800),
    ] {
        let l = load(
            &main_with(&format!(
                r#"<states><state name="new"/></states><events><event name="e" timeout="{raw}"/></events>"#
            )),
            &[],
        )
        .unwrap();
        let t = event(&l, "e").timeout.clone().unwrap();
        assert_eq!(t.approx_seconds(), secs, "{raw:?}");
        assert_eq!(t.raw(), raw, "the text is kept as written");
    }
}

#[test]
fn sections_may_come_in_any_order() {
    let l = load(
        &main_with(
            r#"<events><event name="go"/></events>
            <transitions><transition><source>new</source><target>done</target><event>go</event></transition></transitions>
            <states><state name="new"/><state name="done"/></states>"#,
        ),
        &[],
    )
    .unwrap();
    assert_eq!(l.process.transitions().len(), 1);
}

#[test]
fn transitions_may_use_states_of_another_subprocess() {
    let main = r#"<statemachine><process name="P" main="true">
        <subprocesses><process>A</process><process>B</process></subprocesses>
        <states><state name="new"/></states></process>
        <process name="A"><states><state name="a"/></states>
          <transitions><transition><source>b</source><target>a</target></transition></transitions></process>
        <process name="B"><states><state name="b"/></states>
          <transitions><transition><source>new</source><target>b</target></transition></transitions></process>
        </statemachine>"#;
    let l = load(main, &[]).unwrap();
    let t = &l.process.transitions()[0];
    assert_eq!(l.process.state(t.source).name, "b");
    assert_eq!(t.process, "A");
}

#[test]
fn empty_attributes_count_as_absent() {
    let l = load(
        &main_with(
            r#"<states><state name="new" display=""/></states>
            <transitions><transition condition=""><source>new</source><target>new</target></transition></transitions>
            <events><event name="e" command="" timeout=""/></events>"#,
        ),
        &[],
    )
    .unwrap();
    assert_eq!(state(&l, "new").display, None);
    assert_eq!(l.process.transitions()[0].condition, None);
    assert_eq!(event(&l, "e").command, None);
    assert_eq!(event(&l, "e").timeout, None);
}

#[test]
fn the_initial_state_is_new_unless_configured() {
    let xml = main_with(r#"<states><state name="start"/><state name="new"/></states>"#);
    let l = load(&xml, &[]).unwrap();
    assert_eq!(l.process.state(l.process.initial()).name, "new");
    let options = LoadOptions {
        initial: Some("start".into()),
        ..Default::default()
    };
    let l = load_with(&xml, &[], &options).unwrap();
    assert_eq!(l.process.state(l.process.initial()).name, "start");
}
