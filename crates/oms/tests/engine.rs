//! One test per engine rule (Spryker semantics), on processes built in code.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oms::bindings::{Bindings, ConditionBinding};
use oms::engine::{
    Cause, CommandOutcome, EngineOptions, Item, Order, Outcome, StayReason, TimerKind,
    UnboundPolicy,
};
use oms::model::{Process, ProcessBuilder};
use oms::plugin::{Command, CommandContext, CommandMode, Effect, PluginError, PluginKind};
use oms::{Engine, Registry, Timeout};
use serde_json::json;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
}

fn order(process: &Process, n: usize) -> Order {
    Order {
        reference: "R-1".into(),
        attributes: Default::default(),
        items: (1..=n as i64)
            .map(|id| Item {
                id,
                sku: format!("SKU-{id}"),
                quantity: 1,
                state: process.initial(),
                state_entered_at: t0(),
                attributes: Default::default(),
            })
            .collect(),
    }
}

fn state_of(process: &Process, order: &Order, id: i64) -> String {
    let item = order.items.iter().find(|i| i.id == id).unwrap();
    process.state(item.state).name.clone()
}

fn constant(value: bool) -> ConditionBinding {
    ConditionBinding::Constant { value }
}

/// Counts runs; fails for the listed item ids.
struct Counting {
    mode: CommandMode,
    runs: Arc<AtomicUsize>,
    fail_for: Vec<i64>,
    set: Option<(&'static str, serde_json::Value)>,
}

impl Command for Counting {
    fn mode(&self) -> CommandMode {
        self.mode
    }
    fn run(&self, ctx: &mut CommandContext<'_>) -> Result<(), PluginError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        if let Some((k, v)) = &self.set {
            ctx.set_order_attribute(*k, v.clone());
        }
        if ctx.items().any(|i| self.fail_for.contains(&i.id)) {
            return Err(PluginError::retryable("remote down"));
        }
        Ok(())
    }
}

fn counting(mode: CommandMode, fail_for: Vec<i64>) -> (Counting, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    (
        Counting {
            mode,
            runs: runs.clone(),
            fail_for,
            set: None,
        },
        runs,
    )
}

fn two_way(cmd: Option<&str>) -> Process {
    ProcessBuilder::new("P")
        .state("new")
        .state("a")
        .state("b")
        .state("c")
        .event("go", |e| e.command = cmd.map(Into::into))
        .transition("new", "a", Some("go"), Some("Cond/A"))
        .transition("new", "b", Some("go"), Some("Cond/B"))
        .transition("new", "c", Some("go"), None)
        .build()
        .unwrap()
}

#[test]
fn last_true_condition_wins() {
    let p = two_way(None);
    let mut reg = Registry::new();
    reg.register_condition("Cond/A", constant(true));
    reg.register_condition("Cond/B", constant(true));
    let mut o = order(&p, 1);
    let d = Engine::new(&p, &reg)
        .trigger(&mut o, None, "go", t0())
        .unwrap();
    assert_eq!(state_of(&p, &o, 1), "b");
    assert_eq!(d.moves().count(), 1);
}

#[test]
fn a_true_condition_beats_the_fallback() {
    let p = two_way(None);
    let mut reg = Registry::new();
    reg.register_condition("Cond/A", constant(true));
    reg.register_condition("Cond/B", constant(false));
    let mut o = order(&p, 1);
    Engine::new(&p, &reg)
        .trigger(&mut o, None, "go", t0())
        .unwrap();
    assert_eq!(state_of(&p, &o, 1), "a");
}

#[test]
fn transition_without_condition_is_the_fallback() {
    let p = two_way(None);
    let mut reg = Registry::new();
    reg.register_condition("Cond/A", constant(false));
    reg.register_condition("Cond/B", constant(false));
    let mut o = order(&p, 1);
    Engine::new(&p, &reg)
        .trigger(&mut o, None, "go", t0())
        .unwrap();
    assert_eq!(state_of(&p, &o, 1), "c");
}

