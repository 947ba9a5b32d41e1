//! The runner's side of the queue: claiming a job under a lease, keeping the lease alive, and
//! recording how the job ended.
//!
//! A claim is a lease: a runner that dies (kill -9, power loss) stops renewing it, and once it
//! has run out the job is claimable again, by any runner. Two jobs of one environment never run
//! at once: a pending job is claimable only while nothing of its environment is running.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{exec, job_from_row, Durability, SqliteQueue, JOB_COLUMNS};
use crate::core::{JobId, RepoId, Timestamp};
use crate::queue::{Job, JobState, QueueError, Scope};

fn in_future(d: Duration) -> Timestamp {
    Timestamp::now() + d
}

impl SqliteQueue {
    /// Takes the oldest claimable job for `runner`, holding it for `lease`. Jobs whose lease ran
    /// out are claimable again (or superseded, when their environment got a newer push).
    pub fn claim(&mut self, runner: &str, lease: Duration, scope: &Scope) -> Result<Option<Job>, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        self.durability(Durability::Full).map_err(err)?;
        let now = Timestamp::now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        // Abandoned: a newer pending job of the environment supersedes it...
        exec(
            &tx,
            "UPDATE jobs SET state = 'superseded', runner = NULL, lease_until = NULL, updated_at = ?1,
                    superseded_by = (SELECT p.id FROM jobs p WHERE p.repo = jobs.repo
                                     AND p.environment = jobs.environment AND p.state = 'pending')
             WHERE state = 'running' AND lease_until < ?1
               AND EXISTS (SELECT 1 FROM jobs p WHERE p.repo = jobs.repo
                           AND p.environment = jobs.environment AND p.state = 'pending')",
            [&now],
        )
        .map_err(err)?;
        // ...otherwise it is pending again.
        exec(
            &tx,
            "UPDATE jobs SET state = 'pending', runner = NULL, lease_until = NULL, updated_at = ?1
             WHERE state = 'running' AND lease_until < ?1",
            [&now],
        )
        .map_err(err)?;
        let id: Option<i64> = tx
            .query_row(
                "SELECT id FROM jobs j WHERE state = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.repo = j.repo
                                   AND r.environment = j.environment AND r.state = 'running')
                   AND (?1 OR built_by IS NOT NULL OR kind NOT IN ('push', 'redeploy'))
                   AND (?2 OR (built_by IS NULL AND kind IN ('push', 'redeploy')))
                   AND (?3 IS NULL OR environment IN (SELECT value FROM json_each(?3)))
                   AND (?4 IS NULL OR kind NOT IN ('push', 'redeploy')
                        OR (SELECT count(*) FROM jobs r WHERE r.repo = j.repo AND r.state = 'running') < ?4)
                 ORDER BY (SELECT count(*) FROM jobs r WHERE r.repo = j.repo AND r.state = 'running'), id
                 LIMIT 1",
                params![scope.build, scope.deploy, scope.environments_json(), scope.per_project],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let Some(id) = id else {
            tx.commit().map_err(err)?;
            return Ok(None);
        };
        exec(
            &tx,
            "UPDATE jobs SET state = 'running', runner = ?2, lease_until = ?3, attempts = attempts + 1,
                    started_at = COALESCE(started_at, ?4), updated_at = ?4
             WHERE id = ?1",
            params![id, runner, in_future(lease), now],
        )
        .map_err(err)?;
        let job =
            tx.query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), [id], job_from_row).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Some(job))
    }

    /// Claims pending job `id` if no job of its environment runs.
    pub fn claim_job(&mut self, id: JobId, runner: &str, lease: Duration) -> Result<Option<Job>, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        self.durability(Durability::Full).map_err(err)?;
        let now = Timestamp::now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let n = tx
            .execute(
                "UPDATE jobs SET state = 'running', runner = ?2, lease_until = ?3, attempts = attempts + 1,
                        started_at = COALESCE(started_at, ?4), updated_at = ?4
                 WHERE id = ?1 AND state = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.repo = jobs.repo
                                   AND r.environment = jobs.environment AND r.state = 'running')",
                params![id, runner, in_future(lease), now],
            )
            .map_err(err)?;
        if n == 0 {
            tx.commit().map_err(err)?;
            return Ok(None);
        }
        let job =
            tx.query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), [id], job_from_row).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Some(job))
    }

    /// Extends `runner`'s lease on job `id`. False when the job is no longer the runner's
    /// (its lease ran out and another runner took it, or it was cancelled).
    pub fn heartbeat(&mut self, id: JobId, runner: &str, lease: Duration) -> Result<bool, QueueError> {
        self.durability(Durability::Redoable).map_err(self.write_err())?;
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET lease_until = ?3 WHERE id = ?1 AND runner = ?2 AND state = 'running'",
                params![id, runner, in_future(lease)],
            )
            .map_err(self.write_err())?;
        Ok(n == 1)
    }

    /// A built job goes back to the queue for a deploying runner (superseded instead when a
    /// newer push of its environment is pending). False when it was not the runner's.
    pub fn handoff(&mut self, id: JobId, runner: &str) -> Result<bool, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        self.durability(Durability::Full).map_err(err)?;
        let now = Timestamp::now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let superseded = exec(
            &tx,
            "UPDATE jobs SET state = 'superseded', runner = NULL, lease_until = NULL, built_by = ?2, updated_at = ?3,
                    superseded_by = (SELECT p.id FROM jobs p WHERE p.repo = jobs.repo
                                     AND p.environment = jobs.environment AND p.state = 'pending')
             WHERE id = ?1 AND runner = ?2 AND state = 'running'
               AND EXISTS (SELECT 1 FROM jobs p WHERE p.repo = jobs.repo
                           AND p.environment = jobs.environment AND p.state = 'pending')",
            params![id, runner, now],
        )
        .map_err(err)?;
        let pending = exec(
            &tx,
            "UPDATE jobs SET state = 'pending', runner = NULL, lease_until = NULL, built_by = ?2, updated_at = ?3
             WHERE id = ?1 AND runner = ?2 AND state = 'running'",
            params![id, runner, now],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(superseded + pending == 1)
    }

    /// Records how a job ended. False when it was not the runner's any more.
    pub fn finish(
        &mut self,
        id: JobId,
        runner: &str,
        state: JobState,
        release: Option<&str>,
    ) -> Result<bool, QueueError> {
        self.durability(Durability::Full).map_err(self.write_err())?;
        let now = Timestamp::now();
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET state = ?3, release = COALESCE(?4, release), finished_at = ?5, updated_at = ?5,
                        runner = NULL, lease_until = NULL, deployed_by = ?2
                 WHERE id = ?1 AND runner = ?2 AND state = 'running'",
                params![id, runner, state.as_str(), release, now],
            )
            .map_err(self.write_err())?;
        Ok(n == 1)
    }

    /// Gives a running job back to the queue (a runner stopping before it could finish it), or
    /// marks it superseded when its environment has a newer pending job.
    pub fn release_claim(&mut self, id: JobId, runner: &str) -> Result<(), QueueError> {
        self.durability(Durability::Full).map_err(self.write_err())?;
        self.conn
            .execute(
                "UPDATE jobs SET state = 'superseded', runner = NULL, lease_until = NULL, updated_at = ?3,
                        superseded_by = (SELECT p.id FROM jobs p WHERE p.repo = jobs.repo
                                         AND p.environment = jobs.environment AND p.state = 'pending')
                 WHERE id = ?1 AND runner = ?2 AND state = 'running'
                   AND EXISTS (SELECT 1 FROM jobs p WHERE p.repo = jobs.repo
                               AND p.environment = jobs.environment AND p.state = 'pending')",
                params![id, runner, Timestamp::now()],
            )
            .map_err(self.write_err())?;
        self.conn
            .execute(
                "UPDATE jobs SET state = 'pending', runner = NULL, lease_until = NULL, updated_at = ?3
                 WHERE id = ?1 AND runner = ?2 AND state = 'running'
                   AND NOT EXISTS (SELECT 1 FROM jobs p WHERE p.repo = jobs.repo
                                   AND p.environment = jobs.environment AND p.state = 'pending')",
                params![id, runner, Timestamp::now()],
            )
            .map(|_| ())
            .map_err(self.write_err())
    }

    /// Cancels a pending or running job. Returns the state it had, if it could be cancelled.
    pub fn cancel(&mut self, id: JobId) -> Result<Option<JobState>, QueueError> {
        self.durability(Durability::Full).map_err(self.write_err())?;
        let before = self.job(id)?.map(|j| j.state);
        let now = Timestamp::now();
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET state = 'cancelled', runner = NULL, lease_until = NULL,
                        finished_at = ?2, updated_at = ?2
                 WHERE id = ?1 AND state IN ('pending', 'running')",
                params![id, now],
            )
            .map_err(self.write_err())?;
        Ok(if n == 1 { before } else { None })
    }

    /// Cancels the pending jobs of a branch that was deleted (a runner must not deploy a branch
    /// that no longer exists). Returns their ids. A running job goes on: it cannot be unrun.
    pub fn cancel_pending_of(&mut self, repo: &RepoId, ref_name: &str) -> Result<Vec<JobId>, QueueError> {
        self.durability(Durability::Full).map_err(self.write_err())?;
        let now = Timestamp::now();
        self.conn
            .prepare(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?3, updated_at = ?3
                 WHERE repo = ?1 AND ref = ?2 AND state = 'pending' RETURNING id",
            )
            .and_then(|mut stmt| stmt.query_map(params![repo, ref_name, now], |r| r.get(0))?.collect())
            .map_err(self.write_err())
    }

    pub fn job(&self, id: JobId) -> Result<Option<Job>, QueueError> {
        self.conn
            .query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), [id], job_from_row)
            .optional()
            .map_err(self.read_err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{CommitId, EnvName, RefUpdate};
    use crate::queue::{Receiver, RefLog, Reservation};

    /// Each branch points at the commit given for it.
    struct Exactly(std::collections::HashMap<String, CommitId>);

    impl RefLog for Exactly {
        fn was_updated(&self, _: &RepoId, _: &str, _: &CommitId, _: &CommitId) -> Option<bool> {
            Some(true)
        }
        fn tip(&self, _: &RepoId, r: &str) -> Option<CommitId> {
            self.0.get(r).cloned()
        }
    }

    fn queue_with(pushes: &[(&str, &str)]) -> (SqliteQueue, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("pushgate-claim-{}-{}", std::process::id(), pushes.len()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut q = SqliteQueue::open(&dir, Duration::from_secs(5)).unwrap();
        let receiver = Receiver { host: "h".into(), pid: 1, started: None };
        for (branch, commit) in pushes {
            let commit = CommitId::parse(&commit.repeat(40)).unwrap();
            let r = Reservation {
                repo: RepoId::new("/r"),
                ref_name: format!("refs/heads/{branch}"),
                environment: EnvName::parse(branch).unwrap(),
                old_commit: CommitId::parse(&"0".repeat(40)).unwrap(),
                new_commit: commit.clone(),
                topology: "{}".into(),
                changes: "[]".into(),
                plan: "{}".into(),
                receiver: receiver.clone(),
                pusher: None,
            };
            q.reserve(std::slice::from_ref(&r)).unwrap();
            let tips = Exactly([(r.ref_name.clone(), commit)].into());
            let update = RefUpdate { name: r.ref_name, old: r.old_commit, new: r.new_commit };
            q.promote(&r.repo, &[update], &receiver, &tips).unwrap();
        }
        (q, dir)
    }

    #[test]
    fn one_running_job_per_environment_and_expired_leases_return() {
        let (mut q, dir) = queue_with(&[("main", "a"), ("feature", "b")]);
        let first = q.claim("r1", Duration::from_secs(60), &Scope::default()).unwrap().unwrap();
        assert_eq!((first.environment.as_str(), first.state), ("main", JobState::Running));
        let second = q.claim("r2", Duration::from_secs(60), &Scope::default()).unwrap().unwrap();
        assert_eq!(second.environment.as_str(), "feature");
        assert!(
            q.claim("r3", Duration::from_secs(60), &Scope::default()).unwrap().is_none(),
            "nothing else is claimable"
        );
        // r1 dies: its lease runs out; another runner takes the job over.
        assert!(q.heartbeat(first.id, "r1", Duration::ZERO).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        let again = q.claim("r3", Duration::from_secs(60), &Scope::default()).unwrap().unwrap();
        assert_eq!(again.id, first.id);
        assert!(!q.heartbeat(first.id, "r1", Duration::from_secs(60)).unwrap(), "r1 lost it");
        assert!(!q.finish(first.id, "r1", JobState::Succeeded, None).unwrap());
        assert!(q.finish(first.id, "r3", JobState::Succeeded, Some("1")).unwrap());
        assert_eq!(q.job(first.id).unwrap().unwrap().state, JobState::Succeeded);
        assert_eq!(q.cancel(second.id).unwrap(), Some(JobState::Running));
        assert!(!q.heartbeat(second.id, "r2", Duration::from_secs(60)).unwrap(), "a cancelled job stops");
        let _ = std::fs::remove_dir_all(dir);
    }
}
