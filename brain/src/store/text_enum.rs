//! Enums kept in `TEXT` columns: a column declared `#[diesel(deserialize_as = Parsed<T>)]`
//! is read as text and parsed with `T`'s `FromStr`, on either backend and through either
//! query path (diesel's DSL or the list grammar's rendered SQL). A value `T` does not know —
//! a row written by a newer brain, or a broken database — is a deserialization error, never
//! a silent default. Values are written with the enum's `as_str()`.

use std::fmt::Display;
use std::str::FromStr;

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, Queryable};
use diesel::sql_types::Text;

/// A `TEXT` column parsed into `T`.
#[derive(Debug)]
pub struct Parsed<T>(pub T);

impl<T, DB> FromSql<Text, DB> for Parsed<T>
where
    DB: Backend,
    String: FromSql<Text, DB>,
    T: FromStr,
    T::Err: Display,
{
    fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
        let text = String::from_sql(bytes)?;
        text.parse()
            .map(Parsed)
            .map_err(|e| format!("stored value {text:?}: {e}").into())
    }
}

impl<T, DB> Queryable<Text, DB> for Parsed<T>
where
    DB: Backend,
    Parsed<T>: FromSql<Text, DB>,
{
    type Row = Self;

    fn build(row: Self) -> deserialize::Result<Self> {
        Ok(row)
    }
}

/// Declares that `T` can be read from a `TEXT` column through [`Parsed`].
macro_rules! text_enum {
    ($ty:ty) => {
        impl From<$crate::store::text_enum::Parsed<$ty>> for $ty {
            fn from(parsed: $crate::store::text_enum::Parsed<$ty>) -> $ty {
                parsed.0
            }
        }
    };
}

pub(crate) use text_enum;

text_enum!(taskward_shared::command::CommandKind);
