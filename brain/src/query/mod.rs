//! The list query grammar shared by the tasks list, the commands list and (later) cleanup
//! tasks: a nested `filter` (AND/OR/NOT, per-field operators, relation traversal), a multi-key
//! `orderBy` with explicit nulls placement, and keyset cursors over any such order.
//!
//! Each entity declares its fields and relations once ([`Entity`]); a filter or order naming
//! anything else, or an operator the field's type does not take, is refused with the JSON path
//! at fault (`filter.AND[1].name.startsWith`). Queries are rendered to SQL with bound
//! parameters only ([`sql`]), identically on SQLite and PostgreSQL: text compares bytewise
//! (`COLLATE "C"` on PostgreSQL, SQLite's default), nulls are placed explicitly, and substring
//! operators are case-sensitive on both.

pub mod entities;
pub mod filter;
pub mod order;
pub mod page;
pub mod sql;

/// A field's type, which decides the operators it takes and how values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text.
    Text,
    /// An integer.
    Int,
    /// A time: RFC 3339 in filters and responses, milliseconds in the database.
    Time,
    /// A boolean.
    Bool,
}

/// One filterable, sortable field.
#[derive(Debug)]
pub struct Field {
    /// The name clients use.
    pub name: &'static str,
    /// The column in the entity's table.
    pub column: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Whether it can be null (`isNull` and the nulls placement apply).
    pub nullable: bool,
}

impl PartialEq for Field {
    fn eq(&self, other: &Field) -> bool {
        (self.name, self.column) == (other.name, other.column)
    }
}

/// A relation a filter can traverse: `{"worker": {"pool": {"eq": "prefork"}}}`.
#[derive(Debug)]
pub struct Relation {
    /// The name clients use.
    pub name: &'static str,
    /// The related entity.
    pub entity: &'static Entity,
    /// SQL joining the related row (alias `{r}`) to the outer one (alias `{o}`).
    pub link: &'static str,
}

impl PartialEq for Relation {
    fn eq(&self, other: &Relation) -> bool {
        (self.name, self.link) == (other.name, other.link)
    }
}

/// An entity the grammar can query.
#[derive(Debug)]
pub struct Entity {
    /// Name in messages.
    pub name: &'static str,
    /// Its table.
    pub table: &'static str,
    /// Its fields.
    pub fields: &'static [Field],
    /// Its relations.
    pub relations: &'static [Relation],
    /// The unique, non-null column that breaks ties in every order.
    pub tiebreak: &'static str,
}

impl Entity {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        let fields: &'static [Field] = self.fields;
        fields.iter().find(|f| f.name == name)
    }

    /// `name op operand` on one of this entity's fields (the lists' simple parameters).
    pub fn compare(
        &'static self,
        name: &str,
        op: filter::Op,
        operand: filter::Operand,
    ) -> filter::Filter {
        filter::Filter::Compare {
            field: self.field(name).expect("a field of the entity"),
            op,
            operand,
        }
    }

    /// The relation called `name`.
    pub fn relation(&self, name: &str) -> Option<&'static Relation> {
        let relations: &'static [Relation] = self.relations;
        relations.iter().find(|r| r.name == name)
    }

    /// Field names, for error messages.
    pub fn field_names(&self) -> String {
        self.fields
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A filter or order the grammar refuses: the JSON path at fault and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct QueryError {
    /// Where, e.g. `filter.AND[1].name.startsWith`.
    pub path: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl QueryError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> QueryError {
        QueryError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Parses an RFC 3339 time into milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}
