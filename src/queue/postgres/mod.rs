//! The queue on PostgreSQL, for runners on several machines: the same states and guarantees as
//! the embedded SQLite store (one job per accepted branch push, none for a refused one,
//! reservations settled after a lost post-receive, supersede, cancel, one running job per
//! environment), behind the same traits.
//!
//! What differs is how writers are kept apart. SQLite has one writer at a time; here the
//! settling of one repository's pushes is serialized by a transaction-scoped advisory lock on
//! that repository, claims take a pending job `FOR UPDATE SKIP LOCKED` (two runners never wait
//! on each other, nor take the same job), and every state change is conditional on the state it
//! expects, so a runner whose lease ran out cannot finish or renew a job another runner has
//! taken (fencing). Runners LISTEN on `pushgate_jobs`; whatever makes a job claimable NOTIFYs
//! it in the same transaction. The schema's versions are applied once, under an advisory lock,
//! however many runners start together.

mod types;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use postgres::{Client, NoTls, Row, Transaction};

use super::tokens::{Role, Token, TokenStore};
use super::webhooks::{Delivery, Webhook, WebhookStore};
use super::{Job, JobKind, JobState, QueueError, Receiver, RefLog, Request, Reservation, Scope, Stored};
use crate::core::{CommitId, EnvName, JobId, RefUpdate, RepoId, Timestamp};

/// The channel runners LISTEN on.
pub const CHANNEL: &str = "pushgate_jobs";

/// The advisory lock key of schema changes ("pushgate" in ASCII, truncated).
const SCHEMA_LOCK: i64 = 0x7075_7368_6761_7465;

/// The advisory lock key of claims bounded per project ("pgclaim!").
const CLAIM_LOCK: i64 = 0x7067_636c_6169_6d21;

