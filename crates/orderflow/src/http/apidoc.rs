//! The answers every operation shares, added to the generated OpenAPI document in one
//! place instead of on each handler: what the extractors can refuse (401, 403, 429 for a
//! protected operation; 400, 413, 415, 422 for a JSON body; 422 for parameters), and the
//! error envelope as the body of every error answer.

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{PartialSchema, ToSchema};

use super::error::ErrorBody;

/// Adds the shared error answers to every operation of `doc`, and the envelope's schema.
pub(super) fn add_error_responses(doc: &mut OpenApi) {
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
pub(super) fn set_max_batch(doc: &mut OpenApi, max_batch: usize) {
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

/// Names the loaded processes and their events as the values `process` and `event` may
/// take (others are 422 `unknown_process` and `unknown_event`), so clients, and
/// generated tests, see what this server accepts.
pub(super) fn set_loaded_names(doc: &mut OpenApi, processes: &[String], events: &[String]) {
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for (schema, property, values) in [
        ("CreateOrder", "process", processes),
        ("OrderUpdate", "event", events),
        ("TriggerEvent", "event", events),
    ] {
        if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema)
            && let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property)
            && !values.is_empty()
        {
            let mut allowed: Vec<serde_json::Value> =
                values.iter().map(|v| v.as_str().into()).collect();
            if matches!(&field.schema_type, SchemaType::Array(types) if types.contains(&Type::Null))
            {
                allowed.push(serde_json::Value::Null);
            }
            field.enum_values = Some(allowed);
        }
    }
}

/// What [`check_text`](crate::domain::types) accepts for references, SKUs and event
/// names: no control characters, no whitespace at either end (lengths are separate).
const TEXT_PATTERN: &str =
    r"^[^\s\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]*[^\s\x00-\x1F\x7F-\x9F])?$";

/// States [`TEXT_PATTERN`] on the text values that must match it; utoipa takes only
/// literal patterns, so it is set here once rather than on each field.
pub(super) fn set_text_patterns(doc: &mut OpenApi) {
    if let Some(components) = doc.components.as_mut() {
        for (schema, property) in [
            ("CreateOrder", "reference"),
            ("CreateItem", "sku"),
            ("OrderUpdate", "order_reference"),
            ("OrderUpdate", "event"),
            ("TriggerEvent", "event"),
        ] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema)
                && let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(property)
                && field.enum_values.is_none()
            {
                field.pattern = Some(TEXT_PATTERN.to_owned());
            }
        }
    }
    for (path, name) in [
        ("/v1/orders/by-reference/{reference}", "reference"),
        ("/v1/reservations/{sku}", "sku"),
    ] {
        let parameter = doc
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| item.get.as_mut())
            .and_then(|op| op.parameters.as_mut())
            .and_then(|ps| ps.iter_mut().find(|p| p.name == name));
        if let Some(p) = parameter
            && let Some(RefOr::T(Schema::Object(schema))) = p.schema.as_mut()
        {
            schema.pattern = Some(TEXT_PATTERN.to_owned());
        }
    }
}

/// Links from the answers that create an order or an update to the operations on it:
/// documentation for people, and the paths schemathesis's stateful phase follows. See
/// [`to_json`] for how they are written.
pub(super) fn add_links(doc: &mut OpenApi) {
    let order = [
        ("GetOrder", "get_order", "id", "$response.body#/id"),
        ("PatchOrder", "patch_order", "id", "$response.body#/id"),
        ("TriggerEvent", "trigger_event", "id", "$response.body#/id"),
        ("OrderHistory", "order_history", "id", "$response.body#/id"),
        (
            "GetOrderByReference",
            "get_order_by_reference",
            "reference",
            "$response.body#/reference",
        ),
    ];
    let update = [
        ("GetUpdate", "get_update", "id", "$response.body#/id"),
        (
            "GetInboxUpdate",
            "get_inbox_update",
            "id",
            "$response.body#/id",
        ),
        ("RetryUpdate", "retry_update", "id", "$response.body#/id"),
    ];
    for (path, status, links) in [
        ("/v1/orders", "201", &order[..]),
        ("/v1/erp/order-updates", "202", &update[..]),
    ] {
        let response = doc
            .paths
            .paths
            .get_mut(path)
            .and_then(|item| item.post.as_mut())
            .and_then(|op| op.responses.responses.get_mut(status));
        if let Some(RefOr::T(response)) = response {
            for (name, operation, parameter, value) in links {
                let link = LinkBuilder::new()
                    .operation_id(*operation)
                    .parameter(*parameter, *value)
                    .build();
                response.links.insert((*name).to_owned(), RefOr::T(link));
            }
        }
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
        add(
            "408",
            "body_timeout: the body did not arrive within the server's body read timeout",
        );
    }
    add(
        "503",
        "timeout: no answer within the server's request timeout (or not_ready from /readyz)",
    );
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

/// The document as served. utoipa 5 writes a link's fields in snake_case
/// (`operation_id`); OpenAPI spells them in camelCase (`operationId`).
pub(super) fn to_json(doc: &OpenApi) -> serde_json::Value {
    let mut json = serde_json::to_value(doc).unwrap_or_default();
    fix_links(&mut json);
    json
}

fn fix_links(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(links)) = map.get_mut("links") {
                for link in links.values_mut() {
                    if let serde_json::Value::Object(link) = link {
                        for (snake, camel) in [
                            ("operation_id", "operationId"),
                            ("operation_ref", "operationRef"),
                            ("request_body", "requestBody"),
                        ] {
                            if let Some(v) = link.remove(snake) {
                                link.insert(camel.to_owned(), v);
                            }
                        }
                    }
                }
            }
            map.values_mut().for_each(fix_links);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fix_links),
        _ => {}
    }
}
