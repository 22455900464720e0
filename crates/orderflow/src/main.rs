use std::process::ExitCode;

use clap::Parser;
use orderflow::cli::{Cli, run};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", orderflow::cli::error_line(&e));
            ExitCode::FAILURE
        }
    }
}
