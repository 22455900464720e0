//! orderflow's integration tests: one binary, one module per feature.

mod support;

mod admin_inbox;
mod api_bounds;
mod api_erp;
mod api_error_bodies;
mod api_errors;
mod api_events;
mod api_list;
mod api_orders;
mod api_ratelimit;
mod cli_check_condition;
mod cli_process;
mod cli_spryker;
mod cli_store;
mod cli_worker;
mod corpus;
mod crash;
mod edges;
mod fleet;
mod flood;
mod fuzz_corpus;
mod inbox_retry;
mod inbox_worker;
mod ingest;
mod openapi;
mod park_policy;
mod postgres_skips;
mod store_types;
mod strays;
mod timeout_processors;
mod timers;
mod update_roundtrip;
mod wake_on_timeout;
mod wakeups;
mod webhook_vectors;
