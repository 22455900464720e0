//! `/v1/processes`: the loaded process definitions, and drawings with live item counts.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use oms::Process;
use oms::graph::GraphOptions;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::{ApiPath, ShopOrAdmin};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProcessSummary {
    pub name: String,
    pub initial_state: String,
    pub states: usize,
    pub events: usize,
    pub transitions: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ProcessDetail {
    pub name: String,
    pub initial_state: String,
    pub subprocesses: Vec<String>,
    pub states: Vec<StateInfo>,
    pub events: Vec<EventInfo>,
    pub transitions: Vec<TransitionInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct StateInfo {
    pub name: String,
    pub display: Option<String>,
    pub reserved: bool,
    pub flags: Vec<String>,
    /// The (sub)process that declares the state.
    pub process: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventInfo {
    pub name: String,
    pub manual: bool,
    pub on_enter: bool,
    pub command: Option<String>,
    /// As written in the XML (`14days`, `PT1H`).
    pub timeout: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(super) struct TransitionInfo {
    pub source: String,
    pub target: String,
    /// `null` for an event-less transition.
    pub event: Option<String>,
    pub condition: Option<String>,
    pub happy: bool,
}

fn summary(p: &Process) -> ProcessSummary {
    ProcessSummary {
        name: p.name().to_owned(),
        initial_state: p.state(p.initial()).name.clone(),
        states: p.states().len(),
        events: p.events().len(),
        transitions: p.transitions().len(),
    }
}

fn detail(p: &Process) -> ProcessDetail {
    ProcessDetail {
        name: p.name().to_owned(),
        initial_state: p.state(p.initial()).name.clone(),
        subprocesses: p.subprocesses().to_vec(),
        states: p
            .states()
            .iter()
            .map(|s| StateInfo {
                name: s.name.clone(),
                display: s.display.clone(),
                reserved: s.reserved,
                flags: s.flags.clone(),
                process: s.process.clone(),
            })
            .collect(),
        events: p
            .events()
            .iter()
            .map(|e| EventInfo {
                name: e.name.clone(),
                manual: e.manual,
                on_enter: e.on_enter,
                command: e.command.clone(),
                timeout: e.timeout.as_ref().map(|t| t.raw().to_owned()),
            })
            .collect(),
        transitions: p
            .transitions()
            .iter()
            .map(|t| TransitionInfo {
                source: p.state(t.source).name.clone(),
                target: p.state(t.target).name.clone(),
                event: t.event.map(|e| p.event(e).name.clone()),
                condition: t.condition.clone(),
                happy: t.happy,
            })
            .collect(),
    }
}

fn find<'a>(state: &'a AppState, name: &str) -> ApiResult<&'a std::sync::Arc<Process>> {
    state
        .service
        .processes()
        .get(name)
        .ok_or_else(|| ApiError::NotFound(format!("no process named {name:?} is loaded")))
}

/// The loaded main processes.
#[utoipa::path(get, path = "/v1/processes", tag = "processes", security(("bearer" = [])),
    responses((status = 200, body = [ProcessSummary])))]
pub(super) async fn list_processes(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
) -> ApiResult<Json<Vec<ProcessSummary>>> {
    Ok(Json(
        state
            .service
            .processes()
            .iter()
            .map(|p| summary(p))
            .collect(),
    ))
}

/// States (with flags and `reserved`), events and transitions of one process.
#[utoipa::path(get, path = "/v1/processes/{name}", tag = "processes", security(("bearer" = [])),
    params(("name" = String, Path, description = "Process name")),
    responses((status = 200, body = ProcessDetail), (status = 404, description = "not_found: no such process")))]
pub(super) async fn get_process(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Json<ProcessDetail>> {
    Ok(Json(detail(find(&state, &name)?)))
}

async fn options(state: &AppState, process: &Process) -> ApiResult<GraphOptions> {
    let counts = state.service.store().state_counts(process.name()).await?;
    let mut opts = GraphOptions::with_legend();
    opts.counts = counts
        .into_iter()
        .map(|(s, n)| (s, n.max(0) as u64))
        .collect();
    Ok(opts)
}

/// The process drawn as SVG, with the number of items in each state.
#[utoipa::path(get, path = "/v1/processes/{name}/graph.svg", tag = "processes",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Process name")),
    responses((status = 200, description = "SVG drawing", body = String, content_type = "image/svg+xml"),
        (status = 404, description = "not_found: no such process")))]
pub(super) async fn graph_svg(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let process = find(&state, &name)?;
    let svg = oms::graph::to_svg(process, &options(&state, process).await?);
    Ok(([(CONTENT_TYPE, "image/svg+xml")], svg))
}

/// The process as Graphviz DOT, with the number of items in each state.
#[utoipa::path(get, path = "/v1/processes/{name}/graph.dot", tag = "processes",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "Process name")),
    responses((status = 200, description = "Graphviz DOT", body = String, content_type = "text/vnd.graphviz"),
        (status = 404, description = "not_found: no such process")))]
pub(super) async fn graph_dot(
    State(state): State<AppState>,
    _caller: ShopOrAdmin,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let process = find(&state, &name)?;
    let dot = oms::graph::to_dot(process, &options(&state, process).await?);
    Ok(([(CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")], dot))
}
