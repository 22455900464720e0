//! The service's rules: checked values, loaded processes, and the one function that applies
//! a change to an order.

mod change;
mod plan;
pub mod processes;
pub mod service;
pub mod strays;
pub mod timers;
pub mod types;
pub mod view;

pub use processes::{ProcessError, ProcessSet};
pub use service::{
    Applied, Change, DomainError, EventInput, ItemRef, NewItemInput, NewOrderInput, OrderService,
    Source, Target,
};
pub use timers::{Backoff, CheckPass};
