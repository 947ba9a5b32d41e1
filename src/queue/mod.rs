//! The durable build queue: one job per accepted branch push.
//!
//! Nothing lost, nothing phantom. `pre-receive` cannot know whether git will really move a ref
//! (a non-fast-forward, a failed atomic push or another hook can still refuse it), and the
//! pushed objects are still in quarantine. So it writes a *reservation*: the push's intent,
//! not runnable. If that write fails, the push is refused. `post-receive`, which git runs only
//! for refs it really updated, turns reservations into `pending` jobs. If `post-receive` never
//! runs (killed, crashed), [`reconcile`](sqlite::SqliteQueue::reconcile) settles the
//! reservation once its `git receive-pack` is gone: promoted if the branch contains the pushed
//! commit (git applied the update), dropped if not (git refused it, or a later force-push
//! replaced it, and that push has its own job). With `core.logAllRefUpdates` on, the reflog
//! answers exactly; it is off by default because it costs git a file per ref on every push.
//! The runner only ever sees jobs.

pub mod postgres;
pub mod sqlite;
pub mod tokens;
pub mod webhooks;

use std::time::Duration;

use serde::Serialize;

use crate::core::{CommitId, EnvName, JobId, RefUpdate, RepoId, Timestamp};

pub use sqlite::SqliteQueue;

/// What pushgate needs of a job queue: the hooks reserve and promote, the runners claim, keep
/// and finish, people list and cancel. SQLite implements it ([`SqliteQueue`]); the shape fits
/// a server database too: `claim` is one `SELECT … FOR UPDATE SKIP LOCKED` transaction,
/// leases are times in rows, and the wake-up after `promote` can be a NOTIFY that idle runners
/// LISTEN for (beside SQLite it is the data directory's FIFO, `store::wake`).
pub trait JobStore {
    /// Records the intents of one push, all or nothing (pre-receive). Fails rather than lose one.
    fn reserve(&mut self, reservations: &[Reservation]) -> Result<(), QueueError>;
    /// Turns the reservations of refs git updated into jobs (post-receive).
    fn promote(
        &mut self,
        repo: &RepoId,
        updates: &[RefUpdate],
        receiver: &Receiver,
        refs: &dyn RefLog,
    ) -> Result<Vec<Job>, QueueError>;
    /// Settles reservations whose post-receive never ran.
    fn reconcile(&mut self, refs: &dyn RefLog) -> Result<usize, QueueError>;
    /// Claims the oldest claimable job in `scope` under a lease (never two of one environment
    /// at once).
    fn claim(&mut self, runner: &str, lease: Duration, scope: &Scope) -> Result<Option<Job>, QueueError>;
    /// Claims pending job `id` itself, if nothing of its environment runs (an action done at
    /// once from the command line, through the environment's one slot); None when it is not
    /// pending or its environment is busy: a runner takes it after what runs.
    fn claim_job(&mut self, id: JobId, runner: &str, lease: Duration) -> Result<Option<Job>, QueueError>;
    /// A build-only runner built the job: pending again, for a runner that deploys its
    /// environment (or superseded, when a newer push of it is pending). False when it was no
    /// longer this runner's.
    fn handoff(&mut self, id: JobId, runner: &str) -> Result<bool, QueueError>;
    /// Renews a claim; false when the job is no longer this runner's.
    fn heartbeat(&mut self, id: JobId, runner: &str, lease: Duration) -> Result<bool, QueueError>;
    /// Ends a claimed job; false when it was no longer this runner's.
    fn finish(&mut self, id: JobId, runner: &str, state: JobState, release: Option<&str>) -> Result<bool, QueueError>;
    /// Gives a claimed job back to the queue (the runner is stopping).
    fn release_claim(&mut self, id: JobId, runner: &str) -> Result<(), QueueError>;
    /// Cancels a pending or running job; the state it was in, if it could be cancelled.
    fn cancel(&mut self, id: JobId) -> Result<Option<JobState>, QueueError>;
    /// Queues a job that is not a push; refused while the environment has a pending job.
    fn enqueue(&mut self, request: &Request) -> Result<Job, QueueError>;
    /// Cancels the pending jobs of a deleted branch; their ids.
    fn cancel_pending_of(&mut self, repo: &RepoId, ref_name: &str) -> Result<Vec<JobId>, QueueError>;
    fn job(&self, id: JobId) -> Result<Option<Job>, QueueError>;
    /// Every job, oldest first.
    fn jobs(&self) -> Result<Vec<Job>, QueueError>;
    /// Jobs newest first, of one repository or all, older than `before`, at most `limit`.
    fn activities(&self, repo: Option<&RepoId>, before: Option<JobId>, limit: usize) -> Result<Vec<Job>, QueueError>;
    /// The repositories that have jobs.
    fn projects(&self) -> Result<Vec<RepoId>, QueueError>;
    /// Records an action done at once (a cancel) as an ended job of its own.
    fn record(&mut self, request: &Request, state: JobState) -> Result<Job, QueueError>;
    /// The topology and changes stored with a job (JSON).
    fn job_documents(&self, id: JobId) -> Result<Option<(String, String)>, QueueError>;
    /// The plan stored with a job.
    fn job_plan(&self, id: JobId) -> Result<Option<crate::core::plan::Plan>, QueueError>;
    /// Reservations not settled yet.
    fn reservations(&self) -> Result<usize, QueueError>;
    /// Keeps the bytes of a job's log from `offset` (runners on other machines ship their logs
    /// to a shared store, so the console and the push read them wherever they run). A chunk
    /// already kept at that offset is not written twice.
    fn append_log(&mut self, id: JobId, offset: u64, bytes: &[u8]) -> Result<(), QueueError>;
    /// A job's log as kept, from `offset`.
    fn log_from(&self, id: JobId, offset: u64) -> Result<Vec<u8>, QueueError>;
}

