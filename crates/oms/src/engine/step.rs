//! One event on a group of items: its command (per item or per source state), the choice of
//! the target transition (Spryker's rules), and the move with its onEnter follow-up.

use super::*;

impl Engine<'_> {
    pub(super) fn fire(
        &self,
        order: &mut Order,
        run: &mut Run,
        event: EventId,
        idxs: Vec<usize>,
        cause: Cause,
        now: DateTime<Utc>,
    ) {
        let repeats = match run.repeats.iter_mut().find(|(e, _)| *e == event) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                run.repeats.push((event, 1));
                1
            }
        };
        if repeats > self.options.max_event_repeats {
            for i in idxs {
                let item = &order.items[i];
                run.decisions.steps.push(Step {
                    item: item.id,
                    event: Some(event),
                    cause,
                    outcome: Outcome::Stayed {
                        state: item.state,
                        reason: StayReason::LoopGuard,
                    },
                });
            }
            return;
        }

        // Group applicable items by source state, in order of first appearance.
        let mut groups: Vec<(StateId, Vec<usize>)> = Vec::new();
        for i in idxs {
            let state = order.items[i].state;
            if self.process.transitions_for(state, event).is_empty() {
                run.decisions.steps.push(Step {
                    item: order.items[i].id,
                    event: Some(event),
                    cause,
                    outcome: Outcome::NotApplicable { state },
                });
                continue;
            }
            match groups.iter_mut().find(|(s, _)| *s == state) {
                Some((_, v)) => v.push(i),
                None => groups.push((state, vec![i])),
            }
        }

        let mut entered = Vec::new();
        for (state, members) in groups {
            let ready = self.run_command(order, run, event, cause, state, members, now);
            let transitions = self.process.transitions_for(state, event);
            for i in ready {
                match self.choose(order, i, transitions, now) {
                    Ok(Some(t)) => {
                        self.apply_move(order, run, i, Some(event), cause, t, now);
                        entered.push(i);
                    }
                    Ok(None) => run.decisions.steps.push(Step {
                        item: order.items[i].id,
                        event: Some(event),
                        cause,
                        outcome: Outcome::Stayed {
                            state,
                            reason: StayReason::NoConditionHeld,
                        },
                    }),
                    Err(reason) => run.decisions.steps.push(Step {
                        item: order.items[i].id,
                        event: Some(event),
                        cause,
                        outcome: Outcome::Stayed { state, reason },
                    }),
                }
            }
        }
        self.queue_on_enter(run, order, &entered);
    }

    /// Runs the event's command for one source-state group; returns the items that may move.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_command(
        &self,
        order: &mut Order,
        run: &mut Run,
        event: EventId,
        cause: Cause,
        state: StateId,
        members: Vec<usize>,
        now: DateTime<Utc>,
    ) -> Vec<usize> {
        let ev = self.process.event(event);
        let Some(name) = ev.command.as_deref() else {
            return members;
        };
        let Some(command) = self.registry.command(name) else {
            let ids = members.iter().map(|&i| order.items[i].id).collect();
            if self.options.unbound == UnboundPolicy::Lenient {
                run.decisions.commands.push(CommandRun {
                    command: name.to_owned(),
                    event,
                    items: ids,
                    outcome: CommandOutcome::Skipped,
                });
                return members;
            }
            for &i in &members {
                run.decisions.steps.push(Step {
                    item: order.items[i].id,
                    event: Some(event),
                    cause,
                    outcome: Outcome::Stayed {
                        state,
                        reason: StayReason::Unbound {
                            kind: PluginKind::Command,
                            name: name.to_owned(),
                        },
                    },
                });
            }
            return Vec::new();
        };
        let batches: Vec<Vec<usize>> = match command.mode() {
            CommandMode::ByOrder => vec![members],
            CommandMode::ByItem => members.into_iter().map(|i| vec![i]).collect(),
        };
        let mut ready = Vec::new();
        for batch in batches {
            let mut ctx = CommandContext::new(order, &batch, &ev.name, now).for_command(name);
            let result = command.run(&mut ctx);
            let (changes, effects) = ctx.into_parts();
            let ids: Vec<i64> = batch.iter().map(|&i| order.items[i].id).collect();
            match result {
                Ok(()) => {
                    apply_changes(order, &changes);
                    run.decisions.attribute_changes.extend(changes);
                    run.decisions.effects.extend(effects);
                    run.decisions.commands.push(CommandRun {
                        command: name.to_owned(),
                        event,
                        items: ids,
                        outcome: CommandOutcome::Ok,
                    });
                    ready.extend(batch);
                }
                Err(error) => {
                    for &id in &ids {
                        run.decisions.steps.push(Step {
                            item: id,
                            event: Some(event),
                            cause,
                            outcome: Outcome::Stayed {
                                state,
                                reason: StayReason::CommandFailed {
                                    command: name.to_owned(),
                                    error: error.clone(),
                                },
                            },
                        });
                    }
                    run.decisions.commands.push(CommandRun {
                        command: name.to_owned(),
                        event,
                        items: ids,
                        outcome: CommandOutcome::Failed(error),
                    });
                }
            }
        }
        ready
    }

    /// Spryker's target choice: the last transition whose condition holds, else the first
    /// one without a condition, else none. Conditions are checked from the last one
    /// backwards and the first that holds decides, which gives the same answer with fewer
    /// calls.
    pub(super) fn choose(
        &self,
        order: &Order,
        i: usize,
        transitions: &[TransitionId],
        now: DateTime<Utc>,
    ) -> Result<Option<TransitionId>, StayReason> {
        let item = &order.items[i];
        let mut fallback = None;
        for &tid in transitions.iter().rev() {
            let t = self.process.transition(tid);
            let Some(name) = t.condition.as_deref() else {
                fallback = Some(tid);
                continue;
            };
            let Some(condition) = self.registry.condition(name) else {
                if self.options.unbound == UnboundPolicy::Lenient {
                    continue;
                }
                return Err(StayReason::Unbound {
                    kind: PluginKind::Condition,
                    name: name.to_owned(),
                });
            };
            match condition.check(order, item, now) {
                Ok(true) => return Ok(Some(tid)),
                Ok(false) => {}
                Err(error) => {
                    return Err(StayReason::ConditionFailed {
                        condition: name.to_owned(),
                        error,
                    });
                }
            }
        }
        Ok(fallback)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply_move(
        &self,
        order: &mut Order,
        run: &mut Run,
        i: usize,
        event: Option<EventId>,
        cause: Cause,
        transition: TransitionId,
        now: DateTime<Utc>,
    ) {
        let to = self.process.transition(transition).target;
        let item = &mut order.items[i];
        let from = item.state;
        item.state = to;
        item.state_entered_at = now;
        run.moved[i] = true;
        run.decisions.steps.push(Step {
            item: item.id,
            event,
            cause,
            outcome: Outcome::Moved {
                from,
                to,
                transition,
            },
        });
    }
}

fn apply_changes(order: &mut Order, changes: &[AttributeChange]) {
    for c in changes {
        match c {
            AttributeChange::Order { key, value } => {
                order.attributes.insert(key.clone(), value.clone());
            }
            AttributeChange::Item { item, key, value } => {
                if let Some(it) = order.items.iter_mut().find(|it| it.id == *item) {
                    it.attributes.insert(key.clone(), value.clone());
                }
            }
        }
    }
}