#[test]
fn first_unconditional_transition_is_the_fallback() {
    let p = ProcessBuilder::new("P")
        .state("new")
        .state("x")
        .state("y")
        .event("go", |_| {})
        .transition("new", "x", Some("go"), None)
        .transition("new", "y", Some("go"), None)
        .build()
        .unwrap();
    let mut o = order(&p, 1);
    Engine::new(&p, &Registry::new())
        .trigger(&mut o, None, "go", t0())
        .unwrap();
    assert_eq!(state_of(&p, &o, 1), "x");
}

#[test]
fn no_condition_held_and_no_fallback_means_stay() {
    let p = ProcessBuilder::new("P")
        .state("new")
        .state("a")
        .event("go", |_| {})
        .transition("new", "a", Some("go"), Some("Cond/A"))
        .build()
        .unwrap();
    let mut reg = Registry::new();
    reg.register_condition("Cond/A", constant(false));
    let mut o = order(&p, 1);
    let d = Engine::new(&p, &reg)
        .trigger(&mut o, None, "go", t0())
        .unwrap();
    assert_eq!(state_of(&p, &o, 1), "new");
    assert!(matches!(
        d.steps[0].outcome,
        Outcome::Stayed {
            reason: StayReason::NoConditionHeld,
            ..
        }
    ));
    assert!(
        d.timers_dropped.is_empty(),
        "an item that stays keeps its timers"
    );
}

#[test]
fn command_runs_before_conditions_are_checked() {
    let p = ProcessBuilder::new("P")
        .state("new")
        .state("paid")
        .state("unpaid")
        .event("pay", |e| e.command = Some("Payment/Capture".into()))
        .transition("new", "paid", Some("pay"), Some("Payment/IsCaptured"))
        .transition("new", "unpaid", Some("pay"), None)
        .build()
        .unwrap();
    let mut reg = Registry::new();
    let (mut cmd, runs) = counting(CommandMode::ByOrder, vec![]);
    cmd.set = Some(("captured", json!(true)));
    reg.register_command("Payment/Capture", cmd);
    reg.register_condition(
        "Payment/IsCaptured",
        ConditionBinding::Attribute {
            scope: Default::default(),
            path: "captured".into(),
            equals: Some(json!(true)),
            one_of: None,
            exists: None,
        },
    );
    let mut o = order(&p, 2);
    let d = Engine::new(&p, &reg)
        .trigger(&mut o, None, "pay", t0())
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(state_of(&p, &o, 1), "paid");
    assert_eq!(state_of(&p, &o, 2), "paid");
    assert_eq!(o.attributes["captured"], json!(true));
    assert_eq!(d.attribute_changes.len(), 1);
}

fn split_states() -> Process {
    // Items in two source states, both with `ship` out.
    ProcessBuilder::new("P")
        .state("new")
        .state("ready")
        .state("shipped")
        .event("prepare", |_| {})
        .event("ship", |e| e.command = Some("Erp/Ship".into()))
        .transition("new", "ready", Some("prepare"), None)
        .transition("new", "shipped", Some("ship"), None)
        .transition("ready", "shipped", Some("ship"), None)
        .build()
        .unwrap()
}

#[test]
fn by_order_command_runs_once_per_source_state() {
    let p = split_states();
    let mut reg = Registry::new();
    let (cmd, runs) = counting(CommandMode::ByOrder, vec![]);
    reg.register_command("Erp/Ship", cmd);
    let mut o = order(&p, 4);
    let e = Engine::new(&p, &reg);
    e.trigger(&mut o, Some(&[1, 2]), "prepare", t0()).unwrap();
    let d = e.trigger(&mut o, None, "ship", t0()).unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "one run for `ready`, one for `new`"
    );
    assert_eq!(d.commands.len(), 2);
    assert_eq!(d.commands[0].items, vec![1, 2]);
    assert_eq!(d.commands[1].items, vec![3, 4]);
    assert_eq!(d.moves().count(), 4);
}

