//! `orderBy`: `[{"received_at": "desc"}, {"name": "asc_nulls_last"}]`, applied in order, then
//! the entity's unique tiebreak. Nulls are always placed explicitly, so both backends return
//! the same order; plain `asc`/`desc` sort nulls as the smallest value (first ascending, last
//! descending), which is the order SQLite's indexes and the PostgreSQL indexes (declared
//! `NULLS FIRST`) are kept in.
//!
//! Keyset pages: a cursor holds the sort values of the last row sent; the next page is the
//! rows strictly after it in this order ([`Sql::after`]), which stays exact while rows are
//! inserted concurrently.

use serde_json::Value;

use super::filter::Scalar;
use super::sql::Sql;
use super::{Entity, Field, Kind, QueryError};

/// The extra conditions of one branch of a keyset page.
type Branch<'a> = Box<dyn Fn(&mut Sql) + 'a>;

/// Most sort keys in one order.
pub const MAX_KEYS: usize = 8;

/// One sort key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SortKey {
    /// The field.
    pub field: &'static Field,
    /// Largest first.
    pub descending: bool,
    /// Nulls before values.
    pub nulls_first: bool,
}

impl SortKey {
    /// Ascending, nulls first.
    pub fn asc(field: &'static Field) -> SortKey {
        SortKey {
            field,
            descending: false,
            nulls_first: true,
        }
    }

    /// Descending, nulls last.
    pub fn desc(field: &'static Field) -> SortKey {
        SortKey {
            field,
            descending: true,
            nulls_first: false,
        }
    }
}

const DIRECTIONS: &str =
    "asc, desc, asc_nulls_first, asc_nulls_last, desc_nulls_first, desc_nulls_last";

/// Parses an `orderBy` array for `entity`; `path` names its root in errors (`orderBy`).
pub fn parse(entity: &Entity, value: &Value, path: &str) -> Result<Vec<SortKey>, QueryError> {
    let Value::Array(items) = value else {
        return Err(QueryError::new(
            path,
            "expected an array such as [{\"received_at\": \"desc\"}]",
        ));
    };
    if items.len() > MAX_KEYS {
        return Err(QueryError::new(
            path,
            format!("more than {MAX_KEYS} sort keys"),
        ));
    }
    let mut keys: Vec<SortKey> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let Some((name, direction)) = item
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
        else {
            return Err(QueryError::new(
                here,
                "expected one {\"field\": \"direction\"} pair",
            ));
        };
        let here = format!("{here}.{name}");
        let field = entity.field(name).ok_or_else(|| {
            QueryError::new(
                &here,
                format!(
                    "unknown field of {}: sortable fields are {}",
                    entity.name,
                    entity.field_names()
                ),
            )
        })?;
        if keys.iter().any(|k| std::ptr::eq(k.field, field)) {
            return Err(QueryError::new(here, "the same field twice"));
        }
        let (descending, nulls_first) = match direction.as_str() {
            Some("asc") => (false, true),
            Some("desc") => (true, false),
            Some("asc_nulls_first") => (false, true),
            Some("asc_nulls_last") => (false, false),
            Some("desc_nulls_first") => (true, true),
            Some("desc_nulls_last") => (true, false),
            _ => {
                return Err(QueryError::new(
                    here,
                    format!("direction must be one of {DIRECTIONS}"),
                ));
            }
        };
        keys.push(SortKey {
            field,
            descending,
            nulls_first,
        });
    }
    Ok(keys)
}

/// The full order: the keys, then the tiebreak in the first key's direction.
pub fn with_tiebreak(entity: &'static Entity, keys: &[SortKey]) -> Vec<SortKey> {
    let mut all = keys.to_vec();
    if let Some(tiebreak) = entity.field(entity.tiebreak)
        && !all.iter().any(|k| std::ptr::eq(k.field, tiebreak))
    {
        let descending = keys.first().is_some_and(|k| k.descending);
        all.push(SortKey {
            field: tiebreak,
            descending,
            nulls_first: !descending,
        });
    }
    all
}

