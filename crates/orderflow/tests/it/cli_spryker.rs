//! StateMachine-module conventions and load errors across commands, run as a user would:
//! initial states (configured, `new`, inferred), includes without `.xml`,
//! `timeoutProcessor` under `--strict`, `FILE:LINE:COL: error:` from every command, and
//! `simulate --explicit-checks`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn orderflow(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run orderflow")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh folder with the given files (and no orderflow.toml unless given).
fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    dir
}

fn path(dir: &tempfile::TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

/// `draft -submit-> open -close-> closed`, plus `extra` states.
fn draft_process(name: &str, extra: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<statemachine xmlns="spryker:oms-01">
  <process name="{name}" main="true">
    <states><state name="draft"/><state name="open"/><state name="closed"/>{extra}</states>
    <transitions>
      <transition happy="true"><source>draft</source><target>open</target><event>submit</event></transition>
      <transition happy="true"><source>open</source><target>closed</target><event>close</event></transition>
    </transitions>
    <events><event name="submit" manual="true"/><event name="close" manual="true"/></events>
  </process>
</statemachine>
"#
    )
}

fn recur_folder(config: &str) -> tempfile::TempDir {
    folder(&[
        ("Draft01.xml", &draft_process("Draft01", "")),
        // Two states no transition enters: ambiguous without configuration.
        (
            "Recur01.xml",
            &draft_process("Recur01", r#"<state name="archived"/>"#),
        ),
        ("orderflow.toml", config),
    ])
}

#[test]
fn check_reports_the_initial_state_and_how_it_was_chosen() {
    let dir = recur_folder("[initial_states]\nRecur01 = \"draft\"\n");
    let out = orderflow(
        dir.path(),
        &["process", "check", "Draft01.xml", "Recur01.xml"],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "Draft01.xml: ok: process Draft01 (3 states, 2 events, 2 transitions, 0 warnings, \
             initial state \"draft\" (the only state no transition enters))"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("initial state \"draft\" (configured)"),
        "{stdout}"
    );
    let out = orderflow(dir.path(), &["process", "check", "--json", "."]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    let sources: Vec<(&str, &str)> = files
        .iter()
        .map(|f| {
            (
                f["initial_state"].as_str().unwrap(),
                f["initial_state_source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(sources, [("draft", "not_entered"), ("draft", "configured")]);
}

#[test]
fn ambiguous_or_misconfigured_initial_states_are_errors_with_a_position() {
    let dir = recur_folder("");
    let out = orderflow(dir.path(), &["process", "check", "Recur01.xml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(
        err.trim_end(),
        "Recur01.xml:3:3: error: no initial state: \"new\" is not defined and 2 states are \
         entered by no transition (\"draft\", \"archived\"); name one in orderflow.toml's \
         [initial_states] table (ProcessName = \"state\")"
    );
    let dir = recur_folder("[initial_states]\nRecur01 = \"drfat\"\n");
    let out = orderflow(dir.path(), &["process", "check", "Recur01.xml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "Recur01.xml:3:3: error: initial state \"drfat\" is not defined"
    );
}

#[test]
fn render_and_simulate_honour_the_configured_initial_state() {
    let dir = recur_folder("[initial_states]\nRecur01 = \"open\"\n");
    let out = orderflow(
        dir.path(),
        &["process", "render", "Recur01.xml", "--format", "dot"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"__start\" -> \"open\""),
        "{}",
        text(&out.stdout)
    );
    let out = orderflow(
        dir.path(),
        &[
            "process",
            "simulate",
            "Recur01.xml",
            "--events",
            "close",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["final"][0]["state"], "closed", "{v}");
}

#[test]
fn includes_without_an_extension_resolve_as_spryker_does() {
    let main = r#"<statemachine>
  <process name="MerchantOrder01" main="true">
    <subprocesses><process>MerchantReturn</process></subprocesses>
    <states><state name="new"/></states>
    <transitions><transition><source>new</source><target>returned</target><event>return</event></transition></transitions>
  </process>
  <process name="MerchantReturn" file="Subprocess/MerchantReturn"/>
</statemachine>"#;
    let sub = r#"<statemachine><process name="MerchantReturn">
    <states><state name="returned"/></states><events><event name="return" manual="true"/></events>
  </process></statemachine>"#;
    let dir = folder(&[
        ("MerchantOrder01.xml", main),
        ("Subprocess/MerchantReturn.xml", sub),
    ]);
    let out = orderflow(dir.path(), &["process", "check", "MerchantOrder01.xml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("(2 states, 1 events, 1 transitions, 0 warnings)"));
}

const TIMEOUT_PROCESSOR: &str = r#"<statemachine><process name="Initiation01" main="true">
  <states><state name="new"/><state name="cancelled"/></states>
  <transitions><transition><source>new</source><target>cancelled</target><event>cancel</event></transition></transitions>
  <events><event name="cancel" timeout="30days" timeoutProcessor="OmsTimeout/Initiation"/></events>
</process></statemachine>"#;

#[test]
fn an_unbound_timeout_processor_is_reported_and_strict_refuses_it() {
    let dir = folder(&[
        ("Initiation01.xml", TIMEOUT_PROCESSOR),
        ("orderflow.toml", ""),
    ]);
    let out = orderflow(dir.path(), &["process", "check", "Initiation01.xml"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stderr).trim_end(),
        "Initiation01.xml:4:11: warning: timeout processor \"OmsTimeout/Initiation\" is not \
         bound to a plugin"
    );
    let out = orderflow(
        dir.path(),
        &["process", "check", "--strict", "Initiation01.xml"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error: timeout processor \"OmsTimeout/Initiation\""),
        "{}",
        text(&out.stderr)
    );
    // Bound in configuration, strict passes.
    let bound = "[timeout_processors.\"OmsTimeout/Initiation\"]\ntype = \"attribute\"\n\
                 path = \"created_at\"\noffset = \"30days\"\n";
    std::fs::write(dir.path().join("orderflow.toml"), bound).unwrap();
    let out = orderflow(
        dir.path(),
        &["process", "check", "--strict", "--json", "Initiation01.xml"],
    );
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn every_command_prints_load_errors_as_file_line_col() {
    // Cut inside a tag on line 3.
    let cut = "<statemachine>\n  <process name=\"Cut01\" main=\"true\">\n    <states><state na";
    let dir = folder(&[("Cut01.xml", cut), ("orderflow.toml", "")]);
    let expected = "Cut01.xml:3:22: error: not well-formed XML: unexpected end of stream";
    for args in [
        vec!["process", "check", "Cut01.xml"],
        vec!["process", "render", "Cut01.xml"],
        vec!["process", "simulate", "Cut01.xml", "--events", "x"],
    ] {
        let out = orderflow(dir.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(text(&out.stderr).trim_end(), expected, "{args:?}");
    }
    // serve stops before it opens a store or listens.
    let db = format!("sqlite://{}", path(&dir, "of.db"));
    let out = orderflow(
        dir.path(),
        &[
            "serve",
            "--processes",
            ".",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let last = err.trim_end().lines().last().unwrap_or_default();
    // Files found in a folder are labelled by the folder's path.
    let file = Path::new(".").join("Cut01.xml");
    assert_eq!(
        last,
        format!("{}:{}", file.display(), &expected["Cut01.xml:".len()..])
    );
}

#[test]
fn a_doctype_is_reported_where_it_is() {
    let doc = format!(
        "<?xml version=\"1.0\"?>\n<!DOCTYPE statemachine>\n{}",
        draft_process("Doc01", "").trim_start_matches("<?xml version=\"1.0\"?>\n")
    );
    let dir = folder(&[("Doc01.xml", &doc), ("orderflow.toml", "")]);
    let out = orderflow(dir.path(), &["process", "check", "Doc01.xml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("Doc01.xml:2:1: error: not well-formed XML: a DOCTYPE"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn check_on_a_folder_without_a_main_process_fails() {
    let sub = r#"<statemachine><process name="Sub"><states><state name="a"/></states></process></statemachine>"#;
    let dir = folder(&[("defs/Sub.xml", sub), ("orderflow.toml", "")]);
    let out = orderflow(dir.path(), &["process", "check", "defs"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim_end(),
        "defs: error: no main process: no top-level *.xml file in this folder has a \
         <process main=\"true\">"
    );
}

#[test]
fn simulate_explicit_checks_models_an_erp_event_before_the_check_run() {
    // Nopayment01-style: `new` moves to `confirmed` by an event-less transition (the
    // check-condition worker), and `pay` only applies from `confirmed`.
    let p = r#"<statemachine><process name="Race01" main="true">
  <states><state name="new"/><state name="confirmed"/><state name="paid"/></states>
  <transitions>
    <transition happy="true"><source>new</source><target>confirmed</target></transition>
    <transition happy="true"><source>confirmed</source><target>paid</target><event>pay</event></transition>
  </transitions>
  <events><event name="pay"/></events>
</process></statemachine>"#;
    let dir = folder(&[("Race01.xml", p), ("orderflow.toml", "")]);
    let sim = |extra: &[&str]| {
        let mut args = vec!["process", "simulate", "Race01.xml", "--json"];
        args.extend_from_slice(extra);
        let out = orderflow(dir.path(), &args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // Without the option the worker is infinitely fast: `pay` finds the item confirmed.
    let v = sim(&["--events", "pay"]);
    assert_eq!(v["final"][0]["state"], "paid");
    // With it, `pay` arrives first and does not apply; after the check, a second `pay` does.
    let v = sim(&["--explicit-checks", "--events", "pay,check,pay"]);
    let steps: Vec<(&str, &str)> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["input"].as_str().unwrap(), s["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("pay", "not_applicable"),
            ("check", "moved"),
            ("pay", "moved")
        ]
    );
    assert_eq!(v["final"][0]["state"], "paid");
}
