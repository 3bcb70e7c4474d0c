//! Who may do what: a project's members (admins add, change and remove them) and the signed-in
//! user's own API tokens (create, shown once; revoke). Both read through the API's handlers and
//! act through the API.

use axum::extract::State;
use axum::response::Html;
use maud::html;

use super::layout::{self, Section, time};
use super::{Page, PageError, SignedIn};
use crate::api::{members, tokens};
use crate::app::AppState;
use crate::auth::Viewer;
use crate::role::Role;

/// `GET /p/{slug}/members`.
pub async fn members(
    State(state): State<AppState>,
    page: Page<Viewer>,
) -> Result<Html<String>, PageError> {
    let list = members::member_list(&state, &page.access.project.id).await?;
    let project = &page.access.project;
    let slug = &project.slug;
    let admin = page.access.role >= Role::Admin;
    let api = format!("/api/v1/projects/{slug}/members");
    let body = html! {
        h1 { "Members" }
        p.muted { "Viewers read everything in the project; operators also retry and cancel tasks; admins also manage members and agents and run destructive commands." }
        div.scroll { table {
            thead { tr { th { "User" } th { "Role" } th { "Since" } @if admin { th { "Actions" } } } }
            tbody { @for m in &list.items {
                tr {
                    td { (m.user) }
                    td { (m.role.as_str()) }
                    td { (time(Some(m.created_at.timestamp_millis()))) }
                    @if admin { td {
                        form.inline data-api={ (api) "/" (m.user) } data-method="DELETE" data-confirm={ "Remove " (m.user) " from the project?" } {
                            button.secondary type="submit" { "Remove" }
                        }
                    } }
                }
            } }
        } }
        @if admin {
            h2 { "Add a member, or change a role" }
            form.filters.add-member data-api=(api) {
                label { "User name" input name="user" required autocomplete="off"; }
                label { "Role"
                    select name="role" {
                        option value="viewer" { "viewer" }
                        option value="operator" { "operator" }
                        option value="admin" { "admin" }
                    }
                }
                button type="submit" { "Save" }
            }
        }
        p data-result role="status" {}
    };
    Ok(layout::page(
        &page.chrome("Members", Section::Access, None),
        body,
    ))
}

/// `GET /tokens`: the signed-in user's API tokens.
pub async fn tokens(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> Result<Html<String>, PageError> {
    let list = tokens::token_list(&state, &signed_in.caller.user_id).await?;
    let body = html! {
        h1 { "Your API tokens" }
        p.muted { "A token acts as you on the REST API: " code { "Authorization: Bearer tw_…" } ". Only its hash is stored, so it is shown once, when it is created." }
        div.scroll { table {
            thead { tr { th { "Name" } th { "Starts with" } th { "Created" } th { "Expires" } th { "Last used" } th { "State" } th {} } }
            tbody { @for t in &list.items {
                tr {
                    td { (t.name) }
                    td.mono { (t.prefix) "…" }
                    td { (time(Some(t.created_at.timestamp_millis()))) }
                    td { (time(t.expires_at.map(|e| e.timestamp_millis()))) }
                    td { (time(t.last_used_at.map(|e| e.timestamp_millis()))) }
                    td { @if t.revoked_at.is_some() { span.badge.s-cancelled { "revoked" } } @else { span.badge.s-succeeded { "active" } } }
                    td { @if t.revoked_at.is_none() {
                        form.inline data-api={ "/api/v1/tokens/" (t.id) } data-method="DELETE" data-confirm={ "Revoke " (t.name) "? Programs using it stop working." } {
                            button.secondary type="submit" { "Revoke" }
                        }
                    } }
                }
            } }
        } }
        h2 { "Create a token" }
        form.filters data-api="/api/v1/tokens" {
            label { "Name" input name="name" required placeholder="deploy script"; }
            label { "Expires in (empty: never)" input name="expires_in" placeholder="30d"; }
            button type="submit" { "Create" }
        }
        p data-result role="status" {}
        p { a href="/" { "Back to projects" } }
    };
    Ok(layout::plain(
        "API tokens",
        &signed_in.caller.user_name,
        &signed_in.csrf,
        body,
    ))
}
