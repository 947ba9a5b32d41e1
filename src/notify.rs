//! Posts each activity's end to its project's webhooks: a JSON body Slack's incoming webhooks
//! take (`text`), with the activity as the API shows it beside it for other receivers.
//!
//! The store's outbox (`job_ends`, written by a trigger however a job ends) is turned into
//! deliveries; each is posted with a 10 s limit, and retried after 1, 2, 4 … 64 s until it gets a
//! 2xx answer or has been tried 8 times; every attempt is recorded (`webhook deliveries`). The
//! runners do it, on a thread of their own: a receiver that is slow or down never holds a job.
//!
//! Posts go through curl (Debian's, with the system's TLS and proxies), given the URL in a
//! private file rather than on its command line: a webhook URL is a secret (Slack's are), and
//! command lines are visible to every user of the host.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::core::Timestamp;
use crate::queue::webhooks::Delivery;
use crate::queue::Job;

pub const MAX_ATTEMPTS: u32 = 8;
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// The body posted for an activity's end.
pub fn payload(job: &Job, console: Option<&str>) -> Value {
    let activity = crate::activity::activity(job);
    let short = &job.commit.as_str()[..job.commit.as_str().len().min(10)];
    let mut text = format!(
        "pushgate: {} of {}/{} ({short}){}: {}",
        job.kind.as_str(),
        crate::activity::project_name(&job.repo),
        job.environment,
        job.pusher.as_deref().map(|p| format!(" by {p}")).unwrap_or_default(),
        job.state.result().unwrap_or("ended")
    );
    if let Some(url) = console {
        text.push_str(&format!(" <{}|activity #{}>", crate::follow::activity_url(url, job.id), job.id));
    }
    json!({ "text": text, "activity": activity })
}

/// The URL without its path and query (where a receiver's secret usually is), for logs.
pub fn masked(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?']).next().unwrap_or_default();
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}/…")
        }
        None => "…".into(),
    }
}

/// One pass: plans the deliveries of jobs that ended and posts those due. How many were posted.
pub fn deliver_due(data: &Path, store: &mut dyn crate::queue::Store) -> Result<usize, String> {
    if store.webhooks().map_err(|e| e.to_string())?.is_empty() {
        // Nothing to tell: the outbox is emptied all the same.
        store.plan_deliveries(&|_| String::new()).map_err(|e| e.to_string())?;
        return Ok(0);
    }
    store.plan_deliveries(&|job| crate::activity::project_name(&job.repo)).map_err(|e| e.to_string())?;
    let due = store.due_deliveries(Timestamp::now(), TIME_LIMIT * 3).map_err(|e| e.to_string())?;
    let console = crate::web::console_url(data);
    for d in &due {
        let Some(job) = store.job(d.job).map_err(|e| e.to_string())? else { continue };
        let body = payload(&job, console.as_deref());
        let (delivered, said) = match post(&d.webhook.url, &body.to_string()) {
            Ok(code) => ((200..300).contains(&code), format!("HTTP {code}")),
            Err(e) => (false, e),
        };
        let retry = retry_at(d, delivered);
        if !delivered {
            tracing::warn!(
                webhook = %masked(&d.webhook.url), job = d.job.0, attempt = d.attempts + 1, result = %said,
                retry = retry.is_some(), "a webhook delivery failed"
            );
        }
        store.record_attempt(d.id, &said, delivered, retry).map_err(|e| e.to_string())?;
    }
    Ok(due.len())
}

/// When a failed attempt is tried again (None once delivered, or after the last attempt).
fn retry_at(d: &Delivery, delivered: bool) -> Option<Timestamp> {
    let attempts = d.attempts + 1;
    if delivered || attempts >= MAX_ATTEMPTS {
        return None;
    }
    Some(Timestamp::at(Timestamp::now().system_time() + Duration::from_secs(1 << (attempts - 1))))
}

/// POSTs `body` to `url`; the HTTP status, or why there was none.
fn post(url: &str, body: &str) -> Result<u16, String> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['"', '\n', '\r', '\\']) {
        return Err("not an http(s) URL".into());
    }
    let config = std::env::temp_dir().join(format!("pushgate-webhook-{}", crate::secret::token()?));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&config)
            .map_err(|e| format!("{}: {e}", config.display()))?;
        writeln!(f, "url = \"{url}\"\nheader = \"Content-Type: application/json\"").map_err(|e| e.to_string())?;
    }
    let child = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-m", &TIME_LIMIT.as_secs().to_string(), "-K"])
        .arg(&config)
        .args(["--data-binary", "@-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let result = child.map_err(|e| format!("curl: {e}")).and_then(|mut child| {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(body.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| format!("curl: {e}"))?;
        let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        if code == 0 {
            Err(String::from_utf8_lossy(&out.stderr).trim().replace(url, &masked(url)))
        } else {
            Ok(code)
        }
    });
    let _ = std::fs::remove_file(&config);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_never_show_a_webhooks_path() {
        assert_eq!(masked("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com/…");
        assert_eq!(masked("http://user:pw@example.com:8080/x?token=1"), "http://example.com:8080/…");
    }
}
