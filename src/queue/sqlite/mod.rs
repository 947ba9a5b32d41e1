//! The embedded queue: one SQLite database in the host's data directory, shared by every
//! repository on the host. WAL with `synchronous = FULL`: a committed reservation or job
//! survives a crash or power loss. Writers serialize on SQLite's lock (IMMEDIATE transactions,
//! a busy timeout); a partial unique index keeps at most one pending job per environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

mod claim;
mod settle;
mod tokens;
mod types;
mod webhooks;

use super::{Job, JobKind, JobState, QueueError, Receiver, Request, Reservation, Stored};
use crate::core::{JobId, RepoId, Timestamp};

/// The database file in a data directory.
pub const FILE_NAME: &str = crate::store::DataDir::QUEUE_FILE;

const SCHEMA: &str = r#"
-- Topologies and change lists, stored once however many reservations and jobs share them
-- (a push of 1,000 branches with one configuration stores two documents).
CREATE TABLE IF NOT EXISTS documents (
    id   INTEGER PRIMARY KEY,
    body TEXT NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS reservations (
    id          INTEGER PRIMARY KEY,
    repo        TEXT NOT NULL,
    ref         TEXT NOT NULL,
    environment TEXT NOT NULL,
    old_commit  TEXT NOT NULL,
    new_commit  TEXT NOT NULL,
    topology_id INTEGER NOT NULL REFERENCES documents (id),
    changes_id  INTEGER NOT NULL REFERENCES documents (id),
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    pid_started INTEGER,
    created_at  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_update ON reservations (repo, ref, new_commit);

CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repo          TEXT NOT NULL,
    ref           TEXT NOT NULL,
    environment   TEXT NOT NULL,
    old_commit    TEXT NOT NULL,
    new_commit    TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN
                    ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'superseded')),
    superseded_by INTEGER REFERENCES jobs (id),
    topology_id   INTEGER NOT NULL REFERENCES documents (id),
    changes_id    INTEGER NOT NULL REFERENCES documents (id),
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_pending_job_per_environment
    ON jobs (repo, environment) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS jobs_by_update ON jobs (repo, ref, new_commit);
CREATE INDEX IF NOT EXISTS jobs_by_environment ON jobs (repo, environment, state);

CREATE TABLE IF NOT EXISTS environments (
    repo        TEXT NOT NULL,
    environment TEXT NOT NULL,
    commit_id   TEXT NOT NULL,
    topology    TEXT NOT NULL,
    deployed_at TEXT NOT NULL,
    PRIMARY KEY (repo, environment)
);
"#;

