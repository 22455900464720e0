//! serde's error messages told in the API's words: JSON kinds ("an object", "an integer")
//! instead of Rust types ("struct CreateOrder with 5 elements", "i64").
//!
//! Messages are rewritten after the fact rather than by hand-written `Deserialize` impls
//! for every request type: serde's data errors have a small, fixed grammar
//! (`invalid type: <unexpected>, expected <expected>`), and one place that knows it keeps
//! every request type, present and future, in plain words.

/// The longest piece of the client's own input a message repeats.
const ECHO_MAX: usize = 60;

/// serde_path_to_error's path (`items[0].sku`, `.` for the value itself) as a JSON path
/// under `base` (`$`, or `$.updates[2]` for a batch entry).
pub fn json_path(base: &str, tracked: &str) -> String {
    match tracked {
        "." => base.to_owned(),
        t if t.starts_with('[') => format!("{base}{t}"),
        t => format!("{base}.{t}"),
    }
}

/// Rewrites a serde data error about a JSON value (without serde_json's position suffix).
pub fn data_error(message: &str) -> String {
    let kinds = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    if let Some((unexpected, expected)) = kinds.and_then(|rest| rest.rsplit_once(", expected ")) {
        return format!(
            "must be {}, not {}",
            expected_kind(expected),
            unexpected_kind(unexpected)
        );
    }
    if let Some((len, expected)) = message
        .strip_prefix("invalid length ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        return match expected_kind(expected) {
            "an object" => "must be an object, not an array".to_owned(),
            kind => format!("must be {kind}, not {len} elements"),
        };
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return format!("unknown value {rest}");
    }
    if CHRONO.contains(&message) {
        return format!("must be an RFC 3339 date-time such as 2026-01-31T12:00:00Z ({message})");
    }
    message.to_owned()
}

/// A query or path parameter's problem, as "query parameter `limit` must be an integer".
pub fn parameter_error(kind: &str, name: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown {kind} {rest}");
    }
    let phrase = match message {
        "invalid digit found in string" | "cannot parse integer from empty string" => {
            "must be an integer".to_owned()
        }
        "number too large to fit in target type" | "number too small to fit in target type" => {
            "is out of range for a 64-bit integer".to_owned()
        }
        "provided string was not `true` or `false`" => "must be true or false".to_owned(),
        "invalid float literal" => "must be a number".to_owned(),
        m if m.starts_with("duplicate field") => "is given more than once".to_owned(),
        m => data_error(m),
    };
    if phrase.starts_with("must ") || phrase.starts_with("is ") {
        format!("{kind} `{name}` {phrase}")
    } else {
        format!("{kind} `{name}`: {phrase}")
    }
}

/// What a path parameter of Rust type `type_name` must be.
pub fn rust_type_kind(type_name: &str) -> &'static str {
    match type_name.rsplit("::").next().unwrap_or(type_name) {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "f32" | "f64" => "a number",
        "bool" => "true or false",
        _ => "text",
    }
}

/// chrono's messages for a date-time that does not parse.
const CHRONO: &[&str] = &[
    "input contains invalid characters",
    "premature end of input",
    "trailing input",
    "input is out of range",
    "no possible date and time matching input",
    "input is not enough for unique date and time",
];

fn expected_kind(expected: &str) -> &str {
    let expected = expected.trim();
    if expected.starts_with("struct ")
        || expected.starts_with("internally tagged enum ")
        || expected == "a map"
        || expected == "map"
    {
        return "an object";
    }
    if expected.starts_with("tuple") || expected == "a sequence" || expected == "sequence" {
        return "an array";
    }
    if expected.starts_with("enum ") || expected.starts_with("untagged enum ") {
        return "one of the documented values";
    }
    match expected {
        "a boolean" => "true or false",
        "unit" => "null",
        "any valid JSON value" => "a JSON value",
        e => match rust_type_kind(e) {
            "text" => e,
            kind => kind,
        },
    }
}

fn unexpected_kind(unexpected: &str) -> String {
    let quoted = |prefix: &str| {
        unexpected
            .strip_prefix(prefix)
            .and_then(|v| v.strip_prefix('`'))
            .and_then(|v| v.strip_suffix('`'))
            .map(str::to_owned)
    };
    match unexpected {
        "unit value" => return "null".to_owned(),
        "sequence" => return "an array".to_owned(),
        "map" => return "an object".to_owned(),
        _ => {}
    }
    if let Some(v) = quoted("integer ")
        .or_else(|| quoted("floating point "))
        .or_else(|| quoted("boolean "))
    {
        return echo(&v);
    }
    if let Some(s) = unexpected.strip_prefix("string ") {
        return format!("the string {}", echo(s));
    }
    "a value of another kind".to_owned()
}

/// The client's input, cut short when long.
fn echo(s: &str) -> String {
    if s.chars().count() <= ECHO_MAX {
        s.to_owned()
    } else {
        let cut: String = s.chars().take(ECHO_MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_types_become_json_kinds() {
        assert_eq!(
            data_error("invalid type: sequence, expected struct CreateOrder"),
            "must be an object, not an array"
        );
        assert_eq!(
            data_error("invalid length 0, expected struct CreateOrder with 5 elements"),
            "must be an object, not an array"
        );
        assert_eq!(
            data_error("invalid type: string \"2\", expected i64"),
            "must be an integer, not the string \"2\""
        );
        assert_eq!(
            data_error("invalid type: floating point `1.5`, expected u32"),
            "must be a non-negative integer, not 1.5"
        );
        assert_eq!(
            data_error("invalid type: unit value, expected a map"),
            "must be an object, not null"
        );
        assert_eq!(
            data_error("invalid type: map, expected a sequence"),
            "must be an array, not an object"
        );
        assert_eq!(
            data_error("unknown variant `x`, expected `a` or `b`"),
            "unknown value `x`, expected `a` or `b`"
        );
        assert_eq!(
            data_error("missing field `reference`"),
            "missing field `reference`"
        );
    }

    #[test]
    fn long_input_is_cut() {
        let long = format!("invalid type: string \"{}\", expected i64", "x".repeat(500));
        assert!(data_error(&long).len() < 120, "{}", data_error(&long));
    }

    #[test]
    fn parameters_are_named() {
        assert_eq!(
            parameter_error("query parameter", "limit", "invalid digit found in string"),
            "query parameter `limit` must be an integer"
        );
        assert_eq!(
            parameter_error(
                "query parameter",
                "updated_after",
                "input contains invalid characters"
            ),
            "query parameter `updated_after` must be an RFC 3339 date-time such as \
             2026-01-31T12:00:00Z (input contains invalid characters)"
        );
        assert_eq!(
            parameter_error(
                "query parameter",
                "colour",
                "unknown field `colour`, expected `limit`"
            ),
            "unknown query parameter `colour`, expected `limit`"
        );
        assert_eq!(rust_type_kind("i64"), "an integer");
        assert_eq!(rust_type_kind("alloc::string::String"), "text");
    }
}
