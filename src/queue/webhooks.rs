//! Webhooks: the admin declares, per project, a URL and the outcomes it is told about; each
//! activity's end is posted to it (see `crate::notify`), retried with backoff, every attempt
//! recorded. A delivery that fails never touches the deployment.

use serde::Serialize;

use super::{Job, QueueError};
use crate::core::{JobId, Timestamp};

/// The outcomes a webhook can ask for (`result` of the API's activities).
pub const EVENTS: [&str; 4] = ["success", "failure", "cancelled", "superseded"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub id: i64,
    pub project: String,
    pub url: String,
    /// The outcomes posted (a subset of [`EVENTS`]).
    pub events: Vec<String>,
    pub created_at: Timestamp,
}

/// One activity's end to post to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub id: i64,
    pub webhook: Webhook,
    pub job: JobId,
    pub attempts: u32,
    /// What the last attempt got (`HTTP 200`, `HTTP 500`, a connection error).
    pub last_result: Option<String>,
    pub delivered_at: Option<Timestamp>,
    /// When it is tried next; None once delivered or given up.
    pub next_at: Option<Timestamp>,
}

pub trait WebhookStore {
    fn add_webhook(&mut self, project: &str, url: &str, events: &[String]) -> Result<Webhook, QueueError>;
    fn webhooks(&self) -> Result<Vec<Webhook>, QueueError>;
    /// Forgets a webhook and its pending deliveries; false if there was none.
    fn remove_webhook(&mut self, id: i64) -> Result<bool, QueueError>;
    /// Turns the jobs that ended since the last call into deliveries, for the webhooks whose
    /// project (`project_of` a job) and events match. Returns how many were created.
    fn plan_deliveries(&mut self, project_of: &dyn Fn(&Job) -> String) -> Result<usize, QueueError>;
    /// Deliveries due at `now`, each claimed until `hold` has passed (another runner skips them).
    fn due_deliveries(&mut self, now: Timestamp, hold: std::time::Duration) -> Result<Vec<Delivery>, QueueError>;
    /// Records an attempt: delivered, or tried again at `retry_at`, or given up (None, None).
    fn record_attempt(
        &mut self,
        id: i64,
        result: &str,
        delivered: bool,
        retry_at: Option<Timestamp>,
    ) -> Result<(), QueueError>;
    /// Every delivery, newest first (at most `limit`).
    fn deliveries(&self, limit: usize) -> Result<Vec<Delivery>, QueueError>;
}
