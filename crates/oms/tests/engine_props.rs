//! Property tests: random processes, random event sequences and clock advances.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use oms::bindings::ConditionBinding;
use oms::engine::{
    Cause, Decisions, EngineOptions, Item, MAX_EVENT_REPEATS, Order, Outcome, TimerKind,
};
use oms::model::{Process, ProcessBuilder};
use oms::{Engine, Registry, Timeout};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Spec {
    states: usize,
    events: Vec<(bool, Option<u8>)>, // (on_enter, timeout in hours)
    transitions: Vec<(usize, usize, Option<usize>, Option<usize>)>, // source, target, event, condition
    conditions: Vec<bool>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (2usize..8, 1usize..5, 0usize..3).prop_flat_map(|(states, events, conditions)| {
        (
            Just(states),
            prop::collection::vec(
                (
                    prop::bool::weighted(0.3),
                    prop::option::weighted(0.3, 1u8..48),
                ),
                events,
            ),
            prop::collection::vec(
                (
                    0..states,
                    0..states,
                    prop::option::weighted(0.8, 0..events),
                    if conditions == 0 {
                        Just(None).boxed()
                    } else {
                        prop::option::of(0..conditions).boxed()
                    },
                ),
                0..16,
            ),
            prop::collection::vec(any::<bool>(), conditions),
        )
            .prop_map(|(states, events, transitions, conditions)| Spec {
                states,
                events,
                transitions,
                conditions,
            })
    })
}

fn build(spec: &Spec) -> (Process, Registry) {
    let mut b = ProcessBuilder::new("Random").state("new");
    for s in 1..spec.states {
        b = b.state(format!("s{s}"));
    }
    for (i, (on_enter, timeout)) in spec.events.iter().enumerate() {
        let timeout = timeout.map(|h| Timeout::parse(&format!("{h} hours")).unwrap());
        b = b.event(format!("e{i}"), |e| {
            e.on_enter = *on_enter;
            e.timeout = timeout;
        });
    }
    let name = |s: usize| {
        if s == 0 {
            "new".to_owned()
        } else {
            format!("s{s}")
        }
    };
    for (src, dst, ev, cond) in &spec.transitions {
        let ev = ev.map(|e| format!("e{e}"));
        let cond = cond.map(|c| format!("C/{c}"));
        b = b.transition(&name(*src), &name(*dst), ev.as_deref(), cond.as_deref());
    }
    let mut reg = Registry::new();
    for (i, v) in spec.conditions.iter().enumerate() {
        reg.register_condition(format!("C/{i}"), ConditionBinding::Constant { value: *v });
    }
    (b.build().unwrap(), reg)
}

#[derive(Clone, Debug)]
enum Action {
    Trigger { event: usize, items: Vec<usize> },
    Check { advance_hours: u8 },
}

fn actions(events: usize) -> impl Strategy<Value = Vec<Action>> {
    prop::collection::vec(
        prop_oneof![
            3 => (0..events, prop::collection::vec(0usize..3, 0..3))
                .prop_map(|(event, items)| Action::Trigger { event, items }),
            1 => (0u8..72).prop_map(|advance_hours| Action::Check { advance_hours }),
        ],
        1..20,
    )
}

type Timers = HashMap<i64, Vec<(oms::StateId, TimerKind)>>;

fn apply_timers(timers: &mut Timers, d: &Decisions) {
    for id in &d.timers_dropped {
        timers.remove(id);
    }
    for t in &d.timers_set {
        timers.entry(t.item).or_default().push((t.state, t.kind));
    }
}

