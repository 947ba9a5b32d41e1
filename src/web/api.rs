//! The JSON API: what a project has (environments, activities) and the actions on it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

pub use crate::activity::{activity, project_name};

use super::auth::Caller;
use super::Web;
use crate::core::{EnvName, JobId, RepoId};
use crate::ops::Actor;
use crate::queue::tokens::Role;
use crate::queue::{Job, QueueError};
use crate::store::deployed::{EnvDir, Environment};

/// An error answer: its status and a JSON body `{"error": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into() }
    }
    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: String) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: String) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, message)
    }
    pub fn bad_request(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn too_many(message: &str) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
    }
    pub fn internal(message: String) -> ApiError {
        tracing::error!(error = %message, "web request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> ApiError {
        match e {
            QueueError::Busy { .. } | QueueError::Conflict(_) => ApiError::conflict(e.to_string()),
            e => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
}

impl From<crate::ops::Error> for ApiError {
    fn from(e: crate::ops::Error) -> ApiError {
        use crate::ops::Error;
        match e {
            Error::Invalid(why) => ApiError::bad_request(why),
            Error::NotFound(why) => ApiError::not_found(why),
            Error::Conflict(why) => ApiError::conflict(why),
            Error::Queue(e) => e.into(),
            Error::Runner(e) => ApiError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The repository of the project called `name`, if the caller may see it.
async fn project(web: &Arc<Web>, caller: &Caller, name: &str) -> Result<RepoId, ApiError> {
    if !caller.sees(name) {
        return Err(ApiError::forbidden(format!("token `{}` has no access to project {name}", caller.token.name)));
    }
    let repos = web.with_store(|s| s.projects()).await?;
    repos.into_iter().find(|r| project_name(r) == name).ok_or_else(|| ApiError::not_found(format!("no project {name}")))
}

pub async fn console() -> Response {
    (
        [(header::CONTENT_SECURITY_POLICY, "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; frame-ancestors 'none'")],
        Html(include_str!("console.html")),
    )
        .into_response()
}

/// `GET /api/projects`: the projects the caller may see.
pub async fn projects(State(web): State<Arc<Web>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let repos = web.with_store(|s| s.projects()).await?;
    let environments = crate::store::deployed::environments(web.data.root());
    let list: Vec<Value> = repos
        .iter()
        .map(|r| (project_name(r), r))
        .filter(|(name, _)| caller.sees(name))
        .map(|(name, repo)| {
            let envs: Vec<&str> =
                environments.iter().filter(|e| e.repo.as_ref() == Some(repo)).map(|e| e.environment.as_str()).collect();
            let targets = crate::store::environments::Environments::load(repo.path())
                .map(|d| d.promotion_targets())
                .unwrap_or_default();
            json!({"name": name, "environments": envs, "role": caller.token.role_in(&name), "promotion_targets": targets})
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

fn environment(e: &Environment) -> Value {
    json!({
        "name": e.environment,
        "type": e.kind,
        "parent": e.parent,
        "state": e.state,
        "release": e.release,
        "commit": e.commit,
        "deployed_at": e.deployed_at,
        "releases": e.releases,
        "urls": e.urls,
        "primary_url": e.primary_url,
        "hint": e.hint,
    })
}

/// `GET /api/projects/{project}/environments`
pub async fn environments(
    State(web): State<Arc<Web>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let repo = project(&web, &caller, &name).await?;
    let data = web.data.clone();
    let envs = web.op(move |s| crate::ops::environment::list(&data, s)).await?;
    let list = envs.iter().filter(|e| e.repo.as_ref() == Some(&repo)).map(environment).collect();
    Ok(Json(Value::Array(list)))
}

#[derive(Deserialize)]
pub struct Page {
    /// Only activities older than this one (the last id of the previous page).
    before: Option<i64>,
    limit: Option<usize>,
    environment: Option<String>,
}

/// `GET /api/projects/{project}/activities`: newest first, 50 a page (`?before=ID&limit=N`).
pub async fn activities(
    State(web): State<Arc<Web>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let repo = project(&web, &caller, &name).await?;
    let limit = page.limit.unwrap_or(50).clamp(1, 500);
    let before = page.before.map(JobId);
    let jobs = web.with_store(move |s| s.activities(Some(&repo), before, limit)).await?;
    let list = jobs
        .iter()
        .filter(|j| page.environment.as_deref().is_none_or(|e| j.environment.as_str() == e))
        .map(activity)
        .collect();
    Ok(Json(Value::Array(list)))
}

/// The job `id`, if the caller may see its project.
pub async fn visible_job(web: &Arc<Web>, caller: &Caller, id: i64) -> Result<Job, ApiError> {
    let job = web
        .with_store(move |s| s.job(JobId(id)))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no activity #{id}")))?;
    let name = project_name(&job.repo);
    if !caller.sees(&name) {
        return Err(ApiError::forbidden(format!("token `{}` has no access to project {name}", caller.token.name)));
    }
    Ok(job)
}

/// `GET /api/activities/{id}`: one activity, with its phases so far (from its log).
pub async fn activity_one(
    State(web): State<Arc<Web>>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let job = visible_job(&web, &caller, id).await?;
    let mut value = activity(&job);
    let log = String::from_utf8_lossy(&web.log_from(job.id, 0).await?).into_owned();
    value["phases"] = super::log::phases(&log, job.finished_at.as_ref());
    Ok(Json(value))
}

/// The environment `env` of `repo`.
fn environment_dir(web: &Web, repo: &RepoId, env: &str) -> Result<EnvDir, ApiError> {
    let name = EnvName::parse(env).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(EnvDir::new(web.data.root(), repo, &name))
}

/// An activity queued: 202 with it.
fn queued(job: &Job) -> Response {
    (StatusCode::ACCEPTED, Json(activity(job))).into_response()
}

/// `POST /api/projects/{project}/environments/{environment}/redeploy` (developer): its slug
/// deployed again; an environment never deployed gets its last failed push again.
pub async fn redeploy(
    State(web): State<Arc<Web>>,
    caller: Caller,
    Path((name, env)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let repo = project(&web, &caller, &name).await?;
    caller.require(&name, Role::Developer)?;
    let env = EnvName::parse(&env).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (data, actor) = (web.data.clone(), Actor::token(&caller.token.name));
    let done = web.op(move |s| crate::ops::environment::redeploy(&data, s, &repo, &env, &actor)).await?;
    Ok(queued(&done.job))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    from: String,
    commit: Option<String>,
    #[serde(default)]
    force: bool,
}

/// `POST /api/projects/{project}/environments/{environment}/promote` (admin), with the body
/// `{"from": ENV, "commit": "SHA"?, "force": false}`: deploys the slug FROM runs to the
/// environment (staging or production), never building. A refused promotion is 409 with why.
pub async fn promote(
    State(web): State<Arc<Web>>,
    caller: Caller,
    Path((name, env)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    project(&web, &caller, &name).await?;
    caller.require(&name, Role::Admin)?;
    let body: PromoteBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("the body is not {{\"from\": ENV, \"commit\": SHA, \"force\": BOOL}}: {e}"))
    })?;
    let (data, actor) = (web.data.clone(), Actor::token(&caller.token.name));
    let job = web
        .op(move |s| {
            let promotion = crate::ops::promote::Promotion {
                project: &name,
                from: &body.from,
                to: &env,
                commit: body.commit.as_deref(),
                force: body.force,
                by: None,
            };
            crate::ops::promote::promote(&data, s, promotion, &actor)
        })
        .await?;
    Ok(queued(&job))
}

#[derive(Deserialize, Default)]
struct RollbackBody {
    release: Option<Value>,
}

/// `POST /api/projects/{project}/environments/{environment}/rollback` (admin), with an optional
/// body `{"release": N}` (default: the release before the current one).
pub async fn rollback(
    State(web): State<Arc<Web>>,
    caller: Caller,
    Path((name, env)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let repo = project(&web, &caller, &name).await?;
    caller.require(&name, Role::Admin)?;
    let body: RollbackBody = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not {{\"release\": N}}: {e}")))?
    };
    let release = match body.release {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(ApiError::bad_request(format!("release {other} is not a release number"))),
    };
    let dir = environment_dir(&web, &repo, &env)?;
    let (data, actor) = (web.data.clone(), Actor::token(&caller.token.name));
    let done = web
        .op(move |s| crate::ops::environment::rollback(&data, None, s, &dir, &env, release.as_deref(), &actor))
        .await?;
    Ok(queued(&done.job))
}

/// `POST /api/activities/{id}/cancel` (developer): cancels a pending or running activity; the
/// cancellation is an activity of its own.
pub async fn cancel(State(web): State<Arc<Web>>, caller: Caller, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let job = visible_job(&web, &caller, id).await?;
    caller.require(&project_name(&job.repo), Role::Developer)?;
    let (data, actor) = (web.data.clone(), Actor::token(&caller.token.name));
    let done = web.op(move |s| crate::ops::jobs::cancel(&data, s, job.id, &actor)).await?;
    Ok(queued(&done.record))
}
