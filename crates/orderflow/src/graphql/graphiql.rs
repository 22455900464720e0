//! GraphiQL at `GET /graphql` (a browser asking for HTML), served from assets embedded in
//! the binary: nothing is fetched from the network. The vendored files and their licences
//! are in `assets/` (graphiql 3.9.0, react and react-dom 18.3.1, from npm).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};

const GRAPHIQL_JS: &[u8] = include_bytes!("assets/graphiql.min.js");
const GRAPHIQL_CSS: &[u8] = include_bytes!("assets/graphiql.min.css");
const REACT_JS: &[u8] = include_bytes!("assets/react.production.min.js");
const REACT_DOM_JS: &[u8] = include_bytes!("assets/react-dom.production.min.js");

/// Where the assets are served; versioned so a browser may cache them for good.
pub(super) const ASSETS: &str = "/graphql/assets/3.9.0";

/// The page: GraphiQL against `/graphql` (queries over HTTP, subscriptions over
/// WebSocket). The bearer token goes into GraphiQL's Headers tab as
/// `{"Authorization": "Bearer <token>"}`; subscriptions send the same headers in their
/// `connection_init`.
pub(super) async fn page() -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>orderflow GraphiQL</title>
<link rel="stylesheet" href="{ASSETS}/graphiql.min.css">
<style>html, body, #graphiql {{ height: 100%; margin: 0; }}</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script src="{ASSETS}/react.production.min.js"></script>
<script src="{ASSETS}/react-dom.production.min.js"></script>
<script src="{ASSETS}/graphiql.min.js"></script>
<script>
  const url = new URL('/graphql', window.location.href);
  const ws = new URL(url);
  ws.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  // The Headers tab, as GraphiQL persists it: read when a subscription connects.
  const headers = () => {{
    try {{ return JSON.parse(localStorage.getItem('graphiql:headers') || '{{}}'); }}
    catch (e) {{ return {{}}; }}
  }};
  const fetcher = GraphiQL.createFetcher({{
    url: url.href,
    subscriptionUrl: ws.href,
    wsConnectionParams: headers,
  }});
  ReactDOM.createRoot(document.getElementById('graphiql')).render(
    React.createElement(GraphiQL, {{
      fetcher,
      defaultEditorToolsVisibility: true,
      defaultHeaders: '{{\n  "Authorization": "Bearer <token>"\n}}',
      shouldPersistHeaders: true,
    }}),
  );
</script>
</body>
</html>
"#
    ))
}

/// One embedded asset by file name.
pub(super) async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "graphiql.min.js" => (GRAPHIQL_JS, "text/javascript"),
        "graphiql.min.css" => (GRAPHIQL_CSS, "text/css"),
        "react.production.min.js" => (REACT_JS, "text/javascript"),
        "react-dom.production.min.js" => (REACT_DOM_JS, "text/javascript"),
        _ => {
            return crate::http::ApiError::NotFound("no such asset".into()).into_response();
        }
    };
    (
        [
            (CONTENT_TYPE, kind),
            (CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}
