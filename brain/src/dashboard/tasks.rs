//! The task list (filters and search in the URL, keyset pages, exports) and a task's page
//! (arguments, result, traceback, timeline, tree, retry with edited kwargs, cancel). Both read
//! through the API's own functions.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Section, badge, text, time};
use super::{Page, PageError};
use crate::api::extract::parse_query;
use crate::api::tasks::{find_task, task_tree};
use crate::app::AppState;
use crate::auth::Viewer;
use crate::role::Role;
use crate::store::agents::Agent;
use crate::store::tasks::TaskRow;
use crate::tasks::list::{ListQuery, read_page};

/// The states offered in the filter.
const STATES: [&str; 7] = [
    "received",
    "started",
    "succeeded",
    "failed",
    "retried",
    "cancelled",
    "lost",
];

/// The filter form's current values (the same parameters the API takes).
#[derive(Debug, Default, Deserialize)]
struct FormValues {
    state: Option<String>,
    name: Option<String>,
    queue: Option<String>,
    worker: Option<String>,
    search: Option<String>,
    limit: Option<String>,
}

/// The query string with `cursor` replaced (or removed).
fn with_cursor(query: &str, cursor: Option<&str>) -> String {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k != "cursor")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = form_urlencoded::Serializer::new(String::new());
    out.extend_pairs(pairs);
    if let Some(cursor) = cursor {
        out.append_pair("cursor", cursor);
    }
    out.finish()
}

/// `GET /p/{slug}/tasks`.
pub async fn list(
    State(state): State<AppState>,
    page: Page<Viewer>,
    RawQuery(raw): RawQuery,
) -> Result<Response, PageError> {
    let project = &page.access.project;
    let query_text = super::without_empty(raw.as_deref());
    if raw.as_deref().unwrap_or_default() != query_text {
        // Shareable URLs carry only the filters in use.
        let target = format!("/p/{}/tasks?{query_text}", project.slug);
        return Ok(Redirect::to(target.trim_end_matches('?')).into_response());
    }
    let query: ListQuery = parse_query(&query_text)?;
    let values: FormValues = serde_urlencoded::from_str(&query_text).unwrap_or_default();
    let plan = query.plan(&project.id)?;
    let slot = page.access.caller.read_slot(&state)?;
    let (rows, next_cursor) = read_page(
        &state.store,
        state.settings.query_budget,
        state.keys.confirm_secret(),
        &project.id,
        &query,
        plan,
    )
    .await?;
    drop(slot);
    let project_id = project.id.clone();
    let (watermark, agents) = state
        .store
        .read("dashboard_watermark", move |conn| {
            Ok((
                super::live::watermark(conn, &project_id)?,
                crate::store::agents::list(conn, &project_id)?,
            ))
        })
        .await?;
    let slug = &project.slug;
    let can_retry = page.access.role >= Role::Operator && !agents.is_empty();
    let export = |format: &str| {
        let base = with_cursor(&query_text, None);
        let sep = if base.is_empty() { "" } else { "&" };
        format!("/api/v1/projects/{slug}/tasks?{base}{sep}format={format}")
    };
    let can_delete = page.access.role >= Role::Admin;
    let body = html! {
        h1 { "Tasks" }
        (filter_form(slug, &values))
        div.toolbar {
            span.muted { "Export this list: " }
            a href=(export("csv")) { "CSV" } " · "
            a href=(export("xlsx")) { "Excel" } " · "
            a href=(export("json")) { "JSON" }
            @if can_delete {
                button.danger type="button" data-bulk-delete={ "/api/v1/projects/" (slug) "/tasks/bulk-delete" } disabled { "Delete selected" }
            }
            span data-result {}
        }
        @if can_retry { (bulk_retry_form(slug, &values, &agents)) }
        div.scroll {
            table.tasks {
                thead { tr {
                    @if can_delete { th { input type="checkbox" data-select-all aria-label="Select all"; } }
                    th { "Task" } th { "Name" } th { "State" } th { "Queue" } th { "Worker" } th { "Received" } th.num { "Runtime" }
                } }
                tbody {
                    @for row in &rows {
                        tr {
                            @if can_delete { td { input type="checkbox" data-select=(row.task_id) aria-label="Select"; } }
                            td.mono { a href=(task_href(slug, row)) { (row.task_id) } }
                            td { (text(row.name.as_deref())) }
                            td { (badge(&row.state)) }
                            td { (text(row.queue.as_deref())) }
                            td { (text(row.worker_name.as_deref())) }
                            td { (time(row.received_at)) }
                            td.num { @match row.runtime_ms { Some(ms) => { (ms) " ms" }, None => { span.muted { "–" } } } }
                        }
                    }
                }
            }
        }
        @if rows.is_empty() { p.muted.empty { "No task matches these filters." } }
        nav.pager {
            @if query_text.contains("cursor=") {
                a.button.secondary href={ "/p/" (slug) "/tasks?" (with_cursor(&query_text, None)) } { "First page" }
            }
            @if let Some(next) = &next_cursor {
                a.button href={ "/p/" (slug) "/tasks?" (with_cursor(&query_text, Some(next))) } rel="next" { "Next page" }
            }
        }
    };
    Ok(layout::page(
        &page.chrome("Tasks", Section::Tasks, Some(&watermark)),
        body,
    )
    .into_response())
}

