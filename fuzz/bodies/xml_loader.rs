//! The `xml_loader` fuzz target's body, shared with the test that replays its corpus
//! (`crates/oms/tests/fuzz_corpus.rs`): whatever the bytes, loading must answer with a
//! process or an error, never panic.
//!
//! The input is one or more documents separated by NUL bytes (XML text cannot hold one):
//! the first is the main file, the others are handed out in turn to the includes the
//! loader asks for, whatever their names, so the fuzzer reaches includes, prefixes and
//! merging without the filesystem.

use std::cell::Cell;
use std::io;
use std::path::Path;

use oms::graph::{GraphOptions, to_dot};
use oms::parse::{LoadOptions, load_str_from};

pub(crate) fn run(data: &[u8]) {
    let mut docs = data.split(|&b| b == 0).map(String::from_utf8_lossy);
    let main = docs.next().unwrap_or_default();
    let includes: Vec<String> = docs.map(|d| d.into_owned()).collect();
    let served = Cell::new(0);
    let read = |_: &Path| {
        let i = served.get();
        served.set(i + 1);
        includes
            .get(i)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    };
    let root = Path::new("defs");
    match load_str_from(&main, "defs/main.xml", root, &LoadOptions::default(), &read) {
        Ok(loaded) => {
            // What `process check` and the graph endpoints do with a loaded process.
            let _ = loaded.to_string();
            for w in &loaded.warnings {
                let _ = w.to_string();
            }
            let _ = to_dot(&loaded.process, &GraphOptions::with_legend());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