#[test]
fn by_item_command_runs_per_item() {
    let p = split_states();
    let mut reg = Registry::new();
    let (cmd, runs) = counting(CommandMode::ByItem, vec![]);
    reg.register_command("Erp/Ship", cmd);
    let mut o = order(&p, 3);
    Engine::new(&p, &reg)
        .trigger(&mut o, None, "ship", t0())
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[test]
fn failing_command_keeps_its_items_where_they_are() {
    let p = split_states();
    let mut reg = Registry::new();
    let (cmd, _) = counting(CommandMode::ByItem, vec![2]);
    reg.register_command("Erp/Ship", cmd);
    let mut o = order(&p, 3);
    let d = Engine::new(&p, &reg)
        .trigger(&mut o, None, "ship", t0())
        .unwrap();
    assert_eq!(state_of(&p, &o, 1), "shipped");
    assert_eq!(state_of(&p, &o, 2), "new");
    assert_eq!(state_of(&p, &o, 3), "shipped");
    let failed: Vec<_> = d
        .commands
        .iter()
        .filter(|c| matches!(c.outcome, CommandOutcome::Failed(_)))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].items, vec![2]);
    assert_eq!(d.retryable_failure().unwrap().message, "remote down");
    assert!(d.steps.iter().any(|s| s.item == 2
        && matches!(
            &s.outcome,
            Outcome::Stayed {
                reason: StayReason::CommandFailed { .. },
                ..
            }
        )));
}

#[test]
fn failing_by_order_command_keeps_the_whole_group() {
    let p = split_states();
    let mut reg = Registry::new();
    let (cmd, _) = counting(CommandMode::ByOrder, vec![1]);
    reg.register_command("Erp/Ship", cmd);
    let mut o = order(&p, 2);
    let d = Engine::new(&p, &reg)
        .trigger(&mut o, None, "ship", t0())
        .unwrap();
    assert_eq!(d.moves().count(), 0);
    assert_eq!(state_of(&p, &o, 2), "new");
}

#[test]
fn failing_command_discards_its_attribute_changes() {
    let p = split_states();
    let mut reg = Registry::new();
    let (mut cmd, _) = counting(CommandMode::ByOrder, vec![1]);
    cmd.set = Some(("shipped", json!(true)));
    reg.register_command("Erp/Ship", cmd);
    let mut o = order(&p, 1);
    let d = Engine::new(&p, &reg)
        .trigger(&mut o, None, "ship", t0())
        .unwrap();
    assert!(o.attributes.is_empty());
    assert!(d.attribute_changes.is_empty());
}

#[test]
fn not_applicable_is_reported_per_item() {
    let p = split_states();
    let mut o = order(&p, 2);
    let reg = Registry::new();
    let e = Engine::new(&p, &reg).with_options(EngineOptions {
        unbound: UnboundPolicy::Lenient,
        ..Default::default()
    });
    e.trigger(&mut o, Some(&[1]), "prepare", t0()).unwrap();
    let d = e.trigger(&mut o, None, "prepare", t0()).unwrap();
    let na: Vec<_> = d.not_applicable().collect();
    assert_eq!(na, vec![(1, p.state_id("ready").unwrap())]);
    assert_eq!(state_of(&p, &o, 2), "ready");
}

#[test]
fn unknown_event_and_unknown_item_are_errors() {
    let p = split_states();
    let mut o = order(&p, 1);
    let reg = Registry::new();
    let e = Engine::new(&p, &reg);
    assert!(e.trigger(&mut o, None, "teleport", t0()).is_err());
    assert!(e.trigger(&mut o, Some(&[99]), "prepare", t0()).is_err());
}

