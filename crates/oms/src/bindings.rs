//! Built-in plugins bound by name from configuration: the serde types behind the
//! `[conditions]`, `[commands]` and `[timeout_processors]` tables, and the plugins they
//! become. [`Registry::bind`](crate::plugin::Registry::bind) registers them.
//!
//! They are kept apart from the plugin traits ([`crate::plugin`]) because they are
//! configuration: an embedder that registers its own Rust plugins never needs them.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::duration::Timeout;
use crate::engine::{Item, Order};
use crate::plugin::{
    Command, CommandContext, CommandMode, Condition, Effect, PluginError, TimeoutContext,
    TimeoutProcessor,
};

/// Built-in bindings from configuration:
///
/// ```toml
/// [conditions."Payment/IsAuthorized"]
/// type = "attribute"
/// scope = "order"
/// path = "payment.status"
/// equals = "authorized"
///
/// [commands."Erp/MarkExported"]
/// type = "set_attributes"
/// scope = "order"
/// values = { exported = true }
///
/// [commands."Oms/RequestInvoice"]
/// type = "emit_event"
/// event = "invoice"
///
/// [commands."Payment/Capture"]
/// type = "http"
/// url = "https://psp.example/capture"
/// on_failure = "capture failed"
///
/// [timeout_processors."OmsTimeout/Initiation"]
/// type = "attribute"
/// path = "created_at"
/// offset = "30days"
/// ```
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bindings {
    /// Conditions by the name transitions use (`condition="..."`).
    #[serde(default)]
    pub conditions: BTreeMap<String, ConditionBinding>,
    /// Commands by the name events use (`command="..."`).
    #[serde(default)]
    pub commands: BTreeMap<String, CommandBinding>,
    /// Timeout processors by the name events use (`timeoutProcessor="..."`).
    #[serde(default)]
    pub timeout_processors: BTreeMap<String, TimeoutProcessorBinding>,
}

/// Where an attribute is read or written. An order has exactly these two levels, so the
/// enum is exhaustive: a binding must say which one it means.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The order's attributes, shared by its items.
    #[default]
    Order,
    /// The attributes of the item being checked (for a command: of each item it runs for).
    Item,
}

/// A built-in condition, configured by `type = "..."`. New built-ins may be added.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ConditionBinding {
    /// True when the attribute at `path` (dot-separated) passes the test. With no test
    /// given, true when the attribute is present and not `null` or `false`.
    Attribute {
        /// Order or item attributes.
        #[serde(default)]
        scope: Scope,
        /// Dot-separated path into the attributes; a numeric step indexes an array.
        path: String,
        /// True when the value equals this (checked first).
        #[serde(default)]
        equals: Option<Value>,
        /// True when the value is one of these (`in = [...]` in configuration).
        #[serde(default, rename = "in")]
        one_of: Option<Vec<Value>>,
        /// True when the attribute's presence is this (`null` counts as present).
        #[serde(default)]
        exists: Option<bool>,
    },
    /// Always the given value (useful while the real plugin is being written).
    Constant {
        /// The answer.
        value: bool,
    },
}

/// A built-in command, configured by `type = "..."`. New built-ins may be added.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum CommandBinding {
    /// Sets attributes on the order or on each item.
    SetAttributes {
        /// On the order (once per order) or on each item the command runs for.
        #[serde(default)]
        scope: Scope,
        /// Top-level keys and the values they get.
        values: Map<String, Value>,
    },
    /// Triggers a follow-up event for the same order through the inbox.
    EmitEvent {
        /// The event to trigger, for the items the command ran for.
        event: String,
    },
    /// Calls an HTTP endpoint after the transaction that ran the command has committed.
    /// The engine only records the call (an [`Effect::AfterCommit`] whose payload is
    /// `{"type": "http", "event": ...}`); the service that stores the change runs it,
    /// retries it and reports it. Once per order and source state.
    Http {
        /// `http://` or `https://` URL to call.
        url: String,
        /// HTTP method. Default `POST`.
        #[serde(default = "default_method")]
        method: String,
        /// The whole request's deadline (`10s`, `500ms`); the service's default when
        /// absent.
        #[serde(default)]
        timeout: Option<String>,
        /// Extra request headers (such as `Authorization`); masked when shown.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// An event fed back for the same items when the call finally fails (the effect
        /// is dead), so a process can model it ("capture failed").
        #[serde(default)]
        on_failure: Option<String>,
    },
    /// Does nothing; binds a name on purpose.
    Noop,
    /// Waits `millis` milliseconds, then does nothing: stands in for a call to a remote
    /// system when rehearsing or benchmarking a process (`bench drain --io-ms`). It blocks
    /// the thread that runs it, as a synchronous client would.
    Sleep {
        /// How long each run waits.
        millis: u64,
    },
}

fn default_method() -> String {
    "POST".to_owned()
}

