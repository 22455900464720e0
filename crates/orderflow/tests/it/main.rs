//! orderflow's integration tests: one binary, one module per feature.

mod cli_process;
