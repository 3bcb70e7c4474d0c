//! Rendering filters to SQL text with bound parameters (never values spliced into the text),
//! spelled for the backend at hand.

use super::filter::{Filter, Op, Operand, Scalar};
use super::{Field, Kind};

/// Which SQL dialect to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: `?` placeholders, bytewise text comparison by default.
    Sqlite,
    /// PostgreSQL: `$n` placeholders, `COLLATE "C"` for bytewise text comparison.
    Postgres,
}

/// SQL text and its parameters, in order.
#[derive(Debug)]
pub struct Sql {
    /// The dialect.
    pub dialect: Dialect,
    /// The text.
    pub text: String,
    /// The parameters.
    pub binds: Vec<Scalar>,
    aliases: usize,
}

impl Sql {
    /// An empty statement.
    pub fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::new(),
            binds: Vec::new(),
            aliases: 0,
        }
    }

    /// Appends text.
    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder bound to `value`.
    pub fn bind(&mut self, value: Scalar) -> &mut Sql {
        self.binds.push(value);
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                let n = self.binds.len();
                self.text.push_str(&format!("${n}"));
            }
        }
        self
    }

    /// A fresh table alias for a subquery.
    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("r{}", self.aliases)
    }

    /// A column as compared and sorted: bytewise for text on both backends.
    pub fn column(&self, alias: &str, field: &Field) -> String {
        match (self.dialect, field.kind) {
            (Dialect::Postgres, Kind::Text) => format!("{alias}.{} COLLATE \"C\"", field.column),
            _ => format!("{alias}.{}", field.column),
        }
    }

    /// Appends the SQLite budget check and ` AND ` (nothing on PostgreSQL, whose reads are
    /// budgeted by `statement_timeout`): put first in a caller-shaped query's `WHERE`, it is
    /// evaluated for every row the query considers (see `store::budget`).
    pub fn budget_check(&mut self) -> &mut Sql {
        if self.dialect == Dialect::Sqlite {
            self.push("taskward_within_budget() AND ");
        }
        self
    }

    /// Appends `filter` over the rows aliased `alias`.
    pub fn filter(&mut self, alias: &str, filter: &Filter) {
        match filter {
            Filter::And(parts) | Filter::Or(parts) if parts.is_empty() => {
                self.push(if matches!(filter, Filter::And(_)) {
                    "1=1"
                } else {
                    "1=0"
                });
            }
            Filter::And(parts) | Filter::Or(parts) => {
                let joiner = if matches!(filter, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                self.push("(");
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        self.push(joiner);
                    }
                    self.filter(alias, part);
                }
                self.push(")");
            }
            Filter::Not(inner) => {
                self.push("NOT (");
                self.filter(alias, inner);
                self.push(")");
            }
            Filter::Related { relation, filter } => {
                let r = self.alias();
                let link = relation.link.replace("{r}", &r).replace("{o}", alias);
                self.push(&format!(
                    "EXISTS (SELECT 1 FROM {} {r} WHERE {link} AND ",
                    relation.entity.table
                ));
                self.filter(&r, filter);
                self.push(")");
            }
            Filter::Compare { field, op, operand } => self.compare(alias, field, *op, operand),
        }
    }

    fn compare(&mut self, alias: &str, field: &Field, op: Op, operand: &Operand) {
        let column = self.column(alias, field);
        let raw = format!("{alias}.{}", field.column);
        match (op, operand) {
            (Op::IsNull, Operand::Flag(true)) => {
                self.push(&format!("{raw} IS NULL"));
            }
            (Op::IsNull, _) => {
                self.push(&format!("{raw} IS NOT NULL"));
            }
            (Op::In | Op::NotIn, Operand::List(values)) => {
                if values.is_empty() {
                    self.push(if op == Op::In { "1=0" } else { "1=1" });
                    return;
                }
                self.push(&raw)
                    .push(if op == Op::In { " IN (" } else { " NOT IN (" });
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.bind(value.clone());
                }
                self.push(")");
            }
            (Op::Contains | Op::StartsWith | Op::EndsWith, Operand::One(Scalar::Text(s)))
                if s.is_empty() =>
            {
                self.push(&format!("{raw} IS NOT NULL"));
            }
            (Op::Contains, Operand::One(value)) => {
                let function = match self.dialect {
                    Dialect::Sqlite => "instr",
                    Dialect::Postgres => "strpos",
                };
                self.push(&format!("{function}({raw}, "))
                    .bind(value.clone())
                    .push(") > 0");
            }
            (Op::StartsWith, Operand::One(Scalar::Text(prefix))) => {
                // A range of the column's bytewise order: exactly the values starting with
                // the prefix. PostgreSQL estimates from its statistics how many rows the range
                // holds and picks between the column's index and walking the list. SQLite has
                // no such estimate and would sort the whole range (401 ms at 1M rows for a
                // prefix held by a fifth of the tasks), so there the range is kept off the
                // index (unary `+`) and the list is walked in order.
                let column = match self.dialect {
                    Dialect::Sqlite => format!("+{column}"),
                    Dialect::Postgres => column,
                };
                self.push(&format!("{column} >= "))
                    .bind(Scalar::Text(prefix.clone()));
                if let Some(upper) = prefix_upper_bound(prefix) {
                    self.push(&format!(" AND {column} < "))
                        .bind(Scalar::Text(upper));
                }
            }
            (Op::StartsWith, Operand::One(value)) => {
                self.push(&format!("substr({raw}, 1, length("))
                    .bind(value.clone())
                    .push(")) = ")
                    .bind(value.clone());
            }
            (Op::EndsWith, Operand::One(value)) => {
                let tail = match self.dialect {
                    Dialect::Sqlite => format!("substr({raw}, -length("),
                    Dialect::Postgres => format!("right({raw}, length("),
                };
                self.push(&tail)
                    .bind(value.clone())
                    .push(")) = ")
                    .bind(value.clone());
            }
            (Op::Eq | Op::Ne, Operand::One(value)) => {
                // Equality needs no collation, and keeps the plain column's indexes usable.
                let symbol = if op == Op::Eq { "=" } else { "<>" };
                self.push(&format!("{raw} {symbol} ")).bind(value.clone());
            }
            (_, Operand::One(value)) => {
                let symbol = match op {
                    Op::Lt => "<",
                    Op::Lte => "<=",
                    Op::Gt => ">",
                    _ => ">=",
                };
                self.push(&format!("{column} {symbol} "))
                    .bind(value.clone());
            }
            // The parser pairs every operator with its operand kind.
            _ => {
                self.push("1=0");
            }
        }
    }
}

