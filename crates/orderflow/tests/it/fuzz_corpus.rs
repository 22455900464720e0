//! Replays the `erp_update` fuzz target's corpus (`fuzz/corpus/erp_update`) through the
//! target's own body, so `cargo test` checks every seed and regression input without the
//! fuzzer's nightly instrumentation.

use std::fs;
use std::panic;
use std::path::Path;

#[path = "../../../../fuzz/bodies/erp_update.rs"]
pub mod body;

#[test]
fn every_erp_update_corpus_input_is_refused_or_storable() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/erp_update");
    let mut inputs: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 10,
        "the corpus has only {} inputs",
        inputs.len()
    );
    let panicked: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("corpus file is readable");
            panic::catch_unwind(|| body::run(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        panicked.is_empty(),
        "the ERP update parser failed on {panicked:?}"
    );
}