fn chain() -> Process {
    ProcessBuilder::new("P")
        .state("new")
        .state("paid")
        .state("exported")
        .state("done")
        .event("pay", |e| e.manual = true)
        .event("export", |e| e.on_enter = true)
        .event("finish", |e| e.on_enter = true)
        .happy("new", "paid", Some("pay"))
        .happy("paid", "exported", Some("export"))
        .happy("exported", "done", Some("finish"))
        .build()
        .unwrap()
}

#[test]
fn on_enter_events_chain_within_one_trigger() {
    let p = chain();
    let mut o = order(&p, 2);
    let d = Engine::new(&p, &Registry::new())
        .trigger(&mut o, None, "pay", t0())
        .unwrap();
    assert_eq!(state_of(&p, &o, 1), "done");
    assert_eq!(d.moves().count(), 6);
    let causes: Vec<Cause> = d.steps.iter().map(|s| s.cause).collect();
    assert_eq!(causes[..2], [Cause::Trigger, Cause::Trigger]);
    assert!(causes[2..].iter().all(|c| *c == Cause::OnEnter));
}

#[test]
fn start_runs_the_initial_states_on_enter_chain() {
    let p = ProcessBuilder::new("P")
        .state("new")
        .state("checked")
        .event("check", |e| e.on_enter = true)
        .transition("new", "checked", Some("check"), None)
        .build()
        .unwrap();
    let mut o = order(&p, 1);
    let d = Engine::new(&p, &Registry::new()).start(&mut o, t0());
    assert_eq!(state_of(&p, &o, 1), "checked");
    assert_eq!(d.moves().count(), 1);
}

#[test]
fn on_enter_loops_stop_at_the_guard() {
    let p = ProcessBuilder::new("P")
        .state("new")
        .state("a")
        .state("b")
        .event("start", |_| {})
        .event("ping", |e| e.on_enter = true)
        .event("pong", |e| e.on_enter = true)
        .transition("new", "a", Some("start"), None)
        .transition("a", "b", Some("ping"), None)
        .transition("b", "a", Some("pong"), None)
        .build()
        .unwrap();
    let mut o = order(&p, 1);
    let d = Engine::new(&p, &Registry::new())
        .trigger(&mut o, None, "start", t0())
        .unwrap();
    // start, then ping and pong ten times each; the eleventh ping is refused.
    assert_eq!(d.moves().count(), 21);
    let last = d.steps.last().unwrap();
    assert!(matches!(
        last.outcome,
        Outcome::Stayed {
            reason: StayReason::LoopGuard,
            ..
        }
    ));
    assert_eq!(state_of(&p, &o, 1), "a");
}

fn timed() -> Process {
    ProcessBuilder::new("P")
        .state("new")
        .state("shipped")
        .state("delivered")
        .state("closed")
        .event("ship", |_| {})
        .event("deliver", |_| {})
        .event("close", |e| {
            e.timeout = Some(Timeout::parse("14days").unwrap())
        })
        .happy("new", "shipped", Some("ship"))
        .happy("shipped", "delivered", Some("deliver"))
        .happy("delivered", "closed", Some("close"))
        .build()
        .unwrap()
}

#[test]
fn entering_a_state_schedules_its_timeouts_and_leaving_drops_them() {
    let p = timed();
    let reg = Registry::new();
    let e = Engine::new(&p, &reg);
    let mut o = order(&p, 1);
    e.trigger(&mut o, None, "ship", t0()).unwrap();
    let d = e.trigger(&mut o, None, "deliver", t0()).unwrap();
    assert_eq!(d.timers_dropped, vec![1]);
    assert_eq!(d.timers_set.len(), 1);
    let timer = &d.timers_set[0];
    assert_eq!(timer.kind, TimerKind::Timeout(p.event_id("close").unwrap()));
    assert_eq!(timer.due_at, t0() + TimeDelta::days(14));
    assert_eq!(timer.state, p.state_id("delivered").unwrap());
    // Closing by hand drops the timer and sets none (closed has no timeout).
    let d = e.trigger(&mut o, None, "close", t0()).unwrap();
    assert_eq!(d.timers_dropped, vec![1]);
    assert!(d.timers_set.is_empty());
}

