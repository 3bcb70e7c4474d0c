//! Reading commands: a project's list in the shared grammar (the API's list and the
//! dashboard's commands page read through [`read_page`]).

use std::time::Duration;

use serde::Deserialize;
use taskward_shared::command::CommandKind;

use crate::query::entities::COMMANDS;
use crate::query::filter::{Filter, Op, Operand, Scalar};
use crate::query::page::{Plan, parse_limit, parse_time};
use crate::refusal::Refusal;
use crate::store::Store;
use crate::store::commands::{self, CommandRecord, CommandStatus};

/// Largest page of the commands list.
pub const MAX_LIMIT: i64 = 5000;
/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;

/// Query of the commands list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Issued at or after (RFC 3339).
    pub since: Option<String>,
    /// Issued at or before (RFC 3339).
    pub until: Option<String>,
    /// The grammar's nested filter (JSON).
    pub filter: Option<String>,
    /// The grammar's order (JSON).
    #[serde(rename = "orderBy")]
    pub order_by: Option<String>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
}

fn compare(name: &str, op: Op, value: Scalar) -> Filter {
    COMMANDS.compare(name, op, Operand::One(value))
}

impl ListQuery {
    /// Checks every parameter and builds the plan (newest first by default).
    pub fn plan(&self, project_id: &str) -> Result<Plan, Refusal> {
        let mut parts = Vec::new();
        if let Some(status) = self.status.as_deref() {
            let status = status
                .parse::<CommandStatus>()
                .map_err(|e| Refusal::invalid_field("status", format!("status: {e}")))?;
            parts.push(compare(
                "status",
                Op::Eq,
                Scalar::Text(status.as_str().into()),
            ));
        }
        if let Some(kind) = self.kind.as_deref() {
            let kind = kind
                .parse::<CommandKind>()
                .map_err(|e| Refusal::invalid_field("kind", format!("kind: {e}")))?;
            parts.push(compare("kind", Op::Eq, Scalar::Text(kind.as_str().into())));
        }
        if let Some(since) = parse_time("since", self.since.as_deref())? {
            parts.push(compare("issued_at", Op::Gte, Scalar::Int(since)));
        }
        if let Some(until) = parse_time("until", self.until.as_deref())? {
            parts.push(compare("issued_at", Op::Lte, Scalar::Int(until)));
        }
        let scope = format!(
            "commands:{project_id}:{:?}",
            (&self.status, &self.kind, &self.since, &self.until)
        );
        Plan::new(
            &COMMANDS,
            parts,
            self.filter.as_deref(),
            self.order_by.as_deref(),
            "issued_at",
            scope,
        )
    }
}

/// One page of the commands `query` selects, with the next page's cursor (`None` on the last).
/// The read is stopped when `budget` runs out (the caller shaped its cost).
pub async fn read_page(
    store: &Store,
    budget: Duration,
    secret: &[u8],
    project_id: &str,
    query: &ListQuery,
) -> Result<(Vec<CommandRecord>, Option<String>), Refusal> {
    let limit = parse_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let plan = query.plan(project_id)?;
    let position = plan.position(secret, "cursor", query.cursor.as_deref())?;
    let (project_id, selection) = (project_id.to_owned(), plan.clone());
    let rows = store
        .read_within("list_commands", budget, move |conn| {
            commands::page(
                conn,
                &project_id,
                &selection.filter,
                &selection.order,
                position.as_deref(),
                limit + 1,
            )
        })
        .await?;
    Ok(plan.page(secret, rows, limit, commands::position))
}
