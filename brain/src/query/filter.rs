//! The nested `filter`: `{"AND": [...]}`, `{"OR": [...]}`, `{"NOT": {...}}`, per-field
//! operators (`{"name": {"startsWith": "email."}}`) and relations
//! (`{"worker": {"pool": {"eq": "prefork"}}}`). Several keys in one object all apply (AND);
//! `{}` matches everything.

use serde_json::Value;

use super::{Entity, Field, Kind, QueryError, Relation, parse_time};

/// Deepest nesting of AND/OR/NOT/relations.
pub const MAX_DEPTH: usize = 8;
/// Most field comparisons in one filter.
pub const MAX_PREDICATES: usize = 100;
/// Most values in one `in`/`notIn` list.
pub const MAX_LIST: usize = 1000;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// All of these.
    And(Vec<Filter>),
    /// Any of these.
    Or(Vec<Filter>),
    /// Not this.
    Not(Box<Filter>),
    /// A field compared with a value.
    Compare {
        /// The field.
        field: &'static Field,
        /// The operator.
        op: Op,
        /// Its operand.
        operand: Operand,
    },
    /// Rows with a related row matching the inner filter.
    Related {
        /// The relation.
        relation: &'static Relation,
        /// What the related row must match.
        filter: Box<Filter>,
    },
}

