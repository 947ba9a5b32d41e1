//! The embedded queue: one SQLite database in the host's data directory, shared by every
//! repository on the host. WAL with `synchronous = FULL`: a committed reservation or job
//! survives a crash or power loss. Writers serialize on SQLite's lock (IMMEDIATE transactions,
//! a busy timeout); a partial unique index keeps at most one pending job per environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

use super::{Job, JobState, QueueError, Receiver, RefLog, Reservation};
use crate::clock::now_rfc3339;

/// The database file in a data directory.
pub const FILE_NAME: &str = "queue.sqlite3";

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS reservations (
    id          INTEGER PRIMARY KEY,
    repo        TEXT NOT NULL,
    ref         TEXT NOT NULL,
    environment TEXT NOT NULL,
    old_commit  TEXT NOT NULL,
    new_commit  TEXT NOT NULL,
    topology    TEXT NOT NULL,
    changes     TEXT NOT NULL,
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
    topology      TEXT NOT NULL,
    changes       TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_pending_job_per_environment
    ON jobs (repo, environment) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS jobs_by_update ON jobs (repo, ref, new_commit);

CREATE TABLE IF NOT EXISTS environments (
    repo        TEXT NOT NULL,
    environment TEXT NOT NULL,
    commit_id   TEXT NOT NULL,
    topology    TEXT NOT NULL,
    deployed_at TEXT NOT NULL,
    PRIMARY KEY (repo, environment)
);
"#;

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
            let mut insert = tx
                .prepare(
                    "INSERT INTO reservations (repo, ref, environment, old_commit, new_commit, topology, changes,
                                               host, pid, pid_started, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(err)?;
            let now = now_rfc3339();
            for r in reservations {
                insert
                    .execute(params![
                        r.repo,
                        r.ref_name,
                        r.environment,
                        r.old_commit,
                        r.new_commit,
                        r.topology,
                        r.changes,
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
    /// `(ref, old, new)`. Returns the jobs created, in order.
    pub fn promote(
        &mut self,
        repo: &str,
        updates: &[(String, String, String)],
        receiver: &Receiver,
        refs: &dyn RefLog,
    ) -> Result<Vec<Job>, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut created = Vec::new();
        for (ref_name, old, new) in updates {
            let found: Option<Reservation> = tx
                .query_row(
                    "SELECT repo, ref, environment, old_commit, new_commit, topology, changes, host, pid, pid_started
                     FROM reservations
                     WHERE repo = ?1 AND ref = ?2 AND old_commit = ?3 AND new_commit = ?4 AND host = ?5 AND pid = ?6
                     ORDER BY id DESC LIMIT 1",
                    params![repo, ref_name, old, new, receiver.host, receiver.pid],
                    reservation_from_row,
                )
                .optional()
                .map_err(err)?;
            let reservation = match found {
                Some(r) => r,
                None if job_exists(&tx, repo, ref_name, old, new).map_err(err)? => continue,
                // Accepted by git without a reservation (the queue was replaced mid-push):
                // the push still gets its job; the runner reads the configuration anyway.
                None => Reservation {
                    repo: repo.to_owned(),
                    ref_name: ref_name.clone(),
                    environment: super::environment_name(ref_name.strip_prefix("refs/heads/").unwrap_or(ref_name)),
                    old_commit: old.clone(),
                    new_commit: new.clone(),
                    topology: "{}".to_owned(),
                    changes: "[]".to_owned(),
                    receiver: receiver.clone(),
                },
            };
            created.push(insert_job(&tx, &reservation, refs).map_err(err)?);
        }
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
        let rows: Vec<(i64, Reservation, String)> = {
            let mut stmt = tx
                .prepare(
                    "SELECT repo, ref, environment, old_commit, new_commit, topology, changes, host, pid, pid_started,
                            id, created_at
                     FROM reservations ORDER BY id",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map([], |row| Ok((row.get(10)?, reservation_from_row(row)?, row.get(11)?)))
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
                    if !job_exists(&tx, &r.repo, &r.ref_name, &r.old_commit, &r.new_commit).map_err(err)? {
                        insert_job(&tx, r, refs).map_err(err)?;
                    }
                }
                Some(false) => {}
                None => continue, // the repository cannot be read now; try again later
            }
            tx.execute("DELETE FROM reservations WHERE id = ?1", [id]).map_err(err)?;
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
                        created_at, updated_at, started_at, finished_at, topology, changes
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

    /// Reservations not settled yet (pushes in progress, or whose post-receive did not run).
    pub fn reservations(&self) -> Result<usize, QueueError> {
        let n: i64 =
            self.conn.query_row("SELECT count(*) FROM reservations", [], |r| r.get(0)).map_err(self.read_err())?;
        Ok(n as usize)
    }

    /// The topology deployed in an environment (JSON), if something is deployed.
    pub fn deployed_topology(&self, repo: &str, environment: &str) -> Result<Option<String>, QueueError> {
        self.conn
            .query_row(
                "SELECT topology FROM environments WHERE repo = ?1 AND environment = ?2",
                params![repo, environment],
                |r| r.get(0),
            )
            .optional()
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

fn reservation_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Reservation> {
    Ok(Reservation {
        repo: row.get(0)?,
        ref_name: row.get(1)?,
        environment: row.get(2)?,
        old_commit: row.get(3)?,
        new_commit: row.get(4)?,
        topology: row.get(5)?,
        changes: row.get(6)?,
        receiver: Receiver {
            host: row.get(7)?,
            pid: row.get(8)?,
            started: row.get::<_, Option<i64>>(9)?.map(|s| s as u64),
        },
    })
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
        topology: row.get(12)?,
        changes: row.get(13)?,
    })
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

/// Makes a reservation a job and deletes it. The job is pending when its commit is what the
/// branch points at now; otherwise a newer push already moved the branch and it is superseded.
/// A pending job supersedes the pending job of the same environment.
fn insert_job(tx: &Transaction<'_>, r: &Reservation, refs: &dyn RefLog) -> rusqlite::Result<Job> {
    let now = now_rfc3339();
    let latest = refs.tip(&r.repo, &r.ref_name).as_deref() == Some(r.new_commit.as_str());
    tx.execute(
        "INSERT INTO jobs (repo, ref, environment, old_commit, new_commit, state, topology, changes,
                           created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'superseded', ?6, ?7, ?8, ?8)",
        params![r.repo, r.ref_name, r.environment, r.old_commit, r.new_commit, r.topology, r.changes, now],
    )?;
    let id = tx.last_insert_rowid();
    if latest {
        tx.execute(
            "UPDATE jobs SET state = 'superseded', superseded_by = ?1, updated_at = ?2
             WHERE repo = ?3 AND environment = ?4 AND state = 'pending'",
            params![id, now, r.repo, r.environment],
        )?;
        tx.execute("UPDATE jobs SET state = 'pending' WHERE id = ?1", [id])?;
        // Jobs that arrived after the newer push moved the branch point at it too.
        tx.execute(
            "UPDATE jobs SET superseded_by = ?1
             WHERE repo = ?2 AND environment = ?3 AND state = 'superseded' AND superseded_by IS NULL AND id <> ?1",
            params![id, r.repo, r.environment],
        )?;
    }
    tx.execute(
        "DELETE FROM reservations WHERE repo = ?1 AND ref = ?2 AND old_commit = ?3 AND new_commit = ?4
                                    AND host = ?5 AND pid = ?6",
        params![r.repo, r.ref_name, r.old_commit, r.new_commit, r.receiver.host, r.receiver.pid],
    )?;
    tx.query_row(
        "SELECT id, repo, ref, environment, old_commit, new_commit, state, superseded_by,
                created_at, updated_at, started_at, finished_at, topology, changes
         FROM jobs WHERE id = ?1",
        [id],
        job_from_row,
    )
}

/// Whether an RFC 3339 timestamp written by [`now_rfc3339`] is older than `age` (timestamps of
/// that fixed format order as text).
fn older_than(timestamp: &str, age: Duration) -> bool {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    timestamp < crate::clock::rfc3339_at(now.saturating_sub(age)).as_str()
}
