//! The web API's tokens: created by the admin for a person or a script, with a role in one
//! project (or, for an admin token without a project, in all). Only each token's digest is
//! kept; the token itself is shown once, when it is created.

use serde::Serialize;

use super::QueueError;
use crate::core::Timestamp;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads projects, environments, activities and logs.
    Viewer,
    /// Also redeploys environments and cancels activities.
    Developer,
    /// Also rolls back, and everything else.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Developer, Role::Admin].into_iter().find(|r| r.as_str() == s)
    }
}

/// A token as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Token {
    pub name: String,
    /// The project it is for (a bare repository's name); None: every project (admins only).
    pub project: Option<String>,
    pub role: Role,
    pub created_at: Timestamp,
}

impl Token {
    /// The role this token has in `project`, if any.
    pub fn role_in(&self, project: &str) -> Option<Role> {
        match &self.project {
            None => Some(self.role),
            Some(p) if p == project => Some(self.role),
            Some(_) => None,
        }
    }
}

/// Where tokens are kept (the queue's database: one store for the hooks, runners and the web).
pub trait TokenStore {
    /// Keeps a new token's digest; refused when the name is taken.
    fn create_token(&mut self, token: &Token, digest: &str) -> Result<(), QueueError>;
    fn tokens(&self) -> Result<Vec<Token>, QueueError>;
    /// Forgets a token; false when there is none of that name.
    fn revoke_token(&mut self, name: &str) -> Result<bool, QueueError>;
    /// The token whose secret has this digest.
    fn token_by_digest(&self, digest: &str) -> Result<Option<Token>, QueueError>;
}