/// The least string above every string starting with `prefix`, in code point order (which
/// is UTF-8 byte order: PostgreSQL's "C" collation and SQLite's BINARY): the prefix with its
/// last character that can be incremented, incremented, and what follows dropped. `None`
/// when no character can be (every string from the prefix up then starts with it).
fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Runs `$body` with `$q`, the rendered statement with its parameters bound, and `$c`, the
/// backend's connection: the one place the grammar needs to know which connection it holds
/// (placeholders and bind types differ).
macro_rules! with_bound_query {
    ($conn:expr, $sql:expr, |$q:ident, $c:ident| $body:expr) => {{
        #[allow(unused_imports)]
        use diesel::RunQueryDsl;
        use $crate::query::filter::Scalar;
        let sql: $crate::query::sql::Sql = $sql;
        macro_rules! bound {
            ($backend:ty) => {{
                let mut query = diesel::sql_query(sql.text).into_boxed::<$backend>();
                for value in sql.binds {
                    query = match value {
                        Scalar::Text(s) => query.bind::<diesel::sql_types::Text, _>(s),
                        Scalar::Int(i) => query.bind::<diesel::sql_types::BigInt, _>(i),
                        Scalar::Bool(b) => query.bind::<diesel::sql_types::Bool, _>(b),
                    };
                }
                query
            }};
        }
        match $conn {
            $crate::store::AnyConnection::Sqlite($c) => {
                let $q = bound!(diesel::sqlite::Sqlite);
                $body
            }
            $crate::store::AnyConnection::Postgresql($c) => {
                let $q = bound!(diesel::pg::Pg);
                $body
            }
        }
    }};
}

pub(crate) use with_bound_query;

/// Loads the rows of a rendered statement on either backend.
macro_rules! load_sql {
    ($conn:expr, $sql:expr, $row:ty) => {
        $crate::query::sql::with_bound_query!($conn, $sql, |q, c| q.load::<$row>(c))
    };
}

pub(crate) use load_sql;

/// Runs a rendered statement that returns no rows (a `DELETE`); returns the rows affected.
macro_rules! execute_sql {
    ($conn:expr, $sql:expr) => {
        $crate::query::sql::with_bound_query!($conn, $sql, |q, c| q.execute(c))
    };
}

pub(crate) use execute_sql;

/// A `COUNT(*)` read through [`load_sql`].
#[derive(Debug, diesel::QueryableByName)]
pub struct Count {
    /// The count.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub n: i64,
}

/// The dialect of a connection.
pub fn dialect_of(conn: &crate::store::AnyConnection) -> Dialect {
    match conn {
        crate::store::AnyConnection::Sqlite(_) => Dialect::Sqlite,
        crate::store::AnyConnection::Postgresql(_) => Dialect::Postgres,
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn prefix_upper_bounds() {
        assert_eq!(prefix_upper_bound("app.m").as_deref(), Some("app.n"));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(
            prefix_upper_bound("a\u{D7FF}").as_deref(),
            Some("a\u{E000}")
        );
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        // Every string starting with the prefix sorts below the bound, in byte order too.
        for (prefix, value) in [
            ("app.m", "app.m\u{10FFFF}x"),
            ("é", "éz"),
            ("a\u{D7FF}", "a\u{D7FF}\u{10FFFF}"),
        ] {
            let upper = prefix_upper_bound(prefix).unwrap();
            assert!(value.as_bytes() < upper.as_bytes(), "{value:?} < {upper:?}");
            assert!(value > prefix);
        }
    }
}