#[test]
fn check_fires_a_timeout_when_due_and_not_before() {
    let p = timed();
    let reg = Registry::new();
    let e = Engine::new(&p, &reg);
    let mut o = order(&p, 1);
    e.trigger(&mut o, None, "ship", t0()).unwrap();
    e.trigger(&mut o, None, "deliver", t0()).unwrap();
    let early = t0() + TimeDelta::days(14) - TimeDelta::seconds(1);
    let d = e.check(&mut o, None, early).unwrap();
    assert!(d.steps.is_empty());
    assert_eq!(state_of(&p, &o, 1), "delivered");
    let d = e.check(&mut o, None, t0() + TimeDelta::days(14)).unwrap();
    assert_eq!(state_of(&p, &o, 1), "closed");
    assert_eq!(d.steps[0].cause, Cause::Timeout);
}

#[test]
fn check_takes_event_less_transitions() {
    let p = ProcessBuilder::new("P")
        .state("new")
        .state("waiting")
        .state("paid")
        .state("cancelled")
        .state("done")
        .event("start", |_| {})
        .transition("new", "waiting", Some("start"), None)
        .transition("waiting", "paid", None, Some("Payment/IsPaid"))
        .transition("paid", "done", None, None)
        .build()
        .unwrap();
    let mut reg = Registry::new();
    reg.register_condition(
        "Payment/IsPaid",
        ConditionBinding::Attribute {
            scope: Default::default(),
            path: "payment.status".into(),
            equals: Some(json!("paid")),
            one_of: None,
            exists: None,
        },
    );
    let e = Engine::new(&p, &reg);
    let mut o = order(&p, 1);
    let d = e.trigger(&mut o, None, "start", t0()).unwrap();
    assert_eq!(
        d.timers_set[0].kind,
        TimerKind::Condition,
        "a re-check is scheduled"
    );
    let d = e.check(&mut o, None, t0()).unwrap();
    assert!(
        d.steps.is_empty(),
        "condition false: stays, nothing to report"
    );
    o.attributes
        .insert("payment".into(), json!({"status": "paid"}));
    let d = e.check(&mut o, None, t0()).unwrap();
    assert_eq!(state_of(&p, &o, 1), "paid");
    assert_eq!(d.steps[0].cause, Cause::Condition);
    assert_eq!(d.steps[0].event, None);
    // The unconditional event-less transition waits for the next pass, as in Spryker.
    e.check(&mut o, None, t0()).unwrap();
    assert_eq!(state_of(&p, &o, 1), "done");
}

#[test]
fn initial_state_is_configurable() {
    let p = ProcessBuilder::new("P")
        .initial("created")
        .state("created")
        .state("new")
        .build()
        .unwrap();
    assert_eq!(p.state(p.initial()).name, "created");
    let p = p.clone().with_initial(p.state_id("new").unwrap());
    let mut o = order(&p, 1);
    Engine::new(&p, &Registry::new()).start(&mut o, t0());
    assert_eq!(state_of(&p, &o, 1), "new");
}

#[test]
fn flags_and_reserved_are_read_per_state() {
    let p = ProcessBuilder::new("P")
        .state_with("new", |s| s.reserved = true)
        .state_with("cancelled", |s| {
            s.flags = vec!["exclude from customer".into()]
        })
        .build()
        .unwrap();
    assert!(p.state(p.state_id("new").unwrap()).reserved);
    let c = p.state(p.state_id("cancelled").unwrap());
    assert!(!c.reserved);
    assert_eq!(c.flags, vec!["exclude from customer"]);
}

