//! [`ProcessBuilder`]: a [`Process`] assembled state by state and transition by
//! transition (the XML loader uses it; an embedder can too), checked when it is built.

use super::*;

/// Builds a [`Process`] in code, by names: for embedders that define processes without XML,
/// and for tests.
///
/// ```
/// use oms::model::ProcessBuilder;
/// let p = ProcessBuilder::new("Demo")
///     .state("new")
///     .state("paid")
///     .event("pay", |e| e.manual = true)
///     .transition("new", "paid", Some("pay"), None)
///     .build()
///     .unwrap();
/// assert_eq!(p.state(p.initial()).name, "new");
/// ```
#[derive(Clone, Debug)]
pub struct ProcessBuilder {
    name: String,
    initial: String,
    states: Vec<State>,
    events: Vec<Event>,
    transitions: Vec<PendingTransition>,
}

/// Why [`ProcessBuilder::build`] refused: a transition or the initial state names
/// something that was not added.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A transition's source or target, or the initial state, is not a state.
    #[error("unknown state {0:?}")]
    UnknownState(String),
    /// A transition's event is not an event.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
}

#[derive(Clone, Debug)]
struct PendingTransition {
    source: String,
    target: String,
    event: Option<String>,
    condition: Option<String>,
    happy: bool,
}

impl ProcessBuilder {
    /// An empty process called `name`, whose items start in `new`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            initial: "new".into(),
            states: Vec::new(),
            events: Vec::new(),
            transitions: Vec::new(),
        }
    }

    fn origin(&self) -> Origin {
        Origin {
            file: format!("<{}>", self.name),
            line: 0,
            column: 0,
        }
    }

    /// The state new items enter (default `new`).
    pub fn initial(mut self, state: impl Into<String>) -> Self {
        self.initial = state.into();
        self
    }

    /// Adds a plain state.
    pub fn state(self, name: impl Into<String>) -> Self {
        self.state_with(name, |_| {})
    }

    /// Adds a state and lets `f` set reserved, flags or display.
    pub fn state_with(mut self, name: impl Into<String>, f: impl FnOnce(&mut State)) -> Self {
        let mut s = State {
            name: name.into(),
            display: None,
            reserved: false,
            flags: Vec::new(),
            process: self.name.clone(),
            origin: self.origin(),
        };
        f(&mut s);
        self.states.push(s);
        self
    }

    /// Adds an event and lets `f` set manual, onEnter, command or timeout.
    pub fn event(mut self, name: impl Into<String>, f: impl FnOnce(&mut Event)) -> Self {
        let mut e = Event {
            name: name.into(),
            manual: false,
            on_enter: false,
            command: None,
            timeout: None,
            timeout_processor: None,
            process: self.name.clone(),
            origin: self.origin(),
        };
        f(&mut e);
        self.events.push(e);
        self
    }

    /// Adds a transition; `event` `None` makes it event-less.
    pub fn transition(
        self,
        source: &str,
        target: &str,
        event: Option<&str>,
        condition: Option<&str>,
    ) -> Self {
        self.transition_with(source, target, event, condition, false)
    }

    /// Adds a happy transition without a condition.
    pub fn happy(self, source: &str, target: &str, event: Option<&str>) -> Self {
        self.transition_with(source, target, event, None, true)
    }

    /// Adds a transition with every field given.
    pub fn transition_with(
        mut self,
        source: &str,
        target: &str,
        event: Option<&str>,
        condition: Option<&str>,
        happy: bool,
    ) -> Self {
        self.transitions.push(PendingTransition {
            source: source.into(),
            target: target.into(),
            event: event.map(Into::into),
            condition: condition.map(Into::into),
            happy,
        });
        self
    }

    /// Resolves names; an unknown state or event is an error naming it.
    pub fn build(self) -> Result<Process, BuildError> {
        let state = |n: &str| {
            self.states
                .iter()
                .position(|s| s.name == n)
                .map(|i| StateId(i as u32))
                .ok_or_else(|| BuildError::UnknownState(n.to_owned()))
        };
        let event = |n: &str| {
            self.events
                .iter()
                .position(|e| e.name == n)
                .map(|i| EventId(i as u32))
                .ok_or_else(|| BuildError::UnknownEvent(n.to_owned()))
        };
        let mut transitions = Vec::with_capacity(self.transitions.len());
        for t in &self.transitions {
            transitions.push(Transition {
                source: state(&t.source)?,
                target: state(&t.target)?,
                event: t.event.as_deref().map(event).transpose()?,
                condition: t.condition.clone(),
                happy: t.happy,
                process: self.name.clone(),
                origin: self.origin(),
            });
        }
        let initial = state(&self.initial)?;
        Ok(Process::new(
            self.name,
            initial,
            self.states,
            self.events,
            transitions,
            Vec::new(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A process of `n` states and the given `(source, target, happy)` edges.
    fn graph(n: usize, edges: &[(usize, usize, bool)]) -> Process {
        let mut b = ProcessBuilder::new("G").state("new");
        for i in 1..n {
            b = b.state(format!("s{i}"));
        }
        let name = |i: usize| {
            if i == 0 {
                "new".to_owned()
            } else {
                format!("s{i}")
            }
        };
        for &(s, t, happy) in edges {
            b = b.transition_with(&name(s % n), &name(t % n), None, None, happy);
        }
        b.build().unwrap()
    }

    proptest! {
        /// The per-state indexes say what a scan over every transition says.
        #[test]
        fn indexes_match_a_full_scan(
            n in 1usize..30,
            edges in proptest::collection::vec((0usize..30, 0usize..30, any::<bool>()), 0..80),
        ) {
            let p = graph(n, &edges);
            for s in 0..n {
                let id = StateId(s as u32);
                let scanned: Vec<TransitionId> = p.transitions().iter().enumerate()
                    .filter(|(_, t)| t.source == id)
                    .map(|(i, _)| TransitionId(i as u32))
                    .collect();
                let indexed: Vec<TransitionId> = p.outgoing(id).map(|(t, _)| t).collect();
                prop_assert_eq!(&indexed, &scanned);
                let entering = p.transitions().iter().filter(|t| t.target == id).count();
                prop_assert_eq!(p.incoming_count(id), entering);
                let happy = scanned.iter().copied().find(|&t| p.transition(t).happy);
                prop_assert_eq!(p.happy_from(id), happy);
            }
        }
    }
}
