//! Conditions, commands and timeout processors: plugins looked up by the name the process
//! XML uses (`Payment/IsAuthorized`), registered in Rust or bound by name to a built-in
//! from configuration (see [`crate::bindings`]).

mod timeout;

pub use timeout::{TimeoutContext, TimeoutProcessor};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bindings::Bindings;
use crate::engine::{Item, Order};
use crate::model::{Origin, Process};

/// A condition or command failed. `retryable` tells a worker whether trying the same
/// update again later can succeed (a remote system was down) or not (bad data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PluginError {
    /// What went wrong, for history and logs.
    pub message: String,
    /// Trying again later may succeed.
    pub retryable: bool,
}

impl PluginError {
    /// A failure that trying again will not fix (bad data, a refused request).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that may go away (a remote system was down or timed out).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

/// Decides whether a conditional transition may be taken for one item.
pub trait Condition: Send + Sync {
    /// True when `item` may take the transition. An error keeps the item where it is and
    /// is reported as [`StayReason::ConditionFailed`](crate::engine::StayReason).
    fn check(&self, order: &Order, item: &Item, now: DateTime<Utc>) -> Result<bool, PluginError>;

    /// Whether [`Condition::check`] may block its thread; as [`Command::may_block`].
    fn may_block(&self) -> bool {
        true
    }
}

/// How a command is run for the items that an event moves. Exhaustive on purpose: these
/// are Spryker's two command interfaces (`CommandByItem`, `CommandByOrder`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandMode {
    /// Once per item.
    #[default]
    ByItem,
    /// Once for all the items of one order that share a source state.
    ByOrder,
}

/// Work a command hands back to the caller, carried out with or after the transaction.
/// New kinds of work may be added.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Effect {
    /// Trigger `event` for the same order later, through the inbox (never inline: the
    /// order's transaction is still open).
    FollowUpEvent {
        /// The event to trigger.
        event: String,
        /// Ids of the items to trigger it for.
        items: Vec<i64>,
    },
    /// Work for the caller to run after its commit, such as an HTTP call; `command` names
    /// the binding and `payload` is what it needs.
    AfterCommit {
        /// The binding's name.
        command: String,
        /// Ids of the items it is for.
        items: Vec<i64>,
        /// What the binding needs, as the command built it.
        payload: Value,
    },
}

/// An attribute write staged by a command; applied only when the command succeeds.
/// Exhaustive on purpose: a caller persists every change, and an order's attributes live
/// on exactly these two levels (see [`Scope`](crate::bindings::Scope)).
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeChange {
    /// Sets a top-level order attribute.
    Order {
        /// The attribute's name.
        key: String,
        /// Its new value.
        value: Value,
    },
    /// Sets a top-level attribute of one item.
    Item {
        /// The item's id.
        item: i64,
        /// The attribute's name.
        key: String,
        /// Its new value.
        value: Value,
    },
}

/// What a command sees: the order, the items it runs for, and places to stage changes.
pub struct CommandContext<'a> {
    /// The whole order, as it is before this run's changes.
    pub order: &'a Order,
    /// Indexes into `order.items` of the items this run is for.
    pub items: &'a [usize],
    /// The event whose command this is.
    pub event: &'a str,
    /// The name the command is registered under (empty when the caller did not say, see
    /// [`CommandContext::for_command`]).
    pub command: &'a str,
    /// The caller's time.
    pub now: DateTime<Utc>,
    pub(crate) changes: Vec<AttributeChange>,
    pub(crate) effects: Vec<Effect>,
}

impl<'a> CommandContext<'a> {
    /// A context with nothing staged, for callers that run a command themselves (tests,
    /// tools); the engine builds its own.
    pub fn new(order: &'a Order, items: &'a [usize], event: &'a str, now: DateTime<Utc>) -> Self {
        Self {
            order,
            items,
            event,
            command: "",
            now,
            changes: Vec::new(),
            effects: Vec::new(),
        }
    }

    /// The same context, naming the command it runs (the engine does: a built-in bound
    /// under several names tells its runs apart by it).
    pub fn for_command(self, command: &'a str) -> Self {
        Self { command, ..self }
    }

    /// The items this run is for.
    pub fn items(&self) -> impl Iterator<Item = &'a Item> + '_ {
        self.items.iter().map(|&i| &self.order.items[i])
    }

    /// Stages a write of order attribute `key`.
    pub fn set_order_attribute(&mut self, key: impl Into<String>, value: Value) {
        self.changes.push(AttributeChange::Order {
            key: key.into(),
            value,
        });
    }

    /// Stages a write of attribute `key` of item `item` (an id).
    pub fn set_item_attribute(&mut self, item: i64, key: impl Into<String>, value: Value) {
        self.changes.push(AttributeChange::Item {
            item,
            key: key.into(),
            value,
        });
    }

