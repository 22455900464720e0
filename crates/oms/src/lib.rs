//! Spryker-compatible OMS process definitions and a pure state-machine engine.
//!
//! The crate has no async runtime, no database and no clock: callers pass time in.
//! [`parse`] loads `<statemachine>` XML into a [`Process`], [`check`] lists what Spryker
//! would silently get wrong, [`graph`] draws it, and [`engine::Engine`] decides how the
//! items of one order move when an event is triggered or when time passes. The engine
//! returns [`engine::Decisions`]; carrying them out (in one transaction) is the caller's job.
//! Built-in plugins bound from configuration are in [`bindings`].
//!
//! # Embedding
//!
//! Load a process, register the plugins its names need, then hand the engine an order and
//! an event; store what it decided (the order it updated, the moves, the timers) and call
//! [`Engine::check`] when a timer is due.
//!
//! ```
//! use std::path::Path;
//!
//! use chrono::{DateTime, TimeDelta, TimeZone, Utc};
//! use oms::engine::{Item, Order, TimerKind};
//! use oms::parse::{self, LoadOptions};
//! use oms::plugin::{Condition, PluginError};
//! use oms::{Engine, Registry};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let xml = r#"
//! <statemachine>
//!   <process name="Demo" main="true">
//!     <states>
//!       <state name="new"/>
//!       <state name="paid"/>
//!       <state name="cancelled"/>
//!     </states>
//!     <transitions>
//!       <transition happy="true" condition="Payment/IsAuthorized">
//!         <source>new</source><target>paid</target><event>pay</event>
//!       </transition>
//!       <transition>
//!         <source>paid</source><target>cancelled</target><event>cancel</event>
//!       </transition>
//!     </transitions>
//!     <events>
//!       <event name="pay"/>
//!       <event name="cancel" timeout="14 days"/>
//!     </events>
//!   </process>
//! </statemachine>"#;
//! // No includes, so the root folder is never read.
//! let loaded = parse::load_str(xml, "Demo.xml", Path::new("."), &LoadOptions::default())?;
//! let process = &loaded.process;
//!
//! // A plugin in Rust; configuration could bind a built-in instead (see `bindings`).
//! struct IsAuthorized;
//! impl Condition for IsAuthorized {
//!     fn check(&self, order: &Order, _: &Item, _: DateTime<Utc>) -> Result<bool, PluginError> {
//!         Ok(order.attributes.get("authorized") == Some(&json!(true)))
//!     }
//! }
//! let mut registry = Registry::new();
//! registry.register_condition("Payment/IsAuthorized", IsAuthorized);
//! assert!(registry.unbound(process).is_empty());
//! let engine = Engine::new(process, &registry);
//!
//! // A new order: `start` puts its items into the initial state. Time is passed in.
//! let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
//! let mut order = Order {
//!     reference: "DE--1".into(),
//!     attributes: json!({"authorized": true}).as_object().cloned().unwrap(),
//!     items: vec![Item {
//!         id: 1,
//!         sku: "SKU-1".into(),
//!         quantity: 1,
//!         state: process.initial(),
//!         state_entered_at: now,
//!         attributes: Default::default(),
//!     }],
//! };
//! engine.start(&mut order, now);
//!
//! // An event for every item (`None`); `order` is updated in place.
//! let decisions = engine.trigger(&mut order, None, "pay", now)?;
//! let name = |s| process.state(s).name.as_str();
//! let moves: Vec<_> = decisions.moves().map(|(i, from, to)| (i, name(from), name(to))).collect();
//! assert_eq!(moves, [(1, "new", "paid")]);
//! // The item left its state: drop its timers, then set those of `paid`.
//! assert_eq!(decisions.timers_dropped, [1]);
//! let timer = &decisions.timers_set[0];
//! assert_eq!(timer.kind, TimerKind::Timeout(process.event_id("cancel").unwrap()));
//! assert_eq!(timer.due_at, now + TimeDelta::days(14));
//!
//! // When the timer is due, `check` fires the timeout event.
//! let later = engine.check(&mut order, None, timer.due_at)?;
//! assert_eq!(later.moves().count(), 1);
//! assert_eq!(name(order.items[0].state), "cancelled");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod bindings;
pub mod check;
pub mod duration;
pub mod engine;
pub mod graph;
pub mod model;
pub mod parse;
pub mod plugin;

pub use bindings::Bindings;
pub use duration::Timeout;
pub use engine::{Decisions, Engine, EngineOptions};
pub use model::{EventId, InitialSource, Origin, Process, StateId, TransitionId};
pub use plugin::Registry;
