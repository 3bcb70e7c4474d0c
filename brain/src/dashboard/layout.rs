//! The page shell every dashboard page shares (head, navigation, sign-out) and the small
//! formatting pieces the pages repeat.

use axum::response::Html;
use maud::{DOCTYPE, Markup, html};

use crate::role::Role;

/// The version in asset URLs: a new build is a new URL, so assets can be cached for a year.
pub const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The project overview.
    Overview,
    /// Tasks.
    Tasks,
    /// Commands.
    Commands,
    /// Agents, workers and queues.
    Agents,
    /// Schedules.
    Schedules,
    /// The audit log.
    Audit,
    /// Members and tokens.
    Access,
}

/// What the shell shows around a project page.
pub struct Chrome<'a> {
    /// Page title (before " · Taskward").
    pub title: &'a str,
    /// The signed-in user.
    pub user: &'a str,
    /// The project's slug and display name.
    pub project: (&'a str, &'a str),
    /// The user's role in it (decides which actions are shown).
    pub role: Role,
    /// The session's CSRF token, for the script's API calls and the sign-out form.
    pub csrf: &'a str,
    /// The current section.
    pub section: Section,
    /// The change counter the page was rendered at; `Some` makes the page live.
    pub watermark: Option<&'a str>,
}

fn head(title: &str, csrf: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="csrf-token" content=(csrf);
            title { (title) " · Taskward" }
            link rel="stylesheet" href={ "/assets/app.css?v=" (ASSET_VERSION) };
            script src={ "/assets/app.js?v=" (ASSET_VERSION) } defer {}
        }
    }
}

/// A page of a project.
pub fn page(chrome: &Chrome, body: Markup) -> Html<String> {
    let (slug, name) = chrome.project;
    let nav = [
        (Section::Overview, "Overview", format!("/p/{slug}")),
        (Section::Tasks, "Tasks", format!("/p/{slug}/tasks")),
        (Section::Commands, "Commands", format!("/p/{slug}/commands")),
        (Section::Agents, "Agents", format!("/p/{slug}/agents")),
        (
            Section::Schedules,
            "Schedules",
            format!("/p/{slug}/schedules"),
        ),
        (Section::Audit, "Audit", format!("/p/{slug}/audit")),
        (Section::Access, "Members", format!("/p/{slug}/members")),
    ];
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(chrome.title, chrome.csrf))
                body data-role=(chrome.role.as_str()) {
                    header.top {
                        a.brand href="/" { "Taskward" }
                        a.project href={ "/p/" (slug) } title="Switch project: all projects" { (name) }
                        nav.sections {
                            @for (section, label, href) in &nav {
                                a href=(href) aria-current=[(chrome.section == *section).then_some("page")] { (label) }
                            }
                        }
                        (user_menu(chrome.user, Some(chrome.role), chrome.csrf))
                    }
                    main id="main"
                        data-live-url=[chrome.watermark.map(|_| format!("/p/{slug}/live"))]
                        data-watermark=[chrome.watermark] {
                        (body)
                    }
                }
            }
        }
        .into_string(),
    )
}

/// A page outside any project (the project list).
pub fn plain(title: &str, user: &str, csrf: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title, csrf))
                body {
                    header.top {
                        a.brand href="/" { "Taskward" }
                        (user_menu(user, None, csrf))
                    }
                    main id="main" { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A page without a signed-in user (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                (head(title, ""))
                body.bare { main id="main" { (body) } }
            }
        }
        .into_string(),
    )
}

fn user_menu(user: &str, role: Option<Role>, csrf: &str) -> Markup {
    html! {
        form.user method="post" action="/logout" {
            span.who { (user) @if let Some(role) = role { " · " span.role { (role.as_str()) } } }
            a href="/tokens" { "API tokens" }
            input type="hidden" name="csrf" value=(csrf);
            button.link type="submit" { "Sign out" }
        }
    }
}

/// A time (ms since epoch) as UTC text, or a dash.
pub fn time(ms: Option<i64>) -> Markup {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => html! {
            time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
                (t.format("%Y-%m-%d %H:%M:%S"))
            }
        },
        None => html! { span.muted { "–" } },
    }
}

/// A task or command state as a coloured badge.
pub fn badge(state: &str) -> Markup {
    html! { span class={ "badge s-" (state) } { (state) } }
}

/// Text or a dash.
pub fn text(value: Option<&str>) -> Markup {
    match value {
        Some(v) if !v.is_empty() => html! { (v) },
        _ => html! { span.muted { "–" } },
    }
}