impl JobStore for SqliteQueue {
    fn reserve(&mut self, reservations: &[Reservation]) -> Result<(), QueueError> {
        SqliteQueue::reserve(self, reservations)
    }
    fn promote(
        &mut self,
        repo: &RepoId,
        updates: &[RefUpdate],
        receiver: &Receiver,
        refs: &dyn RefLog,
    ) -> Result<Vec<Job>, QueueError> {
        SqliteQueue::promote(self, repo, updates, receiver, refs)
    }
    fn reconcile(&mut self, refs: &dyn RefLog) -> Result<usize, QueueError> {
        SqliteQueue::reconcile(self, refs)
    }
    fn claim(&mut self, runner: &str, lease: Duration, scope: &Scope) -> Result<Option<Job>, QueueError> {
        SqliteQueue::claim(self, runner, lease, scope)
    }
    fn claim_job(&mut self, id: JobId, runner: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        SqliteQueue::claim_job(self, id, runner, lease)
    }
    fn handoff(&mut self, id: JobId, runner: &str) -> Result<bool, QueueError> {
        SqliteQueue::handoff(self, id, runner)
    }
    fn heartbeat(&mut self, id: JobId, runner: &str, lease: Duration) -> Result<bool, QueueError> {
        SqliteQueue::heartbeat(self, id, runner, lease)
    }
    fn finish(&mut self, id: JobId, runner: &str, state: JobState, release: Option<&str>) -> Result<bool, QueueError> {
        SqliteQueue::finish(self, id, runner, state, release)
    }
    fn release_claim(&mut self, id: JobId, runner: &str) -> Result<(), QueueError> {
        SqliteQueue::release_claim(self, id, runner)
    }
    fn cancel(&mut self, id: JobId) -> Result<Option<JobState>, QueueError> {
        SqliteQueue::cancel(self, id)
    }
    fn cancel_pending_of(&mut self, repo: &RepoId, ref_name: &str) -> Result<Vec<JobId>, QueueError> {
        SqliteQueue::cancel_pending_of(self, repo, ref_name)
    }
    fn enqueue(&mut self, request: &Request) -> Result<Job, QueueError> {
        SqliteQueue::enqueue(self, request)
    }
    fn job(&self, id: JobId) -> Result<Option<Job>, QueueError> {
        SqliteQueue::job(self, id)
    }
    fn jobs(&self) -> Result<Vec<Job>, QueueError> {
        SqliteQueue::jobs(self)
    }
    fn activities(&self, repo: Option<&RepoId>, before: Option<JobId>, limit: usize) -> Result<Vec<Job>, QueueError> {
        SqliteQueue::activities(self, repo, before, limit)
    }
    fn projects(&self) -> Result<Vec<RepoId>, QueueError> {
        SqliteQueue::projects(self)
    }
    fn record(&mut self, request: &Request, state: JobState) -> Result<Job, QueueError> {
        SqliteQueue::record(self, request, state)
    }
    fn job_documents(&self, id: JobId) -> Result<Option<(String, String)>, QueueError> {
        SqliteQueue::job_documents(self, id)
    }
    fn job_plan(&self, id: JobId) -> Result<Option<crate::core::plan::Plan>, QueueError> {
        SqliteQueue::job_plan(self, id)
    }
    fn reservations(&self) -> Result<usize, QueueError> {
        SqliteQueue::reservations(self)
    }
    fn append_log(&mut self, id: JobId, offset: u64, bytes: &[u8]) -> Result<(), QueueError> {
        SqliteQueue::append_log(self, id, offset, bytes)
    }
    fn log_from(&self, id: JobId, offset: u64) -> Result<Vec<u8>, QueueError> {
        SqliteQueue::log_from(self, id, offset)
    }
}