    /// Hands work back to the caller; kept only when the command succeeds.
    pub fn emit(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// Staged changes and effects, for callers that run commands themselves.
    pub fn into_parts(self) -> (Vec<AttributeChange>, Vec<Effect>) {
        (self.changes, self.effects)
    }
}

/// Runs when an event with `command="..."` is triggered, before conditions are checked.
pub trait Command: Send + Sync {
    /// Once per item (the default) or once per order and source state.
    fn mode(&self) -> CommandMode {
        CommandMode::ByItem
    }
    /// Does the work and stages changes on `ctx`. An error drops what was staged and keeps
    /// the items where they are; [`PluginError::retryable`] says whether to try again.
    fn run(&self, ctx: &mut CommandContext<'_>) -> Result<(), PluginError>;

    /// Whether [`Command::run`] may block its thread (a remote call, a wait). A caller on
    /// an async runtime runs the engine where blocking is allowed when any command it may
    /// run says so. Code the engine cannot see into may: `true` unless a command says
    /// otherwise.
    fn may_block(&self) -> bool {
        true
    }
}

/// Plugins by name.
#[derive(Clone, Default)]
pub struct Registry {
    conditions: HashMap<String, Arc<dyn Condition>>,
    commands: HashMap<String, Arc<dyn Command>>,
    timeout_processors: HashMap<String, Arc<dyn TimeoutProcessor>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut c: Vec<_> = self.conditions.keys().collect();
        let mut m: Vec<_> = self.commands.keys().collect();
        let mut t: Vec<_> = self.timeout_processors.keys().collect();
        c.sort();
        m.sort();
        t.sort();
        f.debug_struct("Registry")
            .field("conditions", &c)
            .field("commands", &m)
            .field("timeout_processors", &t)
            .finish()
    }
}

/// A name the process uses that no plugin is registered for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unbound {
    /// Which registry it is missing from.
    pub kind: PluginKind,
    /// The name the process uses.
    pub name: String,
    /// Where it is first used.
    pub origin: String,
}

/// The kinds of plugin a process names. New kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PluginKind {
    /// A transition's `condition="..."`.
    Condition,
    /// An event's `command="..."`.
    Command,
    /// An event's `timeoutProcessor="..."`.
    TimeoutProcessor,
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Condition => "condition",
            Self::Command => "command",
            Self::TimeoutProcessor => "timeout processor",
        })
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) the condition called `name`.
    pub fn register_condition(&mut self, name: impl Into<String>, c: impl Condition + 'static) {
        self.conditions.insert(name.into(), Arc::new(c));
    }

    /// Registers (or replaces) the command called `name`.
    pub fn register_command(&mut self, name: impl Into<String>, c: impl Command + 'static) {
        self.commands.insert(name.into(), Arc::new(c));
    }

    /// Registers (or replaces) the timeout processor called `name`.
    pub fn register_timeout_processor(
        &mut self,
        name: impl Into<String>,
        p: impl TimeoutProcessor + 'static,
    ) {
        self.timeout_processors.insert(name.into(), Arc::new(p));
    }

    /// The timeout processor called `name`, if registered.
    pub fn timeout_processor(&self, name: &str) -> Option<&dyn TimeoutProcessor> {
        self.timeout_processors.get(name).map(|p| p.as_ref())
    }

    /// The condition called `name`, if registered.
    pub fn condition(&self, name: &str) -> Option<&dyn Condition> {
        self.conditions.get(name).map(|c| c.as_ref())
    }

    /// The command called `name`, if registered.
    pub fn command(&self, name: &str) -> Option<&dyn Command> {
        self.commands.get(name).map(|c| c.as_ref())
    }

    /// Binds built-in plugins by name, as configuration lists them.
    pub fn bind(&mut self, bindings: &Bindings) {
        for (name, b) in &bindings.conditions {
            self.conditions.insert(name.clone(), Arc::new(b.clone()));
        }
        for (name, b) in &bindings.commands {
            self.commands.insert(name.clone(), Arc::new(b.clone()));
        }
        for (name, b) in &bindings.timeout_processors {
            self.timeout_processors
                .insert(name.clone(), Arc::new(b.clone()));
        }
    }

    /// Whether a plugin bound for `process` (a transition's condition, an event's command
    /// or timeout processor) may block its thread (see [`Command::may_block`]).
    pub fn may_block(&self, process: &Process) -> bool {
        fn any<'a, P: ?Sized>(
            names: impl Iterator<Item = Option<&'a str>>,
            plugins: &HashMap<String, Arc<P>>,
            blocks: impl Fn(&P) -> bool,
        ) -> bool {
            names
                .flatten()
                .filter_map(|name| plugins.get(name))
                .any(|p| blocks(p))
        }
        let events = process.events();
        any(
            process.transitions().iter().map(|t| t.condition.as_deref()),
            &self.conditions,
            |c| c.may_block(),
        ) || any(
            events.iter().map(|e| e.command.as_deref()),
            &self.commands,
            |c| c.may_block(),
        ) || any(
            events.iter().map(|e| e.timeout_processor.as_deref()),
            &self.timeout_processors,
            |p| p.may_block(),
        )
    }

    /// Condition, command and timeout processor names `process` uses that nothing is
    /// registered for, each with where it is first used; sorted by kind, then name.
    pub fn unbound(&self, process: &Process) -> Vec<Unbound> {
        // One pass over the definitions: first use of every name, whatever the size.
        let mut first: std::collections::BTreeMap<(PluginKind, &str), &Origin> =
            std::collections::BTreeMap::new();
        for t in process.transitions() {
            if let Some(c) = t.condition.as_deref() {
                first.entry((PluginKind::Condition, c)).or_insert(&t.origin);
            }
        }
        for e in process.events() {
            if let Some(c) = e.command.as_deref() {
                first.entry((PluginKind::Command, c)).or_insert(&e.origin);
            }
            if let Some(p) = e.timeout_processor.as_deref() {
                first
                    .entry((PluginKind::TimeoutProcessor, p))
                    .or_insert(&e.origin);
            }
        }
        first
            .into_iter()
            .filter(|((kind, name), _)| match kind {
                PluginKind::Condition => !self.conditions.contains_key(*name),
                PluginKind::Command => !self.commands.contains_key(*name),
                PluginKind::TimeoutProcessor => !self.timeout_processors.contains_key(*name),
            })
            .map(|((kind, name), origin)| Unbound {
                kind,
                name: name.to_owned(),
                origin: origin.to_string(),
            })
            .collect()
    }
}
