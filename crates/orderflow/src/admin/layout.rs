//! The page shell (header, navigation, logout) and the small pieces every page uses.

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::session::Session;
use crate::inbox::model::UpdateStatus;

/// The sections of the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Nav {
    Dashboard,
    Inbox,
    Orders,
    Processes,
}

const SECTIONS: [(Nav, &str, &str); 4] = [
    (Nav::Dashboard, "/admin", "Dashboard"),
    (Nav::Inbox, "/admin/inbox", "Inbox"),
    (Nav::Orders, "/admin/orders", "Orders"),
    (Nav::Processes, "/admin/processes", "Processes"),
];

/// A message shown above a page's content.
pub(super) enum Flash {
    Done(String),
    Warning(String),
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · orderflow admin" }
            link rel="stylesheet" href="/admin/assets/admin.css";
        }
    }
}

/// A page of the UI for a logged-in admin.
pub(super) fn page(
    title: &str,
    nav: Nav,
    session: &Session,
    flash: Option<Flash>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/admin" { "orderflow" }
                    nav {
                        @for (section, href, label) in SECTIONS {
                            a href=(href) aria-current=[(section == nav).then_some("page")] { (label) }
                        }
                    }
                    form.logout method="post" action="/admin/logout" {
                        (csrf(session))
                        span.who { (session.client) }
                        button.link type="submit" { "Log out" }
                    }
                }
                main {
                    h1 { (title) }
                    @match flash {
                        Some(Flash::Done(text)) => p.flash.done role="status" { (text) },
                        Some(Flash::Warning(text)) => p.flash.warning role="alert" { (text) },
                        None => {},
                    }
                    (body)
                }
            }
        }
    }
}

/// A page without navigation: login, and errors.
pub(super) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { a.brand href="/admin" { "orderflow" } }
                main.narrow {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// An error or notice page with a way back.
pub(super) fn message(title: &str, text: &str) -> Markup {
    bare(
        title,
        html! {
            p.flash.warning role="alert" { (text) }
            p { a href="/admin" { "Back to the dashboard" } }
        },
    )
}

/// The session's CSRF token as a hidden form field.
pub(super) fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// An instant, in UTC to the second.
pub(super) fn time(t: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S")) }
    }
}

/// A duration in seconds as people read it: `42 s`, `3 min 5 s`, `2 h 10 min`, `3 d 4 h`.
pub(super) fn age(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86400, s % 86400 / 3600),
    }
}

/// An update's status as a coloured label.
pub(super) fn status(status: UpdateStatus) -> Markup {
    html! { span class={ "badge " (status.as_str()) } { (status.as_str()) } }
}

/// JSON, indented, in a scrollable block.
pub(super) fn json(value: &Value) -> Markup {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    html! { pre.json { (text) } }
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_read_like_people_say_them() {
        assert_eq!(age(0.4), "0 s");
        assert_eq!(age(59.0), "59 s");
        assert_eq!(age(185.0), "3 min 5 s");
        assert_eq!(age(7800.0), "2 h 10 min");
        assert_eq!(age(273_600.0), "3 d 4 h");
    }
}
