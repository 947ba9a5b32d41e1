//! Settling reservations into jobs: `promote` (post-receive, for the refs git updated) and
//! `reconcile` (for pushes whose post-receive never ran), and the rules a new job follows: it is
//! pending when its commit is what the branch points at, and then supersedes its environment's
//! pending job; otherwise a newer push already moved the branch and it is superseded.
//!
//! Settling commits without fsync (`Durability::Redoable`): the reservations it consumes are
//! durable already (pre-receive committed them with `synchronous = FULL`). If power fails
//! before a settling commit reaches the disk, it is lost as a whole, the reservations are still
//! there, and `reconcile` settles them again the same way.

use std::collections::{HashMap, HashSet};

use rusqlite::{params, OptionalExtension, Transaction, TransactionBehavior};

use super::{exec, stored_from_row, Documents, Durability, SqliteQueue, STORED_COLUMNS};
use crate::core::{CommitId, EnvName, JobId, RefUpdate, RepoId, Timestamp};
use crate::queue::Stored;
use crate::queue::{Job, JobState, QueueError, Receiver, RefLog};

impl SqliteQueue {
    /// Turns the reservations of refs git has updated into jobs (post-receive). `updates` are
    /// every ref git updated in this push, so the push's other reservations
    /// (refs git refused) are dropped. Returns the jobs created, in order.
    pub fn promote(
        &mut self,
        repo: &RepoId,
        updates: &[RefUpdate],
        receiver: &Receiver,
        refs: &dyn RefLog,
    ) -> Result<Vec<Job>, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        self.durability(Durability::Redoable).map_err(err)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let mut mine: HashMap<(String, CommitId, CommitId), Stored> = HashMap::new();
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
        for RefUpdate { name: ref_name, old, new } in updates {
            let reservation = match mine.remove(&(ref_name.clone(), old.clone(), new.clone())) {
                Some(r) => r,
                None if job_exists(&tx, repo, ref_name, old, new).map_err(err)? => continue,
                // Accepted by git without a reservation (the queue was replaced mid-push):
                // the push still gets its job; the runner reads the configuration anyway.
                // (A branch that names no environment was refused by pre-receive.)
                None => Stored {
                    repo: repo.clone(),
                    ref_name: ref_name.clone(),
                    environment: match EnvName::of_branch(ref_name.strip_prefix("refs/heads/").unwrap_or(ref_name)) {
                        Ok(env) => env,
                        Err(_) => continue,
                    },
                    old_commit: old.clone(),
                    new_commit: new.clone(),
                    topology_id: Documents::default().id(&tx, "{}").map_err(err)?,
                    changes_id: Documents::default().id(&tx, "[]").map_err(err)?,
                    receiver: receiver.clone(),
                    plan_id: None,
                    pusher: crate::queue::pusher(&|k| std::env::var(k).ok()),
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
        self.durability(Durability::Redoable).map_err(err)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let rows: Vec<(i64, Stored, Timestamp)> = {
            let mut stmt = tx
                .prepare(&format!("SELECT {STORED_COLUMNS}, id, created_at FROM reservations ORDER BY id"))
                .map_err(err)?;
            let rows = stmt
                .query_map([], |row| Ok((row.get(12)?, stored_from_row(row)?, row.get(13)?)))
                .map_err(err)?
                .collect::<Result<_, _>>()
                .map_err(err)?;
            rows
        };
        let mut settled = 0;
        for (id, reservation, created_at) in rows {
            if reservation.in_progress(created_at) {
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
}

fn job_exists(
    tx: &Transaction<'_>,
    repo: &RepoId,
    ref_name: &str,
    old: &CommitId,
    new: &CommitId,
) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT 1 FROM jobs WHERE repo = ?1 AND ref = ?2 AND old_commit = ?3 AND new_commit = ?4 LIMIT 1",
        params![repo, ref_name, old, new],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}

fn commit_queued(tx: &Transaction<'_>, repo: &RepoId, ref_name: &str, commit: &CommitId) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM jobs WHERE repo = ?1 AND ref = ?2 AND new_commit = ?3 LIMIT 1")?
        .query_row(params![repo, ref_name, commit], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}

/// Inserts jobs for one repository, knowing each environment's pending job.
struct Batch {
    /// environment -> id of its pending job
    pending: HashMap<EnvName, JobId>,
    /// Environments with superseded jobs that do not name their successor yet.
    orphans: HashSet<EnvName>,
    now: Timestamp,
}

impl Batch {
    fn load(tx: &Transaction<'_>, repo: &RepoId) -> rusqlite::Result<Batch> {
        let mut stmt = tx.prepare_cached("SELECT environment, id FROM jobs WHERE repo = ?1 AND state = 'pending'")?;
        let pending = stmt.query_map([repo], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
        let mut stmt = tx.prepare_cached(
            "SELECT DISTINCT environment FROM jobs WHERE repo = ?1 AND state = 'superseded' AND superseded_by IS NULL",
        )?;
        let orphans = stmt.query_map([repo], |r| r.get(0))?.collect::<Result<_, _>>()?;
        Ok(Batch { pending, orphans, now: Timestamp::now() })
    }

    /// Makes a reservation a job. It is pending when its commit is what the branch points at
    /// now, and then supersedes its environment's pending job; otherwise a newer push already
    /// moved the branch, and it is superseded (by that push's job, once it exists).
    fn insert(&mut self, tx: &Transaction<'_>, r: Stored, refs: &dyn RefLog) -> rusqlite::Result<Job> {
        let latest = refs.tip(&r.repo, &r.ref_name).as_ref() == Some(&r.new_commit);
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
                               created_at, updated_at, plan_id, pusher)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11)",
            params![
                r.repo,
                r.ref_name,
                r.environment,
                r.old_commit,
                r.new_commit,
                state.as_str(),
                r.topology_id,
                r.changes_id,
                self.now,
                r.plan_id,
                r.pusher
            ],
        )?;
        let id = JobId(tx.last_insert_rowid());
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
            kind: crate::queue::JobKind::Push,
            options: None,
            repo: r.repo,
            ref_name: r.ref_name,
            environment: r.environment,
            old_commit: r.old_commit,
            commit: r.new_commit,
            state,
            superseded_by: None,
            created_at: self.now,
            updated_at: self.now,
            started_at: None,
            finished_at: None,
            pusher: r.pusher,
            release: None,
            built_by: None,
            deployed_by: None,
        })
    }
}
