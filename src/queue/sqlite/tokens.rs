//! The tokens table of the SQLite store.

use rusqlite::{params, OptionalExtension};

use super::SqliteQueue;
use crate::queue::tokens::{Role, Token, TokenStore};
use crate::queue::QueueError;

fn token_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Token> {
    let role: String = row.get(2)?;
    Ok(Token {
        name: row.get(0)?,
        project: row.get(1)?,
        role: Role::parse(&role).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, format!("role {role}").into())
        })?,
        created_at: row.get(3)?,
    })
}

impl TokenStore for SqliteQueue {
    fn create_token(&mut self, token: &Token, digest: &str) -> Result<(), QueueError> {
        if self.tokens()?.iter().any(|t| t.name == token.name) {
            return Err(QueueError::Conflict(format!(
                "there is already a token named `{}` (token revoke {} first)",
                token.name, token.name
            )));
        }
        self.conn
            .execute(
                "INSERT INTO tokens (name, project, role, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![token.name, token.project, token.role.as_str(), digest, token.created_at],
            )
            .map_err(self.write_err())?;
        Ok(())
    }

    fn tokens(&self) -> Result<Vec<Token>, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, project, role, created_at FROM tokens ORDER BY name")
            .map_err(self.read_err())?;
        let tokens = stmt
            .query_map([], token_from_row)
            .map_err(self.read_err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.read_err())?;
        Ok(tokens)
    }

    fn revoke_token(&mut self, name: &str) -> Result<bool, QueueError> {
        let n = self.conn.execute("DELETE FROM tokens WHERE name = ?1", [name]).map_err(self.write_err())?;
        Ok(n > 0)
    }

    fn token_by_digest(&self, digest: &str) -> Result<Option<Token>, QueueError> {
        self.conn
            .prepare_cached("SELECT name, project, role, created_at FROM tokens WHERE hash = ?1")
            .and_then(|mut s| s.query_row([digest], token_from_row).optional())
            .map_err(self.read_err())
    }
}