/// Moves of each item chain: every move starts where the item was.
fn assert_moves_chain(before: &Order, after: &Order, d: &Decisions) {
    let mut at: HashMap<i64, oms::StateId> = before.items.iter().map(|i| (i.id, i.state)).collect();
    for s in &d.steps {
        let cur = at[&s.item];
        match s.outcome {
            Outcome::Moved { from, to, .. } => {
                assert_eq!(from, cur, "a move starts where the item is");
                at.insert(s.item, to);
            }
            Outcome::NotApplicable { state } | Outcome::Stayed { state, .. } => {
                assert_eq!(state, cur)
            }
            ref other => panic!("an outcome this test does not know: {other:?}"),
        }
    }
    for i in &after.items {
        assert_eq!(at[&i.id], i.state, "the order reflects the last move");
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn engine_invariants(spec in spec(), acts in actions(4)) {
        let (process, reg) = build(&spec);
        let engine = Engine::new(&process, &reg).with_options(EngineOptions::default());
        let mut now = t0();
        let mut order = Order {
            reference: "R".into(),
            attributes: Default::default(),
            items: (1..=3)
                .map(|id| Item {
                    id,
                    sku: "S".into(),
                    quantity: 1,
                    state: process.initial(),
                    state_entered_at: now,
                    attributes: Default::default(),
                })
                .collect(),
        };
        let mut timers = Timers::new();
        let before = order.clone();
        let d = engine.start(&mut order, now);
        assert_moves_chain(&before, &order, &d);
        apply_timers(&mut timers, &d);
        // onEnter chains terminate: bounded by the guard.
        let bound = (spec.events.len() as u32 * (MAX_EVENT_REPEATS + 1) + 1) as usize * 3;

        for act in acts {
            let before = order.clone();
            let d = match act {
                Action::Trigger { event, items } => {
                    let event = event % spec.events.len();
                    let name = format!("e{event}");
                    let mut ids: Vec<i64> = items.iter().map(|i| *i as i64 + 1).collect();
                    ids.sort_unstable();
                    ids.dedup();
                    let sel = if ids.is_empty() { None } else { Some(ids.as_slice()) };
                    let d = engine.trigger(&mut order, sel, &name, now).unwrap();
                    // not_applicable exactly when no transition with the event leaves the state.
                    let eid = process.event_id(&name).unwrap();
                    let selected: Vec<&Item> = before
                        .items
                        .iter()
                        .filter(|i| sel.is_none_or(|s| s.contains(&i.id)))
                        .collect();
                    for item in selected {
                        let first = d
                            .steps
                            .iter()
                            .find(|s| s.item == item.id && s.cause == Cause::Trigger)
                            .expect("every selected item gets a step");
                        let none_out = process.transitions_for(item.state, eid).is_empty();
                        let is_na = matches!(first.outcome, Outcome::NotApplicable { .. });
                        prop_assert_eq!(none_out, is_na);
                    }
                    prop_assert!(d.steps.iter().all(|s| s.cause != Cause::Trigger
                        || sel.is_none_or(|s2| s2.contains(&s.item))));
                    d
                }
                Action::Check { advance_hours } => {
                    now += TimeDelta::hours(advance_hours as i64);
                    let d = engine.check(&mut order, None, now).unwrap();
                    prop_assert!(d.not_applicable().next().is_none());
                    d
                }
            };
            prop_assert!(d.steps.len() <= bound, "{} steps", d.steps.len());
            assert_moves_chain(&before, &order, &d);
            apply_timers(&mut timers, &d);
            // Each item is in exactly one defined state.
            for item in &order.items {
                prop_assert!((item.state.0 as usize) < process.states().len());
            }
            // Every item waits on exactly its state's timeout events.
            for item in &order.items {
                let mut have: Vec<_> = timers
                    .get(&item.id)
                    .into_iter()
                    .flatten()
                    .filter_map(|(_, k)| match k {
                        TimerKind::Timeout(e) => Some(*e),
                        TimerKind::Condition => None,
                    })
                    .collect();
                have.sort_unstable();
                let mut want = process.timeout_events_from(item.state).to_vec();
                want.sort_unstable();
                prop_assert_eq!(have, want);
            }
            // Timers exist only for the current state's events.
            for (id, ts) in &timers {
                let item = order.items.iter().find(|i| i.id == *id).unwrap();
                for (state, kind) in ts {
                    prop_assert_eq!(*state, item.state);
                    match kind {
                        TimerKind::Timeout(e) => {
                            prop_assert!(process.timeout_events_from(item.state).contains(e))
                        }
                        TimerKind::Condition => {
                            prop_assert!(!process.eventless_from(item.state).is_empty())
                        }
                    }
                }
            }
        }
    }
}
