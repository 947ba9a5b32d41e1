//! The webhooks, the outbox of ended jobs and the deliveries, in the SQLite store.

use rusqlite::{params, TransactionBehavior};

use super::{job_from_row, SqliteQueue, JOB_COLUMNS, JOB_COLUMN_COUNT};
use crate::core::{JobId, Timestamp};
use crate::queue::webhooks::{Delivery, Webhook, WebhookStore};
use crate::queue::{Job, QueueError};

fn webhook_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Webhook> {
    let events: String = row.get(at + 3)?;
    Ok(Webhook {
        id: row.get(at)?,
        project: row.get(at + 1)?,
        url: row.get(at + 2)?,
        events: events.split(',').filter(|e| !e.is_empty()).map(str::to_owned).collect(),
        created_at: row.get(at + 4)?,
    })
}

const DELIVERY: &str = "SELECT d.id, d.job_id, d.attempts, d.last_result, d.delivered_at, d.next_at,
                               w.id, w.project, w.url, w.events, w.created_at
                        FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id";

fn delivery_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: row.get(0)?,
        job: JobId(row.get(1)?),
        attempts: row.get(2)?,
        last_result: row.get(3)?,
        delivered_at: row.get(4)?,
        next_at: row.get(5)?,
        webhook: webhook_from_row(row, 6)?,
    })
}

impl WebhookStore for SqliteQueue {
    fn add_webhook(&mut self, project: &str, url: &str, events: &[String]) -> Result<Webhook, QueueError> {
        let now = Timestamp::now();
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO webhooks (project, url, events, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![project, url, events.join(","), now],
            )
            .map_err(self.write_err())?;
        if n == 0 {
            return Err(QueueError::Conflict(format!("project {project} already has a webhook to {url}")));
        }
        let id = self.conn.last_insert_rowid();
        Ok(Webhook { id, project: project.to_owned(), url: url.to_owned(), events: events.to_vec(), created_at: now })
    }

    fn webhooks(&self) -> Result<Vec<Webhook>, QueueError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, project, url, events, created_at FROM webhooks ORDER BY id")
            .map_err(self.read_err())?;
        let hooks = stmt
            .query_map([], |r| webhook_from_row(r, 0))
            .map_err(self.read_err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.read_err())?;
        Ok(hooks)
    }

    fn remove_webhook(&mut self, id: i64) -> Result<bool, QueueError> {
        let n = self.conn.execute("DELETE FROM webhooks WHERE id = ?1", [id]).map_err(self.write_err())?;
        Ok(n > 0)
    }

    fn plan_deliveries(&mut self, project_of: &dyn Fn(&Job) -> String) -> Result<usize, QueueError> {
        let hooks = self.webhooks()?;
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let ended: Vec<(i64, Job)> = {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "SELECT {}, e.id FROM job_ends e JOIN jobs ON jobs.id = e.job_id ORDER BY e.id LIMIT 500",
                    JOB_COLUMNS.split(',').map(|c| format!("jobs.{}", c.trim())).collect::<Vec<_>>().join(", ")
                ))
                .map_err(err)?;
            let rows = stmt.query_map([], |r| Ok((r.get(JOB_COLUMN_COUNT)?, job_from_row(r)?))).map_err(err)?;
            rows.collect::<Result<_, _>>().map_err(err)?
        };
        let now = Timestamp::now();
        let mut created = 0;
        for (event, job) in &ended {
            let project = project_of(job);
            let result = job.state.result().unwrap_or_default();
            for hook in hooks.iter().filter(|h| h.project == project && h.events.iter().any(|e| e == result)) {
                tx.execute(
                    "INSERT INTO deliveries (webhook_id, job_id, next_at, created_at) VALUES (?1, ?2, ?3, ?3)",
                    params![hook.id, job.id, now],
                )
                .map_err(err)?;
                created += 1;
            }
            tx.execute("DELETE FROM job_ends WHERE id = ?1", [event]).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(created)
    }

    fn due_deliveries(&mut self, now: Timestamp, hold: std::time::Duration) -> Result<Vec<Delivery>, QueueError> {
        let path = self.path.display().to_string();
        let err = |source| QueueError::Write { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
        let due: Vec<Delivery> = {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "{DELIVERY} WHERE d.next_at IS NOT NULL AND d.next_at <= ?1 ORDER BY d.id LIMIT 50"
                ))
                .map_err(err)?;
            let rows = stmt.query_map([now], delivery_from_row).map_err(err)?;
            rows.collect::<Result<_, _>>().map_err(err)?
        };
        let until = Timestamp::at(now.system_time() + hold);
        for d in &due {
            tx.execute("UPDATE deliveries SET next_at = ?1 WHERE id = ?2", params![until, d.id]).map_err(err)?;
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
        self.conn
            .execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_result = ?1, delivered_at = ?2, next_at = ?3
                 WHERE id = ?4",
                params![result, delivered_at, retry_at, id],
            )
            .map_err(self.write_err())?;
        Ok(())
    }

    fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>, QueueError> {
        let mut stmt =
            self.conn.prepare_cached(&format!("{DELIVERY} ORDER BY d.id DESC LIMIT ?1")).map_err(self.read_err())?;
        let rows = stmt
            .query_map([limit as i64], delivery_from_row)
            .map_err(self.read_err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.read_err())?;
        Ok(rows)
    }
}
