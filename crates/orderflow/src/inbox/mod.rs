//! The durable inbox of ERP updates.

pub mod batcher;
