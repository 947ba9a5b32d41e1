//! Who is calling, and whether they may.
//!
//! Scripts send `Authorization: Bearer TOKEN` with every request. Browsers log in once with a
//! token (`POST /api/login`) and then send the session cookie it sets (HttpOnly, SameSite=Strict:
//! other sites cannot read it nor make the browser send it). A request that changes something
//! and comes with the cookie must also carry the session's CSRF token in `X-CSRF-Token` (a
//! header another site's form or script cannot set) and, when the browser says where it comes
//! from (`Origin`), come from this host. The token is looked up on every request, so revoking it
//! ends its sessions at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::{header, request::Parts, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::api::ApiError;
use super::Web;
use crate::queue::tokens::{Role, Token};

const COOKIE: &str = "pushgate_session";
/// A session lasts this long without use.
const IDLE: Duration = Duration::from_secs(12 * 3600);

/// Sessions one token may have at once: a login past them ends the token's oldest session
/// (a script logging in without end must not grow the server).
pub const SESSIONS_PER_TOKEN: usize = 16;
/// Sessions of every token: past them, ended sessions are swept, and a login is refused if
/// none had ended.
const SESSIONS: usize = 10_000;

/// The browsers' sessions: session id -> the token's digest and the session's CSRF token;
/// and each token's sessions, oldest first. A request finds its session in one lookup.
#[derive(Default)]
pub struct Sessions(Mutex<SessionTable>);

#[derive(Default)]
pub struct SessionTable {
    by_id: HashMap<String, Session>,
    by_token: HashMap<String, std::collections::VecDeque<String>>,
}

impl SessionTable {
    fn remove(&mut self, id: &str) {
        if let Some(s) = self.by_id.remove(id) {
            if let Some(ids) = self.by_token.get_mut(&s.digest) {
                ids.retain(|i| i != id);
                if ids.is_empty() {
                    self.by_token.remove(&s.digest);
                }
            }
        }
    }

    /// Adds a session, ending its token's oldest past [`SESSIONS_PER_TOKEN`]; Err when the
    /// server holds too many sessions that are all in use.
    fn add(&mut self, id: String, session: Session) -> Result<(), ApiError> {
        if self.by_id.len() >= SESSIONS {
            let ended: Vec<String> =
                self.by_id.iter().filter(|(_, s)| s.last_used.elapsed() >= IDLE).map(|(i, _)| i.clone()).collect();
            for i in ended {
                self.remove(&i);
            }
            if self.by_id.len() >= SESSIONS {
                return Err(ApiError::too_many("too many console sessions are open on this server; try again later"));
            }
        }
        let ids = self.by_token.entry(session.digest.clone()).or_default();
        ids.push_back(id.clone());
        let over: Vec<String> = (ids.len() > SESSIONS_PER_TOKEN)
            .then(|| ids.drain(..ids.len() - SESSIONS_PER_TOKEN).collect())
            .unwrap_or_default();
        self.by_id.insert(id, session);
        for old in over {
            self.by_id.remove(&old);
        }
        Ok(())
    }
}

struct Session {
    digest: String,
    csrf: String,
    last_used: Instant,
}

/// An authenticated caller.
pub struct Caller {
    pub token: Token,
    /// Came with the session cookie (then `csrf` is its session's CSRF token).
    pub csrf: Option<String>,
}

impl Caller {
    /// Refused (403) unless the caller has at least `role` in `project`.
    pub fn require(&self, project: &str, role: Role) -> Result<(), ApiError> {
        match self.token.role_in(project) {
            Some(r) if r >= role => Ok(()),
            Some(r) => Err(ApiError::forbidden(format!(
                "token `{}` is a {} of project {project}; this needs a {}",
                self.token.name,
                r.as_str(),
                role.as_str()
            ))),
            None => Err(ApiError::forbidden(format!("token `{}` has no access to project {project}", self.token.name))),
        }
    }

    pub fn sees(&self, project: &str) -> bool {
        self.token.role_in(project).is_some()
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// A request that changes something, with the session cookie: it must come from this site.
fn check_same_site(parts: &Parts, csrf: &str) -> Result<(), ApiError> {
    let sent = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !crate::secret::same(sent, csrf) {
        return Err(ApiError::forbidden("a request with the session cookie needs its X-CSRF-Token header".into()));
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
        if origin_host != host {
            return Err(ApiError::forbidden(format!("a cross-site request (from {origin}) is refused")));
        }
    }
    Ok(())
}

impl FromRequestParts<Arc<Web>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Caller, ApiError> {
        let (digest, csrf) = if let Some(token) = bearer(&parts.headers) {
            (crate::secret::digest(token), None)
        } else if let Some(id) = cookie(&parts.headers, COOKIE) {
            let mut sessions = web.sessions.0.lock().unwrap_or_else(|p| p.into_inner());
            let ended = || ApiError::unauthorized("the session has ended; log in again");
            let session = sessions.by_id.get_mut(&id).ok_or_else(ended)?;
            if session.last_used.elapsed() >= IDLE {
                sessions.remove(&id);
                return Err(ended());
            }
            session.last_used = Instant::now();
            (session.digest.clone(), Some(session.csrf.clone()))
        } else {
            return Err(ApiError::unauthorized("no token: send Authorization: Bearer TOKEN, or log in"));
        };
        if let Some(csrf) = &csrf {
            if !matches!(parts.method, Method::GET | Method::HEAD) {
                check_same_site(parts, csrf)?;
            }
        }
        let token = web
            .with_store(move |s| s.token_by_digest(&digest))
            .await?
            .ok_or_else(|| ApiError::unauthorized("this token is not valid (unknown or revoked)"))?;
        Ok(Caller { token, csrf })
    }
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

fn who(token: &Token, csrf: &str) -> serde_json::Value {
    json!({"name": token.name, "project": token.project, "role": token.role, "csrf": csrf})
}

/// `POST /api/login {"token": …}`: a session cookie for a browser.
pub async fn login(State(web): State<Arc<Web>>, Json(login): Json<Login>) -> Result<Response, ApiError> {
    let digest = crate::secret::digest(login.token.trim());
    let lookup = digest.clone();
    let token = web
        .with_store(move |s| s.token_by_digest(&lookup))
        .await?
        .ok_or_else(|| ApiError::unauthorized("this token is not valid (unknown or revoked)"))?;
    let id = crate::secret::token().map_err(ApiError::internal)?;
    let csrf = crate::secret::token().map_err(ApiError::internal)?;
    web.sessions
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .add(id.clone(), Session { digest, csrf: csrf.clone(), last_used: Instant::now() })?;
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}", IDLE.as_secs());
    Ok(([(header::SET_COOKIE, cookie)], Json(who(&token, &csrf))).into_response())
}

/// `POST /api/logout`: ends the browser's session.
pub async fn logout(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        web.sessions.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    (StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response()
}

/// `GET /api/session`: who the caller is (and the CSRF token a logged-in page sends back).
pub async fn session(caller: Caller) -> Json<serde_json::Value> {
    Json(who(&caller.token, caller.csrf.as_deref().unwrap_or_default()))
}
