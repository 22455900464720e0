//! orderflow's integration tests: one binary, one module per feature.

mod support;

mod api_errors;
mod api_events;
mod api_list;
mod api_orders;
mod api_ratelimit;
mod cli_process;
mod cli_store;
mod cli_worker;
mod corpus;
mod fleet;
mod inbox_worker;
mod openapi;
mod webhook_vectors;