/// Each step brings the schema from version N to N+1 (`PRAGMA user_version`).
const MIGRATIONS: [&str; 6] = [
    SCHEMA,
    // The runner: who holds a job and until when, how often it was started, what it deployed.
    "ALTER TABLE jobs ADD COLUMN runner TEXT;
     ALTER TABLE jobs ADD COLUMN lease_until TEXT;
     ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE jobs ADD COLUMN release TEXT;",
    // The job's plan, stored by the hook: the runner acts on it instead of validating again
    // (jobs queued before have none, and are validated by the runner as before).
    "ALTER TABLE reservations ADD COLUMN plan_id INTEGER REFERENCES documents (id);
     ALTER TABLE jobs ADD COLUMN plan_id INTEGER REFERENCES documents (id);",
    // What is deployed is recorded once, by the environment's `current` and its release's
    // description (src/store); this copy could lag behind it after a crash.
    "DROP TABLE IF EXISTS environments;",
    // Jobs that are not pushes (`env sync`), with what they were asked.
    "ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'push';
     ALTER TABLE jobs ADD COLUMN options TEXT;",
    // Who pushed (or asked), a project's activities newest first, and the web API's tokens
    // (only their SHA-256: a token is 256 random bits, shown once).
    "ALTER TABLE reservations ADD COLUMN pusher TEXT;
     ALTER TABLE jobs ADD COLUMN pusher TEXT;
     ALTER TABLE jobs ADD COLUMN built_by TEXT;
     ALTER TABLE jobs ADD COLUMN deployed_by TEXT;
     CREATE INDEX IF NOT EXISTS jobs_by_repo ON jobs (repo, id);
     CREATE TABLE IF NOT EXISTS tokens (
         name       TEXT PRIMARY KEY,
         project    TEXT,
         role       TEXT NOT NULL CHECK (role IN ('viewer', 'developer', 'admin')),
         hash       TEXT NOT NULL UNIQUE,
         created_at TEXT NOT NULL
     );
     -- Webhooks, and an outbox of ended jobs that runners turn into deliveries: written by a
     -- trigger, so every way a job ends (a runner, a cancel, a supersede) is announced once.
     CREATE TABLE IF NOT EXISTS webhooks (
         id         INTEGER PRIMARY KEY,
         project    TEXT NOT NULL,
         url        TEXT NOT NULL,
         events     TEXT NOT NULL,
         created_at TEXT NOT NULL,
         UNIQUE (project, url)
     );
     CREATE TABLE IF NOT EXISTS job_ends (
         id     INTEGER PRIMARY KEY,
         job_id INTEGER NOT NULL REFERENCES jobs (id)
     );
     CREATE TRIGGER IF NOT EXISTS a_job_ends AFTER UPDATE OF state ON jobs
         WHEN NEW.state NOT IN ('pending', 'running') AND OLD.state IN ('pending', 'running')
         BEGIN INSERT INTO job_ends (job_id) VALUES (NEW.id); END;
     CREATE TABLE IF NOT EXISTS deliveries (
         id            INTEGER PRIMARY KEY,
         webhook_id    INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
         job_id        INTEGER NOT NULL REFERENCES jobs (id),
         attempts      INTEGER NOT NULL DEFAULT 0,
         next_at       TEXT,
         last_result   TEXT,
         delivered_at  TEXT,
         created_at    TEXT NOT NULL
     );
     CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_at) WHERE next_at IS NOT NULL;
     CREATE TABLE IF NOT EXISTS log_chunks (
         job_id INTEGER NOT NULL REFERENCES jobs (id),
         offset INTEGER NOT NULL,
         body   BLOB NOT NULL,
         PRIMARY KEY (job_id, offset)
     );",
];

/// Above this size the WAL is checkpointed into the database and truncated when a queue handle
/// is dropped. Each process that opens the queue scans the WAL, so it must stay small.
const WAL_LIMIT: u64 = 512 * 1024;

#[derive(Debug, Clone, Copy)]
enum Durability {
    Full,
    Redoable,
}

