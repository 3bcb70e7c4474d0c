//! The paged-list pipeline every list of the grammar shares (tasks, commands, cleanup
//! tasks): the list's own simple parameters become filter parts, the `filter` and `orderBy`
//! JSON parameters are parsed against the entity, the order gets its unique tiebreak, a
//! cursor is bound to everything that shaped the page, one row more than the limit is read
//! to know whether another page follows, and the next cursor is the last row's position.
//!
//! A list module supplies only what is its own: its entity, its simple parameters, its
//! default order, and how to read a row's position.

use serde_json::Value;

use super::Entity;
use super::QueryError;
use super::filter::{self, Filter, Scalar};
use super::order::{self, SortKey};
use crate::cursor;
use crate::refusal::Refusal;

/// Parses `limit`, enforcing `1..=max`.
pub fn parse_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, Refusal> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(Refusal::invalid_field(
            "limit",
            format!("limit: must be between 1 and {max}, got {n}"),
        )),
    }
}

/// Parses an RFC 3339 time parameter into ms.
pub fn parse_time(field: &str, value: Option<&str>) -> Result<Option<i64>, Refusal> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| t.timestamp_millis())
                .map_err(|e| {
                    Refusal::invalid_field(
                        field,
                        format!("{field}: {v:?} is not an RFC 3339 time (e.g. 2026-04-16T00:00:00Z): {e}"),
                    )
                })
        })
        .transpose()
}

/// A JSON-valued query parameter (`filter`, `orderBy`).
pub fn json_param(field: &str, text: &str) -> Result<Value, Refusal> {
    let value = serde_json::from_str(text)
        .map_err(|e| Refusal::invalid_field(field, format!("{field}: not valid JSON: {e}")))?;
    crate::input::refuse_nul_in(field, &value)?;
    Ok(value)
}

impl From<QueryError> for Refusal {
    fn from(e: QueryError) -> Refusal {
        Refusal::invalid_field(e.path.clone(), e.to_string())
    }
}

/// What a list query asks for, parsed: the rows it selects, their order, and the scope its
/// cursors are bound to.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Everything a row must match (the simple parameters and `filter` together).
    pub filter: Filter,
    /// The full order, ending in the entity's tiebreak.
    pub order: Vec<SortKey>,
    /// What a cursor is bound to: the list, its owner and every input that shaped the page.
    pub scope: String,
}

impl Plan {
    /// Builds the plan of a list of `entity`. `parts`: the filters of the list's simple
    /// parameters; `filter`, `order_by`: the grammar's JSON parameters as given;
    /// `default_order`: the field sorted descending when there is no `orderBy`; `scope`: the
    /// list's name, owner and simple parameters (the grammar's parameters are added here).
    pub fn new(
        entity: &'static Entity,
        mut parts: Vec<Filter>,
        filter: Option<&str>,
        order_by: Option<&str>,
        default_order: &str,
        scope: String,
    ) -> Result<Plan, Refusal> {
        let filter_json = filter.map(|f| json_param("filter", f)).transpose()?;
        if let Some(value) = &filter_json {
            parts.push(filter::parse(entity, value, "filter")?);
        }
        let order_json = order_by.map(|o| json_param("orderBy", o)).transpose()?;
        let keys = match &order_json {
            Some(value) => order::parse(entity, value, "orderBy")?,
            None => vec![SortKey::desc(
                entity.field(default_order).expect("a field of the entity"),
            )],
        };
        let scope = format!(
            "{scope}:{:?}",
            (
                filter_json.map(|v| v.to_string()),
                order_json.map(|v| v.to_string())
            )
        );
        Ok(Plan {
            filter: Filter::And(parts),
            order: order::with_tiebreak(entity, &keys),
            scope,
        })
    }

    /// The keyset position a cursor parameter (`field`: `cursor`, `after`, …) holds, if one
    /// was given; a cursor from another query, project or brain secret is refused.
    pub fn position(
        &self,
        secret: &[u8],
        field: &str,
        given: Option<&str>,
    ) -> Result<Option<Vec<Option<Scalar>>>, Refusal> {
        let Some(given) = given else {
            return Ok(None);
        };
        let not_ours = || cursor::not_ours(field);
        let values: Vec<Value> =
            cursor::decode(secret, &self.scope, given).map_err(|_| not_ours())?;
        order::read_position(&self.order, &values)
            .map(Some)
            .ok_or_else(not_ours)
    }

    /// The cursor of the page after `row`.
    pub fn cursor_after<R>(
        &self,
        secret: &[u8],
        row: &R,
        position: impl Fn(&R, &[SortKey]) -> Vec<Value>,
    ) -> String {
        cursor::encode(secret, &self.scope, &position(row, &self.order))
    }

    /// Cuts rows read with `limit + 1` to the page and names the next page's cursor (`None`
    /// on the last page).
    pub fn page<R>(
        &self,
        secret: &[u8],
        mut rows: Vec<R>,
        limit: i64,
        position: impl Fn(&R, &[SortKey]) -> Vec<Value>,
    ) -> (Vec<R>, Option<String>) {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next = match rows.last() {
            Some(last) if more => Some(self.cursor_after(secret, last, position)),
            _ => None,
        };
        (rows, next)
    }
}
