//! Schedules: the list, one schedule with its next runs and history (run now), and a form to
//! create one with a live preview of its next five runs in the chosen time zone.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::Html;
use chrono::Utc;
use maud::html;
use serde::Deserialize;

use super::layout::{self, Section, badge, text};
use super::{Page, PageError};
use crate::api::extract::parse_query;
use crate::api::schedules::{self as api, ListQuery};
use crate::app::AppState;
use crate::auth::Viewer;
use crate::error::ApiError;
use crate::role::Role;
use crate::schedules::cron::CronSchedule;

/// Time zones offered first in the form (any IANA name can be typed).
const ZONES: [&str; 8] = [
    "UTC",
    "Europe/London",
    "Europe/Berlin",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
];

/// A time as UTC text.
fn utc(t: Option<chrono::DateTime<Utc>>) -> maud::Markup {
    layout::time(t.map(|t| t.timestamp_millis()))
}

/// `GET /p/{slug}/schedules`.
pub async fn list(
    State(state): State<AppState>,
    page: Page<Viewer>,
) -> Result<Html<String>, PageError> {
    let query: ListQuery = parse_query("")?;
    let list = api::schedule_list(&state, &page.access.project, &query).await?;
    let slug = &page.access.project.slug;
    let admin = page.access.role >= Role::Admin;
    let body = html! {
        h1 { "Schedules" }
        @if admin { p { a.button href={ "/p/" (slug) "/schedules/new" } { "New schedule" } } }
        div.scroll { table {
            thead { tr { th { "Name" } th { "Type" } th { "Cron" } th { "Zone" } th { "Next run (UTC)" } th { "Last" } th { "Enabled" } } }
            tbody { @for s in &list.schedules {
                tr {
                    td { a href={ "/p/" (slug) "/schedules/" (s.id) } { (s.name) } }
                    td { (s.kind) }
                    td.mono { (s.cron_expression) }
                    td { (s.timezone) }
                    td { (utc(s.next_run)) }
                    td { @match &s.last_status { Some(st) => { (badge(st)) }, None => { span.muted { "never ran" } } } }
                    td { @if s.enabled { "yes" } @else { span.muted { "no" } } }
                }
            } }
        } }
        @if list.schedules.is_empty() { p.muted.empty { "No schedule yet." } }
    };
    Ok(layout::page(
        &page.chrome("Schedules", Section::Schedules, None),
        body,
    ))
}

/// `GET /p/{slug}/schedules/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    page: Page<Viewer>,
    Path((slug, id)): Path<(String, String)>,
) -> Result<Html<String>, PageError> {
    let detail = api::schedule_detail(&state, &page.access.project, &id).await?;
    let s = &detail.schedule;
    let admin = page.access.role >= Role::Admin;
    let body = html! {
        p.crumbs { a href={ "/p/" (slug) "/schedules" } { "Schedules" } " / " (s.name) }
        h1 { (s.name) " " @if s.enabled { span.badge.s-succeeded { "enabled" } } @else { span.badge.s-cancelled { "disabled" } } }
        @if admin {
            section.actions {
                form data-api={ "/api/v1/projects/" (slug) "/schedules/" (s.id) "/run" } data-confirm={ "Run " (s.name) " now?" } {
                    button type="submit" { "Run now" }
                }
                p data-result role="status" {}
            }
        }
        section.grid {
            dl {
                dt { "Type" } dd { (s.kind) }
                dt { "Cron" } dd.mono { (s.cron_expression) }
                dt { "Time zone" } dd { (s.timezone) }
                dt { "Created by" } dd { (s.created_by) }
                dt { "Settings" } dd.mono { (serde_json::to_string(&s.config).unwrap_or_default()) }
            }
            div {
                h3 { "Next runs (UTC)" }
                ol.timeline { @for t in &detail.upcoming { li { (utc(Some(*t))) } } }
            }
        }
        section {
            h2 { "History" }
            div.scroll { table {
                thead { tr { th { "Ran (UTC)" } th { "Trigger" } th { "Status" } th.num { "Took" } th { "Commands" } th { "Error" } } }
                tbody { @for run in &detail.history {
                    tr {
                        td { (utc(Some(run.executed_at))) }
                        td { (run.trigger) }
                        td { (badge(run.status.as_str())) }
                        td.num { @match run.duration { Some(ms) => { (ms) " ms" }, None => { "–" } } }
                        td { @for id in &run.command_ids { a.mono href={ "/p/" (slug) "/commands/" (id) } { (id.get(..8).unwrap_or(id)) } " " } }
                        td { (text(run.error.as_deref())) }
                    }
                } }
            } }
            @if detail.history.is_empty() { p.muted { "It has not run yet." } }
        }
    };
    Ok(layout::page(
        &page.chrome(&s.name, Section::Schedules, None),
        body,
    ))
}

/// `GET /p/{slug}/schedules/new` (admins; others see the API's 403 when they post).
pub async fn new(page: Page<Viewer>) -> Result<Html<String>, PageError> {
    let slug = &page.access.project.slug;
    let body = html! {
        p.crumbs { a href={ "/p/" (slug) "/schedules" } { "Schedules" } " / new" }
        h1 { "New schedule" }
        form.schedule data-api={ "/api/v1/projects/" (slug) "/schedules" } data-preview={ "/p/" (slug) "/schedules/preview" } {
            label { "Name" input name="name" required placeholder="nightly cleanup"; }
            label { "Type"
                select name="type" {
                    option value="retention" { "retention: delete finished task records older than N days" }
                    option value="health-check" { "health-check: ping every worker" }
                    option value="stale-cleanup" { "stale-cleanup: drop agents silent for N hours" }
                }
            }
            label { "Cron (minute hour day-of-month month day-of-week)" input.mono name="cronExpression" required value="0 3 * * *"; }
            label { "Time zone"
                input name="timezone" list="zones" value="UTC" required;
                datalist id="zones" { @for z in ZONES { option value=(z) {} } }
            }
            label { "Days to keep (retention) or hours of silence (stale-cleanup)" input name="amount" data-type="int" value="30"; }
            div.preview {
                h3 { "Next five runs" }
                ol data-upcoming {}
                p.error data-preview-error {}
            }
            button type="submit" { "Create" }
        }
        p data-result role="status" {}
    };
    Ok(layout::page(
        &page.chrome("New schedule", Section::Schedules, None),
        body,
    ))
}

/// What the preview is asked.
#[derive(Debug, Deserialize)]
pub struct PreviewQuery {
    cron: String,
    timezone: String,
}

/// `GET /p/{slug}/schedules/preview?cron=&timezone=`: the next five due times, as UTC and as
/// local time in the zone, or the field that is wrong.
pub async fn preview(
    _page: Page<Viewer>,
    Query(q): Query<PreviewQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let schedule = CronSchedule::parse(&q.cron, &q.timezone)
        .map_err(|(field, message)| ApiError::invalid_field(field, message))?;
    let zone = crate::schedules::cron::parse_zone(&q.timezone)
        .map_err(|m| ApiError::invalid_field("timezone", m))?;
    let runs: Vec<serde_json::Value> = schedule
        .upcoming(Utc::now().timestamp_millis(), 5)
        .into_iter()
        .map(|t| {
            serde_json::json!({
                "utc": t.format("%Y-%m-%d %H:%M UTC").to_string(),
                "local": t.with_timezone(&zone).format("%Y-%m-%d %H:%M %Z").to_string(),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "upcoming": runs })))
}
