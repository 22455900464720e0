//! Renders a process file to SVG or DOT, for looking at the drawings while working on them.
//!
//! ```text
//! cargo run -p oms --example render -- PROCESS.xml OUT.svg [state=count ...]
//! ```
//! The output format follows the extension of OUT (`.dot` or `.svg`); `state=count` pairs
//! fill in item counts.

use std::path::Path;
use std::process::ExitCode;

use oms::graph::{GraphOptions, to_dot, to_svg};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, counts @ ..] = args.as_slice() else {
        eprintln!("usage: render PROCESS.xml OUT.svg|OUT.dot [state=count ...]");
        return ExitCode::from(2);
    };
    let loaded = match oms::parse::load_file(Path::new(input)) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut opts = GraphOptions::with_legend();
    for pair in counts {
        match pair.split_once('=').map(|(s, n)| (s, n.parse::<u64>())) {
            Some((state, Ok(n))) => {
                opts.counts.insert(state.to_owned(), n);
            }
            _ => {
                eprintln!("expected state=count, got {pair:?}");
                return ExitCode::from(2);
            }
        }
    }
    let text = if output.ends_with(".dot") {
        to_dot(&loaded.process, &opts)
    } else {
        to_svg(&loaded.process, &opts)
    };
    if let Err(e) = std::fs::write(output, text) {
        eprintln!("cannot write {output}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