/// Built-in timeout processors, bound by name in configuration:
///
/// ```toml
/// # Due 30 days after the order's `created_at` attribute (RFC 3339 or Unix seconds).
/// [timeout_processors."OmsTimeout/Initiation"]
/// type = "attribute"
/// scope = "order"
/// path = "created_at"
/// offset = "30days"
///
/// # Spryker's default: entered the state + the event's timeout.
/// [timeout_processors."OmsTimeout/Plain"]
/// type = "entered_at"
/// ```
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum TimeoutProcessorBinding {
    /// Entered the state + the event's `timeout` (what applies without a processor).
    EnteredAt,
    /// The timestamp in an order or item attribute (RFC 3339 text or Unix seconds) plus
    /// `offset` (a Spryker or ISO 8601 duration; none means the timestamp itself). When the
    /// attribute is missing or not a timestamp, the plain timeout applies.
    Attribute {
        /// Order or item attributes.
        #[serde(default)]
        scope: Scope,
        /// Dot-separated path to the timestamp.
        path: String,
        /// Added to the timestamp.
        #[serde(default)]
        offset: Option<Timeout>,
    },
}

impl TimeoutProcessor for TimeoutProcessorBinding {
    fn may_block(&self) -> bool {
        false
    }

    fn due_at(&self, ctx: &TimeoutContext<'_>) -> Option<DateTime<Utc>> {
        match self {
            Self::EnteredAt => ctx.plain(),
            Self::Attribute {
                scope,
                path,
                offset,
            } => {
                let attrs = match scope {
                    Scope::Order => &ctx.order.attributes,
                    Scope::Item => &ctx.item.attributes,
                };
                let at = timestamp(lookup(attrs, path)?)?;
                Some(offset.as_ref().map_or(at, |o| o.after(at)))
            }
        }
    }
}

/// An attribute value read as an instant: RFC 3339 text or whole Unix seconds.
fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => Utc.timestamp_opt(n.as_i64()?, 0).single(),
        _ => None,
    }
}

/// Reads `a.b.c` from a JSON object (an array step is an index).
fn lookup<'v>(attributes: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut parts = path.split('.');
    let mut cur = attributes.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get(p)?,
            Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

impl Condition for ConditionBinding {
    fn may_block(&self) -> bool {
        false
    }

    fn check(&self, order: &Order, item: &Item, _now: DateTime<Utc>) -> Result<bool, PluginError> {
        match self {
            Self::Constant { value } => Ok(*value),
            Self::Attribute {
                scope,
                path,
                equals,
                one_of,
                exists,
            } => {
                let attrs = match scope {
                    Scope::Order => &order.attributes,
                    Scope::Item => &item.attributes,
                };
                let v = lookup(attrs, path);
                Ok(match (equals, one_of, exists) {
                    (Some(e), _, _) => v == Some(e),
                    (None, Some(set), _) => v.is_some_and(|v| set.contains(v)),
                    (None, None, Some(want)) => v.is_some() == *want,
                    (None, None, None) => {
                        !matches!(v, None | Some(Value::Null | Value::Bool(false)))
                    }
                })
            }
        }
    }
}

impl Command for CommandBinding {
    fn mode(&self) -> CommandMode {
        match self {
            Self::SetAttributes {
                scope: Scope::Item, ..
            } => CommandMode::ByItem,
            _ => CommandMode::ByOrder,
        }
    }

    /// Only `sleep` waits; `http` hands its call to the outbound worker after the commit.
    fn may_block(&self) -> bool {
        matches!(self, Self::Sleep { .. })
    }