/// The part of a log from `offset`, out of its chunks (offset, bytes) in order.
pub fn join_chunks(chunks: Vec<(u64, Vec<u8>)>, offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = offset;
    for (start, bytes) in chunks {
        let end = start + bytes.len() as u64;
        if end <= at || start > at {
            continue; // before what is asked, or after a gap (a chunk not shipped yet)
        }
        out.extend_from_slice(&bytes[(at - start) as usize..]);
        at = end;
    }
    out
}

/// Everything the store keeps: jobs, the API's tokens, webhooks and their deliveries.
pub trait Store: JobStore + tokens::TokenStore + webhooks::WebhookStore + Send {}
impl<T: JobStore + tokens::TokenStore + webhooks::WebhookStore + Send> Store for T {}

/// Where the queue is: the embedded SQLite database of a data directory (the default), or a
/// PostgreSQL database named by its URL, which runners on several machines share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(std::path::PathBuf),
    Postgres(String),
}

impl Location {
    /// `url` (postgres://… or postgresql://…) when given, else the data directory's SQLite.
    pub fn new(url: Option<&str>, data_dir: &std::path::Path) -> Result<Location, String> {
        match url.map(str::trim).filter(|u| !u.is_empty()) {
            None => Ok(Location::Sqlite(data_dir.to_owned())),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Location::Postgres(u.to_owned()))
            }
            Some(u) => Err(format!(
                "the queue `{}` is not a postgres:// URL (without one, the queue is the data directory's SQLite)",
                postgres::masked(u)
            )),
        }
    }

    pub fn open(&self, timeout: Duration) -> Result<Box<dyn Store>, QueueError> {
        Ok(match self {
            Location::Sqlite(dir) => Box::new(SqliteQueue::open(dir, timeout)?),
            Location::Postgres(url) => Box::new(postgres::PgQueue::open(url, timeout)?),
        })
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Location::Sqlite(_))
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(dir) => write!(f, "{}", crate::store::DataDir::new(dir).queue_file().display()),
            Location::Postgres(url) => f.write_str(&postgres::masked(url)),
        }
    }
}

/// Opens the queue at `url` (PostgreSQL), else the data directory's.
pub fn open_at(url: Option<&str>, data_dir: &std::path::Path, timeout: Duration) -> Result<Box<dyn Store>, QueueError> {
    Location::new(url, data_dir).map_err(QueueError::Setting)?.open(timeout)
}

