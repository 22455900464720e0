//! Spryker-compatible OMS process definitions and a pure state-machine engine.
//!
//! The crate has no async runtime, no database and no clock: callers pass time in.
//! [`parse`] loads `<statemachine>` XML into a [`Process`], [`check`] lists what Spryker
//! would silently get wrong, [`graph`] draws it, and [`engine::Engine`] decides how the
//! items of one order move when an event is triggered or when time passes. The engine
//! returns [`engine::Decisions`]; carrying them out (in one transaction) is the caller's job.

pub mod bindings;
pub mod check;
pub mod duration;
pub mod engine;
pub mod graph;
pub mod model;
pub mod parse;
pub mod plugin;

pub use duration::Timeout;
pub use engine::{Decisions, Engine, EngineOptions};
pub use model::{EventId, InitialSource, Origin, Process, StateId, TransitionId};
pub use bindings::Bindings;
pub use plugin::Registry;