/// The same order backwards (what reading the page before a cursor walks).
pub fn reversed(keys: &[SortKey]) -> Vec<SortKey> {
    keys.iter()
        .map(|k| SortKey {
            field: k.field,
            descending: !k.descending,
            nulls_first: !k.nulls_first,
        })
        .collect()
}

/// Reads a cursor's stored values back for `keys`; `None` if they do not fit.
pub fn read_position(keys: &[SortKey], values: &[Value]) -> Option<Vec<Option<Scalar>>> {
    if keys.len() != values.len() {
        return None;
    }
    keys.iter()
        .zip(values)
        .map(|(key, value)| match value {
            Value::Null if key.field.nullable => Some(None),
            Value::Null => None,
            // Times travel as ms in cursors.
            v => Scalar::read(
                if key.field.kind == Kind::Time {
                    Kind::Int
                } else {
                    key.field.kind
                },
                v,
            )
            .map(Some),
        })
        .collect()
}

impl Sql {
    /// Renders a keyset page: `select` writes `SELECT ... FROM ... WHERE <conditions>` over
    /// `alias`; this adds the condition "after `position`", the order and the limit. The
    /// condition is split so each part starts with a plain range on the first key, which an
    /// index on that key answers directly: rows with the first key null go in a second branch
    /// (`UNION ALL`) instead of an `OR` that would send the database through every row before
    /// the cursor.
    pub fn keyset_page(
        &mut self,
        alias: &str,
        keys: &[SortKey],
        position: Option<&[Option<Scalar>]>,
        limit: i64,
        select: &dyn Fn(&mut Sql),
    ) {
        let Some(position) = position.filter(|p| !p.is_empty() && p.len() == keys.len()) else {
            select(self);
            self.order_by(alias, keys);
            self.push(" LIMIT ").bind(Scalar::Int(limit));
            return;
        };
        let (first, value) = (&keys[0], &position[0]);
        let raw = format!("{alias}.{}", first.field.column);
        // Each branch: extra conditions, rendered after the select's own.
        let mut branches: Vec<Branch> = Vec::new();
        match value {
            Some(v) => {
                let not_null = raw.clone();
                branches.push(Box::new(move |sql: &mut Sql| {
                    let column = sql.column(alias, first.field);
                    let bound = if first.descending { "<=" } else { ">=" };
                    sql.push(&format!(
                        " AND {not_null} IS NOT NULL AND {column} {bound} "
                    ))
                    .bind(v.clone())
                    .push(" AND ");
                    sql.after(alias, keys, position);
                }));
                if first.field.nullable && !first.nulls_first {
                    let raw = raw.clone();
                    branches.push(Box::new(move |sql: &mut Sql| {
                        sql.push(&format!(" AND {raw} IS NULL"));
                    }));
                }
            }
            None => {
                let rest = raw.clone();
                branches.push(Box::new(move |sql: &mut Sql| {
                    sql.push(&format!(" AND {rest} IS NULL AND "));
                    sql.after(alias, &keys[1..], &position[1..]);
                }));
                if first.nulls_first {
                    let raw = raw.clone();
                    branches.push(Box::new(move |sql: &mut Sql| {
                        sql.push(&format!(" AND {raw} IS NOT NULL"));
                    }));
                }
            }
        }
        if branches.len() == 1 {
            select(self);
            branches[0](self);
            self.order_by(alias, keys);
            self.push(" LIMIT ").bind(Scalar::Int(limit));
            return;
        }
        self.push("SELECT * FROM (");
        for (i, branch) in branches.iter().enumerate() {
            if i > 0 {
                self.push(" UNION ALL ");
            }
            self.push("SELECT * FROM (");
            select(self);
            branch(self);
            self.order_by(alias, keys);
            self.push(" LIMIT ").bind(Scalar::Int(limit));
            self.push(&format!(") b{i}"));
        }
        self.push(&format!(") {alias}"));
        self.order_by(alias, keys);
        self.push(" LIMIT ").bind(Scalar::Int(limit));
    }