/// The filters of the tasks page (a GET form, so the URL carries them).
fn filter_form(slug: &str, values: &FormValues) -> Markup {
    html! {
    form.filters method="get" action={ "/p/" (slug) "/tasks" } {
        label { "State"
            select name="state" {
                option value="" { "any" }
                @for s in STATES {
                    option value=(s) selected[values.state.as_deref() == Some(s)] { (s) }
                }
            }
        }
        label { "Name" input name="name" value=[values.name.as_deref()] placeholder="app.tasks.add"; }
        label { "Queue" input name="queue" value=[values.queue.as_deref()]; }
        label { "Worker" input name="worker" value=[values.worker.as_deref()]; }
        label.wide { "Search" input type="search" name="search" value=[values.search.as_deref()] placeholder="name, queue or worker contains…"; }
        label { "Per page"
            select name="limit" {
                @for n in ["25", "100", "500"] {
                    option value=(n) selected[values.limit.as_deref().unwrap_or("100") == n] { (n) }
                }
            }
        }
        button type="submit" { "Filter" }
        a.button.secondary href={ "/p/" (slug) "/tasks" } { "Clear" }
    }
    }
}

/// Bulk retry of what the state, name and queue filters select, with a dry-run count first.
fn bulk_retry_form(slug: &str, values: &FormValues, agents: &[Agent]) -> Markup {
    html! {
    details.more {
        summary { "Retry every task matching the state, name and queue filters…" }
        form.bulk-retry
            data-api={ "/api/v1/projects/" (slug) "/commands/bulk-retry" }
            data-dry-run={ "/api/v1/projects/" (slug) "/commands/bulk-retry/dry-run" } {
            input type="hidden" name="state" value=[values.state.as_deref()];
            input type="hidden" name="name" value=[values.name.as_deref()];
            input type="hidden" name="queue" value=[values.queue.as_deref()];
            label { "Through agent"
                select name="agent_id" { @for a in agents { option value=(a.id) { (a.name) } } }
            }
            label { "At most" input type="number" name="max" data-type="int" value="100" min="1" max="10000"; }
            label.inline { input type="checkbox" name="include_retried"; " Include tasks an earlier retry already ran again" }
            button.secondary type="button" data-count { "Count first" }
            button type="submit" disabled { "Retry them" }
            p data-result role="status" {}
        }
    }

    }
}

fn task_href(slug: &str, row: &TaskRow) -> String {
    let engine: String = form_urlencoded::byte_serialize(row.engine.as_bytes()).collect();
    let id: String = form_urlencoded::byte_serialize(row.task_id.as_bytes()).collect();
    format!("/p/{slug}/tasks/{engine}/{id}")
}

/// Stored JSON text, pretty-printed (or as stored when it is not JSON).
fn pretty(stored: Option<&str>) -> Option<String> {
    stored.map(|s| {
        serde_json::from_str::<serde_json::Value>(s)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| s.to_owned())
    })
}

