//! orderflow's integration tests: one binary, one module per feature.

mod cli_process;
mod corpus;
mod webhook_vectors;