/// Opens the embedded queue of a data directory.
pub fn open(data_dir: &std::path::Path, timeout: Duration) -> Result<Box<dyn Store>, QueueError> {
    Location::Sqlite(data_dir.to_owned()).open(timeout)
}

/// Which jobs a runner takes: `serve --role build|deploy|all [--environments LIST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// Builds slugs. A runner that only builds hands each job on once its slugs are stored.
    pub build: bool,
    /// Deploys: jobs built (here or by a build runner), and actions that build nothing.
    pub deploy: bool,
    /// Only these environments; None: every one.
    pub environments: Option<Vec<EnvName>>,
    /// The most builds one project may have running at once (on every runner of the queue):
    /// one project's builds then cannot hold every worker while another project waits. Actions
    /// that build nothing (rollback, promote, sync, delete) are not bounded. None: no bound.
    pub per_project: Option<i64>,
}

impl Default for Scope {
    fn default() -> Scope {
        Scope { build: true, deploy: true, environments: None, per_project: None }
    }
}

impl Scope {
    /// What a serving runner of `concurrency` workers takes: with two or more, one worker
    /// always stays for the other projects (and for actions): a project has at most
    /// `concurrency - 1` builds running.
    pub fn of_runner(build: bool, deploy: bool, environments: Option<Vec<EnvName>>, concurrency: usize) -> Scope {
        let per_project = (concurrency > 1).then_some(concurrency as i64 - 1);
        Scope { build, deploy, environments, per_project }
    }

    /// The environments as a JSON array (the stores filter with it), None for all.
    pub fn environments_json(&self) -> Option<String> {
        self.environments
            .as_ref()
            .map(|e| serde_json::to_string(&e.iter().map(|n| n.as_str()).collect::<Vec<_>>()).unwrap_or_default())
    }

    /// Whether a job of this kind is built before it is deployed.
    pub fn builds(kind: JobKind) -> bool {
        matches!(kind, JobKind::Push | JobKind::Redeploy)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// A newer push to the same environment replaced it before it ran.
    Superseded,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|j| j.as_str() == s)
    }

    /// How an ended job ended, in the words of the API and the webhooks; None while it has not.
    pub fn result(self) -> Option<&'static str> {
        match self {
            JobState::Pending | JobState::Running => None,
            JobState::Succeeded => Some("success"),
            JobState::Failed => Some("failure"),
            JobState::Cancelled => Some("cancelled"),
            JobState::Superseded => Some("superseded"),
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Build and deploy a pushed commit.
    Push,
    /// Copy the parent environment's data into the environment again (`env sync`).
    Sync,
    /// Delete the environment: off the router, its services dropped, its files removed.
    Delete,
    /// Deploy the commit the environment runs again (its slug reused, its hooks run again).
    Redeploy,
    /// Switch the environment back to a kept release.
    Rollback,
    /// The cancellation of another job (recorded when done: options name the job).
    Cancel,
    /// Deploy the slug another environment runs (options: `{"from": ENV}`), never building:
    /// staging and production are reached this way.
    Promote,
}