/// `GET /p/{slug}/tasks/{engine}/{task_id}`.
pub async fn detail(
    State(state): State<AppState>,
    page: Page<Viewer>,
    Path((_slug, engine, task_id)): Path<(String, String, String)>,
) -> Result<Html<String>, PageError> {
    let project = &page.access.project;
    let task = find_task(&state, &project.id, engine, task_id).await?;
    let (family, truncated) = task_tree(&state, &project.id, &task).await?;
    let watermark = super::live::current(&state, &project.id).await?;
    let slug = &project.slug;
    let can_act = page.access.role >= Role::Operator;
    let kwargs = pretty(task.kwargs.as_deref());
    let body = html! {
        p.crumbs { a href={ "/p/" (slug) "/tasks" } { "Tasks" } " / " span.mono { (task.task_id) } }
        h1 { (text(task.name.as_deref())) " " (badge(&task.state)) }
        @if can_act {
            @match &task.agent_id {
                Some(agent_id) => {
                    section.actions {
                        form.retry data-api={ "/api/v1/projects/" (slug) "/commands/retry-task" } {
                            input type="hidden" name="agent_id" value=(agent_id);
                            input type="hidden" name="engine" value=(task.engine);
                            input type="hidden" name="task_id" value=(task.task_id);
                            label { "Override kwargs (a JSON object, merged into the task's kwargs)"
                                textarea name="override_kwargs" data-json="object" rows="4" spellcheck="false" { "{}" }
                            }
                            button type="submit" { "Retry" }
                        }
                        form.cancel data-api={ "/api/v1/projects/" (slug) "/commands/cancel-task" } data-confirm="Cancel this task?" {
                            input type="hidden" name="agent_id" value=(agent_id);
                            input type="hidden" name="engine" value=(task.engine);
                            input type="hidden" name="task_id" value=(task.task_id);
                            button.secondary type="submit" { "Cancel" }
                        }
                        p data-result role="status" {}
                    }
                }
                None => { p.muted { "No agent reported this task, so no command can reach it." } }
            }
        }
        section.grid {
            dl {
                dt { "Task id" } dd.mono { (task.task_id) }
                dt { "Engine" } dd { (task.engine) }
                dt { "Queue" } dd { (text(task.queue.as_deref())) }
                dt { "Worker" } dd { (text(task.worker_name.as_deref())) }
                dt { "Retries" } dd { (task.retry_count) }
                dt { "Runtime" } dd { @match task.runtime_ms { Some(ms) => { (ms) " ms" }, None => { "–" } } }
                dt { "ETA" } dd { (time(task.eta)) }
            }
            ol.timeline {
                li { span.label { "Received" } (time(task.received_at)) }
                li { span.label { "Started" } (time(task.started_at)) }
                li { span.label { "Finished" } (time(task.finished_at)) }
                li { span.label { "Last change" } (time(Some(task.updated_at))) }
            }
        }
        section {
            h2 { "Arguments" }
            @if let Some(why) = &task.args_unavailable { p.warn { "Arguments unavailable: " (why) } }
            h3 { "args" } pre { (pretty(task.args.as_deref()).unwrap_or_else(|| "–".into())) }
            h3 { "kwargs" } pre data-kwargs { (kwargs.clone().unwrap_or_else(|| "–".into())) }
        }
        @if task.result.is_some() { section { h2 { "Result" } pre { (task.result.as_deref().unwrap_or_default()) } } }
        @if task.exception.is_some() || task.traceback.is_some() {
            section {
                h2 { "Exception" }
                p.error { (text(task.exception.as_deref())) }
                @if let Some(tb) = &task.traceback { pre.traceback { (tb) } }
            }
        }
        section {
            h2 { "Tree" }
            @if truncated { p.warn { "Showing the first 500 tasks of this tree (truncated)." } }
            (tree(slug, &family, &task.task_id))
        }
    };
    Ok(layout::page(
        &page.chrome(&task.task_id, Section::Tasks, Some(&watermark)),
        body,
    ))
}

/// The family as nested, collapsible lists under their parents; a task whose parent is not in
/// the list (cut by the cap, or deleted) is shown at the top level.
fn tree(slug: &str, family: &[TaskRow], current: &str) -> Markup {
    let ids: std::collections::HashSet<&str> = family.iter().map(|t| t.task_id.as_str()).collect();
    let mut children: BTreeMap<Option<&str>, Vec<&TaskRow>> = BTreeMap::new();
    for task in family {
        let parent = task
            .parent_task_id
            .as_deref()
            .filter(|p| ids.contains(p) && *p != task.task_id);
        children.entry(parent).or_default().push(task);
    }
    fn branch(
        slug: &str,
        children: &BTreeMap<Option<&str>, Vec<&TaskRow>>,
        parent: Option<&str>,
        current: &str,
        depth: usize,
    ) -> Markup {
        html! {
            ul.tree {
                @for task in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
                    @let node = html! {
                        a href=(task_href(slug, task)) aria-current=[(task.task_id == current).then_some("true")] {
                            span.mono { (task.task_id) }
                        }
                        " " (text(task.name.as_deref())) " " (badge(&task.state))
                    };
                    li {
                        @if children.contains_key(&Some(task.task_id.as_str())) && depth < 64 {
                            details open {
                                summary { (node) }
                                (branch(slug, children, Some(task.task_id.as_str()), current, depth + 1))
                            }
                        } @else {
                            (node)
                        }
                    }
                }
            }
        }
    }
    branch(slug, &children, None, current, 0)
}
