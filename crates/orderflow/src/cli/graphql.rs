//! `orderflow graphql`: the GraphQL schema.

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(super) enum GraphqlCommand {
    /// Print the schema (SDL) served at /graphql; `schema.graphql` in the repository is
    /// this output.
    Schema,
}

pub(super) fn run(cmd: GraphqlCommand) -> ExitCode {
    match cmd {
        GraphqlCommand::Schema => print!("{}", crate::graphql::sdl()),
    }
    ExitCode::SUCCESS
}
