//! Replays the `xml_loader` fuzz target's corpus (`fuzz/corpus/xml_loader`) through the
//! target's own body, so `cargo test` checks every seed and regression input without the
//! fuzzer's nightly instrumentation.

#[path = "../../../fuzz/bodies/xml_loader.rs"]
mod body;

#[path = "../../../fuzz/bodies/replay.rs"]
mod replay;

#[test]
fn every_xml_loader_corpus_input_loads_or_fails_without_panicking() {
    let panicked = replay::replay(env!("CARGO_MANIFEST_DIR"), "xml_loader", 5, body::run);
    assert!(panicked.is_empty(), "the loader panicked on {panicked:?}");
}
