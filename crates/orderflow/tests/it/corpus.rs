//! Where the shared corpus is: `ORDERFLOW_CORPUS_DIR` (CI sets it), else `../shared/corpus`
//! beside the repository. Outside CI, a missing corpus skips the test loudly.

use std::io::Write as _;
use std::path::PathBuf;

pub(crate) fn corpus_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ORDERFLOW_CORPUS_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "ORDERFLOW_CORPUS_DIR={} is not a folder",
            dir.display()
        );
        return Some(dir);
    }
    let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    if fallback.is_dir() {
        return Some(fallback);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must set ORDERFLOW_CORPUS_DIR"
    );
    // Straight to stderr: the test harness captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: corpus not found; set ORDERFLOW_CORPUS_DIR to run corpus tests"
    );
    None
}
