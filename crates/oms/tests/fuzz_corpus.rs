//! Replays the `xml_loader` fuzz target's corpus (`fuzz/corpus/xml_loader`) through the
//! target's own body, so `cargo test` checks every seed and regression input without the
//! fuzzer's nightly instrumentation.

use std::fs;
use std::panic;
use std::path::Path;

#[path = "../../../fuzz/bodies/xml_loader.rs"]
mod body;

#[test]
fn every_xml_loader_corpus_input_loads_or_fails_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/xml_loader");
    let mut inputs: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= 5,
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
    assert!(panicked.is_empty(), "the loader panicked on {panicked:?}");
}
