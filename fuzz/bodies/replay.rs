//! Replays a fuzz target's committed corpus through its body without the fuzzer: each
//! crate's corpus test includes this file with `#[path]`.

use std::fs;
use std::panic;
use std::path::Path;

/// Runs `run` on every file of `fuzz/corpus/<target>` (at least `min` of them) and names
/// those it panicked on. `manifest_dir` is the including crate's `CARGO_MANIFEST_DIR`.
pub(super) fn replay(manifest_dir: &str, target: &str, min: usize, run: fn(&[u8])) -> Vec<String> {
    let dir = Path::new(manifest_dir)
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    inputs.sort();
    assert!(
        inputs.len() >= min,
        "the {target} corpus has only {} inputs",
        inputs.len()
    );
    inputs
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("corpus file is readable");
            panic::catch_unwind(|| run(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect()
}
