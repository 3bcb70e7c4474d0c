//! Agents, their workers and queues: online state, last heartbeat, pool, queues, depths, and
//! (for admins) the worker and queue commands. Purging opens a dialog that shows the depth the
//! confirm token binds and wants the queue's name typed. "Add agent" (admins) registers one and
//! shows, once, the `taskward-agent run` line that enrolls it on a worker host.

use axum::extract::State;
use axum::response::Html;
use maud::{Markup, html};

use super::layout::{self, Section, text, time};
use super::{Page, PageError};
use crate::app::AppState;
use crate::auth::Viewer;
use crate::role::Role;
use crate::store::agents::{self, Agent};
use crate::store::commands::{self, QueueDepth};
use crate::store::tasks::{self, WorkerRow, WorkerStatus};
use taskward_shared::protocol::BrokerHealth;

struct AgentView {
    agent: Agent,
    workers: Vec<WorkerRow>,
    queues: Vec<QueueDepth>,
    /// Whether the agent is connected now (its workers' liveness is unknown otherwise).
    linked: bool,
    /// Its broker as the connected agent last reported it.
    broker: Option<BrokerHealth>,
}

/// `GET /p/{slug}/agents`.
pub async fn list(
    State(state): State<AppState>,
    page: Page<Viewer>,
) -> Result<Html<String>, PageError> {
    let project = &page.access.project;
    let project_id = project.id.clone();
    let (mut views, watermark) = state
        .store
        .read("dashboard_agents", move |conn| {
            let workers = tasks::workers_of_project(conn, &project_id)?;
            let mut views = Vec::new();
            for agent in agents::list(conn, &project_id)? {
                let queues = commands::queue_depths(conn, &agent.id)?;
                views.push(AgentView {
                    workers: workers
                        .iter()
                        .filter(|w| w.agent_id == agent.id)
                        .cloned()
                        .collect(),
                    queues,
                    linked: false,
                    broker: None,
                    agent,
                });
            }
            Ok((views, super::live::watermark(conn, &project_id)?))
        })
        .await?;
    for view in &mut views {
        view.linked = state.hub.is_online(&view.agent.id);
        view.broker = state.hub.broker(&view.agent.id);
    }
    let slug = &project.slug;
    let admin = page.access.role >= Role::Admin;
    let api = format!("/api/v1/projects/{slug}");
    let body = html! {
        h1 { "Agents, workers and queues" }
        @if admin { div.toolbar { button type="button" data-add-agent { "Add agent…" } } }
        @if views.is_empty() { p.muted.empty { "No agent in this project yet: an admin adds one here and runs the line it shows on a worker host." } }
        @for view in &views { (agent_section(view, &api, admin)) }
        p data-result role="status" {}
        dialog id="purge-dialog" {
            form method="dialog" {
                h2 { "Purge queue " span data-queue-name {} }
                p data-depth {}
                label { "Type the queue name to confirm" input name="typed" autocomplete="off"; }
                label.check { input type="checkbox" name="force"; " Force: purge whatever the depth now (logged as critical)" }
                p.error data-dialog-error {}
                div.row {
                    button.secondary value="cancel" formnovalidate { "Keep the messages" }
                    button.danger type="button" data-confirm-purge disabled { "Purge" }
                }
            }
        }
        @if admin { (add_agent_dialog(&api, &state.settings.agent_broker)) }
    };
    Ok(layout::page(
        &page.chrome("Agents", Section::Agents, Some(&watermark)),
        body,
    ))
}

/// The "Add agent" dialog: a name, then the one-line command that enrolls and runs the agent
/// (the script fills in the brain's URL as the browser reaches it, the token from the API's
/// reply, and `broker`, the `serve --agent-broker`).
fn add_agent_dialog(api: &str, broker: &str) -> Markup {
    html! {
    dialog id="add-agent-dialog" data-api={ (api) "/agents" } data-agent-broker=(broker) {
        form data-add-agent-form {
            h2 { "Add an agent" }
            div data-step="name" {
                label { "Name (one agent per worker host)" input name="name" required autocomplete="off" placeholder="worker-host-1"; }
                label.check { input type="checkbox" name="preserve"; " Preserve: never removed by stale cleanup" }
            }
            div data-step="command" hidden {
                p { "Run this on the worker's host. The token in it is shown only now and enrolls once, until " span data-expires {} "." }
                pre id="agent-run-command" data-run-command {}
            }
            p.error data-dialog-error {}
            div.row {
                button.secondary type="button" data-close-dialog { "Close" }
                button type="submit" data-step="name" { "Create" }
                button type="button" data-step="command" data-copy="agent-run-command" hidden { "Copy" }
            }
        }
    }
    }
}

