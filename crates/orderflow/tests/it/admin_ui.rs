//! The admin UI without a browser: login (admin tokens only), the session cookie, pages
//! that need a session, CSRF on every form, the version check of manual events, logout,
//! and a session accepted by a second server on the same database. The browser tests are
//! in `ui-tests/`.

use std::time::Duration;

use orderflow::domain::OrderService;
use orderflow::domain::types::Role;
use orderflow::store::Store;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::{Backend, TestServer, backend_tests, fixture_processes, start, test_config};

backend_tests!(
    login_takes_admin_tokens_only,
    pages_need_a_session,
    forms_without_the_csrf_token_change_nothing,
    a_stale_page_changes_nothing,
    logout_ends_the_session,
    another_server_on_the_database_accepts_the_session
);

/// A browser that follows no redirects and keeps the cookies it is given.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

impl Browser {
    fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        pairs.join("; ")
    }

    fn keep(&mut self, resp: &Response) {
        for header in resp.headers().get_all(SET_COOKIE) {
            let text = header.to_str().unwrap();
            let (pair, attrs) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !attrs.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String, Option<String>) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(resp).await
    }

    async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String, Option<String>) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.finish(resp).await
    }

    async fn finish(&mut self, resp: Response) -> (StatusCode, String, Option<String>) {
        self.keep(&resp);
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().unwrap().to_owned());
        (status, resp.text().await.unwrap(), location)
    }

    /// Logs in with `token`; returns the login answer's status, its Set-Cookie headers and
    /// its body.
    async fn login(&mut self, token: &str) -> (StatusCode, Vec<String>, String) {
        let (status, page, _) = self.get("/admin/login").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let nonce = csrf_in(&page);
        let resp = self
            .http
            .post(format!("{}/admin/login", self.base))
            .header(COOKIE, self.cookie_header())
            .form(&[
                ("csrf", nonce.as_str()),
                ("token", token),
                ("next", "/admin"),
            ])
            .send()
            .await
            .unwrap();
        let set: Vec<String> = resp
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .map(|h| h.to_str().unwrap().to_owned())
            .collect();
        self.keep(&resp);
        let status = resp.status();
        (status, set, resp.text().await.unwrap())
    }

    fn session(&self) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == orderflow::admin::COOKIE)
            .map(|(_, v)| v.as_str())
    }
}

