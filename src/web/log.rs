//! An activity's log: whole, as plain text, or live as Server-Sent Events.
//!
//! The live log sends every line from where the client stands (the start, or the byte offset
//! of its `Last-Event-ID` when the browser reconnects) to the activity's end, each line an event
//! whose id is the offset after it; then an `end` event with the activity. The log is a file the
//! runner appends to: it is read again every 20 ms while the activity runs, and the queue is asked
//! whether it ended once the file has nothing new.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::api::{activity, visible_job, ApiError};
use super::auth::Caller;
use super::Web;
use crate::core::{JobId, Timestamp};
use crate::queue::JobState;

const POLL: Duration = Duration::from_millis(20);

/// `GET /api/activities/{id}/log`: text, or SSE with `Accept: text/event-stream`.
pub async fn log(
    State(web): State<Arc<Web>>,
    caller: Caller,
    Path(id): Path<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = visible_job(&web, &caller, id).await?;
    let wants_events =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
    if !wants_events {
        let text = web.log_from(job.id, 0).await?;
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let from =
        headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let open = Streams::open(&web, &caller.token.name)?;
    let follow = Follow { web, job: job.id, offset: from, pending: Vec::new(), ended: false, idle: 0, _open: open };
    let stream = futures_util::stream::unfold(follow, |mut f| async move {
        let event = f.next().await?;
        Some((Ok::<Event, Infallible>(event), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Live logs one token may follow at once (a console tab follows one).
pub const STREAMS_PER_TOKEN: usize = 8;

/// The live logs open, per token.
#[derive(Default)]
pub struct Streams(std::sync::Mutex<std::collections::HashMap<String, usize>>);

/// One live log open: counted until the stream is dropped (the client went away, or the end
/// was sent).
struct Open {
    web: Arc<Web>,
    token: String,
}

impl Streams {
    fn open(web: &Arc<Web>, token: &str) -> Result<Open, ApiError> {
        let mut open = web.streams.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(token.to_owned()).or_default();
        if *n >= STREAMS_PER_TOKEN {
            return Err(ApiError::too_many(&format!(
                "this token already follows {STREAMS_PER_TOKEN} live logs: close one, or read the log whole"
            )));
        }
        *n += 1;
        Ok(Open { web: web.clone(), token: token.to_owned() })
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let mut open = self.web.streams.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.token);
            }
        }
    }
}

/// Where a live log stands.
struct Follow {
    web: Arc<Web>,
    job: JobId,
    /// Bytes of the file sent (or held in `pending`).
    offset: u64,
    /// Complete lines read and not sent yet, each with the offset after it.
    pending: Vec<(String, u64)>,
    ended: bool,
    /// Polls with nothing new since the queue was last asked.
    idle: u32,
    _open: Open,
}

impl Follow {
    /// The next event; None once the end was sent.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.ended {
                return None;
            }
            if !self.pending.is_empty() {
                let (line, after) = self.pending.remove(0);
                return Some(Event::default().id(after.to_string()).data(line));
            }
            if self.read().await {
                self.idle = 0;
                continue;
            }
            // Nothing new: has it ended? (Read once more after: its last lines may have come
            // between the read and the question.)
            self.idle += 1;
            if self.idle % 5 == 1 {
                let id = self.job;
                if let Ok(Some(job)) = self.web.with_store(move |s| s.job(id)).await {
                    if !matches!(job.state, JobState::Pending | JobState::Running) {
                        if self.read().await {
                            continue;
                        }
                        self.ended = true;
                        return Some(Event::default().event("end").data(activity(&job).to_string()));
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Reads the complete lines written since `offset`; whether there were any.
    async fn read(&mut self) -> bool {
        let Ok(bytes) = self.web.log_from(self.job, self.offset).await else { return false };
        let mut at = self.offset;
        let mut rest = &bytes[..];
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            at += end as u64 + 1;
            self.pending.push((String::from_utf8_lossy(&rest[..end]).into_owned(), at));
            rest = &rest[end + 1..];
        }
        let read = at > self.offset;
        self.offset = at;
        read
    }
}

/// The phases of a log (`TIME [phase] text` lines): each with when it started and how long it
/// took (the last one until `finished`, or until now while it runs).
pub fn phases(log: &str, finished: Option<&Timestamp>) -> Value {
    let mut phases: Vec<(String, Timestamp)> = Vec::new();
    for line in log.lines() {
        let Some((time, rest)) = line.split_once(" [") else { continue };
        let Some((phase, _)) = rest.split_once("] ") else { continue };
        let Ok(at) = Timestamp::parse(time) else { continue };
        if phases.last().map(|(p, _)| p.as_str()) != Some(phase) && !phases.iter().any(|(p, _)| p == phase) {
            phases.push((phase.to_owned(), at));
        }
    }
    let end = finished.copied().unwrap_or_else(Timestamp::now);
    let list: Vec<Value> = phases
        .iter()
        .enumerate()
        .map(|(i, (name, start))| {
            let until = phases.get(i + 1).map(|(_, t)| *t).unwrap_or(end);
            let ms = until.system_time().duration_since(start.system_time()).map(|d| d.as_millis() as u64).unwrap_or(0);
            json!({"name": name, "started_at": start, "duration_ms": ms})
        })
        .collect();
    Value::Array(list)
}
