//! How the core's ids and times are written in PostgreSQL: as in SQLite, ids as they print, job
//! ids as `bigint`, times as fixed-width RFC 3339 text (ordered as the times are). A value that
//! fails its type's check on the way out is a damaged row.

use postgres::types::{FromSql, IsNull, ToSql, Type};

use crate::core::{CommitId, EnvName, JobId, RepoId, Timestamp};

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for JobId {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        self.0.to_sql(ty, out)
    }
    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty)
    }
    postgres::types::to_sql_checked!();
}

impl<'a> FromSql<'a> for JobId {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        i64::from_sql(ty, raw).map(JobId)
    }
    fn accepts(ty: &Type) -> bool {
        <i64 as FromSql>::accepts(ty)
    }
}

macro_rules! text_type {
    ($t:ty, $parse:expr, $show:expr) => {
        impl ToSql for $t {
            fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
                let text: String = $show(self);
                text.to_sql(ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <String as ToSql>::accepts(ty)
            }
            postgres::types::to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $t {
            fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
                let text = <&str as FromSql>::from_sql(ty, raw)?;
                $parse(text).map_err(|e: String| e.into())
            }
            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    };
}

text_type!(CommitId, CommitId::parse, |c: &CommitId| c.as_str().to_owned());
text_type!(EnvName, EnvName::parse, |e: &EnvName| e.as_str().to_owned());
text_type!(RepoId, |s: &str| Ok(RepoId::new(s)), |r: &RepoId| r.as_str().to_owned());
text_type!(Timestamp, Timestamp::parse, |t: &Timestamp| t.to_rfc3339());
