//! The connection enum behind the store seam.

use diesel::{PgConnection, SqliteConnection};

/// One connection type for both backends; every query in `store/` is written against it.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    /// Production and scale-out backend.
    Postgresql(PgConnection),
    /// Embedded default backend.
    Sqlite(SqliteConnection),
}