/// Each step brings the schema from version N to N+1 (`pushgate_schema.version`).
const MIGRATIONS: [&str; 1] = [r#"
CREATE TABLE documents (
    id   BIGSERIAL PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE reservations (
    id          BIGSERIAL PRIMARY KEY,
    repo        TEXT NOT NULL,
    ref         TEXT NOT NULL,
    environment TEXT NOT NULL,
    old_commit  TEXT NOT NULL,
    new_commit  TEXT NOT NULL,
    topology_id BIGINT NOT NULL REFERENCES documents (id),
    changes_id  BIGINT NOT NULL REFERENCES documents (id),
    plan_id     BIGINT REFERENCES documents (id),
    host        TEXT NOT NULL,
    pid         BIGINT NOT NULL,
    pid_started BIGINT,
    pusher      TEXT,
    created_at  TEXT NOT NULL
);
CREATE INDEX reservations_by_receiver ON reservations (repo, host, pid);
CREATE TABLE jobs (
    id            BIGSERIAL PRIMARY KEY,
    repo          TEXT NOT NULL,
    ref           TEXT NOT NULL,
    environment   TEXT NOT NULL,
    old_commit    TEXT NOT NULL,
    new_commit    TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN
                    ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'superseded')),
    superseded_by BIGINT REFERENCES jobs (id),
    topology_id   BIGINT NOT NULL REFERENCES documents (id),
    changes_id    BIGINT NOT NULL REFERENCES documents (id),
    plan_id       BIGINT REFERENCES documents (id),
    kind          TEXT NOT NULL DEFAULT 'push',
    options       TEXT,
    pusher        TEXT,
    runner        TEXT,
    lease_until   TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    release       TEXT,
    built_by      TEXT,
    deployed_by   TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE UNIQUE INDEX one_pending_job_per_environment ON jobs (repo, environment) WHERE state = 'pending';
CREATE INDEX jobs_by_update ON jobs (repo, ref, new_commit);
CREATE INDEX jobs_by_environment ON jobs (repo, environment, state);
CREATE INDEX jobs_by_repo ON jobs (repo, id);
CREATE INDEX jobs_claimable ON jobs (id) WHERE state IN ('pending', 'running');
CREATE TABLE tokens (
    name       TEXT PRIMARY KEY,
    project    TEXT,
    role       TEXT NOT NULL CHECK (role IN ('viewer', 'developer', 'admin')),
    hash       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE webhooks (
    id         BIGSERIAL PRIMARY KEY,
    project    TEXT NOT NULL,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (project, url)
);
CREATE TABLE job_ends (
    id     BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs (id)
);
CREATE FUNCTION pushgate_job_ends() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_ends (job_id) VALUES (NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER a_job_ends AFTER UPDATE OF state ON jobs FOR EACH ROW
    WHEN (NEW.state NOT IN ('pending', 'running') AND OLD.state IN ('pending', 'running'))
    EXECUTE FUNCTION pushgate_job_ends();
CREATE TABLE deliveries (
    id           BIGSERIAL PRIMARY KEY,
    webhook_id   BIGINT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    job_id       BIGINT NOT NULL REFERENCES jobs (id),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      TEXT,
    last_result  TEXT,
    delivered_at TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE next_at IS NOT NULL;
CREATE TABLE log_chunks (
    job_id BIGINT NOT NULL REFERENCES jobs (id),
    "offset" BIGINT NOT NULL,
    body   BYTEA NOT NULL,
    PRIMARY KEY (job_id, "offset")
);
"#];

const JOB_COLUMNS: &str = "id, repo, ref, environment, old_commit, new_commit, state, superseded_by,
     created_at, updated_at, started_at, finished_at, kind, options, pusher, release, built_by, deployed_by";

/// The queue in a PostgreSQL database.
pub struct PgQueue {
    /// In a RefCell: the client needs `&mut` even to read, and the store's readers take `&self`.
    client: std::cell::RefCell<Client>,
    /// The URL without its password, for messages.
    url: String,
}

/// A URL with its password hidden.
pub fn masked(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl PgQueue {
    /// Connects (within `timeout`) and brings the schema up to date.
    pub fn open(url: &str, timeout: Duration) -> Result<PgQueue, QueueError> {
        let shown = masked(url);
        let mut config: postgres::Config =
            url.parse().map_err(|source| QueueError::Server { url: shown.clone(), action: "reach", source })?;
        config.connect_timeout(timeout.max(Duration::from_secs(1)));
        config.application_name("pushgate");
        let client = config.connect(NoTls).map_err(|source| QueueError::Server {
            url: shown.clone(),
            action: "reach",
            source,
        })?;
        let mut queue = PgQueue { client: std::cell::RefCell::new(client), url: shown };
        queue.migrate()?;
        Ok(queue)
    }

    fn err(&self, action: &'static str) -> impl Fn(postgres::Error) -> QueueError + '_ {
        move |source| QueueError::Server { url: self.url.clone(), action, source }
    }

    fn migrate(&mut self) -> Result<(), QueueError> {
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "prepare", source };
        let client = self.client.get_mut();
        let current = client.query_opt("SELECT version FROM pushgate_schema", &[]).ok().flatten();
        if current.and_then(|r| r.try_get::<_, i32>(0).ok()) == Some(MIGRATIONS.len() as i32) {
            return Ok(());
        }
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).map_err(err)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS pushgate_schema (version INTEGER NOT NULL)").map_err(err)?;
        let version: i32 = match tx.query_opt("SELECT version FROM pushgate_schema", &[]).map_err(err)? {
            Some(row) => row.get(0),
            None => {
                tx.execute("INSERT INTO pushgate_schema (version) VALUES (0)", &[]).map_err(err)?;
                0
            }
        };
        for (i, step) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            tx.batch_execute(step).map_err(err)?;
            tx.execute("UPDATE pushgate_schema SET version = $1", &[&(i as i32 + 1)]).map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

fn job_from_row(row: &Row) -> Result<Job, postgres::Error> {
    let state: String = row.try_get(6)?;
    let kind: String = row.try_get(12)?;
    Ok(Job {
        id: row.try_get(0)?,
        repo: row.try_get(1)?,
        ref_name: row.try_get(2)?,
        environment: row.try_get(3)?,
        old_commit: row.try_get(4)?,
        commit: row.try_get(5)?,
        // The CHECK constraint keeps the state one of these; a kind this version does not
        // know was written by a newer one: shown as a push rather than lost.
        state: JobState::parse(&state).unwrap_or(JobState::Failed),
        superseded_by: row.try_get(7)?,
        created_at: row.try_get(8)?,
        updated_at: row.try_get(9)?,
        started_at: row.try_get(10)?,
        finished_at: row.try_get(11)?,
        kind: JobKind::parse(&kind).unwrap_or(JobKind::Push),
        options: row.try_get(13)?,
        pusher: row.try_get(14)?,
        release: row.try_get(15)?,
        built_by: row.try_get(16)?,
        deployed_by: row.try_get(17)?,
    })
}

fn jobs_of(rows: Vec<Row>) -> Result<Vec<Job>, postgres::Error> {
    rows.iter().map(job_from_row).collect()
}

/// The id of a document, stored once by its digest.
fn document(tx: &mut Transaction<'_>, known: &mut HashMap<String, i64>, body: &str) -> Result<i64, postgres::Error> {
    if let Some(id) = known.get(body) {
        return Ok(*id);
    }
    let hash = crate::secret::digest(body);
    tx.execute("INSERT INTO documents (hash, body) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING", &[&hash, &body])?;
    let id: i64 = tx.query_one("SELECT id FROM documents WHERE hash = $1", &[&hash])?.get(0);
    known.insert(body.to_owned(), id);
    Ok(id)
}

/// Serializes the settling of one repository's pushes until the transaction ends.
fn lock_repo(tx: &mut Transaction<'_>, repo: &RepoId) -> Result<(), postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&repo]).map(|_| ())
}

const STORED_COLUMNS: &str =
    "repo, ref, environment, old_commit, new_commit, topology_id, changes_id, plan_id, host, pid, pid_started, pusher";

fn stored_from_row(row: &Row) -> Result<Stored, postgres::Error> {
    Ok(Stored {
        repo: row.try_get(0)?,
        ref_name: row.try_get(1)?,
        environment: row.try_get(2)?,
        old_commit: row.try_get(3)?,
        new_commit: row.try_get(4)?,
        topology_id: row.try_get(5)?,
        changes_id: row.try_get(6)?,
        plan_id: row.try_get(7)?,
        receiver: Receiver {
            host: row.try_get(8)?,
            pid: row.try_get::<_, i64>(9)? as u32,
            started: row.try_get::<_, Option<i64>>(10)?.map(|s| s as u64),
        },
        pusher: row.try_get(11)?,
    })
}

/// Inserts jobs for one repository, knowing each environment's pending job (the repository is
/// locked: no other settling changes them meanwhile; a runner may still claim one).
struct Batch {
    pending: HashMap<EnvName, JobId>,
    orphans: HashSet<EnvName>,
    now: Timestamp,
}

impl Batch {
    fn load(tx: &mut Transaction<'_>, repo: &RepoId) -> Result<Batch, postgres::Error> {
        let pending = tx
            .query("SELECT environment, id FROM jobs WHERE repo = $1 AND state = 'pending'", &[&repo])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, postgres::Error>>()?;
        let orphans = tx
            .query(
                "SELECT DISTINCT environment FROM jobs WHERE repo = $1 AND state = 'superseded' AND superseded_by IS NULL",
                &[&repo],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        Ok(Batch { pending, orphans, now: Timestamp::now() })
    }

    /// As the SQLite store's: pending when its commit is the branch's tip (superseding the
    /// environment's pending job), else superseded.
    fn insert(&mut self, tx: &mut Transaction<'_>, r: Stored, refs: &dyn RefLog) -> Result<Job, postgres::Error> {
        let latest = refs.tip(&r.repo, &r.ref_name).as_ref() == Some(&r.new_commit);
        let state = if latest { JobState::Pending } else { JobState::Superseded };
        if let Some(previous) = if latest { self.pending.remove(&r.environment) } else { None } {
            // Unless a runner claimed it meanwhile: then it runs, and this one waits its turn.
            tx.execute(
                "UPDATE jobs SET state = 'superseded', updated_at = $2 WHERE id = $1 AND state = 'pending'",
                &[&previous, &self.now],
            )?;
            self.orphans.insert(r.environment.clone());
        }
        if !latest {
            self.orphans.insert(r.environment.clone());
        }
        let id: JobId = tx
            .query_one(
                "INSERT INTO jobs (repo, ref, environment, old_commit, new_commit, state, topology_id, changes_id,
                                   created_at, updated_at, plan_id, pusher)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11) RETURNING id",
                &[
                    &r.repo,
                    &r.ref_name,
                    &r.environment,
                    &r.old_commit,
                    &r.new_commit,
                    &state.as_str(),
                    &r.topology_id,
                    &r.changes_id,
                    &self.now,
                    &r.plan_id,
                    &r.pusher,
                ],
            )?
            .try_get(0)?;
        if latest {
            self.pending.insert(r.environment.clone(), id);
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])?;
        }
        if latest && self.orphans.remove(&r.environment) {
            tx.execute(
                "UPDATE jobs SET superseded_by = $1
                 WHERE repo = $2 AND environment = $3 AND state = 'superseded' AND superseded_by IS NULL AND id <> $1",
                &[&id, &r.repo, &r.environment],
            )?;
        }
        let row = tx.query_one(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"), &[&id])?;
        job_from_row(&row)
    }
}

fn job_exists(
    tx: &mut Transaction<'_>,
    repo: &RepoId,
    ref_name: &str,
    old: &CommitId,
    new: &CommitId,
) -> Result<bool, postgres::Error> {
    tx.query_opt(
        "SELECT 1 FROM jobs WHERE repo = $1 AND ref = $2 AND old_commit = $3 AND new_commit = $4 LIMIT 1",
        &[&repo, &ref_name, &old, &new],
    )
    .map(|r| r.is_some())
}

impl super::JobStore for PgQueue {
    fn reserve(&mut self, reservations: &[Reservation]) -> Result<(), QueueError> {
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        let mut known = HashMap::new();
        let now = Timestamp::now();
        for r in reservations {
            let topology = document(&mut tx, &mut known, &r.topology).map_err(err)?;
            let changes = document(&mut tx, &mut known, &r.changes).map_err(err)?;
            let plan = document(&mut tx, &mut known, &r.plan).map_err(err)?;
            tx.execute(
                "INSERT INTO reservations (repo, ref, environment, old_commit, new_commit, topology_id, changes_id,
                                           plan_id, host, pid, pid_started, pusher, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                &[
                    &r.repo,
                    &r.ref_name,
                    &r.environment,
                    &r.old_commit,
                    &r.new_commit,
                    &topology,
                    &changes,
                    &plan,
                    &r.receiver.host,
                    &(r.receiver.pid as i64),
                    &r.receiver.started.map(|s| s as i64),
                    &r.pusher,
                    &now,
                ],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn promote(
        &mut self,
        repo: &RepoId,
        updates: &[RefUpdate],
        receiver: &Receiver,
        refs: &dyn RefLog,
    ) -> Result<Vec<Job>, QueueError> {
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        lock_repo(&mut tx, repo).map_err(err)?;
        let mut mine: HashMap<(String, CommitId, CommitId), Stored> = HashMap::new();
        let rows = tx
            .query(
                &format!(
                    "SELECT {STORED_COLUMNS} FROM reservations WHERE repo = $1 AND host = $2 AND pid = $3 ORDER BY id"
                ),
                &[&repo, &receiver.host, &(receiver.pid as i64)],
            )
            .map_err(err)?;
        for row in &rows {
            let r = stored_from_row(row).map_err(err)?;
            mine.insert((r.ref_name.clone(), r.old_commit.clone(), r.new_commit.clone()), r);
        }
        let mut batch = Batch::load(&mut tx, repo).map_err(err)?;
        let mut created = Vec::new();
        let mut known = HashMap::new();
        for RefUpdate { name: ref_name, old, new } in updates {
            let reservation = match mine.remove(&(ref_name.clone(), old.clone(), new.clone())) {
                Some(r) => r,
                None if job_exists(&mut tx, repo, ref_name, old, new).map_err(err)? => continue,
                None => Stored {
                    repo: repo.clone(),
                    ref_name: ref_name.clone(),
                    environment: match EnvName::of_branch(ref_name.strip_prefix("refs/heads/").unwrap_or(ref_name)) {
                        Ok(env) => env,
                        Err(_) => continue,
                    },
                    old_commit: old.clone(),
                    new_commit: new.clone(),
                    topology_id: document(&mut tx, &mut known, "{}").map_err(err)?,
                    changes_id: document(&mut tx, &mut known, "[]").map_err(err)?,
                    plan_id: None,
                    receiver: receiver.clone(),
                    pusher: super::pusher(&|k| std::env::var(k).ok()),
                },
            };
            created.push(batch.insert(&mut tx, reservation, refs).map_err(err)?);
        }
        tx.execute(
            "DELETE FROM reservations WHERE repo = $1 AND host = $2 AND pid = $3",
            &[&repo, &receiver.host, &(receiver.pid as i64)],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(created)
    }

    fn reconcile(&mut self, refs: &dyn RefLog) -> Result<usize, QueueError> {
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let repos: Vec<RepoId> = self
            .client
            .borrow_mut()
            .query("SELECT DISTINCT repo FROM reservations", &[])
            .map_err(err)?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let mut settled = 0;
        for repo in repos {
            let mut client = self.client.borrow_mut();
            let mut tx = client.transaction().map_err(err)?;
            lock_repo(&mut tx, &repo).map_err(err)?;
            let rows = tx
                .query(
                    &format!("SELECT {STORED_COLUMNS}, id, created_at FROM reservations WHERE repo = $1 ORDER BY id"),
                    &[&repo],
                )
                .map_err(err)?;
            for row in &rows {
                let reservation = stored_from_row(row).map_err(err)?;
                let (id, created_at): (i64, Timestamp) = (row.get(12), row.try_get(13).map_err(err)?);
                if reservation.in_progress(created_at) {
                    continue;
                }
                let r = &reservation;
                match refs.was_updated(&r.repo, &r.ref_name, &r.old_commit, &r.new_commit) {
                    Some(true) => {
                        let queued = tx
                            .query_opt(
                                "SELECT 1 FROM jobs WHERE repo = $1 AND ref = $2 AND new_commit = $3 LIMIT 1",
                                &[&r.repo, &r.ref_name, &r.new_commit],
                            )
                            .map_err(err)?
                            .is_some();
                        if !queued {
                            let mut batch = Batch::load(&mut tx, &r.repo).map_err(err)?;
                            batch.insert(&mut tx, reservation.clone(), refs).map_err(err)?;
                        }
                    }
                    Some(false) => {}
                    None => continue,
                }
                tx.execute("DELETE FROM reservations WHERE id = $1", &[&id]).map_err(err)?;
                settled += 1;
            }
            tx.commit().map_err(err)?;
        }
        Ok(settled)
    }

    fn claim_job(&mut self, id: JobId, runner: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let now = Timestamp::now();
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        let Some(row) = tx
            .query_opt("SELECT repo, environment FROM jobs WHERE id = $1 AND state = 'pending' FOR UPDATE", &[&id])
            .map_err(err)?
        else {
            tx.commit().map_err(err)?;
            return Ok(None);
        };
        let (repo, environment): (String, String) = (row.get(0), row.get(1));
        // The environment's lock, as `claim` takes it: never two of its jobs at once.
        let row = match environment_lock(&mut tx, &repo, &environment).map_err(err)? {
            false => None,
            true => tx
                .query_opt(
                    &format!(
                        "UPDATE jobs SET state = 'running', runner = $2, lease_until = $3, attempts = attempts + 1,
                                started_at = COALESCE(started_at, $4), updated_at = $4
                         WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.repo = jobs.repo
                                                       AND r.environment = jobs.environment AND r.state = 'running')
                         RETURNING {JOB_COLUMNS}"
                    ),
                    &[&id, &runner, &(now + lease), &now],
                )
                .map_err(err)?,
        };
        let job = row.as_ref().map(job_from_row).transpose().map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(job)
    }

    fn claim(&mut self, runner: &str, lease: Duration, scope: &Scope) -> Result<Option<Job>, QueueError> {
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let now = Timestamp::now();
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        if scope.per_project.is_some() {
            // Counting a project's running jobs and taking one must be one step: two claims at
            // once would each count the other's job as not running yet.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK]).map_err(err)?;
        }
        // Leases that ran out: superseded by a newer pending job of the environment, else
        // pending again. Rows another runner holds are left to it.
        tx.execute(
            "UPDATE jobs SET state = 'superseded', runner = NULL, lease_until = NULL, updated_at = $1,
                    superseded_by = (SELECT p.id FROM jobs p WHERE p.repo = jobs.repo
                                     AND p.environment = jobs.environment AND p.state = 'pending')
             WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_until < $1 FOR UPDATE SKIP LOCKED)
               AND EXISTS (SELECT 1 FROM jobs p WHERE p.repo = jobs.repo
                           AND p.environment = jobs.environment AND p.state = 'pending')",
            &[&now],
        )
        .map_err(err)?;
        tx.execute(
            "UPDATE jobs SET state = 'pending', runner = NULL, lease_until = NULL, updated_at = $1
             WHERE id IN (SELECT id FROM jobs WHERE state = 'running' AND lease_until < $1 FOR UPDATE SKIP LOCKED)",
            &[&now],
        )
        .map_err(err)?;
        let row = tx
            .query_opt(
                "SELECT id, repo, environment FROM jobs j WHERE state = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.repo = j.repo
                                   AND r.environment = j.environment AND r.state = 'running')
                   AND ($1 OR built_by IS NOT NULL OR kind NOT IN ('push', 'redeploy'))
                   AND ($2 OR (built_by IS NULL AND kind IN ('push', 'redeploy')))
                   AND ($3::text IS NULL OR environment IN (SELECT jsonb_array_elements_text($3::text::jsonb)))
                   AND ($4::bigint IS NULL OR kind NOT IN ('push', 'redeploy')
                        OR (SELECT count(*) FROM jobs r WHERE r.repo = j.repo AND r.state = 'running') < $4::bigint)
                 ORDER BY (SELECT count(*) FROM jobs r WHERE r.repo = j.repo AND r.state = 'running'), id
                 LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&scope.build, &scope.deploy, &scope.environments_json(), &scope.per_project],
            )
            .map_err(err)?;
        let Some(row) = row else {
            tx.commit().map_err(err)?;
            return Ok(None);
        };
        let id: JobId = row.get(0);
        let (repo, environment): (String, String) = (row.get(1), row.get(2));
        // One running job per environment even when two runners pick two of its jobs at once
        // (one pending, one whose lease just ran out): the environment's lock decides.
        if !environment_lock(&mut tx, &repo, &environment).map_err(err)? {
            tx.commit().map_err(err)?;
            return Ok(None);
        }
        let row = tx
            .query_one(
                &format!(
                    "UPDATE jobs SET state = 'running', runner = $2, lease_until = $3, attempts = attempts + 1,
                            started_at = COALESCE(started_at, $4), updated_at = $4
                     WHERE id = $1 RETURNING {JOB_COLUMNS}"
                ),
                &[&id, &runner, &(now + lease), &now],
            )
            .map_err(err)?;
        let job = job_from_row(&row).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Some(job))
    }

    fn heartbeat(&mut self, id: JobId, runner: &str, lease: Duration) -> Result<bool, QueueError> {
        let n = self
            .client
            .borrow_mut()
            .execute(
                "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND runner = $2 AND state = 'running'",
                &[&id, &runner, &(Timestamp::now() + lease)],
            )
            .map_err(self.err("write to"))?;
        Ok(n == 1)
    }

    fn finish(&mut self, id: JobId, runner: &str, state: JobState, release: Option<&str>) -> Result<bool, QueueError> {
        let now = Timestamp::now();
        let n = self
            .client
            .borrow_mut()
            .execute(
                "UPDATE jobs SET state = $3, release = COALESCE($4, release), finished_at = $5, updated_at = $5,
                        runner = NULL, lease_until = NULL, deployed_by = $2
                 WHERE id = $1 AND runner = $2 AND state = 'running'",
                &[&id, &runner, &state.as_str(), &release, &now],
            )
            .map_err(self.err("write to"))?;
        if n == 1 {
            // The environment's next job may be claimable now.
            let _ = self.client.borrow_mut().execute("SELECT pg_notify($1, '')", &[&CHANNEL]);
        }
        Ok(n == 1)
    }

    fn handoff(&mut self, id: JobId, runner: &str) -> Result<bool, QueueError> {
        let now = Timestamp::now();
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        let superseded = tx
            .execute(
                "UPDATE jobs SET state = 'superseded', runner = NULL, lease_until = NULL, built_by = $2, updated_at = $3,
                        superseded_by = (SELECT p.id FROM jobs p WHERE p.repo = jobs.repo
                                         AND p.environment = jobs.environment AND p.state = 'pending')
                 WHERE id = $1 AND runner = $2 AND state = 'running'
                   AND EXISTS (SELECT 1 FROM jobs p WHERE p.repo = jobs.repo
                               AND p.environment = jobs.environment AND p.state = 'pending')",
                &[&id, &runner, &now],
            )
            .map_err(err)?;
        let pending = tx
            .execute(
                "UPDATE jobs SET state = 'pending', runner = NULL, lease_until = NULL, built_by = $2, updated_at = $3
                 WHERE id = $1 AND runner = $2 AND state = 'running'",
                &[&id, &runner, &now],
            )
            .map_err(err)?;
        tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(superseded + pending == 1)
    }

    fn release_claim(&mut self, id: JobId, runner: &str) -> Result<(), QueueError> {
        let now = Timestamp::now();
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        tx.execute(
            "UPDATE jobs SET state = 'superseded', runner = NULL, lease_until = NULL, updated_at = $3,
                    superseded_by = (SELECT p.id FROM jobs p WHERE p.repo = jobs.repo
                                     AND p.environment = jobs.environment AND p.state = 'pending')
             WHERE id = $1 AND runner = $2 AND state = 'running'
               AND EXISTS (SELECT 1 FROM jobs p WHERE p.repo = jobs.repo
                           AND p.environment = jobs.environment AND p.state = 'pending')",
            &[&id, &runner, &now],
        )
        .map_err(err)?;
        tx.execute(
            "UPDATE jobs SET state = 'pending', runner = NULL, lease_until = NULL, updated_at = $3
             WHERE id = $1 AND runner = $2 AND state = 'running'
               AND NOT EXISTS (SELECT 1 FROM jobs p WHERE p.repo = jobs.repo
                               AND p.environment = jobs.environment AND p.state = 'pending')",
            &[&id, &runner, &now],
        )
        .map_err(err)?;
        tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).map_err(err)?;
        tx.commit().map_err(err)
    }

    fn cancel(&mut self, id: JobId) -> Result<Option<JobState>, QueueError> {
        let now = Timestamp::now();
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        let before: Option<String> = tx
            .query_opt("SELECT state FROM jobs WHERE id = $1 AND state IN ('pending', 'running') FOR UPDATE", &[&id])
            .map_err(err)?
            .map(|r| r.get(0));
        let Some(before) = before else {
            tx.commit().map_err(err)?;
            return Ok(None);
        };
        tx.execute(
            "UPDATE jobs SET state = 'cancelled', runner = NULL, lease_until = NULL, finished_at = $2, updated_at = $2
             WHERE id = $1",
            &[&id, &now],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(JobState::parse(&before))
    }

    fn enqueue(&mut self, r: &Request) -> Result<Job, QueueError> {
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        lock_repo(&mut tx, &r.repo).map_err(err)?;
        let pending = tx
            .query_opt(
                "SELECT id FROM jobs WHERE repo = $1 AND environment = $2 AND state = 'pending'",
                &[&r.repo, &r.environment],
            )
            .map_err(err)?;
        if let Some(row) = pending {
            return Err(QueueError::Busy { environment: r.environment.to_string(), job: row.get(0) });
        }
        let job = insert_request(&mut tx, r, JobState::Pending).map_err(err)?;
        tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL]).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(job)
    }

    fn cancel_pending_of(&mut self, repo: &RepoId, ref_name: &str) -> Result<Vec<JobId>, QueueError> {
        let now = Timestamp::now();
        let rows = self
            .client
            .borrow_mut()
            .query(
                "UPDATE jobs SET state = 'cancelled', finished_at = $3, updated_at = $3
                 WHERE repo = $1 AND ref = $2 AND state = 'pending' RETURNING id",
                &[&repo, &ref_name, &now],
            )
            .map_err(self.err("write to"))?;
        rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>().map_err(self.err("read"))
    }

    fn job(&self, id: JobId) -> Result<Option<Job>, QueueError> {
        let row = self
            .client
            .borrow_mut()
            .query_opt(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"), &[&id])
            .map_err(self.err("read"))?;
        row.map(|r| job_from_row(&r)).transpose().map_err(self.err("read"))
    }

    fn jobs(&self) -> Result<Vec<Job>, QueueError> {
        let rows = self
            .client
            .borrow_mut()
            .query(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY id"), &[])
            .map_err(self.err("read"))?;
        jobs_of(rows).map_err(self.err("read"))
    }

    fn activities(&self, repo: Option<&RepoId>, before: Option<JobId>, limit: usize) -> Result<Vec<Job>, QueueError> {
        let before = before.map_or(i64::MAX, |b| b.0);
        let rows = self
            .client
            .borrow_mut()
            .query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1::text IS NULL OR repo = $1) AND id < $2
                     ORDER BY id DESC LIMIT $3"
                ),
                &[&repo, &before, &(limit as i64)],
            )
            .map_err(self.err("read"))?;
        jobs_of(rows).map_err(self.err("read"))
    }

    fn projects(&self) -> Result<Vec<RepoId>, QueueError> {
        let rows = self
            .client
            .borrow_mut()
            .query("SELECT DISTINCT repo FROM jobs ORDER BY repo", &[])
            .map_err(self.err("read"))?;
        rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>().map_err(self.err("read"))
    }

    fn record(&mut self, request: &Request, state: JobState) -> Result<Job, QueueError> {
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        let job = insert_request(&mut tx, request, state).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(job)
    }

    fn job_documents(&self, id: JobId) -> Result<Option<(String, String)>, QueueError> {
        let row = self
            .client
            .borrow_mut()
            .query_opt(
                "SELECT t.body, c.body FROM jobs j JOIN documents t ON t.id = j.topology_id
                 JOIN documents c ON c.id = j.changes_id WHERE j.id = $1",
                &[&id],
            )
            .map_err(self.err("read"))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    fn job_plan(&self, id: JobId) -> Result<Option<crate::core::plan::Plan>, QueueError> {
        let row = self
            .client
            .borrow_mut()
            .query_opt("SELECT p.body FROM jobs j JOIN documents p ON p.id = j.plan_id WHERE j.id = $1", &[&id])
            .map_err(self.err("read"))?;
        let Some(row) = row else { return Ok(None) };
        let body: String = row.get(0);
        serde_json::from_str(&body)
            .map(Some)
            .map_err(|e| QueueError::Damaged { path: self.url.clone(), detail: format!("the plan of job #{id}: {e}") })
    }

    fn append_log(&mut self, id: JobId, offset: u64, bytes: &[u8]) -> Result<(), QueueError> {
        self.client
            .borrow_mut()
            .execute(
                "INSERT INTO log_chunks (job_id, \"offset\", body) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&id, &(offset as i64), &bytes],
            )
            .map(|_| ())
            .map_err(self.err("write to"))
    }

    fn log_from(&self, id: JobId, offset: u64) -> Result<Vec<u8>, QueueError> {
        let rows = self
            .client
            .borrow_mut()
            .query(
                "SELECT \"offset\", body FROM log_chunks WHERE job_id = $1 AND \"offset\" + length(body) > $2
                 ORDER BY \"offset\"",
                &[&id, &(offset as i64)],
            )
            .map_err(self.err("read"))?;
        let chunks = rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, Vec<u8>>(1))).collect();
        Ok(super::join_chunks(chunks, offset))
    }

    fn reservations(&self) -> Result<usize, QueueError> {
        let n: i64 = self
            .client
            .borrow_mut()
            .query_one("SELECT count(*) FROM reservations", &[])
            .map_err(self.err("read"))?
            .get(0);
        Ok(n as usize)
    }
}

