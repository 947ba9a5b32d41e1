//! The admin's operations on who may act (tokens) and who is told (webhooks): their rules,
//! once for every front end.

use super::Error;
use crate::queue::tokens::{Role, Token, TokenStore};
use crate::queue::webhooks::{Webhook, WebhookStore, EVENTS};

/// Creates a token `name` of `role` (a viewer's or developer's is for one `project`); returns it
/// and its secret, which is shown once and kept only as a digest.
pub fn create_token(
    store: &mut dyn TokenStore,
    name: String,
    project: Option<String>,
    role: &str,
) -> Result<(Token, String), Error> {
    let role =
        Role::parse(role).ok_or_else(|| Error::Invalid(format!("role `{role}` is not viewer, developer or admin")))?;
    if project.is_none() && role != Role::Admin {
        return Err(Error::Invalid("a viewer or developer token is for one project: name it with --project".into()));
    }
    if name.is_empty() || name.chars().any(|c| c.is_control()) {
        return Err(Error::Invalid("a token's name is a word people recognise it by, such as alice or ci".into()));
    }
    let secret = crate::secret::token().map_err(Error::Invalid)?;
    let token = Token { name, project, role, created_at: crate::core::Timestamp::now() };
    store.create_token(&token, &crate::secret::digest(&secret))?;
    Ok((token, secret))
}

pub fn revoke_token(store: &mut dyn TokenStore, name: &str) -> Result<(), Error> {
    match store.revoke_token(name)? {
        true => Ok(()),
        false => Err(Error::NotFound(format!("there is no token named `{name}`"))),
    }
}

/// Posts the `events` of `project`'s activities to `url` (http or https).
pub fn add_webhook(
    store: &mut dyn WebhookStore,
    project: &str,
    url: &str,
    events: &[String],
) -> Result<Webhook, Error> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['"', '\n', '\r', '\\']) {
        return Err(Error::Invalid(format!("`{url}` is not an http(s) URL")));
    }
    if let Some(e) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(Error::Invalid(format!("event `{e}` is not one of {}", EVENTS.join(", "))));
    }
    Ok(store.add_webhook(project, url, events)?)
}

pub fn remove_webhook(store: &mut dyn WebhookStore, id: i64) -> Result<(), Error> {
    match store.remove_webhook(id)? {
        true => Ok(()),
        false => Err(Error::NotFound(format!("there is no webhook #{id}"))),
    }
}
