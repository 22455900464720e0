//! Replays the `erp_update` fuzz target's corpus (`fuzz/corpus/erp_update`) through the
//! target's own body, so `cargo test` checks every seed and regression input without the
//! fuzzer's nightly instrumentation.

#[path = "../../../../fuzz/bodies/erp_update.rs"]
pub(crate) mod body;

#[path = "../../../../fuzz/bodies/replay.rs"]
mod replay;

#[test]
fn every_erp_update_corpus_input_is_refused_or_storable() {
    let panicked = replay::replay(env!("CARGO_MANIFEST_DIR"), "erp_update", 10, body::run);
    assert!(
        panicked.is_empty(),
        "the ERP update parser failed on {panicked:?}"
    );
}
