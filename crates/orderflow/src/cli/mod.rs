//! Command-line interface: argument types and the code behind each subcommand.

pub mod process;
mod simulate;