/// WAL mode, sync level, foreign keys, schema: what every connection sets up first.
fn prepare(conn: &mut Connection) -> rusqlite::Result<()> {
    // journal_mode answers with a row; it is persistent, so only the first open writes.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::InvalidQuery);
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    migrate(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// Brings the schema up to date. The version is read again under the write lock: a runner and a
/// hook opening a new queue at the same moment must not both apply the same step.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version = |c: &Connection| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0));
    if version(conn)? >= MIGRATIONS.len() as i64 {
        return Ok(()); // the usual case: no write lock taken
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from = version(&tx)?.max(0) as usize;
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.execute_batch(migration)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
    }
    tx.commit()
}

pub struct SqliteQueue {
    conn: Connection,
    path: PathBuf,
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue of a data directory.
    pub fn open(data_dir: &Path, busy_timeout: Duration) -> Result<SqliteQueue, QueueError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| QueueError::DataDir { path: data_dir.display().to_string(), source })?;
        let path = crate::store::DataDir::new(data_dir).queue_file();
        let open_err = |source| QueueError::Open { path: path.display().to_string(), source };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
        conn.busy_timeout(busy_timeout).map_err(open_err)?;
        // Hooks open the queue once per push. Checkpointing the WAL into the database when the
        // last connection closes would cost every push an extra fsync; instead the WAL is
        // checkpointed and truncated when it passes WAL_LIMIT (see Drop), once in a while.
        // Durability is unchanged: commits are in the WAL, synced.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(open_err)?;
        let mut conn = conn;
        // A new queue opened by several processes at once: switching it to WAL can answer
        // "busy" without waiting on the busy handler. Such answers are retried until the
        // busy timeout; anything else is an error at once.
        let deadline = std::time::Instant::now() + busy_timeout;
        loop {
            match prepare(&mut conn) {
                Ok(()) => break,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(open_err(e)),
            }
        }
        let queue = SqliteQueue { conn, path };
        queue.check_integrity()?;
        // Made by root (a root runner before the first push): the hooks' too.
        if let Err(source) = crate::store::DataDir::new(data_dir).give_to_owner() {
            return Err(QueueError::DataDir { path: data_dir.display().to_string(), source });
        }
        Ok(queue)
    }

    /// Where the state of the database file at its last passed check is kept.
    fn stamp_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".checked");
        PathBuf::from(p)
    }

    /// The database file's size and modification time: in WAL mode it changes only when a
    /// checkpoint copies the WAL into it (or when something else writes it).
    fn file_state(&self) -> Option<String> {
        let meta = std::fs::metadata(&self.path).ok()?;
        let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(format!("{} {}", meta.len(), mtime.as_nanos()))
    }

    /// Refuses a damaged queue before anything is recorded in it. A damaged page in the job
    /// table or its indexes let a reservation through and then lost the job (the ref had moved,
    /// no build was queued), so `PRAGMA quick_check` runs whenever the database file is not as
    /// it was at the last check that passed: after each checkpoint, once, and after anything
    /// else wrote to it. Otherwise the check costs one `stat`.
    fn check_integrity(&self) -> Result<(), QueueError> {
        let state = self.file_state();
        let stamp = self.stamp_path();
        if state.is_some() && std::fs::read_to_string(&stamp).ok() == state {
            return Ok(());
        }
        let damaged = |detail: String| QueueError::Damaged { path: self.path.display().to_string(), detail };
        let found: Vec<String> = self
            .conn
            .prepare("PRAGMA quick_check(5)")
            .and_then(|mut stmt| stmt.query_map([], |r| r.get::<_, String>(0))?.collect())
            .map_err(|e| damaged(e.to_string()))?;
        if found != ["ok"] {
            return Err(damaged(found.join("; ").replace('\n', " ")));
        }
        // Best effort: without the stamp the next opener checks again.
        if let Some(state) = state {
            let tmp = self.path.with_extension("checked.new");
            if std::fs::write(&tmp, state).is_ok() {
                let _ = std::fs::rename(&tmp, &stamp);
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How hard the next commits sync: `Full` for the writes that make the durable record
    /// (reservations, deployments), `Redoable` for writes derived from it (see `settle`).
    fn durability(&self, level: Durability) -> rusqlite::Result<()> {
        let pragma = match level {
            Durability::Full => "PRAGMA synchronous = FULL",
            Durability::Redoable => "PRAGMA synchronous = NORMAL",
        };
        self.conn.execute_batch(pragma)
    }

    fn write_err(&self) -> impl Fn(rusqlite::Error) -> QueueError + '_ {
        move |source| QueueError::Write { path: self.path.display().to_string(), source }
    }

    fn read_err(&self) -> impl Fn(rusqlite::Error) -> QueueError + '_ {
        move |source| QueueError::Read { path: self.path.display().to_string(), source }
    }

    /// Records the intents of one push, all or nothing.
    pub fn reserve(&mut self, reservations: &[Reservation]) -> Result<(), QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        self.durability(Durability::Full).map_err(err)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        {
            let mut documents = Documents::default();
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO reservations (repo, ref, environment, old_commit, new_commit, topology_id, changes_id,
                                               host, pid, pid_started, created_at, plan_id, pusher)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .map_err(err)?;
            let now = Timestamp::now();
            for r in reservations {
                let topology = documents.id(&tx, &r.topology).map_err(err)?;
                let changes = documents.id(&tx, &r.changes).map_err(err)?;
                let plan = documents.id(&tx, &r.plan).map_err(err)?;
                insert
                    .execute(params![
                        r.repo,
                        r.ref_name,
                        r.environment,
                        r.old_commit,
                        r.new_commit,
                        topology,
                        changes,
                        r.receiver.host,
                        r.receiver.pid,
                        r.receiver.started.map(|s| s as i64),
                        now,
                        plan,
                        r.pusher
                    ])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Queues a job that is not a push, at once runnable; refused while the environment has a
    /// pending job (one pending job per environment).
    pub fn enqueue(&mut self, r: &Request) -> Result<Job, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        self.durability(Durability::Full).map_err(err)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let pending: Option<i64> = tx
            .query_row(
                "SELECT id FROM jobs WHERE repo = ?1 AND environment = ?2 AND state = 'pending'",
                params![r.repo, r.environment],
                |row| row.get(0),
            )
            .optional()
            .map_err(err)?;
        if let Some(job) = pending {
            return Err(QueueError::Busy { environment: r.environment.to_string(), job });
        }
        let mut documents = Documents::default();
        let (empty_object, empty_list) = (documents.id(&tx, "{}").map_err(err)?, documents.id(&tx, "[]").map_err(err)?);
        let now = Timestamp::now();
        exec(
            &tx,
            "INSERT INTO jobs (repo, ref, environment, old_commit, new_commit, state, topology_id, changes_id,
                               created_at, updated_at, kind, options, pusher)
             VALUES (?1, ?2, ?3, ?4, ?4, 'pending', ?5, ?6, ?7, ?7, ?8, ?9, ?10)",
            params![
                r.repo,
                r.ref_name,
                r.environment,
                r.commit,
                empty_object,
                empty_list,
                now,
                r.kind.as_str(),
                r.options,
                r.pusher
            ],
        )
        .map_err(err)?;
        let id = tx.last_insert_rowid();
        let job =
            tx.query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), [id], job_from_row).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(job)
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<Job>, QueueError> {
        let mut stmt =
            self.conn.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY id")).map_err(self.read_err())?;
        let jobs = stmt
            .query_map([], job_from_row)
            .map_err(self.read_err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.read_err())?;
        Ok(jobs)
    }

    /// Jobs newest first, of one repository or all, older than `before`, at most `limit`.
    pub fn activities(
        &self,
        repo: Option<&RepoId>,
        before: Option<JobId>,
        limit: usize,
    ) -> Result<Vec<Job>, QueueError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR repo = ?1) AND id < ?2 ORDER BY id DESC LIMIT ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.read_err())?;
        let before = before.map_or(i64::MAX, |b| b.0);
        let jobs = stmt
            .query_map(params![repo, before, limit as i64], job_from_row)
            .map_err(self.read_err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.read_err())?;
        Ok(jobs)
    }

    /// The repositories that have jobs.
    pub fn projects(&self) -> Result<Vec<RepoId>, QueueError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT DISTINCT repo FROM jobs ORDER BY repo").map_err(self.read_err())?;
        let repos = stmt
            .query_map([], |r| r.get(0))
            .map_err(self.read_err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.read_err())?;
        Ok(repos)
    }

    /// Records an action done at once as an ended job.
    pub fn record(&mut self, r: &Request, state: JobState) -> Result<Job, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        self.durability(Durability::Full).map_err(err)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut documents = Documents::default();
        let (empty_object, empty_list) = (documents.id(&tx, "{}").map_err(err)?, documents.id(&tx, "[]").map_err(err)?);
        let now = Timestamp::now();
        exec(
            &tx,
            "INSERT INTO jobs (repo, ref, environment, old_commit, new_commit, state, topology_id, changes_id,
                               created_at, updated_at, started_at, finished_at, kind, options, pusher)
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?8, ?8, ?8, ?9, ?10, ?11)",
            params![
                r.repo,
                r.ref_name,
                r.environment,
                r.commit,
                state.as_str(),
                empty_object,
                empty_list,
                now,
                r.kind.as_str(),
                r.options,
                r.pusher
            ],
        )
        .map_err(err)?;
        let id = tx.last_insert_rowid();
        let job =
            tx.query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), [id], job_from_row).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(job)
    }

    pub fn append_log(&mut self, id: JobId, offset: u64, bytes: &[u8]) -> Result<(), QueueError> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO log_chunks (job_id, offset, body) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![id, offset as i64, bytes]))
            .map(|_| ())
            .map_err(self.write_err())
    }

    pub fn log_from(&self, id: JobId, offset: u64) -> Result<Vec<u8>, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT offset, body FROM log_chunks WHERE job_id = ?1 AND offset + length(body) > ?2 ORDER BY offset",
            )
            .map_err(self.read_err())?;
        let chunks = stmt
            .query_map(params![id, offset as i64], |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?)))
            .map_err(self.read_err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.read_err())?;
        Ok(crate::queue::join_chunks(chunks, offset))
    }

    /// The topology a job's commit declares and its changes against the environment (JSON).
    pub fn job_documents(&self, id: JobId) -> Result<Option<(String, String)>, QueueError> {
        self.conn
            .query_row(
                "SELECT t.body, c.body FROM jobs
                 JOIN documents t ON t.id = jobs.topology_id JOIN documents c ON c.id = jobs.changes_id
                 WHERE jobs.id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(self.read_err())
    }

    /// The plan the hook stored with a job (None for jobs queued before plans were stored).
    pub fn job_plan(&self, id: JobId) -> Result<Option<crate::core::plan::Plan>, QueueError> {
        let body: Option<String> = self
            .conn
            .query_row(
                "SELECT d.body FROM jobs JOIN documents d ON d.id = jobs.plan_id WHERE jobs.id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.read_err())?;
        body.map(|b| {
            serde_json::from_str(&b).map_err(|e| QueueError::Read {
                path: self.path.display().to_string(),
                source: rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)),
            })
        })
        .transpose()
    }

    /// Reservations not settled yet (pushes in progress, or whose post-receive did not run).
    pub fn reservations(&self) -> Result<usize, QueueError> {
        let n: i64 =
            self.conn.query_row("SELECT count(*) FROM reservations", [], |r| r.get(0)).map_err(self.read_err())?;
        Ok(n as usize)
    }
}