fn insert_request(tx: &mut Transaction<'_>, r: &Request, state: JobState) -> Result<Job, postgres::Error> {
    let mut known = HashMap::new();
    let (object, list) = (document(tx, &mut known, "{}")?, document(tx, &mut known, "[]")?);
    let now = Timestamp::now();
    let ended = (state != JobState::Pending).then_some(now);
    let row = tx.query_one(
        &format!(
            "INSERT INTO jobs (repo, ref, environment, old_commit, new_commit, state, topology_id, changes_id,
                               created_at, updated_at, started_at, finished_at, kind, options, pusher)
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $8, $9, $9, $10, $11, $12) RETURNING {JOB_COLUMNS}"
        ),
        &[
            &r.repo,
            &r.ref_name,
            &r.environment,
            &r.commit,
            &state.as_str(),
            &object,
            &list,
            &now,
            &ended,
            &r.kind.as_str(),
            &r.options,
            &r.pusher,
        ],
    )?;
    job_from_row(&row)
}

impl TokenStore for PgQueue {
    fn create_token(&mut self, token: &Token, digest: &str) -> Result<(), QueueError> {
        let n = self
            .client
            .borrow_mut()
            .execute(
                "INSERT INTO tokens (name, project, role, hash, created_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO NOTHING",
                &[&token.name, &token.project, &token.role.as_str(), &digest, &token.created_at],
            )
            .map_err(self.err("write to"))?;
        if n == 0 {
            return Err(QueueError::Conflict(format!(
                "there is already a token named `{}` (token revoke {} first)",
                token.name, token.name
            )));
        }
        Ok(())
    }