impl JobKind {
    pub const ALL: [JobKind; 7] = [
        JobKind::Push,
        JobKind::Sync,
        JobKind::Delete,
        JobKind::Redeploy,
        JobKind::Rollback,
        JobKind::Cancel,
        JobKind::Promote,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Push => "push",
            JobKind::Sync => "sync",
            JobKind::Delete => "delete",
            JobKind::Redeploy => "redeploy",
            JobKind::Rollback => "rollback",
            JobKind::Cancel => "cancel",
            JobKind::Promote => "promote",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A job asked for by a person rather than a push (`env sync`, the API's actions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: JobKind,
    pub repo: RepoId,
    pub ref_name: String,
    pub environment: EnvName,
    /// The commit the environment runs.
    pub commit: CommitId,
    /// What the job needs beyond that (JSON).
    pub options: String,
    /// Who asked (a token's name, a system user).
    pub pusher: Option<String>,
}

/// One job for one environment: the build and deployment of a pushed commit, or an action on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: JobId,
    #[serde(rename = "type")]
    pub kind: JobKind,
    /// What a job that is not a push was asked to do (JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
    pub repo: RepoId,
    #[serde(rename = "ref")]
    pub ref_name: String,
    pub environment: EnvName,
    pub old_commit: CommitId,
    pub commit: CommitId,
    pub state: JobState,
    pub superseded_by: Option<JobId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// Who pushed (the git server's user) or asked.
    pub pusher: Option<String>,
    /// The release it deployed or switched to.
    pub release: Option<String>,
    /// The runner that built it, when a build runner handed it on.
    pub built_by: Option<String>,
    /// The runner that ran its last phase (deployed it).
    pub deployed_by: Option<String>,
}

impl Job {
    /// Who ran each phase: the build runner that handed it on (else the runner that ran it
    /// whole) and the runner that ran its last phase.
    pub fn runners(&self) -> Runners<'_> {
        Runners { build: self.built_by.as_deref().or(self.deployed_by.as_deref()), deploy: self.deployed_by.as_deref() }
    }
}

/// Who ran each phase of a job (`jobs --json`'s `runner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Runners<'a> {
    pub build: Option<&'a str>,
    pub deploy: Option<&'a str>,
}

/// A job as `jobs --json` shows it: the job and who ran each phase.
#[derive(Debug, Serialize)]
pub struct JobView<'a> {
    #[serde(flatten)]
    pub job: &'a Job,
    pub runner: Runners<'a>,
}

/// A reservation as a store keeps it: its documents by id.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub repo: RepoId,
    pub ref_name: String,
    pub environment: EnvName,
    pub old_commit: CommitId,
    pub new_commit: CommitId,
    pub topology_id: i64,
    pub changes_id: i64,
    pub receiver: Receiver,
    pub plan_id: Option<i64>,
    pub pusher: Option<String>,
}

/// Reservations of pushes on other hosts are settled once they are this old.
const FOREIGN_RESERVATION_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

impl Stored {
    /// Whether the push that made it may still be running (its `git receive-pack` is alive; on
    /// another host, whether it is younger than an hour): if so, it is not settled yet.
    pub fn in_progress(&self, created_at: Timestamp) -> bool {
        match self.receiver.alive() {
            Some(alive) => alive,
            None => created_at.age(Timestamp::now()) < FOREIGN_RESERVATION_AGE,
        }
    }
}

/// What `pre-receive` records for one branch update, before git moves the ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub repo: RepoId,
    pub ref_name: String,
    pub environment: EnvName,
    pub old_commit: CommitId,
    pub new_commit: CommitId,
    pub topology: String,
    pub changes: String,
    /// What the runner builds and deploys ([`crate::core::plan::Plan`], JSON).
    pub plan: String,
    /// The `git receive-pack` process of the push, to tell a push in progress from a dead one.
    pub receiver: Receiver,
    /// Who pushed, as the git server says ([`pusher`]).
    pub pusher: Option<String>,
}

/// Who is pushing, as the git server tells its hooks: GitLab's `GL_USERNAME`, Gitea's and
/// Forgejo's `GITEA_PUSHER_NAME`, gitolite's `GL_USER`, an HTTP server's `REMOTE_USER`, else the
/// system user the push runs as (one per developer on a plain ssh server).
pub fn pusher(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    ["GL_USERNAME", "GITEA_PUSHER_NAME", "GL_USER", "REMOTE_USER", "USER", "LOGNAME"]
        .into_iter()
        .find_map(|k| env(k).filter(|v| !v.is_empty()))
        .or_else(|| {
            // SAFETY: getpwuid returns a pointer into static storage, read at once.
            unsafe {
                let pw = libc::getpwuid(libc::geteuid());
                (!pw.is_null()).then(|| std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned())
            }
        })
}

