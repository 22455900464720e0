//! orderflow: a durable inbox for ERP order updates in front of a Spryker-compatible OMS.

pub mod cli;
pub mod inbox;
pub mod webhook;