#[test]
fn unbound_names_are_reported_and_fail_or_skip_by_policy() {
    let p = two_way(Some("Erp/Notify"));
    let reg = Registry::new();
    let unbound = reg.unbound(&p);
    let names: Vec<_> = unbound.iter().map(|u| (u.kind, u.name.as_str())).collect();
    assert_eq!(
        names,
        vec![
            (PluginKind::Condition, "Cond/A"),
            (PluginKind::Condition, "Cond/B"),
            (PluginKind::Command, "Erp/Notify"),
        ]
    );
    let mut o = order(&p, 1);
    let d = Engine::new(&p, &reg)
        .trigger(&mut o, None, "go", t0())
        .unwrap();
    assert!(matches!(
        &d.steps[0].outcome,
        Outcome::Stayed {
            reason: StayReason::Unbound {
                kind: PluginKind::Command,
                ..
            },
            ..
        }
    ));
    let lenient = Engine::new(&p, &reg).with_options(EngineOptions {
        unbound: UnboundPolicy::Lenient,
        ..Default::default()
    });
    let d = lenient.trigger(&mut o, None, "go", t0()).unwrap();
    assert_eq!(d.commands[0].outcome, CommandOutcome::Skipped);
    assert_eq!(
        state_of(&p, &o, 1),
        "c",
        "unbound conditions count as false"
    );
}

#[test]
fn builtins_bind_by_name_from_configuration() {
    let bindings: Bindings = serde_json::from_value(json!({
        "conditions": {
            "Cond/A": {"type": "attribute", "scope": "item", "path": "warehouse", "in": ["A", "B"]},
            "Cond/B": {"type": "attribute", "path": "vip", "exists": true}
        },
        "commands": {
            "Erp/Notify": {"type": "emit_event", "event": "export"}
        }
    }))
    .unwrap();
    let p = two_way(Some("Erp/Notify"));
    let mut reg = Registry::new();
    reg.bind(&bindings);
    assert!(reg.unbound(&p).is_empty());
    let mut o = order(&p, 2);
    o.items[0].attributes.insert("warehouse".into(), json!("B"));
    let d = Engine::new(&p, &reg)
        .trigger(&mut o, None, "go", t0())
        .unwrap();
    assert_eq!(state_of(&p, &o, 1), "a");
    assert_eq!(state_of(&p, &o, 2), "c");
    assert_eq!(
        d.effects,
        vec![Effect::FollowUpEvent {
            event: "export".into(),
            items: vec![1, 2]
        }]
    );
}

#[test]
fn set_attributes_builtin_writes_order_or_items() {
    let bindings: Bindings = serde_json::from_value(json!({
        "commands": {
            "Erp/Notify": {"type": "set_attributes", "scope": "item", "values": {"exported": true}}
        }
    }))
    .unwrap();
    let p = two_way(Some("Erp/Notify"));
    let mut reg = Registry::new();
    reg.bind(&bindings);
    let mut o = order(&p, 2);
    Engine::new(&p, &reg)
        .with_options(EngineOptions {
            unbound: UnboundPolicy::Lenient,
            ..Default::default()
        })
        .trigger(&mut o, None, "go", t0())
        .unwrap();
    assert!(
        o.items
            .iter()
            .all(|i| i.attributes["exported"] == json!(true))
    );
}

#[test]
fn final_states_are_those_no_transition_leaves() {
    // `review` leaves by an event-less transition only, `waiting` by a timeout event only.
    let p = ProcessBuilder::new("P")
        .state("new")
        .state("review")
        .state("waiting")
        .state("done")
        .event("go", |_| {})
        .event("expire", |e| {
            e.timeout = Some(oms::Timeout::parse("1 hour").unwrap())
        })
        .transition("new", "review", Some("go"), None)
        .transition("review", "waiting", None, Some("Cond/A"))
        .transition("waiting", "done", Some("expire"), None)
        .build()
        .unwrap();
    let is_final = |name: &str| p.is_final(p.state_id(name).unwrap());
    assert!(!is_final("new"));
    assert!(!is_final("review"), "an event-less transition is a way out");
    assert!(!is_final("waiting"), "a timeout is a way out");
    assert!(is_final("done"));
}