/// A process, identified beyond its pid (pids are reused): host, pid and start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub host: String,
    pub pid: u32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat`), if known.
    pub started: Option<u64>,
}

impl Receiver {
    /// The parent of this process: git's `receive-pack` when called as a hook.
    pub fn parent() -> Receiver {
        Receiver::of(std::os::unix::process::parent_id())
    }

    /// A process of this host.
    pub fn of(pid: u32) -> Receiver {
        Receiver { host: hostname(), pid, started: process_start(pid) }
    }

    /// Whether the process still runs. Only answerable on the same host; elsewhere, assume it
    /// does until the reservation is old (see `reconcile`).
    pub fn alive(&self) -> Option<bool> {
        if self.host != hostname() {
            return None;
        }
        Some(match (process_start(self.pid), self.started) {
            (Some(now), Some(then)) => now == then,
            (Some(_), None) => true,
            (None, _) => false,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

/// Field 22 of `/proc/PID/stat`: the process's start time.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last `)`.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

/// What the queue needs to know about refs to settle reservations.
pub trait RefLog {
    /// Whether git updated `ref_name` of `repo` from `old` to `new` (in its reflog, or, without
    /// one, whether the branch now contains `new`). None when the repository cannot be read.
    fn was_updated(&self, repo: &RepoId, ref_name: &str, old: &CommitId, new: &CommitId) -> Option<bool>;
    /// The commit `ref_name` points at now.
    fn tip(&self, repo: &RepoId, ref_name: &str) -> Option<CommitId>;
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the build queue {path} cannot be opened: {source}{}", advice(source))]
    Open { path: String, source: rusqlite::Error },
    #[error("the build queue {path} cannot be written: {source}{}", advice(source))]
    Write { path: String, source: rusqlite::Error },
    #[error("the build queue {path} cannot be read: {source}{}", advice(source))]
    Read { path: String, source: rusqlite::Error },
    #[error("creating the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("{0}")]
    Conflict(String),
    /// The queue's address is not one pushgate can use.
    #[error("{0}")]
    Setting(String),
    #[error(
        "the build queue at {url} cannot be {}: {}{}",
        action_word(action),
        source_text(source),
        server_advice(source)
    )]
    Server { url: String, action: &'static str, source: ::postgres::Error },
    #[error("environment {environment} has a pending job (#{job}); ask again once it has run")]
    Busy { environment: String, job: i64 },
    #[error(
        "the build queue {path} is damaged ({detail}): no push can be recorded in it; move it aside to start an \
         empty queue, after saving it for inspection"
    )]
    Damaged { path: String, detail: String },
}

fn action_word(action: &str) -> String {
    match action {
        "reach" => "reached".into(),
        "prepare" => "prepared (its schema)".into(),
        "write to" => "written".into(),
        "read" => "read".into(),
        other => format!("used ({other})"),
    }
}

/// The server's own message when it sent one (the error's Display alone says only "db error").
fn source_text(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => {
            use std::error::Error;
            match e.source() {
                Some(inner) => format!("{e}: {inner}"),
                None => e.to_string(),
            }
        }
    }
}

fn server_advice(e: &::postgres::Error) -> &'static str {
    if e.is_closed() || e.as_db_error().is_none() {
        " (is PostgreSQL running and reachable at that address, and does the URL's user exist?)"
    } else {
        ""
    }
}

/// What an admin should look at, for the failures that have a usual cause.
fn advice(e: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => {
            " (is the disk of the data directory full, or is it not writable?)"
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            " (another process holds the queue's lock; try again, or raise git config pushgate.queueTimeoutMs)"
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            " (the file is damaged: move it aside to start an empty queue, after saving it for inspection)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_one_is_not() {
        let me = Receiver { host: hostname(), pid: std::process::id(), started: process_start(std::process::id()) };
        assert_eq!(me.alive(), Some(true));
        let reused = Receiver { started: me.started.map(|s| s + 1), ..me.clone() };
        assert_eq!(reused.alive(), Some(false), "same pid, other start time: another process");
        let elsewhere = Receiver { host: "elsewhere".into(), ..me };
        assert_eq!(elsewhere.alive(), None);
    }
}
