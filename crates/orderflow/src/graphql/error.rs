//! REST's errors in GraphQL's shape: the same stable code, upper case, in
//! `extensions.code`, and the same details in camelCase (`currentVersion`, `path`, ...).

use async_graphql::{Error, ErrorExtensionValues, Value as GqlValue};
use serde_json::Value;

use crate::http::ApiError;

/// `extensions.code` of an error this module raises itself (REST has no twin for them).
pub mod code {
    /// The query nests deeper than the depth limit.
    pub const DEPTH_LIMIT: &str = "DEPTH_LIMIT_EXCEEDED";
    /// The query asks for more than the complexity limit.
    pub const COMPLEXITY_LIMIT: &str = "COMPLEXITY_LIMIT_EXCEEDED";
    /// A batch holds more operations than allowed.
    pub const BATCH_TOO_LARGE: &str = "BATCH_TOO_LARGE";
}

/// The GraphQL error for an API error; a 500 stays opaque (`INTERNAL`) and is logged with
/// its cause, as in REST.
pub(super) fn to_graphql(e: ApiError) -> Error {
    let (_, body) = e.parts();
    let Some(Value::Object(detail)) = body.get("error").cloned() else {
        return Error::new("internal error");
    };
    let mut message = String::new();
    let mut extensions = ErrorExtensionValues::default();
    for (key, value) in detail {
        match key.as_str() {
            "message" => message = value.as_str().unwrap_or_default().to_owned(),
            "code" => extensions.set(
                "code",
                value.as_str().unwrap_or("internal").to_ascii_uppercase(),
            ),
            _ => extensions.set(camel_case(&key), gql_value(value)),
        }
    }
    Error {
        message,
        source: None,
        extensions: Some(extensions),
    }
}

/// An error of this module's own (limits), with its code.
pub(super) fn with_code(code: &str, message: impl Into<String>) -> Error {
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    Error {
        message: message.into(),
        source: None,
        extensions: Some(extensions),
    }
}

/// Anything REST maps to an [`ApiError`] maps here the same way.
pub(super) trait IntoGraphql<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T, E: Into<ApiError>> IntoGraphql<T> for Result<T, E> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| to_graphql(e.into()))
    }
}

fn gql_value(value: Value) -> GqlValue {
    GqlValue::from_json(value).unwrap_or(GqlValue::Null)
}

/// `current_version` → `currentVersion`.
fn camel_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::DomainError;

    #[test]
    fn codes_are_rests_in_upper_case_with_camel_case_details() {
        let e = to_graphql(ApiError::Domain(DomainError::VersionConflict {
            current: 7,
        }));
        let ext = e.extensions.unwrap();
        assert_eq!(ext.get("code"), Some(&GqlValue::from("VERSION_CONFLICT")));
        assert_eq!(ext.get("currentVersion"), Some(&GqlValue::from(7)));
        let e = to_graphql(ApiError::InvalidRequest {
            message: "bad".into(),
            path: Some("$.x".into()),
        });
        assert_eq!(e.message, "bad");
        let ext = e.extensions.unwrap();
        assert_eq!(ext.get("code"), Some(&GqlValue::from("INVALID_REQUEST")));
        assert_eq!(ext.get("path"), Some(&GqlValue::from("$.x")));
    }

    #[test]
    fn internal_errors_stay_opaque() {
        let e = to_graphql(ApiError::Internal("secret detail".into()));
        assert_eq!(e.message, "internal error");
        assert_eq!(
            e.extensions.unwrap().get("code"),
            Some(&GqlValue::from("INTERNAL"))
        );
    }

    #[test]
    fn snake_case_becomes_camel_case() {
        assert_eq!(camel_case("current_version"), "currentVersion");
        assert_eq!(camel_case("path"), "path");
        assert_eq!(camel_case("update_id"), "updateId");
    }
}