impl Drop for SqliteQueue {
    fn drop(&mut self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        if std::fs::metadata(&wal).map(|m| m.len() > WAL_LIMIT).unwrap_or(false) {
            // Best effort: busy readers or writers just leave it for the next process.
            let _ = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
    }
}

/// The columns `stored_from_row` reads, in order (a query may select more after them).
const STORED_COLUMNS: &str =
    "repo, ref, environment, old_commit, new_commit, topology_id, changes_id, host, pid, pid_started, plan_id, pusher";

fn stored_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        repo: row.get(0)?,
        ref_name: row.get(1)?,
        environment: row.get(2)?,
        old_commit: row.get(3)?,
        new_commit: row.get(4)?,
        topology_id: row.get(5)?,
        changes_id: row.get(6)?,
        receiver: Receiver {
            host: row.get(7)?,
            pid: row.get(8)?,
            started: row.get::<_, Option<i64>>(9)?.map(|s| s as u64),
        },
        plan_id: row.get(10)?,
        pusher: row.get(11)?,
    })
}

/// Document ids, remembered for one transaction.
#[derive(Default)]
struct Documents {
    known: HashMap<String, i64>,
}

impl Documents {
    fn id(&mut self, tx: &Transaction<'_>, body: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.known.get(body) {
            return Ok(*id);
        }
        exec(tx, "INSERT OR IGNORE INTO documents (body) VALUES (?1)", [body])?;
        let id = tx.prepare_cached("SELECT id FROM documents WHERE body = ?1")?.query_row([body], |r| r.get(0))?;
        self.known.insert(body.to_owned(), id);
        Ok(id)
    }
}

