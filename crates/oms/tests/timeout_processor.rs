//! `timeoutProcessor`: a bound processor decides when a timeout event is due; unbound, the
//! plain timeout applies and the name is reported. Time is passed in.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oms::bindings::{Scope, TimeoutProcessorBinding};
use oms::engine::{Cause, Item, Order, TimerKind};
use oms::model::{Process, ProcessBuilder};
use oms::plugin::{PluginKind, TimeoutContext, TimeoutProcessor};
use oms::{Engine, Registry, Timeout};
use serde_json::json;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap()
}

/// `new --cancel (timeout 14days, processor Oms/Initiation)--> cancelled`.
fn process(timeout: Option<&str>) -> Process {
    let timeout = timeout.map(|t| Timeout::parse(t).unwrap());
    ProcessBuilder::new("Initiation01")
        .state("new")
        .state("cancelled")
        .event("cancel", move |e| {
            e.timeout = timeout;
            e.timeout_processor = Some("Oms/Initiation".into());
        })
        .transition("new", "cancelled", Some("cancel"), None)
        .build()
        .unwrap()
}

fn order(created_at: &str) -> Order {
    Order {
        reference: "R-1".into(),
        attributes: json!({"created_at": created_at})
            .as_object()
            .cloned()
            .unwrap(),
        items: vec![Item {
            id: 7,
            sku: "SKU".into(),
            quantity: 1,
            state: oms::StateId(0),
            state_entered_at: t0(),
            attributes: Default::default(),
        }],
    }
}

fn attribute_plus_two_days() -> Registry {
    let mut r = Registry::new();
    r.register_timeout_processor(
        "Oms/Initiation",
        TimeoutProcessorBinding::Attribute {
            scope: Scope::Order,
            path: "created_at".into(),
            offset: Some(Timeout::parse("2days").unwrap()),
        },
    );
    r
}

fn scheduled(p: &Process, reg: &Registry, o: &mut Order) -> Vec<(TimerKind, DateTime<Utc>)> {
    let d = Engine::new(p, reg).start(o, t0());
    d.timers_set.iter().map(|t| (t.kind, t.due_at)).collect()
}

#[test]
fn a_bound_processor_sets_the_due_time() {
    let p = process(Some("14days"));
    let reg = attribute_plus_two_days();
    let mut o = order("2026-02-20T10:00:00Z");
    let cancel = TimerKind::Timeout(p.event_id("cancel").unwrap());
    let due = Utc.with_ymd_and_hms(2026, 2, 22, 10, 0, 0).unwrap();
    assert_eq!(scheduled(&p, &reg, &mut o), [(cancel, due)]);

    // That time is already past at t0 (created 9 days ago, + 2 days): the next check fires.
    let d = Engine::new(&p, &reg).check(&mut o, None, t0()).unwrap();
    assert_eq!(d.moves().count(), 1);
    assert_eq!(d.steps[0].cause, Cause::Timeout);
}

#[test]
fn the_check_fires_at_the_processors_time_not_the_plain_one() {
    let p = process(Some("1 hour"));
    let reg = attribute_plus_two_days();
    // Created now: due in two days, although the plain timeout says one hour.
    let mut o = order("2026-03-01T09:00:00Z");
    let engine = Engine::new(&p, &reg);
    engine.start(&mut o, t0());
    let due = t0() + TimeDelta::days(2);
    let before = engine
        .check(&mut o, None, t0() + TimeDelta::hours(2))
        .unwrap();
    assert_eq!(before.moves().count(), 0, "the plain 1 hour must not apply");
    let d = engine
        .check(&mut o, None, due - TimeDelta::seconds(1))
        .unwrap();
    assert_eq!(d.moves().count(), 0);
    let d = engine.check(&mut o, None, due).unwrap();
    assert_eq!(d.moves().count(), 1);
    assert_eq!(p.state(o.items[0].state).name, "cancelled");
}

#[test]
fn without_an_answer_the_plain_timeout_applies() {
    let p = process(Some("14days"));
    let reg = attribute_plus_two_days();
    let mut o = order("not a time");
    let cancel = TimerKind::Timeout(p.event_id("cancel").unwrap());
    assert_eq!(
        scheduled(&p, &reg, &mut o),
        [(cancel, t0() + TimeDelta::days(14))]
    );
}

#[test]
fn unbound_the_plain_timeout_applies_and_the_name_is_reported() {
    let p = process(Some("14days"));
    let reg = Registry::new();
    let mut o = order("2026-02-20T10:00:00Z");
    let cancel = TimerKind::Timeout(p.event_id("cancel").unwrap());
    assert_eq!(
        scheduled(&p, &reg, &mut o),
        [(cancel, t0() + TimeDelta::days(14))]
    );
    let unbound = reg.unbound(&p);
    assert_eq!(unbound.len(), 1, "{unbound:?}");
    assert_eq!(unbound[0].kind, PluginKind::TimeoutProcessor);
    assert_eq!(unbound[0].name, "Oms/Initiation");
    assert_eq!(unbound[0].kind.to_string(), "timeout processor");
}

#[test]
fn a_processor_alone_makes_a_timeout_event() {
    // No timeout attribute: only the processor can schedule it.
    let p = process(None);
    let mut o = order("2026-03-05T00:00:00Z");
    let cancel = TimerKind::Timeout(p.event_id("cancel").unwrap());
    let due = Utc.with_ymd_and_hms(2026, 3, 7, 0, 0, 0).unwrap();
    assert_eq!(
        scheduled(&p, &attribute_plus_two_days(), &mut o),
        [(cancel, due)]
    );
    // Unbound and without a timeout: nothing is scheduled, nothing fires.
    let mut o = order("2026-03-05T00:00:00Z");
    assert_eq!(scheduled(&p, &Registry::new(), &mut o), []);
}

/// An embedder's own processor: the next Monday 06:00 after entering the state.
struct NextMonday;

impl TimeoutProcessor for NextMonday {
    fn due_at(&self, ctx: &TimeoutContext<'_>) -> Option<DateTime<Utc>> {
        use chrono::Datelike;
        let d = ctx.entered_at.date_naive();
        let ahead = 7 - d.weekday().num_days_from_monday();
        let day = d + TimeDelta::days(i64::from(ahead));
        Some(day.and_hms_opt(6, 0, 0)?.and_utc())
    }
}

#[test]
fn an_embedder_registers_its_own_processor() {
    let p = process(Some("14days"));
    let mut reg = Registry::new();
    reg.register_timeout_processor("Oms/Initiation", NextMonday);
    let mut o = order("");
    // 2026-03-01 is a Sunday.
    let due = Utc.with_ymd_and_hms(2026, 3, 2, 6, 0, 0).unwrap();
    let cancel = TimerKind::Timeout(p.event_id("cancel").unwrap());
    assert_eq!(scheduled(&p, &reg, &mut o), [(cancel, due)]);
    assert!(reg.unbound(&p).is_empty());
}
