//! orderflow: a durable inbox for ERP order updates in front of a Spryker-compatible OMS.

pub mod cli;
pub mod config;
pub mod domain;
pub mod inbox;
pub mod store;
pub mod webhook;
