//! The embedded queue: one SQLite database in the host's data directory, shared by every
//! repository on the host. WAL with `synchronous = FULL`: a committed reservation or job
//! survives a crash or power loss. Writers serialize on SQLite's lock (IMMEDIATE transactions,
//! a busy timeout); a partial unique index keeps at most one pending job per environment.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

use super::{Job, JobState, QueueError, Receiver, RefLog, Reservation};
use crate::clock::now_rfc3339;

/// The database file in a data directory.
pub const FILE_NAME: &str = "queue.sqlite3";

const SCHEMA_VERSION: i64 = 1;

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

/// Above this size the WAL is checkpointed into the database and truncated when a queue handle
/// is dropped. Each process that opens the queue scans the WAL, so it must stay small.
const WAL_LIMIT: u64 = 512 * 1024;

/// Reservations of pushes on other hosts are settled once they are this old.
const FOREIGN_RESERVATION_AGE: Duration = Duration::from_secs(3600);

pub struct SqliteQueue {
    conn: Connection,
    path: PathBuf,
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue of a data directory.
    pub fn open(data_dir: &Path, busy_timeout: Duration) -> Result<SqliteQueue, QueueError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| QueueError::DataDir { path: data_dir.display().to_string(), source })?;
        let path = data_dir.join(FILE_NAME);
        let open_err = |source| QueueError::Open { path: path.display().to_string(), source };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&path, flags).map_err(open_err)?;
        conn.busy_timeout(busy_timeout).map_err(open_err)?;
        // Hooks open the queue once per push. Checkpointing the WAL into the database when the
        // last connection closes would cost every push an extra fsync; instead the WAL is
        // checkpointed and truncated when it passes WAL_LIMIT (see Drop), once in a while.
        // Durability is unchanged: commits are in the WAL, synced.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).map_err(open_err)?;
        // journal_mode answers with a row; it is persistent, so only the first open writes.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(rusqlite::Error::InvalidQuery));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;").map_err(open_err)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(open_err)?;
        if version < SCHEMA_VERSION {
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"))
                .map_err(open_err)?;
        }
        Ok(SqliteQueue { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        {
            let mut documents = Documents::default();
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO reservations (repo, ref, environment, old_commit, new_commit, topology_id, changes_id,
                                               host, pid, pid_started, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(err)?;
            let now = now_rfc3339();
            for r in reservations {
                let topology = documents.id(&tx, &r.topology).map_err(err)?;
                let changes = documents.id(&tx, &r.changes).map_err(err)?;
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
                        now
                    ])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Turns the reservations of refs git has updated into jobs (post-receive). `updates` are
    /// `(ref, old, new)`: every ref git updated in this push, so the push's other reservations
    /// (refs git refused) are dropped. Returns the jobs created, in order.
    pub fn promote(
        &mut self,
        repo: &str,
        updates: &[(String, String, String)],
        receiver: &Receiver,
        refs: &dyn RefLog,
    ) -> Result<Vec<Job>, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        // No fsync for this commit: the reservations it consumes are durable already (pre-receive
        // committed them with synchronous = FULL). If power fails before this commit reaches the
        // disk, it is lost as a whole, the reservations are still there, and `reconcile` makes
        // the same jobs. Durability stays FULL for every other write.
        self.conn.execute_batch("PRAGMA synchronous = NORMAL").map_err(err)?;
        let result = self.promote_in_transaction(repo, updates, receiver, refs);
        self.conn.execute_batch("PRAGMA synchronous = FULL").map_err(err)?;
        result
    }

    fn promote_in_transaction(
        &mut self,
        repo: &str,
        updates: &[(String, String, String)],
        receiver: &Receiver,
        refs: &dyn RefLog,
    ) -> Result<Vec<Job>, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut mine: HashMap<(String, String, String), Stored> = HashMap::new();
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {STORED_COLUMNS} FROM reservations WHERE repo = ?1 AND host = ?2 AND pid = ?3 ORDER BY id"
                ))
                .map_err(err)?;
            let rows = stmt.query_map(params![repo, receiver.host, receiver.pid], stored_from_row).map_err(err)?;
            for r in rows {
                let r = r.map_err(err)?;
                mine.insert((r.ref_name.clone(), r.old_commit.clone(), r.new_commit.clone()), r);
            }
        }
        let mut batch = Batch::load(&tx, repo).map_err(err)?;
        let mut created = Vec::new();
        for (ref_name, old, new) in updates {
            let reservation = match mine.remove(&(ref_name.clone(), old.clone(), new.clone())) {
                Some(r) => r,
                None if job_exists(&tx, repo, ref_name, old, new).map_err(err)? => continue,
                // Accepted by git without a reservation (the queue was replaced mid-push):
                // the push still gets its job; the runner reads the configuration anyway.
                None => Stored {
                    repo: repo.to_owned(),
                    ref_name: ref_name.clone(),
                    environment: super::environment_name(ref_name.strip_prefix("refs/heads/").unwrap_or(ref_name)),
                    old_commit: old.clone(),
                    new_commit: new.clone(),
                    topology_id: Documents::default().id(&tx, "{}").map_err(err)?,
                    changes_id: Documents::default().id(&tx, "[]").map_err(err)?,
                    receiver: receiver.clone(),
                },
            };
            created.push(batch.insert(&tx, reservation, refs).map_err(err)?);
        }
        exec(
            &tx,
            "DELETE FROM reservations WHERE repo = ?1 AND host = ?2 AND pid = ?3",
            params![repo, receiver.host, receiver.pid],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(created)
    }

    /// Settles reservations whose push has ended without a `post-receive` (killed, crashed):
    /// a job if git moved the ref, nothing if it refused the update. Returns how many were
    /// settled. Pushes still in progress are left alone.
    pub fn reconcile(&mut self, refs: &dyn RefLog) -> Result<usize, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        let pending: i64 =
            self.conn.query_row("SELECT count(*) FROM reservations", [], |r| r.get(0)).map_err(self.read_err())?;
        if pending == 0 {
            return Ok(0);
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let rows: Vec<(i64, Stored, String)> = {
            let mut stmt = tx
                .prepare(&format!("SELECT {STORED_COLUMNS}, id, created_at FROM reservations ORDER BY id"))
                .map_err(err)?;
            let rows = stmt
                .query_map([], |row| Ok((row.get(10)?, stored_from_row(row)?, row.get(11)?)))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            rows
        };
        let mut settled = 0;
        for (id, reservation, created_at) in rows {
            let in_progress = match reservation.receiver.alive() {
                Some(alive) => alive,
                None => !older_than(&created_at, FOREIGN_RESERVATION_AGE),
            };
            if in_progress {
                continue;
            }
            let r = &reservation;
            match refs.was_updated(&r.repo, &r.ref_name, &r.old_commit, &r.new_commit) {
                Some(true) => {
                    // A commit already queued for this branch (pushed again after a refusal) is
                    // not queued twice.
                    if !commit_queued(&tx, &r.repo, &r.ref_name, &r.new_commit).map_err(err)? {
                        Batch::load(&tx, &r.repo).map_err(err)?.insert(&tx, reservation.clone(), refs).map_err(err)?;
                    }
                }
                Some(false) => {}
                None => continue, // the repository cannot be read now; try again later
            }
            exec(&tx, "DELETE FROM reservations WHERE id = ?1", [id]).map_err(err)?;
            settled += 1;
        }
        tx.commit().map_err(err)?;
        Ok(settled)
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<Job>, QueueError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, repo, ref, environment, old_commit, new_commit, state, superseded_by,
                        created_at, updated_at, started_at, finished_at
                 FROM jobs ORDER BY id",
            )
            .map_err(self.read_err())?;
        let jobs = stmt
            .query_map([], job_from_row)
            .map_err(self.read_err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.read_err())?;
        Ok(jobs)
    }

    /// The topology a job's commit declares and its changes against the environment (JSON).
    pub fn job_documents(&self, id: i64) -> Result<Option<(String, String)>, QueueError> {
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

    /// Reservations not settled yet (pushes in progress, or whose post-receive did not run).
    pub fn reservations(&self) -> Result<usize, QueueError> {
        let n: i64 =
            self.conn.query_row("SELECT count(*) FROM reservations", [], |r| r.get(0)).map_err(self.read_err())?;
        Ok(n as usize)
    }

    /// The topology deployed in an environment (JSON), if something is deployed.
    pub fn deployed_topology(&self, repo: &str, environment: &str) -> Result<Option<String>, QueueError> {
        self.conn
            .prepare_cached("SELECT topology FROM environments WHERE repo = ?1 AND environment = ?2")
            .and_then(|mut stmt| stmt.query_row(params![repo, environment], |r| r.get(0)).optional())
            .map_err(self.read_err())
    }

    /// Records what an environment runs now (the runner calls this after a deployment).
    pub fn set_deployed(
        &mut self,
        repo: &str,
        environment: &str,
        commit: &str,
        topology: &str,
    ) -> Result<(), QueueError> {
        self.conn
            .execute(
                "INSERT INTO environments (repo, environment, commit_id, topology, deployed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (repo, environment) DO UPDATE SET
                     commit_id = excluded.commit_id, topology = excluded.topology, deployed_at = excluded.deployed_at",
                params![repo, environment, commit, topology, now_rfc3339()],
            )
            .map(|_| ())
            .map_err(self.write_err())
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

/// A reservation as stored: its documents by id.
#[derive(Debug, Clone)]
struct Stored {
    repo: String,
    ref_name: String,
    environment: String,
    old_commit: String,
    new_commit: String,
    topology_id: i64,
    changes_id: i64,
    receiver: Receiver,
}

const STORED_COLUMNS: &str =
    "repo, ref, environment, old_commit, new_commit, topology_id, changes_id, host, pid, pid_started";

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
    })
}

