//! The project switcher (every project the user can see) and a project's overview: the last
//! day's tasks per hour and state, failure rate, workers online, queue depths, dropped events
//! and commands in flight.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use maud::html;

use super::layout::{self, Section};
use super::{Page, PageError, SignedIn};
use crate::app::AppState;
use crate::auth::Viewer;
use crate::store::{agents, commands, now_ms, projects, tasks};

/// `GET /`: the projects the user can see, with their role in each.
pub async fn index(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Response, PageError> {
    let (user_id, site_admin) = (
        signed_in.caller.user_id.clone(),
        signed_in.caller.site_admin,
    );
    let visible = state
        .store
        .read("dashboard_projects", move |conn| {
            projects::list_visible(conn, &user_id, site_admin)
        })
        .await?;
    Ok(layout::plain(
        "Projects",
        &signed_in.caller.user_name,
        &signed_in.csrf,
        html! {
            h1 { "Projects" }
            @if visible.is_empty() {
                p.muted { "You are not a member of any project yet: ask an admin to add you." }
            }
            p.muted { a href="/cleanup" { "Cleanup tasks" } " · " a href="/tokens" { "Your API tokens" } }
            ul.cards {
                @for (project, role) in &visible {
                    li {
                        a href={ "/p/" (project.slug) } {
                            strong { (project.name) }
                            span.muted { (project.slug) " · " (role.as_str()) }
                        }
                    }
                }
            }
        },
    )
    .into_response())
}

/// What the overview shows.
struct Overview {
    activity: Vec<(i64, String, i64)>,
    workers: Vec<tasks::WorkerRow>,
    queues: Vec<(String, commands::QueueDepth)>,
    dropped: i64,
    in_flight: i64,
    watermark: String,
}

/// Hours of activity the overview charts.
const HOURS: i64 = 24;

/// `GET /p/{slug}`.
pub async fn overview(
    State(state): State<AppState>,
    page: Page<Viewer>,
) -> Result<Html<String>, PageError> {
    let project_id = page.access.project.id.clone();
    let since = (now_ms() / 3_600_000 - (HOURS - 1)) * 3_600_000;
    let data = state
        .store
        .read("dashboard_overview", move |conn| {
            let agent_rows = agents::list(conn, &project_id)?;
            let mut queues = Vec::new();
            for agent in &agent_rows {
                for depth in commands::queue_depths(conn, &agent.id)? {
                    queues.push((agent.name.clone(), depth));
                }
            }
            Ok(Overview {
                activity: tasks::activity(conn, &project_id, since)?,
                workers: tasks::workers_of_project(conn, &project_id)?,
                queues,
                dropped: agent_rows.iter().map(|a| a.dropped_events).sum(),
                in_flight: commands::count_in_flight(conn, &project_id)?,
                watermark: super::live::watermark(conn, &project_id)?,
            })
        })
        .await?;
    let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
    let mut by_hour: BTreeMap<i64, (i64, i64)> = (0..HOURS)
        .map(|h| (since + h * 3_600_000, (0, 0)))
        .collect();
    for (hour, state, n) in &data.activity {
        *by_state.entry(state.as_str()).or_default() += n;
        let slot = by_hour.entry(*hour).or_default();
        slot.0 += n;
        if state == "failed" {
            slot.1 += n;
        }
    }
    let finished = by_state.get("succeeded").copied().unwrap_or(0)
        + by_state.get("failed").copied().unwrap_or(0);
    let failure_rate = (finished > 0)
        .then(|| by_state.get("failed").copied().unwrap_or(0) as f64 * 100.0 / finished as f64);
    let peak = by_hour.values().map(|(n, _)| *n).max().unwrap_or(0).max(1);
    let online = data
        .workers
        .iter()
        .filter(|w| w.status(state.hub.is_online(&w.agent_id)) == tasks::WorkerStatus::Online)
        .count();
    let project = &page.access.project;
    Ok(layout::page(
        &page.chrome(&project.name, Section::Overview, Some(&data.watermark)),
        html! {
            h1 { (project.name) }
            section.stats {
                div.stat { span.label { "Tasks, last 24 h" } span.value { (by_state.values().sum::<i64>()) } }
                div.stat { span.label { "Failure rate" } span.value {
                    @match failure_rate { Some(r) => { (format!("{r:.1} %")) }, None => { "–" } }
                } }
                div.stat { span.label { "Workers online" } span.value { (online) " / " (data.workers.len()) } }
                div.stat { span.label { "Commands in flight" } span.value { a href={ "/p/" (project.slug) "/commands" } { (data.in_flight) } } }
                div.stat { span.label { "Dropped events" } span.value.warn[data.dropped > 0] { (data.dropped) } }
            }
            section {
                h2 { "Tasks per state, last 24 h" }
                ul.states {
                    @for (state, n) in &by_state {
                        li { a href={ "/p/" (project.slug) "/tasks?state=" (state) } { (layout::badge(state)) " " (n) } }
                    }
                    @if by_state.is_empty() { li.muted { "No task received in the last 24 hours." } }
                }
                div.chart role="img" aria-label="Tasks received per hour, failed in red" {
                    @for (hour, (n, failed)) in &by_hour {
                        @let title = format!("{}: {n} tasks, {failed} failed", chrono::DateTime::from_timestamp_millis(*hour).map(|t| t.format("%H:00").to_string()).unwrap_or_default());
                        div.bar title=(title) {
                            div.total data-h=(step(*n, peak)) {}
                            div.failed data-h=(step(*failed, peak)) {}
                        }
                    }
                }
            }
            section {
                h2 { "Queues" }
                @if data.queues.is_empty() { p.muted { "No queue depth reported yet." } } @else {
                    div.scroll { table {
                        thead { tr { th { "Queue" } th { "Agent" } th.num { "Depth" } th { "Observed" } } }
                        tbody { @for (agent, q) in &data.queues {
                            tr { td { (q.queue) } td { (agent) } td.num { (q.depth) } td { (layout::time(Some(q.observed_at))) } }
                        } }
                    } }
                }
            }
        },
    ))
}

/// A bar's height in steps of 5 % (the style sheet has a rule per step: no inline styles
/// under the content security policy).
fn step(n: i64, peak: i64) -> i64 {
    let percent = n * 100 / peak.max(1);
    if n > 0 {
        ((percent + 4) / 5 * 5).max(5)
    } else {
        0
    }
}
