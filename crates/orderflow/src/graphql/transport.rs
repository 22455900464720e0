//! `/graphql` over HTTP and WebSocket: `POST` runs a query (or a bounded batch of them)
//! for the bearer token's client; `GET` with a WebSocket upgrade runs subscriptions
//! (graphql-transport-ws, and the older graphql-ws); a plain `GET` serves GraphiQL.

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{BatchRequest, BatchResponse, Data};
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Request, State, WebSocketUpgrade};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, UPGRADE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::error::{code, to_graphql, with_code};
use super::{MAX_BATCH, OrderflowSchema, graphiql};
use crate::http::extract::Caller;
use crate::http::{ApiError, AppState};

/// The `/graphql` routes over `state`.
pub fn router(state: AppState) -> Router {
    let schema = super::schema(state.clone());
    Router::new()
        .route("/graphql", get(get_graphql).post(post_graphql))
        .route(
            &format!("{}/{{file}}", graphiql::ASSETS),
            get(graphiql::asset),
        )
        .layer(Extension(schema))
        .with_state(state)
}

/// Runs a query, or a batch (a JSON array) of at most [`MAX_BATCH`], as the caller. A
/// request without a valid token is refused whole, with REST's status (401, 429).
#[tracing::instrument(name = "graphql", skip_all, fields(client))]
async fn post_graphql(
    Extension(schema): Extension<OrderflowSchema>,
    caller: Result<Caller, ApiError>,
    body: Bytes,
) -> Response {
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return refuse(e),
    };
    tracing::Span::current().record("client", caller.name.as_str());
    let batch: BatchRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        // As REST answers a body that is not JSON, or JSON of the wrong shape.
        Err(e) if e.is_syntax() || e.is_eof() => {
            return refuse(ApiError::MalformedJson {
                message: format!("the body is not valid JSON: {e}"),
                line: e.line(),
                column: e.column(),
            });
        }
        Err(e) => {
            return refuse(ApiError::InvalidRequest {
                message: format!(
                    "the body must be a GraphQL request ({{\"query\": ...}}) or an array \
                     of them: {e}"
                ),
                path: Some("$".into()),
            });
        }
    };
    if let BatchRequest::Batch(requests) = &batch
        && requests.len() > MAX_BATCH
    {
        let message = format!(
            "a batch holds at most {MAX_BATCH} operations, this one has {}",
            requests.len()
        );
        return refused(
            StatusCode::BAD_REQUEST,
            with_code(code::BATCH_TOO_LARGE, message),
        );
    }
    let mut response = schema.execute_batch(batch.data(caller)).await;
    match &mut response {
        BatchResponse::Single(r) => label_limits(r),
        BatchResponse::Batch(rs) => rs.iter_mut().for_each(label_limits),
    }
    GraphQLResponse(response).into_response()
}

/// A WebSocket upgrade runs subscriptions; anything else gets GraphiQL.
async fn get_graphql(
    State(state): State<AppState>,
    Extension(schema): Extension<OrderflowSchema>,
    req: Request,
) -> Response {
    let (mut parts, _) = req.into_parts();
    if !parts.headers.contains_key(UPGRADE) {
        return graphiql::page().await.into_response();
    }
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &()).await {
        Ok(p) => p,
        Err(status) => return status.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    // A token on the upgrade request (non-browser clients); else in `connection_init`.
    let from_header = if parts.headers.contains_key(AUTHORIZATION) {
        match Caller::from_request_parts(&mut parts, &state).await {
            Ok(c) => Some(c),
            Err(e) => return refuse(e),
        }
    } else {
        None
    };
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            GraphQLWebSocket::new(stream, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let caller = match from_header {
                        Some(c) => c,
                        None => from_init(&state, &payload).await?,
                    };
                    let mut data = Data::default();
                    data.insert(caller);
                    Ok(data)
                })
                .serve()
        })
}

/// The caller named by `connection_init`'s `Authorization` (`{"Authorization": "Bearer
/// <token>"}`, as GraphiQL sends its headers).
async fn from_init(state: &AppState, payload: &Value) -> async_graphql::Result<Caller> {
    let token = payload.as_object().and_then(|o| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.as_str())
    });
    let mut request = axum::http::Request::builder();
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, token);
    }
    let (mut parts, ()) = request
        .body(())
        .map_err(|_| {
            to_graphql(ApiError::Unauthenticated(
                "Authorization must be Bearer <token>",
            ))
        })?
        .into_parts();
    Caller::from_request_parts(&mut parts, state)
        .await
        .map_err(to_graphql)
}

/// Gives the limit errors of async-graphql their codes.
fn label_limits(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let code = match error.message.as_str() {
            "Query is nested too deep." => code::DEPTH_LIMIT,
            "Query is too complex." => code::COMPLEXITY_LIMIT,
            _ => continue,
        };
        error
            .extensions
            .get_or_insert_with(Default::default)
            .set("code", code);
    }
}

/// A request refused before it ran, with REST's status for the error.
fn refuse(e: ApiError) -> Response {
    let (status, _) = e.parts();
    let retry_after = match &e {
        ApiError::RateLimited { .. } => e.parts().1["error"]["retry_after"].as_u64(),
        _ => None,
    };
    let mut response = refused(status, to_graphql(e));
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn refused(status: StatusCode, error: async_graphql::Error) -> Response {
    let body = json!({
        "errors": [{"message": error.message, "extensions": error.extensions}],
    });
    (status, Json(body)).into_response()
}
