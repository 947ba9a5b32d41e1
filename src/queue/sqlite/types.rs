//! How the core's ids and times are written in SQLite: ids as they print, job ids as integers,
//! times as fixed-width RFC 3339 text (which orders as the times do). A value that fails its
//! type's check on the way out of the database is a damaged row, reported as such.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::core::{CommitId, EnvName, JobId, RepoId, Timestamp};

fn checked<T>(value: ValueRef<'_>, parse: impl FnOnce(&str) -> Result<T, String>) -> FromSqlResult<T> {
    parse(value.as_str()?).map_err(|e| FromSqlError::Other(e.into()))
}

impl ToSql for JobId {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl FromSql for JobId {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(JobId)
    }
}

macro_rules! text_type {
    ($t:ty, $parse:expr, $show:expr) => {
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from($show(self)))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                checked(value, $parse)
            }
        }
    };
}

text_type!(CommitId, CommitId::parse, |c: &CommitId| c.as_str().to_owned());
text_type!(EnvName, EnvName::parse, |e: &EnvName| e.as_str().to_owned());
text_type!(RepoId, |s: &str| Ok(RepoId::new(s)), |r: &RepoId| r.as_str().to_owned());
text_type!(Timestamp, Timestamp::parse, |t: &Timestamp| t.to_rfc3339());