fn commit_queued(tx: &Transaction<'_>, repo: &str, ref_name: &str, commit: &str) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM jobs WHERE repo = ?1 AND ref = ?2 AND new_commit = ?3 LIMIT 1")?
        .query_row(params![repo, ref_name, commit], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

/// Runs one statement through the connection's statement cache.
fn exec(tx: &Transaction<'_>, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params)
}

fn job_exists(tx: &Transaction<'_>, repo: &str, ref_name: &str, old: &str, new: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT 1 FROM jobs WHERE repo = ?1 AND ref = ?2 AND old_commit = ?3 AND new_commit = ?4 LIMIT 1",
        params![repo, ref_name, old, new],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

/// Inserts jobs for one repository, knowing each environment's pending job.
struct Batch {
    /// environment -> id of its pending job
    pending: HashMap<String, i64>,
    /// Environments with superseded jobs that do not name their successor yet.
    orphans: std::collections::HashSet<String>,
    now: String,
}

impl Batch {
    fn load(tx: &Transaction<'_>, repo: &str) -> rusqlite::Result<Batch> {
        let mut stmt = tx.prepare_cached("SELECT environment, id FROM jobs WHERE repo = ?1 AND state = 'pending'")?;
        let pending = stmt.query_map([repo], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        let mut stmt = tx.prepare_cached(
            "SELECT DISTINCT environment FROM jobs WHERE repo = ?1 AND state = 'superseded' AND superseded_by IS NULL",
        )?;
        let orphans = stmt.query_map([repo], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(Batch { pending, orphans, now: now_rfc3339() })
    }

    /// Makes a reservation a job. It is pending when its commit is what the branch points at
    /// now, and then supersedes its environment's pending job; otherwise a newer push already
    /// moved the branch, and it is superseded (by that push's job, once it exists).
    fn insert(&mut self, tx: &Transaction<'_>, r: Stored, refs: &dyn RefLog) -> rusqlite::Result<Job> {
        let latest = refs.tip(&r.repo, &r.ref_name).as_deref() == Some(r.new_commit.as_str());
        let state = if latest { JobState::Pending } else { JobState::Superseded };
        let previous = if latest { self.pending.remove(&r.environment) } else { None };
        if let Some(previous) = previous {
            // Free the environment's pending slot (a partial unique index) before taking it.
            exec(
                tx,
                "UPDATE jobs SET state = 'superseded', updated_at = ?2 WHERE id = ?1",
                params![previous, self.now],
            )?;
            self.orphans.insert(r.environment.clone());
        }
        if !latest {
            self.orphans.insert(r.environment.clone());
        }
        exec(
            tx,
            "INSERT INTO jobs (repo, ref, environment, old_commit, new_commit, state, topology_id, changes_id,
                               created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            params![
                r.repo,
                r.ref_name,
                r.environment,
                r.old_commit,
                r.new_commit,
                state.as_str(),
                r.topology_id,
                r.changes_id,
                self.now
            ],
        )?;
        let id = tx.last_insert_rowid();
        if latest {
            self.pending.insert(r.environment.clone(), id);
        }
        if latest && self.orphans.remove(&r.environment) {
            // The job it replaced, and jobs that arrived after this push moved the branch.
            exec(
                tx,
                "UPDATE jobs SET superseded_by = ?1
                 WHERE repo = ?2 AND environment = ?3 AND state = 'superseded' AND superseded_by IS NULL AND id <> ?1",
                params![id, r.repo, r.environment],
            )?;
        }
        Ok(Job {
            id,
            repo: r.repo,
            ref_name: r.ref_name,
            environment: r.environment,
            old_commit: r.old_commit,
            commit: r.new_commit,
            state,
            superseded_by: None,
            created_at: self.now.clone(),
            updated_at: self.now.clone(),
            started_at: None,
            finished_at: None,
        })
    }
}

/// Whether an RFC 3339 timestamp written by [`now_rfc3339`] is older than `age` (timestamps of
/// that fixed format order as text).
fn older_than(timestamp: &str, age: Duration) -> bool {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    timestamp < crate::clock::rfc3339_at(now.saturating_sub(age)).as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("pushgate-unit-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Every process that opens the queue scans the WAL: it must not grow without bound.
    #[test]
    fn the_wal_stays_bounded_across_processes() {
        let dir = temp_dir("wal");
        let receiver = Receiver { host: "h".into(), pid: 1, started: None };
        for i in 0..200 {
            let mut q = SqliteQueue::open(&dir, Duration::from_secs(5)).unwrap();
            let r = Reservation {
                repo: "/r".into(),
                ref_name: format!("refs/heads/b{i}"),
                environment: format!("b{i}"),
                old_commit: "0".repeat(40),
                new_commit: format!("{i:040}"),
                topology: "x".repeat(4000),
                changes: "[]".into(),
                receiver: receiver.clone(),
            };
            q.reserve(&[r]).unwrap();
        }
        let wal = std::fs::metadata(dir.join(format!("{FILE_NAME}-wal"))).map(|m| m.len()).unwrap_or(0);
        assert!(wal <= WAL_LIMIT + 64 * 1024, "WAL grew to {wal} bytes");
        let q = SqliteQueue::open(&dir, Duration::from_secs(5)).unwrap();
        assert_eq!(q.reservations().unwrap(), 200, "nothing lost by checkpointing");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