/// The CSRF token of the first form in `page`.
fn csrf_in(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no csrf in {page}"));
    let rest = &page[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn logged_in(s: &TestServer) -> Browser {
    let mut b = Browser::new(&s.base);
    let (status, _, _) = b.login(&s.admin).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(b.session().is_some());
    b
}

async fn order(s: &TestServer, id: i64) -> Value {
    let (status, order) = s.get(&format!("/v1/orders/{id}"), &s.admin).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    order
}

async fn login_takes_admin_tokens_only(b: Backend) {
    let Some(s) = start(b).await else { return };
    for (token, want, says) in [
        (
            s.shop.as_str(),
            StatusCode::FORBIDDEN,
            "only admin clients may log in",
        ),
        (
            s.erp.as_str(),
            StatusCode::FORBIDDEN,
            "only admin clients may log in",
        ),
        ("of_not-a-token", StatusCode::UNAUTHORIZED, "Unknown token"),
        ("", StatusCode::UNAUTHORIZED, "Unknown token"),
    ] {
        let mut browser = Browser::new(&s.base);
        let (status, set, page) = browser.login(token).await;
        assert_eq!(status, want, "{token}");
        assert!(page.contains(says), "{page}");
        assert!(browser.session().is_none(), "{set:?}");
        let (status, _, _) = browser.get("/admin").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
    }

    // Without the login form's cookie (a form posted from another site): refused.
    let mut browser = Browser::new(&s.base);
    let (status, page, _) = browser
        .post("/admin/login", &[("csrf", "guess"), ("token", &s.admin)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert!(browser.session().is_none());

    let mut browser = Browser::new(&s.base);
    let (status, set, _) = browser.login(&s.admin).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = set
        .iter()
        .find(|c| c.starts_with("orderflow_session="))
        .unwrap_or_else(|| panic!("{set:?}"));
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/admin",
        "Max-Age=43200",
    ] {
        assert!(
            session.split("; ").any(|a| a == attr),
            "{attr} in {session}"
        );
    }
    assert!(!session.contains("Secure"), "plain HTTP: {session}");
    // The cookie holds a random id, never the token.
    assert!(!session.contains(&s.admin), "{session}");
    let (status, page, _) = browser.get("/admin").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Dashboard"), "{page}");

    // Behind a TLS proxy the cookie is Secure.
    let mut browser = Browser::new(&s.base);
    let (_, page, _) = browser.get("/admin/login").await;
    let resp = browser
        .http
        .post(format!("{}/admin/login", s.base))
        .header(COOKIE, browser.cookie_header())
        .header("x-forwarded-proto", "https")
        .form(&[
            ("csrf", csrf_in(&page).as_str()),
            ("token", s.admin.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let set = resp.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(set.ends_with("; Secure"), "{set}");
}

async fn pages_need_a_session(b: Backend) {
    let Some(s) = start(b).await else { return };
    let o = s.create_order("UI-1", &[("SKU-A", 1)]).await;
    let (status, update) = s
        .post(
            "/v1/erp/order-updates",
            &s.erp,
            json!({"order_reference": "UI-1", "attributes": {"a": 1}}),
        )
        .await;
    assert!(status.is_success(), "{update}");
    let pages = [
        "/admin".to_owned(),
        "/admin/inbox".to_owned(),
        "/admin/inbox?status=applied&order_reference=UI-1&received_after=2020-01-01T00:00".into(),
        format!("/admin/inbox/{}", update["id"].as_str().unwrap()),
        "/admin/inbox/replay?order_reference=UI-1".into(),
        "/admin/orders".into(),
        "/admin/orders?process=Test01&state=waiting".into(),
        format!("/admin/orders/{}", o["id"]),
        "/admin/processes".into(),
        "/admin/processes/Test01".into(),
    ];
    let mut anonymous = Browser::new(&s.base);
    for page in &pages {
        let (status, _, location) = anonymous.get(page).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
        let want = format!(
            "/admin/login?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("next", page)
                .finish()
        );
        assert_eq!(location.as_deref(), Some(want.as_str()), "{page}");
    }
    let mut admin = logged_in(&s).await;
    for page in &pages {
        let (status, html, _) = admin.get(page).await;
        assert_eq!(status, StatusCode::OK, "{page}: {html}");
        assert!(html.starts_with("<!DOCTYPE html>"), "{page}: {html}");
        assert!(html.contains("Log out"), "{page}");
    }
    // What is not there says so, as a page.
    for (page, want) in [
        ("/admin/orders/999999", StatusCode::NOT_FOUND),
        ("/admin/inbox/no-such-update", StatusCode::NOT_FOUND),
        ("/admin/processes/Nope", StatusCode::NOT_FOUND),
        ("/admin/orders?reference=NOPE-1", StatusCode::NOT_FOUND),
        (
            "/admin/inbox?received_after=yesterday",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("/admin/nothing-here", StatusCode::NOT_FOUND),
    ] {
        let (status, html, _) = admin.get(page).await;
        assert_eq!(status, want, "{page}: {html}");
        assert!(html.contains("<html"), "{page}: {html}");
    }
    // The order search opens the order.
    let (status, _, location) = admin.get("/admin/orders?reference=UI-1").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, Some(format!("/admin/orders/{}", o["id"])));
    // The stylesheet is embedded and needs no session.
    let (status, css, _) = anonymous.get("/admin/assets/admin.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(css.contains("header.top"), "{css}");
}

async fn forms_without_the_csrf_token_change_nothing(b: Backend) {
    let Some(s) = start(b).await else { return };
    let o = s.create_order("UI-1", &[("SKU-A", 1)]).await;
    let id = o["id"].as_i64().unwrap();
    let version = o["version"].as_i64().unwrap().to_string();
    // A dead-end update to retry: a ship for an order that does not exist is parked.
    let (_, parked) = s
        .post(
            "/v1/erp/order-updates",
            &s.erp,
            json!({"order_reference": "UI-404", "event": "ship"}),
        )
        .await;
    let update = parked["id"].as_str().unwrap().to_owned();
    let mut admin = logged_in(&s).await;
    let (_, page, _) = admin.get(&format!("/admin/orders/{id}")).await;
    let csrf = csrf_in(&page);

    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/admin/orders/{id}/events"),
            vec![("event", "pay"), ("version", &version)],
        ),
        (format!("/admin/inbox/{update}/retry"), vec![]),
        (
            "/admin/inbox/replay".into(),
            vec![("order_reference", "UI-404")],
        ),
        ("/admin/logout".into(), vec![]),
    ];
    for (path, fields) in &forms {
        for token in [None, Some("wrong"), Some("")] {
            let mut form = fields.clone();
            if let Some(t) = token {
                form.push(("csrf", t));
            }
            let (status, html, _) = admin.post(path, &form).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path} {token:?}: {html}");
            assert!(html.contains("nothing was changed"), "{html}");
        }
    }
    // Nothing changed: the order, the update, the session.
    let now = order(&s, id).await;
    assert_eq!(now["version"], o["version"]);
    assert_eq!(now["items"][0]["state"], "waiting");
    let (_, u) = s.get(&format!("/v1/admin/inbox/{update}"), &s.admin).await;
    assert!(!u.to_string().contains("operator_retry"), "{u}");
    let (status, _, _) = admin.get("/admin").await;
    assert_eq!(status, StatusCode::OK, "still logged in");

    // A form without a session is refused too, with the right token.
    let mut anonymous = Browser::new(&s.base);
    let (status, _, _) = anonymous
        .post(
            &format!("/admin/orders/{id}/events"),
            &[("event", "pay"), ("version", &version), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // With the token, each form does its work.
    let (status, html, location) = admin
        .post(
            &format!("/admin/orders/{id}/events"),
            &[("event", "pay"), ("version", &version), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    assert_eq!(
        location,
        Some(format!("/admin/orders/{id}?triggered=pay&moved=1"))
    );
    assert_eq!(order(&s, id).await["items"][0]["state"], "paid");
    let (status, _, location) = admin
        .post(
            "/admin/inbox/replay",
            &[("order_reference", "UI-404"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        location.as_deref(),
        Some("/admin/inbox?order_reference=UI-404&replayed=1&matched=1")
    );
    let (_, u) = s.get(&format!("/v1/admin/inbox/{update}"), &s.admin).await;
    assert!(u.to_string().contains("operator_retry"), "{u}");
}

async fn a_stale_page_changes_nothing(b: Backend) {
    let Some(s) = start(b).await else { return };
    let o = s.create_order("UI-1", &[("SKU-A", 1)]).await;
    let id = o["id"].as_i64().unwrap();
    let mut admin = logged_in(&s).await;
    let (_, page, _) = admin.get(&format!("/admin/orders/{id}")).await;
    let shown = o["version"].as_i64().unwrap();
    assert!(
        page.contains(&format!(r#"name="version" value="{shown}""#)),
        "{page}"
    );
    let (status, patched) = s
        .patch(
            &format!("/v1/orders/{id}"),
            &s.shop,
            json!({"version": shown, "attributes": {"x": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let (status, html, _) = admin
        .post(
            &format!("/admin/orders/{id}/events"),
            &[
                ("event", "pay"),
                ("version", &shown.to_string()),
                ("csrf", &csrf_in(&page)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(html.contains("changed meanwhile"), "{html}");
    assert!(
        html.contains(&format!("it is now at version {}", shown + 1)),
        "{html}"
    );
    let now = order(&s, id).await;
    assert_eq!(now["items"][0]["state"], "waiting");
    assert_eq!(now["version"], shown + 1);
    // An event that does not apply: 409 on the order page, nothing moved.
    let (_, page, _) = admin.get(&format!("/admin/orders/{id}")).await;
    let (status, html, _) = admin
        .post(
            &format!("/admin/orders/{id}/events"),
            &[
                ("event", "ship"),
                ("version", &(shown + 1).to_string()),
                ("csrf", &csrf_in(&page)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(
        html.contains("applies to none of the selected items"),
        "{html}"
    );
    // Only manual events: a timeout event is not triggered from the UI.
    let (status, html, _) = admin
        .post(
            &format!("/admin/orders/{id}/events"),
            &[
                ("event", "expire"),
                ("version", &(shown + 1).to_string()),
                ("csrf", &csrf_in(&page)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert_eq!(order(&s, id).await["items"][0]["state"], "waiting");
}

async fn logout_ends_the_session(b: Backend) {
    let Some(s) = start(b).await else { return };
    let mut admin = logged_in(&s).await;
    let stolen = admin.session().unwrap().to_owned();
    let (_, page, _) = admin.get("/admin").await;
    let resp = admin
        .http
        .post(format!("{}/admin/logout", s.base))
        .header(COOKIE, admin.cookie_header())
        .form(&[("csrf", csrf_in(&page))])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/admin/login");
    let cleared = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        cleared.starts_with("orderflow_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // The old cookie no longer works: the session is gone from the database.
    let mut replay = Browser::new(&s.base);
    replay
        .cookies
        .push((orderflow::admin::COOKIE.to_owned(), stolen));
    let (status, _, location) = replay.get("/admin").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.unwrap().starts_with("/admin/login"));

    // A new token for the client ends its sessions too.
    let mut admin = logged_in(&s).await;
    orderflow::auth::reissue_client(&s.store, "admin", Role::Admin, false)
        .await
        .unwrap();
    let (status, _, _) = admin.get("/admin").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

async fn another_server_on_the_database_accepts_the_session(b: Backend) {
    let Some(s) = start(b).await else { return };
    let mut admin = logged_in(&s).await;
    // A second server process on the same database (PostgreSQL: any number of them).
    let config = test_config(&s.database_url);
    let processes = fixture_processes(&config, oms::Registry::new());
    let store = Store::open(&s.database_url).await.unwrap();
    let service = OrderService::new(store, std::sync::Arc::new(processes));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let mut second = config.clone();
    second.worker.in_process = false;
    let task =
        tokio::spawn(async move { orderflow::app::run(service, listener, &second, token).await });
    admin.base = other;
    let (status, html, _) = admin.get("/admin/inbox").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Log out"));
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