/// One agent: its workers (with their controls for admins), its queues (with the purge
/// dialog's trigger) and its rate-limit form.
fn agent_section(view: &AgentView, api: &str, admin: bool) -> Markup {
    html! {
    section.agent {
        h2 {
            (view.agent.name) " " span.muted { (text(view.agent.hostname.as_deref())) }
            @if view.agent.enrolled_at.is_none() { " " span.badge.s-issued title="Registered; its host has not run the enrollment line yet." { "not enrolled" } }
            @if view.broker.as_ref().is_some_and(|b| view.linked && !b.up) { " " span.badge.s-failed data-agent-degraded title="Connected, but it cannot reach its broker: no events, no commands." { "degraded" } }
        }
        @if let Some(b) = view.broker.as_ref().filter(|b| view.linked && !b.up) {
            p.error data-broker-error {
                "Broker unreachable since " (time(Some(b.since_ms))) ": " (text(b.error.as_deref()))
            }
        }
        p.muted {
            "Last seen " (time(view.agent.last_seen_at))
            @if view.agent.dropped_events > 0 { " · " span.warn { (view.agent.dropped_events) " events dropped" } }
            @if view.agent.rejected_events > 0 {
                " · " span.warn title=(text(view.agent.last_rejection.as_deref())) {
                    (view.agent.rejected_events) " updates refused by the brain"
                }
            }
        }
        h3 { "Workers" }
        @if view.workers.is_empty() { p.muted { "No worker reported." } } @else {
            div.scroll { table {
                thead { tr { th { "Worker" } th { "State" } th { "Heartbeat" } th { "Pool" } th { "Queues" } @if admin { th { "Actions" } } } }
                tbody { @for w in &view.workers {
                    tr {
                        td.mono { (w.name) }
                        td { (worker_badge(w.status(view.linked))) }
                        td { (time(w.last_heartbeat_at)) }
                        td { (text(w.pool.as_deref())) @if let Some(n) = w.concurrency { " × " (n) } }
                        td { (queues_of(w)) }
                        @if admin { td { (worker_actions(api, &view.agent.id, &w.name)) } }
                    }
                } }
            } }
        }
        h3 { "Queues" }
        @if view.queues.is_empty() { p.muted { "No queue depth reported." } } @else {
            div.scroll { table {
                thead { tr { th { "Queue" } th.num { "Depth" } th { "Observed" } @if admin { th { "Actions" } } } }
                tbody { @for q in &view.queues {
                    tr {
                        td.mono { (q.queue) }
                        td.num { (q.depth) }
                        td { (time(Some(q.observed_at))) }
                        @if admin { td {
                            button.danger type="button"
                                data-purge={ (api) "/commands/purge-queue" }
                                data-queues={ (api) "/agents/" (view.agent.id) "/queues" }
                                data-agent=(view.agent.id) data-queue=(q.queue) { "Purge…" }
                        } }
                    }
                } }
            } }
        }
        @if admin {
            details.more {
                summary { "Rate limit a task" }
                form data-api={ (api) "/commands/rate-limit" } {
                    input type="hidden" name="agent_id" value=(view.agent.id);
                    label { "Task name" input name="task_name" required; }
                    label { "Rate" input name="rate" required placeholder="10/m"; }
                    label { "Worker (empty: all)" input name="worker_name"; }
                    button type="submit" { "Set rate limit" }
                }
            }
        }
    }
    }
}

/// A worker's liveness as a badge; `unknown` says why.
fn worker_badge(status: WorkerStatus) -> Markup {
    match status {
        WorkerStatus::Online => html! { span.badge.s-succeeded { "online" } },
        WorkerStatus::Offline => html! { span.badge.s-lost { "offline" } },
        WorkerStatus::Unknown => {
            html! { span.badge.s-unknown title="Its agent is not connected: nobody watches this worker." { "unknown" } }
        }
    }
}

fn queues_of(worker: &WorkerRow) -> Markup {
    let names: Vec<String> = worker
        .queues
        .as_deref()
        .and_then(|q| serde_json::from_str(q).ok())
        .unwrap_or_default();
    text(Some(&names.join(", ")))
}

fn worker_actions(api: &str, agent_id: &str, worker: &str) -> Markup {
    html! {
        div.actions {
            form.inline data-api={ (api) "/commands/restart-worker" } data-confirm={ "Restart " (worker) "?" } {
                input type="hidden" name="agent_id" value=(agent_id);
                input type="hidden" name="worker_name" value=(worker);
                button.secondary type="submit" { "Restart" }
            }
            form.inline data-api={ (api) "/commands/pool-resize" } {
                input type="hidden" name="agent_id" value=(agent_id);
                input type="hidden" name="worker_name" value=(worker);
                input type="number" name="delta" data-type="int" value="1" min="-64" max="64" aria-label="Processes to add (negative: remove)";
                button.secondary type="submit" { "Resize pool" }
            }
            form.inline data-api={ (api) "/commands/add-consumer" } {
                input type="hidden" name="agent_id" value=(agent_id);
                input type="hidden" name="worker_name" value=(worker);
                input name="queue" required placeholder="queue" aria-label="Queue";
                button.secondary type="submit" { "Consume" }
            }
            form.inline data-api={ (api) "/commands/cancel-consumer" } {
                input type="hidden" name="agent_id" value=(agent_id);
                input type="hidden" name="worker_name" value=(worker);
                input name="queue" required placeholder="queue" aria-label="Queue";
                button.secondary type="submit" { "Stop consuming" }
            }
        }
    }
}