    fn tokens(&self) -> Result<Vec<Token>, QueueError> {
        let rows = self
            .client
            .borrow_mut()
            .query("SELECT name, project, role, created_at FROM tokens ORDER BY name", &[])
            .map_err(self.err("read"))?;
        rows.iter().map(token_from_row).collect::<Result<_, _>>().map_err(self.err("read"))
    }

    fn revoke_token(&mut self, name: &str) -> Result<bool, QueueError> {
        let n = self
            .client
            .borrow_mut()
            .execute("DELETE FROM tokens WHERE name = $1", &[&name])
            .map_err(self.err("write to"))?;
        Ok(n > 0)
    }

    fn token_by_digest(&self, digest: &str) -> Result<Option<Token>, QueueError> {
        let row = self
            .client
            .borrow_mut()
            .query_opt("SELECT name, project, role, created_at FROM tokens WHERE hash = $1", &[&digest])
            .map_err(self.err("read"))?;
        row.as_ref().map(token_from_row).transpose().map_err(self.err("read"))
    }
}

fn token_from_row(row: &Row) -> Result<Token, postgres::Error> {
    let role: String = row.try_get(2)?;
    Ok(Token {
        name: row.try_get(0)?,
        project: row.try_get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Viewer),
        created_at: row.try_get(3)?,
    })
}

