//! The answers every operation shares, added to the generated OpenAPI document in one
//! place instead of on each handler: what the extractors can refuse (401, 403, 429 for a
//! protected operation; 400, 413, 415, 422 for a JSON body; 422 for parameters), and the
//! error envelope as the body of every error answer.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use super::error::ErrorBody;

/// Adds the shared error answers to every operation of `doc`, and the envelope's schema.
pub fn add_error_responses(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    let mut schemas = vec![(ErrorBody::name().into_owned(), ErrorBody::schema())];
    ErrorBody::schemas(&mut schemas);
    components.schemas.extend(schemas);
    for item in doc.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for op in ops.into_iter().flatten() {
            add_to(op);
        }
    }
}

/// States the configured `[erp] max_batch` as `maxItems` of a batch's `updates`.
pub fn set_max_batch(doc: &mut OpenApi, max_batch: usize) {
    let batch = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("UpdateBatch"));
    if let Some(RefOr::T(Schema::Object(batch))) = batch
        && let Some(RefOr::T(Schema::Array(updates))) = batch.properties.get_mut("updates")
    {
        updates.max_items = Some(max_batch);
    }
}

fn add_to(op: &mut Operation) {
    let protected = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = op.request_body.is_some();
    let has_params = op.parameters.iter().flatten().any(|p| {
        matches!(
            p.parameter_in,
            ParameterIn::Path | ParameterIn::Query | ParameterIn::Header
        )
    });
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| RefOr::T(Response::new(description)));
    };
    if protected {
        add(
            "401",
            "unauthenticated: no, malformed or unknown bearer token (or bad_signature on a \
             signed ERP request)",
        );
        add(
            "403",
            "forbidden: the client's role may not use this operation",
        );
    }
    if has_body {
        add(
            "400",
            "malformed_json: the body is not JSON; `line` and `column` point at the problem",
        );
        add(
            "413",
            "payload_too_large: the body is larger than the configured limit (`limit`)",
        );
        add(
            "415",
            "unsupported_media_type: the body is not sent as application/json",
        );
    }
    if has_body || has_params {
        add(
            "422",
            "invalid_request: a field, parameter or header is invalid; `path` names it",
        );
    }
    if protected && !op.responses.responses.contains_key("429") {
        let retry_after = HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
            .description(Some("Seconds to wait before the next request"))
            .build();
        let response = ResponseBuilder::new()
            .description("rate_limited: over the client's rate limit")
            .header("retry-after", retry_after)
            .build();
        op.responses
            .responses
            .insert("429".into(), RefOr::T(response));
    }
    for (status, response) in &mut op.responses.responses {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let (true, RefOr::T(response)) = (is_error, response)
            && response.content.is_empty()
        {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                .build();
            response
                .content
                .insert("application/json".to_owned(), content);
        }
    }
}
