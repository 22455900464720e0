//! `orderflow process check|render|simulate`, run as a user would: the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn orderflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_orderflow"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run orderflow")
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn temp_file(name: &str, content: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("orderflow-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

#[test]
fn check_accepts_the_examples_and_reports_json() {
    let out = orderflow(&["process", "check", "--json", "processes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&out);
    assert_eq!(v["ok"], true);
    assert_eq!(v["files"][0]["process"], "ErpOrder01");
    assert_eq!(
        v["files"][0]["unbound"].as_array().unwrap().len(),
        0,
        "orderflow.toml binds them"
    );
}

#[test]
fn check_fails_with_file_line_and_column() {
    let bad = temp_file(
        "Broken01.xml",
        r#"<statemachine><process name="Broken01" main="true">
<states><state name="new"/></states>
<transitions><transition><source>new</source><target>nowhere</target></transition></transitions>
</process></statemachine>"#,
    );
    let out = orderflow(&["process", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Broken01.xml:3:"), "{err}");
    assert!(err.contains("nowhere"), "{err}");
}

#[test]
fn strict_check_refuses_unbound_plugins() {
    let p = temp_file(
        "Unbound01.xml",
        r#"<statemachine><process name="Unbound01" main="true">
<states><state name="new"/><state name="paid"/></states>
<transitions><transition condition="Payment/IsPaid"><source>new</source><target>paid</target><event>pay</event></transition></transitions>
<events><event name="pay" command="Payment/Capture"/></events>
</process></statemachine>"#,
    );
    let cfg = temp_file("empty.toml", "");
    let path = p.to_str().unwrap();
    let cfg = cfg.to_str().unwrap();
    let lenient = orderflow(&["process", "check", "--config", cfg, path]);
    assert!(lenient.status.success());
    assert!(String::from_utf8_lossy(&lenient.stderr).contains("Payment/Capture"));
    let strict = orderflow(&[
        "process", "check", "--strict", "--json", "--config", cfg, path,
    ]);
    assert_eq!(strict.status.code(), Some(1));
    let v = stdout_json(&strict);
    let names: Vec<&str> = v["files"][0]["unbound"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Payment/IsPaid", "Payment/Capture"]);
}

#[test]
fn render_writes_dot_and_svg() {
    let out = orderflow(&[
        "process",
        "render",
        "processes/ErpOrder01.xml",
        "--format",
        "dot",
    ]);
    assert!(out.status.success());
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.starts_with("digraph"), "{dot}");
    let svg_path =
        std::env::temp_dir().join(format!("orderflow-render-{}.svg", std::process::id()));
    let out = orderflow(&[
        "process",
        "render",
        "processes/ErpOrder01.xml",
        "--format",
        "svg",
        "-o",
        svg_path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(svg.contains("<svg"));
    let json = stdout_json(&orderflow(&[
        "process",
        "render",
        "processes/ErpOrder01.xml",
        "--format",
        "dot",
        "--json",
    ]));
    assert_eq!(json["format"], "dot");
    assert_eq!(json["process"], "ErpOrder01");
}

#[test]
fn simulate_prints_every_step_and_the_final_states() {
    let out = orderflow(&[
        "process",
        "simulate",
        "processes/ErpOrder01.xml",
        "--items",
        "2",
        "--condition",
        "Payment/IsPaid=true",
        "--events",
        "confirm,ship@1,deliver,wait:14days",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&out);
    let finals: Vec<&str> = v["final"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["state"].as_str().unwrap())
        .collect();
    // Item 2 was never shipped, so `deliver` does not apply to it.
    assert_eq!(finals, ["closed", "confirmed"]);
    let steps = v["steps"].as_array().unwrap();
    let has = |input: &str, item: i64, outcome: &str| {
        steps
            .iter()
            .any(|s| s["input"] == input && s["item"] == item && s["outcome"] == outcome)
    };
    assert!(has("deliver", 2, "not_applicable"));
    assert!(has("wait:14days", 1, "moved"));
    assert!(
        steps
            .iter()
            .any(|s| s["cause"] == "condition" && s["to"] == "paid")
    );
    assert!(
        steps
            .iter()
            .any(|s| s["command"] == "Erp/ExportOrder" && s["outcome"] == "ran")
    );
}

#[test]
fn simulate_rejects_a_bad_condition_flag() {
    let out = orderflow(&[
        "process",
        "simulate",
        "processes/ErpOrder01.xml",
        "--condition",
        "Payment/IsPaid=yes",
        "--events",
        "confirm",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither true nor false"));
}

#[test]
fn every_corpus_main_file_passes_check() {
    let Some(dir) = crate::corpus::corpus_dir() else {
        return;
    };
    let dir = dir.join("spryker-oms");
    let out = orderflow(&["process", "check", "--json", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = stdout_json(&out);
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 12, "the corpus has 12 main files");
    assert!(files.iter().all(|f| f["ok"] == true));
}
