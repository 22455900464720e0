//! Process definitions as GraphQL types: states, events, transitions, and the drawing
//! with live item counts that `GET /v1/processes/{name}/graph.svg` serves.

use std::sync::Arc;

use async_graphql::{Context, Object, Result, SimpleObject};
use oms::graph::GraphOptions;

use super::State;
use super::error::IntoGraphql;

/// A loaded process definition.
pub(super) struct Process(pub Arc<oms::Process>);

#[derive(SimpleObject)]
pub(super) struct ProcessState {
    pub name: String,
    pub display: Option<String>,
    pub reserved: bool,
    pub flags: Vec<String>,
    /// The (sub)process that defines the state.
    pub process: String,
}

#[derive(SimpleObject)]
pub(super) struct ProcessEvent {
    pub name: String,
    pub manual: bool,
    pub on_enter: bool,
    pub command: Option<String>,
    pub timeout: Option<String>,
}

#[derive(SimpleObject)]
pub(super) struct Transition {
    pub source: String,
    pub target: String,
    pub event: Option<String>,
    pub condition: Option<String>,
    pub happy: bool,
}

#[Object]
impl Process {
    async fn name(&self) -> &str {
        self.0.name()
    }

    async fn initial_state(&self) -> &str {
        &self.0.state(self.0.initial()).name
    }

    async fn subprocesses(&self) -> &[String] {
        self.0.subprocesses()
    }

    async fn states(&self) -> Vec<ProcessState> {
        self.0
            .states()
            .iter()
            .map(|s| ProcessState {
                name: s.name.clone(),
                display: s.display.clone(),
                reserved: s.reserved,
                flags: s.flags.clone(),
                process: s.process.clone(),
            })
            .collect()
    }

    async fn events(&self) -> Vec<ProcessEvent> {
        self.0
            .events()
            .iter()
            .map(|e| ProcessEvent {
                name: e.name.clone(),
                manual: e.manual,
                on_enter: e.on_enter,
                command: e.command.clone(),
                timeout: e.timeout.as_ref().map(|t| t.raw().to_owned()),
            })
            .collect()
    }

    async fn transitions(&self) -> Vec<Transition> {
        let p = &self.0;
        p.transitions()
            .iter()
            .map(|t| Transition {
                source: p.state(t.source).name.clone(),
                target: p.state(t.target).name.clone(),
                event: t.event.map(|e| p.event(e).name.clone()),
                condition: t.condition.clone(),
                happy: t.happy,
            })
            .collect()
    }

    /// The process drawn as SVG, with the live number of items in each state.
    #[graphql(complexity = 10)]
    async fn graph_svg(&self, ctx: &Context<'_>) -> Result<String> {
        let state = ctx.data::<State>()?;
        let counts = state
            .service
            .store()
            .state_counts(self.0.name())
            .await
            .gql()?;
        let mut options = GraphOptions::with_legend();
        options.counts = counts
            .into_iter()
            .map(|(s, n)| (s, n.max(0) as u64))
            .collect();
        Ok(oms::graph::to_svg(&self.0, &options))
    }
}