/// The columns `job_from_row` reads, in order.
pub(crate) const JOB_COLUMNS: &str = "id, repo, ref, environment, old_commit, new_commit, state, superseded_by,
     created_at, updated_at, started_at, finished_at, kind, options, pusher, release, built_by, deployed_by";

/// How many they are.
pub(crate) const JOB_COLUMN_COUNT: usize = 18;

fn job_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let state: String = row.get(6)?;
    Ok(Job {
        id: row.get(0)?,
        repo: row.get(1)?,
        ref_name: row.get(2)?,
        environment: row.get(3)?,
        old_commit: row.get(4)?,
        commit: row.get(5)?,
        state: JobState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, format!("state {state}").into())
        })?,
        superseded_by: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
        started_at: row.get(10)?,
        finished_at: row.get(11)?,
        kind: {
            let kind: String = row.get(12)?;
            JobKind::parse(&kind).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    12,
                    rusqlite::types::Type::Text,
                    format!("kind {kind}").into(),
                )
            })?
        },
        options: row.get(13)?,
        pusher: row.get(14)?,
        release: row.get(15)?,
        built_by: row.get(16)?,
        deployed_by: row.get(17)?,
    })
}

/// Runs one statement through the connection's statement cache.
fn exec(tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{CommitId, EnvName};

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pushgate-unit-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Every process that opens the queue scans the WAL: it must not grow without bound.
    #[test]
    fn the_job_column_count_is_that_of_the_list() {
        assert_eq!(JOB_COLUMNS.split(',').count(), JOB_COLUMN_COUNT);
    }

    #[test]
    fn the_wal_stays_bounded_across_processes() {
        let dir = temp_dir("wal");
        let receiver = Receiver { host: "h".into(), pid: 1, started: None };
        for i in 0..200 {
            let mut q = SqliteQueue::open(&dir, Duration::from_secs(5)).unwrap();
            let r = Reservation {
                repo: RepoId::new("/r"),
                ref_name: format!("refs/heads/b{i}"),
                environment: EnvName::parse(&format!("b{i}")).unwrap(),
                old_commit: CommitId::parse(&"0".repeat(40)).unwrap(),
                new_commit: CommitId::parse(&format!("{i:040}")).unwrap(),
                topology: "x".repeat(4000),
                changes: "[]".into(),
                plan: "{}".into(),
                receiver: receiver.clone(),
                pusher: None,
            };
            q.reserve(&[r]).unwrap();
        }
        let wal = std::fs::metadata(dir.join(format!("{FILE_NAME}-wal"))).map(|m| m.len()).unwrap_or(0);
        assert!(wal <= WAL_LIMIT + 64 * 1024, "WAL grew to {wal} bytes");
        let q = SqliteQueue::open(&dir, Duration::from_secs(5)).unwrap();
        assert_eq!(q.reservations().unwrap(), 200, "nothing lost by checkpointing");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A queue written by the first release (schema 1, before the runner) keeps its jobs, and
    /// they can be claimed once the schema is brought up to date.
    #[test]
    fn a_queue_of_the_first_schema_is_upgraded_with_its_jobs() {
        let dir = temp_dir("upgrade");
        std::fs::create_dir_all(&dir).unwrap();
        {
            let conn = Connection::open(dir.join(FILE_NAME)).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(
                "INSERT INTO documents (id, body) VALUES (1, '{}'), (2, '[]');
                 INSERT INTO jobs (repo, ref, environment, old_commit, new_commit, state, topology_id, changes_id,
                                   created_at, updated_at)
                 VALUES ('/srv/shop.git', 'refs/heads/main', 'main', '0000000000000000000000000000000000000000',
                         '3b18e512dba79e4c8300dd08aeb37f8e728b8dad', 'pending', 1, 2,
                         '2026-11-22T01:02:03.456Z', '2026-11-22T01:02:03.456Z');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let mut q = SqliteQueue::open(&dir, Duration::from_secs(5)).unwrap();
        let version: i64 = q.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let jobs = q.jobs().unwrap();
        assert_eq!((jobs.len(), jobs[0].environment.as_str()), (1, "main"));
        let claimed = q
            .claim("runner-1", Duration::from_secs(30), &crate::queue::Scope::default())
            .unwrap()
            .expect("the old job is claimable");
        assert_eq!(claimed.id, jobs[0].id);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A runner and the first push open a new queue together: each must find it usable.
    #[test]
    fn a_new_queue_opened_by_many_at_once_is_created_once() {
        for round in 0..20 {
            let dir = temp_dir(&format!("race-{round}"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (dir, start) = (dir.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        SqliteQueue::open(&dir, Duration::from_secs(5)).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                opener.join().unwrap().unwrap_or_else(|e| panic!("round {round}: {e}"));
            }
            let q = SqliteQueue::open(&dir, Duration::from_secs(5)).unwrap();
            let version: i64 = q.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
            assert_eq!(version, MIGRATIONS.len() as i64);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