    fn run(&self, ctx: &mut CommandContext<'_>) -> Result<(), PluginError> {
        match self {
            Self::SetAttributes { scope, values } => {
                for (k, v) in values {
                    match scope {
                        Scope::Order => ctx.set_order_attribute(k.clone(), v.clone()),
                        Scope::Item => {
                            let ids: Vec<i64> = ctx.items().map(|i| i.id).collect();
                            for id in ids {
                                ctx.set_item_attribute(id, k.clone(), v.clone());
                            }
                        }
                    }
                }
            }
            Self::EmitEvent { event } => {
                let items = ctx.items().map(|i| i.id).collect();
                ctx.emit(Effect::FollowUpEvent {
                    event: event.clone(),
                    items,
                });
            }
            Self::Http { .. } => {
                let items = ctx.items().map(|i| i.id).collect();
                ctx.emit(Effect::AfterCommit {
                    command: ctx.command.to_owned(),
                    items,
                    payload: serde_json::json!({"type": "http", "event": ctx.event}),
                });
            }
            Self::Noop => {}
            Self::Sleep { millis } => std::thread::sleep(std::time::Duration::from_millis(*millis)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StateId;
    use crate::plugin::TimeoutContext;
    use serde_json::json;

    fn order(attrs: Value) -> Order {
        Order {
            reference: "R".into(),
            attributes: attrs.as_object().cloned().unwrap_or_default(),
            items: vec![Item {
                id: 1,
                sku: "S".into(),
                quantity: 1,
                state: StateId(0),
                state_entered_at: DateTime::UNIX_EPOCH,
                attributes: Default::default(),
            }],
        }
    }

    fn due(b: &TimeoutProcessorBinding, o: &Order, timeout: Option<&Timeout>) -> Option<String> {
        let ctx = TimeoutContext {
            order: o,
            item: &o.items[0],
            event: "cancel",
            timeout,
            entered_at: "2026-01-10T00:00:00Z".parse().unwrap(),
        };
        b.due_at(&ctx).map(|t| t.to_rfc3339())
    }

    #[test]
    fn only_a_wait_or_a_plugin_of_unknown_code_may_block() {
        let xml = r#"<?xml version="1.0"?>
<statemachine xmlns="spryker:oms-01">
  <process name="P" main="true">
    <states><state name="new"/><state name="done"/></states>
    <transitions>
      <transition condition="Cond/Ok"><source>new</source><target>done</target><event>go</event></transition>
    </transitions>
    <events><event name="go" command="Cmd/Go" timeout="1 hour" timeoutProcessor="Due/At"/></events>
  </process>
</statemachine>"#;
        let process =
            crate::parse::load_str(xml, "p.xml", std::path::Path::new("."), &Default::default())
                .unwrap()
                .process;
        let bound = |command: Value| {
            let mut r = crate::plugin::Registry::default();
            r.bind(
                &serde_json::from_value(json!({
                    "commands": {"Cmd/Go": command},
                    "conditions": {"Cond/Ok": {"type": "constant", "value": true}},
                    "timeout_processors": {"Due/At": {"type": "entered_at"}},
                }))
                .unwrap(),
            );
            r
        };
        assert!(!bound(json!({"type": "noop"})).may_block(&process));
        assert!(!bound(json!({"type": "emit_event", "event": "go"})).may_block(&process));
        assert!(bound(json!({"type": "sleep", "millis": 5})).may_block(&process));
        // An embedder's condition may block unless it says otherwise.
        struct Lookup;
        impl Condition for Lookup {
            fn check(&self, _: &Order, _: &Item, _: DateTime<Utc>) -> Result<bool, PluginError> {
                Ok(true)
            }
        }
        let mut r = bound(json!({"type": "noop"}));
        r.register_condition("Cond/Ok", Lookup);
        assert!(r.may_block(&process));
        // Unbound: nothing runs.
        assert!(!crate::plugin::Registry::default().may_block(&process));
        // An embedder's own command may block unless it says otherwise.
        struct Remote;
        impl Command for Remote {
            fn run(&self, _: &mut CommandContext<'_>) -> Result<(), PluginError> {
                Ok(())
            }
        }
        let mut r = crate::plugin::Registry::default();
        r.register_command("Cmd/Go", Remote);
        assert!(r.may_block(&process));
    }

    #[test]
    fn attribute_plus_offset() {
        let b: TimeoutProcessorBinding = serde_json::from_value(
            json!({"type": "attribute", "path": "placed.at", "offset": "2days"}),
        )
        .unwrap();
        let o = order(json!({"placed": {"at": "2026-01-01T12:00:00+02:00"}}));
        assert_eq!(due(&b, &o, None).unwrap(), "2026-01-03T10:00:00+00:00");
        let o = order(json!({"placed": {"at": 86_400}}));
        assert_eq!(due(&b, &o, None).unwrap(), "1970-01-04T00:00:00+00:00");
    }

    #[test]
    fn attribute_missing_or_not_a_time_has_no_answer() {
        let b = TimeoutProcessorBinding::Attribute {
            scope: Scope::Order,
            path: "placed_at".into(),
            offset: None,
        };
        assert_eq!(due(&b, &order(json!({})), None), None);
        assert_eq!(due(&b, &order(json!({"placed_at": "soon"})), None), None);
    }

    #[test]
    fn entered_at_is_the_plain_timeout() {
        let t = Timeout::parse("1 hour").unwrap();
        let o = order(json!({}));
        assert_eq!(
            due(&TimeoutProcessorBinding::EnteredAt, &o, Some(&t)).unwrap(),
            "2026-01-10T01:00:00+00:00"
        );
        assert_eq!(due(&TimeoutProcessorBinding::EnteredAt, &o, None), None);
    }

    #[test]
    fn a_bad_offset_is_refused_when_configured() {
        let e = serde_json::from_value::<TimeoutProcessorBinding>(
            json!({"type": "attribute", "path": "p", "offset": "soonish"}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("soonish"), "{e}");
    }

    #[test]
    fn an_http_command_records_a_call_for_after_the_commit() {
        let b: CommandBinding = serde_json::from_value(json!({
            "type": "http", "url": "https://psp.example/capture", "on_failure": "capture failed"
        }))
        .unwrap();
        assert_eq!(b.mode(), CommandMode::ByOrder);
        let o = order(json!({}));
        let at = "2026-01-10T00:00:00Z".parse().unwrap();
        let mut ctx = CommandContext::new(&o, &[0], "capture", at).for_command("Payment/Capture");
        b.run(&mut ctx).unwrap();
        let (changes, effects) = ctx.into_parts();
        assert!(changes.is_empty());
        assert_eq!(
            effects,
            [Effect::AfterCommit {
                command: "Payment/Capture".into(),
                items: vec![1],
                payload: json!({"type": "http", "event": "capture"}),
            }]
        );
        let CommandBinding::Http { method, .. } = b else {
            panic!("{b:?}")
        };
        assert_eq!(method, "POST");
    }
}