fn webhook_from_row(row: &Row, at: usize) -> Result<Webhook, postgres::Error> {
    let events: String = row.try_get(at + 3)?;
    Ok(Webhook {
        id: row.try_get(at)?,
        project: row.try_get(at + 1)?,
        url: row.try_get(at + 2)?,
        events: events.split(',').filter(|e| !e.is_empty()).map(str::to_owned).collect(),
        created_at: row.try_get(at + 4)?,
    })
}

const DELIVERY: &str = "SELECT d.id, d.job_id, d.attempts, d.last_result, d.delivered_at, d.next_at,
                               w.id, w.project, w.url, w.events, w.created_at
                        FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id";

fn delivery_from_row(row: &Row) -> Result<Delivery, postgres::Error> {
    Ok(Delivery {
        id: row.try_get(0)?,
        job: row.try_get(1)?,
        attempts: row.try_get::<_, i32>(2)? as u32,
        last_result: row.try_get(3)?,
        delivered_at: row.try_get(4)?,
        next_at: row.try_get(5)?,
        webhook: webhook_from_row(row, 6)?,
    })
}

impl WebhookStore for PgQueue {
    fn add_webhook(&mut self, project: &str, url: &str, events: &[String]) -> Result<Webhook, QueueError> {
        let now = Timestamp::now();
        let row = self
            .client
            .borrow_mut()
            .query_opt(
                "INSERT INTO webhooks (project, url, events, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (project, url) DO NOTHING RETURNING id",
                &[&project, &url, &events.join(","), &now],
            )
            .map_err(self.err("write to"))?;
        let Some(row) = row else {
            return Err(QueueError::Conflict(format!("project {project} already has a webhook to {url}")));
        };
        Ok(Webhook {
            id: row.get(0),
            project: project.to_owned(),
            url: url.to_owned(),
            events: events.to_vec(),
            created_at: now,
        })
    }

