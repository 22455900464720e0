use std::process::ExitCode;

use clap::Parser;
use orderflow::cli::{Cli, run};

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// objects, which glibc's malloc spends about a fifth of the ingest path on (callgrind;
/// see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", orderflow::cli::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
