//! Cleanup tasks (long deletions worked through in the background): the ones the user can see,
//! and one with its tree of steps, each with its status, attempts and last error; a failed one
//! can be retried.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::Html;
use maud::{Markup, html};

use super::layout::{self, badge, text};
use super::{PageError, SignedIn};
use crate::api::cleanup::{self as api, CleanupTaskPublic, ListQuery};
use crate::app::AppState;

fn when(t: chrono::DateTime<chrono::Utc>) -> Markup {
    layout::time(Some(t.timestamp_millis()))
}

/// `GET /cleanup`.
pub async fn list(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Html<String>, PageError> {
    let page = api::cleanup_page(&state, &signed_in.caller, &ListQuery::default()).await?;
    let roots: Vec<&CleanupTaskPublic> =
        page.data.iter().filter(|t| t.parent_id.is_none()).collect();
    let body = html! {
        h1 { "Cleanup tasks" }
        p.muted { "Deleting a project, or old task records, runs as a tree of small steps in the background: resumable after a restart, retried with backoff." }
        div.scroll { table {
            thead { tr { th { "Started" } th { "What" } th { "Status" } th.num { "Attempts" } th { "Last error" } } }
            tbody { @for t in &roots {
                tr {
                    td { a href={ "/cleanup/" (t.id) } { (when(t.created_at)) } }
                    td { (t.resource_type) " " span.mono { (t.resource_id.get(..8).unwrap_or(&t.resource_id)) } }
                    td { (badge(&t.status)) }
                    td.num { (t.attempts) " / " (t.max_attempts) }
                    td { (text(t.last_error.as_deref())) }
                }
            } }
        } }
        @if roots.is_empty() { p.muted.empty { "No cleanup task." } }
    };
    Ok(layout::plain(
        "Cleanup tasks",
        &signed_in.caller.user_name,
        &signed_in.csrf,
        body,
    ))
}

/// `GET /cleanup/{id}`: the task's tree.
pub async fn tree(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Html<String>, PageError> {
    let all = api::cleanup_tree(&state, &signed_in.caller, id.clone()).await?;
    let mut children: BTreeMap<Option<&str>, Vec<&CleanupTaskPublic>> = BTreeMap::new();
    for t in &all {
        let parent = t
            .parent_id
            .as_deref()
            .filter(|p| all.iter().any(|o| o.id == *p));
        children.entry(parent).or_default().push(t);
    }
    fn branch(
        children: &BTreeMap<Option<&str>, Vec<&CleanupTaskPublic>>,
        parent: Option<&str>,
    ) -> Markup {
        html! {
            ul.tree { @for t in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
                li {
                    details open {
                        summary {
                            (t.resource_type) " " span.mono { (t.resource_id.get(..12).unwrap_or(&t.resource_id)) } " " (badge(&t.status))
                            " " span.muted { (t.attempts) "/" (t.max_attempts) " attempts" }
                            @if let Some(e) = &t.last_error { " " span.error { (e) } }
                            @if t.status == "failed" {
                                form.inline data-api={ "/api/v1/cleanup-tasks/" (t.id) "/retry" } {
                                    button.secondary type="submit" { "Retry" }
                                }
                            }
                        }
                        (branch(children, Some(t.id.as_str())))
                    }
                }
            } }
        }
    }
    let body = html! {
        p.crumbs { a href="/cleanup" { "Cleanup tasks" } " / " span.mono { (id) } }
        h1 { "Cleanup tree" }
        p data-result role="status" {}
        (branch(&children, None))
    };
    Ok(layout::plain(
        "Cleanup tree",
        &signed_in.caller.user_name,
        &signed_in.csrf,
        body,
    ))
}
