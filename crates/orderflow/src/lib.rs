//! orderflow: a durable inbox for ERP order updates in front of a Spryker-compatible OMS.

pub mod admin;
pub mod app;
pub mod auth;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod domain;
pub mod graphql;
pub mod http;
pub mod inbox;
pub mod outbound;
pub mod projector;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
pub mod webhook;
pub mod wording;