    fn webhooks(&self) -> Result<Vec<Webhook>, QueueError> {
        let rows = self
            .client
            .borrow_mut()
            .query("SELECT id, project, url, events, created_at FROM webhooks ORDER BY id", &[])
            .map_err(self.err("read"))?;
        rows.iter().map(|r| webhook_from_row(r, 0)).collect::<Result<_, _>>().map_err(self.err("read"))
    }

    fn remove_webhook(&mut self, id: i64) -> Result<bool, QueueError> {
        let n = self
            .client
            .borrow_mut()
            .execute("DELETE FROM webhooks WHERE id = $1", &[&id])
            .map_err(self.err("write to"))?;
        Ok(n > 0)
    }

    fn plan_deliveries(&mut self, project_of: &dyn Fn(&Job) -> String) -> Result<usize, QueueError> {
        let hooks = self.webhooks()?;
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        let columns: Vec<String> = JOB_COLUMNS.split(',').map(|c| format!("j.{}", c.trim())).collect();
        let rows = tx
            .query(
                &format!(
                    "SELECT {}, e.id FROM job_ends e JOIN jobs j ON j.id = e.job_id ORDER BY e.id LIMIT 500
                     FOR UPDATE OF e SKIP LOCKED",
                    columns.join(", ")
                ),
                &[],
            )
            .map_err(err)?;
        let now = Timestamp::now();
        let mut created = 0;
        for row in &rows {
            let job = job_from_row(row).map_err(err)?;
            let event: i64 = row.get(18);
            let project = project_of(&job);
            let result = job.state.result().unwrap_or_default();
            for hook in hooks.iter().filter(|h| h.project == project && h.events.iter().any(|e| e == result)) {
                tx.execute(
                    "INSERT INTO deliveries (webhook_id, job_id, next_at, created_at) VALUES ($1, $2, $3, $3)",
                    &[&hook.id, &job.id, &now],
                )
                .map_err(err)?;
                created += 1;
            }
            tx.execute("DELETE FROM job_ends WHERE id = $1", &[&event]).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(created)
    }

    fn due_deliveries(&mut self, now: Timestamp, hold: Duration) -> Result<Vec<Delivery>, QueueError> {
        let url = self.url.clone();
        let err = |source| QueueError::Server { url: url.clone(), action: "write to", source };
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(err)?;
        let rows = tx
            .query(
                &format!(
                    "{DELIVERY} WHERE d.id IN (SELECT id FROM deliveries WHERE next_at IS NOT NULL AND next_at <= $1
                                               ORDER BY id LIMIT 50 FOR UPDATE SKIP LOCKED) ORDER BY d.id"
                ),
                &[&now],
            )
            .map_err(err)?;
        let due: Vec<Delivery> = rows.iter().map(delivery_from_row).collect::<Result<_, _>>().map_err(err)?;
        for d in &due {
            tx.execute("UPDATE deliveries SET next_at = $1 WHERE id = $2", &[&(now + hold), &d.id]).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(due)
    }

    fn record_attempt(
        &mut self,
        id: i64,
        result: &str,
        delivered: bool,
        retry_at: Option<Timestamp>,
    ) -> Result<(), QueueError> {
        let delivered_at = delivered.then(Timestamp::now);
        self.client
            .borrow_mut()
            .execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_result = $1, delivered_at = $2, next_at = $3
                 WHERE id = $4",
                &[&result, &delivered_at, &retry_at, &id],
            )
            .map_err(self.err("write to"))?;
        Ok(())
    }

    fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>, QueueError> {
        let rows = self
            .client
            .borrow_mut()
            .query(&format!("{DELIVERY} ORDER BY d.id DESC LIMIT $1"), &[&(limit as i64)])
            .map_err(self.err("read"))?;
        rows.iter().map(delivery_from_row).collect::<Result<_, _>>().map_err(self.err("read"))
    }
}

/// A runner's ear on `pushgate_jobs`. The server may go away (a restart, a failover) and come
/// back: the listener connects again with backoff (250 ms doubling to 5 s) and LISTENs again,
/// and meanwhile waits as long as it was asked to, so an idle runner stays idle whatever the
/// server does. A runner started while the server is down listens once it is up.
pub struct Listener {
    url: String,
    state: std::sync::Mutex<Ear>,
}

struct Ear {
    client: Option<Client>,
    /// No connection is tried before then.
    retry_at: std::time::Instant,
    backoff: Duration,
    /// What the last failed connection said (said once, not at every retry).
    failed: Option<String>,
}

const LISTEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

impl Listener {
    /// A listener for `url`, connected now if the server answers, else later.
    pub fn new(url: &str) -> Listener {
        let ear = Ear { client: None, retry_at: std::time::Instant::now(), backoff: LISTEN_BACKOFF.0, failed: None };
        let listener = Listener { url: url.to_owned(), state: std::sync::Mutex::new(ear) };
        if let Ok(mut ear) = listener.state.lock() {
            listener.connect(&mut ear);
        }
        listener
    }

