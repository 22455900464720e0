//! `orderflow process check|render|simulate`: work with process definitions offline.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ProcessCommand {
    /// Load and check process files; exit 1 on any error.
    Check,
}

pub fn run(cmd: ProcessCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProcessCommand::Check => Ok(ExitCode::SUCCESS),
    }
}
