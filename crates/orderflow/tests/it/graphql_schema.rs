//! GraphQL's limits (depth, complexity, batch size), the checked-in schema against the
//! code and against introspection, and the offline GraphiQL page.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::graphql::{code, gql};
use crate::support::{Backend, backend_tests, start};

backend_tests!(
    depth_complexity_and_batch_limits,
    introspection_matches_schema_file,
    graphiql_is_served_offline,
);

async fn depth_complexity_and_batch_limits(b: Backend) {
    let Some(s) = start(b).await else { return };
    // Depth: 16 levels of selection, one more than allowed.
    let mut deep = String::from("name");
    for _ in 0..11 {
        deep = format!("ofType {{ {deep} }}");
    }
    let too_deep = format!("{{ __schema {{ types {{ fields {{ type {{ {deep} }} }} }} }} }}");
    let (status, body) = gql(&s, &s.shop, &too_deep, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(code(&body), "DEPTH_LIMIT_EXCEEDED", "{body}");
    let fits = too_deep.replacen("ofType { ", "", 1).replacen(" }", "", 1);
    let (_, body) = gql(&s, &s.shop, &fits, json!({})).await;
    assert!(body["errors"].is_null(), "{fits}: {body}");

    // Complexity: a page costs its size times its selection.
    let page = |first: u32| {
        format!(
            "{{ orders(first: {first}) {{ edges {{ cursor node {{ id reference process version \
             states skus createdAt updatedAt }} }} }} }}"
        )
    };
    let (_, body) = gql(&s, &s.shop, &page(50), json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let (_, body) = gql(&s, &s.shop, &page(500), json!({})).await;
    assert_eq!(code(&body), "COMPLEXITY_LIMIT_EXCEEDED", "{body}");
    assert!(body["data"].is_null(), "nothing ran: {body}");
    // Costs add up over the whole query: aliases do not get around the limit.
    let one = "a: orders(first: 300) { nodes { id } }";
    let (_, body) = gql(&s, &s.shop, &format!("{{ {one} }}"), json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let two = format!("{{ {one} {} }}", one.replacen("a:", "b:", 1));
    let (_, body) = gql(&s, &s.shop, &two, json!({})).await;
    assert_eq!(code(&body), "COMPLEXITY_LIMIT_EXCEEDED", "{body}");

    // Batches: at most 10 operations.
    let one = json!({"query": "{ processes { name } }"});
    let (status, body) = s
        .post("/graphql", &s.shop, json!(vec![one.clone(); 10]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().map(Vec::len), Some(10), "{body}");
    assert!(body[9]["errors"].is_null(), "{body}");
    let (status, body) = s.post("/graphql", &s.shop, json!(vec![one; 11])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "BATCH_TOO_LARGE", "{body}");
    // A body that is not a GraphQL request gets REST's codes.
    let (status, body) = s.post("/graphql", &s.shop, json!({"query": 5})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&body), "INVALID_REQUEST", "{body}");
    let resp = s
        .http
        .post(format!("{}/graphql", s.base))
        .bearer_auth(&s.shop)
        .header("content-type", "application/json")
        .body("{\"query\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "MALFORMED_JSON", "{body}");
    s.stop().await;
}

/// The introspection query GraphiQL sends (graphql-js `getIntrospectionQuery`, with
/// input value deprecation): within the depth and complexity limits.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args(includeDeprecated: true) { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description
    args(includeDeprecated: true) { ...InputValue }
    type { ...TypeRef }
    isDeprecated deprecationReason
  }
  inputFields(includeDeprecated: true) { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue {
  name description type { ...TypeRef } defaultValue isDeprecated deprecationReason
}
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}
"#;

async fn introspection_matches_schema_file(b: Backend) {
    let Some(s) = start(b).await else { return };
    let (_, body) = gql(&s, &s.shop, INTROSPECTION, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let schema = &body["data"]["__schema"];
    assert_eq!(schema["queryType"]["name"], "Query");
    assert_eq!(schema["subscriptionType"]["name"], "Subscription");
    let file = include_str!("../../schema.graphql");
    let mut checked = 0;
    for t in schema["types"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        if name.starts_with("__") {
            continue;
        }
        let keyword = match t["kind"].as_str().unwrap() {
            "OBJECT" => "type",
            "INPUT_OBJECT" => "input",
            "ENUM" => "enum",
            "SCALAR" => "scalar",
            other => panic!("unexpected kind {other}"),
        };
        let members: Vec<&str> = ["fields", "inputFields", "enumValues"]
            .iter()
            .filter_map(|k| t[*k].as_array())
            .flatten()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        if keyword == "scalar" {
            // Built-in scalars are not printed.
            let builtin = ["String", "Int", "Float", "Boolean", "ID"].contains(&name);
            assert!(
                builtin || file.contains(&format!("scalar {name}\n")),
                "{name}"
            );
            continue;
        }
        let block = sdl_block(file, keyword, name)
            .unwrap_or_else(|| panic!("schema.graphql has no {keyword} {name}"));
        assert_eq!(
            block, members,
            "{keyword} {name} differs from schema.graphql"
        );
        checked += 1;
    }
    assert!(checked > 20, "only {checked} types");
    s.stop().await;
}

/// The member names of `keyword name { ... }` in SDL, in order.
fn sdl_block<'a>(sdl: &'a str, keyword: &str, name: &str) -> Option<Vec<&'a str>> {
    let head = format!("{keyword} {name} {{\n");
    let start = if sdl.starts_with(&head) {
        0
    } else {
        sdl.find(&format!("\n{head}"))?
    };
    let body = &sdl[start..];
    let body = &body[body.find('{')? + 1..body.find("\n}")?];
    let mut in_doc = false;
    let mut members = Vec::new();
    for line in body.lines() {
        let line = line.trim();
        if line == "\"\"\"" {
            in_doc = !in_doc;
            continue;
        }
        if in_doc || line.is_empty() || line.starts_with('"') {
            continue;
        }
        let end = line.find([':', '(']).unwrap_or(line.len());
        members.push(line[..end].trim());
    }
    Some(members)
}

#[test]
fn schema_file_is_current() {
    let current = orderflow::graphql::sdl();
    let file = include_str!("../../schema.graphql");
    assert!(
        current == file,
        "crates/orderflow/schema.graphql differs from the schema the code serves; \
         regenerate it with `cargo run -- graphql schema > crates/orderflow/schema.graphql`"
    );
}

async fn graphiql_is_served_offline(b: Backend) {
    let Some(s) = start(b).await else { return };
    let page = s
        .http
        .get(format!("{}/graphql", s.base))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("GraphiQL"), "{html}");
    // Every script and stylesheet is served by the binary itself.
    let assets: Vec<&str> = html
        .split(['"', '\''])
        .filter(|p| p.starts_with("/graphql/assets/"))
        .collect();
    assert_eq!(assets.len(), 4, "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    for path in assets {
        let resp = s
            .http
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(resp.bytes().await.unwrap().len() > 5_000, "{path}");
    }
    let missing = s
        .http
        .get(format!("{}/graphql/assets/3.9.0/nope.js", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    s.stop().await;
}