/// Comparison operators.
/// Every operator's name, in the order errors list them (text fields take them all).
pub const OPERATORS: &[&str] = &[
    "eq",
    "ne",
    "in",
    "notIn",
    "lt",
    "lte",
    "gt",
    "gte",
    "contains",
    "startsWith",
    "endsWith",
    "isNull",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`.
    Eq,
    /// `<>`.
    Ne,
    /// In a list.
    In,
    /// Not in a list.
    NotIn,
    /// `<`.
    Lt,
    /// `<=`.
    Lte,
    /// `>`.
    Gt,
    /// `>=`.
    Gte,
    /// Substring (case-sensitive).
    Contains,
    /// Prefix (case-sensitive).
    StartsWith,
    /// Suffix (case-sensitive).
    EndsWith,
    /// Null (`true`) or not null (`false`).
    IsNull,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "in" => Op::In,
            "notIn" => Op::NotIn,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "contains" => Op::Contains,
            "startsWith" => Op::StartsWith,
            "endsWith" => Op::EndsWith,
            "isNull" => Op::IsNull,
            _ => return None,
        })
    }

    /// The operators a field of `kind` takes.
    fn allowed(kind: Kind) -> &'static [&'static str] {
        match kind {
            Kind::Text => OPERATORS,
            Kind::Int | Kind::Time => &[
                "eq", "ne", "in", "notIn", "lt", "lte", "gt", "gte", "isNull",
            ],
            Kind::Bool => &["eq", "ne", "isNull"],
        }
    }
}

/// A comparison's operand.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// One value.
    One(Scalar),
    /// A list (`in`, `notIn`).
    List(Vec<Scalar>),
    /// `isNull`'s flag.
    Flag(bool),
}

/// A value as the database holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// An integer (times in ms).
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// Reads a JSON value as `kind`; `None` if it is not one.
    pub fn read(kind: Kind, value: &Value) -> Option<Scalar> {
        match (kind, value) {
            (Kind::Text, Value::String(s)) => Some(Scalar::Text(s.clone())),
            (Kind::Int, Value::Number(n)) => n.as_i64().map(Scalar::Int),
            (Kind::Time, Value::String(s)) => parse_time(s).map(Scalar::Int),
            (Kind::Time, Value::Number(n)) => n.as_i64().map(Scalar::Int),
            (Kind::Bool, Value::Bool(b)) => Some(Scalar::Bool(*b)),
            _ => None,
        }
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "a string",
        Kind::Int => "an integer",
        Kind::Time => "an RFC 3339 time (e.g. 2026-04-16T00:00:00Z)",
        Kind::Bool => "true or false",
    }
}

/// Parses a filter for `entity`; `path` names its root in errors (`filter`).
pub fn parse(entity: &'static Entity, value: &Value, path: &str) -> Result<Filter, QueryError> {
    let mut predicates = 0;
    Parser {
        predicates: &mut predicates,
    }
    .object(entity, value, path, 0)
}

struct Parser<'a> {
    predicates: &'a mut usize,
}

impl Parser<'_> {
    fn object(
        &mut self,
        entity: &'static Entity,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Result<Filter, QueryError> {
        if depth > MAX_DEPTH {
            return Err(QueryError::new(
                path,
                format!("nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let Value::Object(map) = value else {
            return Err(QueryError::new(
                path,
                "expected an object such as {\"state\": {\"eq\": \"failed\"}}",
            ));
        };
        let mut all = Vec::with_capacity(map.len());
        for (key, inner) in map {
            let here = format!("{path}.{key}");
            all.push(match key.as_str() {
                "AND" | "OR" => {
                    let Value::Array(items) = inner else {
                        return Err(QueryError::new(here, "expected an array of filters"));
                    };
                    let parts = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            self.object(entity, item, &format!("{here}[{i}]"), depth + 1)
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    if key == "AND" {
                        Filter::And(parts)
                    } else {
                        Filter::Or(parts)
                    }
                }
                "NOT" => Filter::Not(Box::new(self.object(entity, inner, &here, depth + 1)?)),
                name => {
                    if let Some(field) = entity.field(name) {
                        self.field(field, inner, &here)?
                    } else if let Some(relation) = entity.relation(name) {
                        Filter::Related {
                            relation,
                            filter: Box::new(self.object(
                                relation.entity,
                                inner,
                                &here,
                                depth + 1,
                            )?),
                        }
                    } else {
                        let relations: Vec<&str> =
                            entity.relations.iter().map(|r| r.name).collect();
                        return Err(QueryError::new(
                            here,
                            format!(
                                "unknown field of {}: fields are {}; relations: {}; combinators: AND, OR, NOT",
                                entity.name,
                                entity.field_names(),
                                if relations.is_empty() {
                                    "none".to_owned()
                                } else {
                                    relations.join(", ")
                                }
                            ),
                        ));
                    }
                }
            });
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Filter::And(all)
        })
    }

    fn field(
        &mut self,
        field: &'static Field,
        value: &Value,
        path: &str,
    ) -> Result<Filter, QueryError> {
        let Value::Object(ops) = value else {
            return Err(QueryError::new(
                path,
                format!(
                    "expected operators, e.g. {{\"eq\": ...}}; {} takes {}",
                    field.name,
                    Op::allowed(field.kind).join(", ")
                ),
            ));
        };
        if ops.is_empty() {
            return Err(QueryError::new(path, "no operator given"));
        }
        let mut all = Vec::with_capacity(ops.len());
        for (name, operand) in ops {
            let here = format!("{path}.{name}");
            *self.predicates += 1;
            if *self.predicates > MAX_PREDICATES {
                return Err(QueryError::new(
                    here,
                    format!("more than {MAX_PREDICATES} comparisons in one filter"),
                ));
            }
            let op = Op::parse(name)
                .filter(|_| Op::allowed(field.kind).contains(&name.as_str()))
                .ok_or_else(|| {
                    QueryError::new(
                        &here,
                        format!(
                            "{} does not take {name:?}; it takes {}",
                            field.name,
                            Op::allowed(field.kind).join(", ")
                        ),
                    )
                })?;
            let operand = match op {
                Op::IsNull => {
                    if !field.nullable {
                        return Err(QueryError::new(
                            here,
                            format!("{} is never null", field.name),
                        ));
                    }
                    Operand::Flag(
                        operand
                            .as_bool()
                            .ok_or_else(|| QueryError::new(&here, "expected true or false"))?,
                    )
                }
                Op::In | Op::NotIn => {
                    let Value::Array(items) = operand else {
                        return Err(QueryError::new(
                            here,
                            format!("expected an array of {}", expected(field.kind)),
                        ));
                    };
                    if items.len() > MAX_LIST {
                        return Err(QueryError::new(
                            here,
                            format!("more than {MAX_LIST} values"),
                        ));
                    }
                    Operand::List(
                        items
                            .iter()
                            .enumerate()
                            .map(|(i, item)| {
                                Scalar::read(field.kind, item).ok_or_else(|| {
                                    QueryError::new(
                                        format!("{here}[{i}]"),
                                        format!("expected {}", expected(field.kind)),
                                    )
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    )
                }
                _ => Operand::One(Scalar::read(field.kind, operand).ok_or_else(|| {
                    QueryError::new(&here, format!("expected {}", expected(field.kind)))
                })?),
            };
            all.push(Filter::Compare { field, op, operand });
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Filter::And(all)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::query::entities::TASKS;

    fn error(value: Value) -> QueryError {
        parse(&TASKS, &value, "filter").unwrap_err()
    }

    #[test]
    fn errors_name_the_json_path() {
        let e = error(json!({"AND": [{"state": {"eq": "failed"}}, {"name": {"startsWith": 5}}]}));
        assert_eq!(e.path, "filter.AND[1].name.startsWith");
        assert_eq!(error(json!({"nope": {"eq": 1}})).path, "filter.nope");
        assert_eq!(
            error(json!({"retry_count": {"contains": "1"}})).path,
            "filter.retry_count.contains"
        );
        assert_eq!(
            error(json!({"state": {"isNull": true}})).path,
            "filter.state.isNull"
        );
        assert_eq!(
            error(json!({"worker": {"pool": {"eq": 1}}})).path,
            "filter.worker.pool.eq"
        );
        assert_eq!(
            error(json!({"received_at": {"gte": "yesterday"}})).path,
            "filter.received_at.gte"
        );
        assert_eq!(
            error(json!({"state": {"in": ["a", 1]}})).path,
            "filter.state.in[1]"
        );
        assert_eq!(error(json!({"OR": {}})).path, "filter.OR");
        assert_eq!(error(json!([])).path, "filter");
    }

    #[test]
    fn depth_and_size_are_bounded_at_their_edges() {
        fn nested(levels: usize) -> Value {
            (0..levels).fold(
                json!({"state": {"eq": "failed"}}),
                |inner, _| json!({"NOT": inner}),
            )
        }
        assert!(parse(&TASKS, &nested(MAX_DEPTH), "filter").is_ok());
        let e = error(nested(MAX_DEPTH + 1));
        assert!(e.message.contains("deeper"), "{e}");
        let many = |n: usize| json!({"OR": (0..n).map(|i| json!({"retry_count": {"eq": i}})).collect::<Vec<_>>()});
        assert!(parse(&TASKS, &many(MAX_PREDICATES), "filter").is_ok());
        let e = error(many(MAX_PREDICATES + 1));
        assert_eq!(
            e.path,
            format!("filter.OR[{MAX_PREDICATES}].retry_count.eq")
        );
        let list = |n: usize| json!({"name": {"in": vec!["x"; n]}});
        assert!(parse(&TASKS, &list(MAX_LIST), "filter").is_ok());
        assert_eq!(error(list(MAX_LIST + 1)).path, "filter.name.in");
    }

    #[test]
    fn relations_nest_into_their_entity() {
        let f = parse(
            &TASKS,
            &json!({"parent": {"worker": {"pool": {"eq": "prefork"}}}}),
            "filter",
        )
        .unwrap();
        let Filter::Related { relation, filter } = f else {
            panic!()
        };
        assert_eq!(relation.name, "parent");
        assert!(matches!(*filter, Filter::Related { relation, .. } if relation.name == "worker"));
    }
}