    fn connect(&self, ear: &mut Ear) -> bool {
        let listened = PgQueue::open(&self.url, crate::store::QUEUE_TIMEOUT).and_then(|mut q| {
            q.client.get_mut().batch_execute(&format!("LISTEN {CHANNEL}")).map_err(q.err("listen on"))?;
            Ok(q.client.into_inner())
        });
        match listened {
            Ok(client) => {
                if ear.failed.take().is_some() {
                    tracing::info!("listening for new jobs again");
                }
                ear.client = Some(client);
                ear.backoff = LISTEN_BACKOFF.0;
                true
            }
            Err(e) => {
                let said = e.to_string();
                if ear.failed.as_ref() != Some(&said) {
                    tracing::warn!(error = %said, "cannot LISTEN for new jobs; trying again with backoff");
                }
                ear.failed = Some(said);
                ear.retry_at = std::time::Instant::now() + ear.backoff;
                ear.backoff = (ear.backoff * 2).min(LISTEN_BACKOFF.1);
                false
            }
        }
    }

    /// Returns at the first notification, or after `timeout`; also as soon as it listens again
    /// after a lost connection (a job queued meanwhile woke nobody).
    pub fn wait(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let Ok(mut ear) = self.state.try_lock() else {
            // Another worker is listening: it will be the one woken; this one checks again soon.
            std::thread::sleep(timeout.min(Duration::from_millis(200)));
            return;
        };
        if ear.client.as_ref().is_none_or(|c| c.is_closed()) {
            ear.client = None;
            let now = std::time::Instant::now();
            if now < ear.retry_at {
                std::thread::sleep(ear.retry_at.min(deadline) - now);
                if std::time::Instant::now() < ear.retry_at {
                    return;
                }
            }
            if !self.connect(&mut ear) {
                let now = std::time::Instant::now();
                std::thread::sleep(ear.retry_at.min(deadline).saturating_duration_since(now));
            }
            return;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let heard = match ear.client.as_mut() {
            Some(client) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut notifications = client.notifications();
                let next = notifications.timeout_iter(left).next().map(|_| ());
                next
            }
            None => return,
        };
        if let Err(e) = heard {
            tracing::warn!(error = %e, "the connection that listens for new jobs was lost; connecting again");
            ear.client = None;
            ear.failed = Some(e.to_string());
            ear.retry_at = std::time::Instant::now() + ear.backoff;
        }
    }
}

/// Takes the lock of environment `environment` of `repo` for the transaction, if no other
/// transaction holds it: whoever claims one of its jobs holds it until the claim is written.
fn environment_lock(tx: &mut Transaction<'_>, repo: &str, environment: &str) -> Result<bool, postgres::Error> {
    let row = tx
        .query_one("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 1))", &[&format!("{repo}\n{environment}")])?;
    Ok(row.get(0))
}