    /// Appends `ORDER BY` for `keys` (already with the tiebreak).
    pub fn order_by(&mut self, alias: &str, keys: &[SortKey]) {
        self.push(" ORDER BY ");
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            let column = self.column(alias, key.field);
            let direction = if key.descending { "DESC" } else { "ASC" };
            if key.field.nullable {
                let nulls = if key.nulls_first { "FIRST" } else { "LAST" };
                self.push(&format!("{column} {direction} NULLS {nulls}"));
            } else {
                // No nulls to place; left implicit so plain indexes match on both backends.
                self.push(&format!("{column} {direction}"));
            }
        }
    }

    /// Appends the predicate "strictly after `position` in this order": for some key, all
    /// earlier keys equal and this one past its value (nulls placed as the key says).
    pub fn after(&mut self, alias: &str, keys: &[SortKey], position: &[Option<Scalar>]) {
        self.push("(");
        for i in 0..keys.len() {
            if i > 0 {
                self.push(" OR ");
            }
            self.push("(");
            for j in 0..i {
                self.equal(alias, &keys[j], &position[j]);
                self.push(" AND ");
            }
            self.past(alias, &keys[i], &position[i]);
            self.push(")");
        }
        self.push(")");
    }

    fn equal(&mut self, alias: &str, key: &SortKey, value: &Option<Scalar>) {
        let raw = format!("{alias}.{}", key.field.column);
        match value {
            None => {
                self.push(&format!("{raw} IS NULL"));
            }
            Some(v) => {
                self.push(&format!("{raw} = ")).bind(v.clone());
            }
        }
    }

    fn past(&mut self, alias: &str, key: &SortKey, value: &Option<Scalar>) {
        let raw = format!("{alias}.{}", key.field.column);
        match value {
            // Past a null: the values, if nulls come first; nothing, if they come last.
            None if key.nulls_first => {
                self.push(&format!("{raw} IS NOT NULL"));
            }
            None => {
                self.push("1=0");
            }
            Some(v) => {
                let column = self.column(alias, key.field);
                let symbol = if key.descending { "<" } else { ">" };
                self.push("(")
                    .push(&format!("{column} {symbol} "))
                    .bind(v.clone());
                if !key.nulls_first && key.field.nullable {
                    self.push(&format!(" OR {raw} IS NULL"));
                }
                self.push(")");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::query::entities::TASKS;

    #[test]
    fn directions_and_errors() {
        let keys = parse(
            &TASKS,
            &json!([{"received_at": "desc_nulls_last"}, {"name": "asc"}]),
            "orderBy",
        )
        .unwrap();
        assert_eq!((keys[0].descending, keys[0].nulls_first), (true, false));
        assert_eq!(
            (keys[1].descending, keys[1].nulls_first),
            (false, true),
            "plain asc: nulls as the smallest value"
        );
        let all = with_tiebreak(&TASKS, &keys);
        assert_eq!(all.last().unwrap().field.name, "id");
        let err = |v: Value| parse(&TASKS, &v, "orderBy").unwrap_err();
        assert_eq!(err(json!([{"nope": "asc"}])).path, "orderBy[0].nope");
        assert_eq!(err(json!([{"name": "up"}])).path, "orderBy[0].name");
        assert_eq!(
            err(json!([{"name": "asc", "queue": "asc"}])).path,
            "orderBy[0]"
        );
        assert_eq!(
            err(json!([{"name": "asc"}, {"name": "desc"}])).path,
            "orderBy[1].name"
        );
        assert_eq!(err(json!({"name": "asc"})).path, "orderBy");
    }
}
