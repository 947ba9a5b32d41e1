//! The web console's API over real HTTP (curl against `pushgate-runner web` / `serve --http`),
//! after real pushes: every endpoint, the access rules, the actions as activities, the live log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::push::{files_with, APP_FILE};
use crate::runner::{app_with_hooks, envs, eventually, runner, serve};
use crate::support::{runner_bin, Server};

/// A `pushgate-runner` serving HTTP (web, or serve --http) on a free port; killed on drop.
pub struct Web {
    child: Child,
    pub base: String,
}

impl Web {
    pub fn start(s: &Server, command: &[&str]) -> Web {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let _ = std::fs::remove_file(s.data.join("web.json"));
        let child = Command::new(runner_bin())
            .args(command)
            .arg("--http")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(&s.data)
            .args(s.sandbox_flag().filter(|_| command.first() == Some(&"serve")))
            .envs(s.queue_env())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let up = || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        assert!(eventually(30, up), "the web service listens");
        Web { child, base }
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// One request with curl: `headers` as `Name: value`.
pub fn http(method: &str, url: &str, headers: &[&str], body: Option<&str>) -> Answer {
    let mut c = Command::new("curl");
    c.args(["-s", "-S", "-D", "-", "-o", "-", "-X", method, url]);
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    Answer { status, headers: head.to_owned(), body: body.to_owned() }
}

pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// `token create NAME ARGS…`: the token, from the last line of the output.
pub fn token(s: &Server, name: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create", name];
    all.extend_from_slice(args);
    let out = runner(s, &all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim().to_owned()
}

/// A deployed project: the repository `repo.git`, environment main.
fn deployed(label: &str, build: &str) -> Server {
    deployed_on(Server::new(label), build)
}

fn deployed_on(s: Server, build: &str) -> Server {
    s.commit(&files_with(APP_FILE, &app_with_hooks(build, "true")), "first");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    s
}

fn release_of_main(s: &Server) -> String {
    envs(s)[0]["release"].as_str().unwrap().to_owned()
}

#[test]
fn the_api_shows_a_project_and_acts_on_it_within_each_tokens_rights() {
    the_api_on(deployed("web-api", "echo building"));
}

#[test]
fn the_api_on_the_postgresql_queue() {
    the_api_on(deployed_on(Server::with_postgres("web-api-pg"), "echo building"));
}

fn the_api_on(s: Server) {
    let admin = token(&s, "root", &["--role", "admin"]);
    let dev = token(&s, "dev", &["--project", "repo", "--role", "developer"]);
    let viewer = token(&s, "viewer", &["--project", "repo", "--role", "viewer"]);
    let other = token(&s, "other", &["--project", "shop", "--role", "admin"]);
    let listed = runner(&s, &["token", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("dev") && listed.contains("developer") && !listed.contains(&dev), "{listed}");
    let stored = match &s.queue {
        Some(url) => crate::support::pg_value(url, "SELECT string_agg(hash, ' ') FROM tokens").into_bytes(),
        None => std::fs::read(s.data.join("queue.sqlite3")).unwrap(),
    };
    assert!(stored.len() > 64 && !stored.windows(dev.len()).any(|w| w == dev.as_bytes()), "stored hashed");
    let web = Web::start(&s, &["web"]);
    let url = |p: &str| format!("{}{p}", web.base);

    // Reading: no token, a wrong one, another project's.
    assert_eq!(http("GET", &url("/api/projects"), &[], None).status, 401);
    assert_eq!(http("GET", &url("/api/projects"), &[&bearer("nonsense")], None).status, 401);
    assert_eq!(http("GET", &url("/api/projects/repo/environments"), &[&bearer(&other)], None).status, 403);
    assert_eq!(http("GET", &url("/api/projects"), &[&bearer(&other)], None).json(), json!([]));
    let projects = http("GET", &url("/api/projects"), &[&bearer(&viewer)], None).json();
    assert_eq!(projects[0]["name"], "repo");
    assert_eq!(projects[0]["environments"], json!(["main"]));

    let environments = http("GET", &url("/api/projects/repo/environments"), &[&bearer(&viewer)], None).json();
    let main = &environments[0];
    assert_eq!(main["name"], "main");
    assert_eq!(main["state"], "active");
    assert_eq!(main["release"], release_of_main(&s));
    assert_eq!(main["commit"], s.jobs()[0]["commit"]);
    assert!(main["deployed_at"].is_string());

    let activities = http("GET", &url("/api/projects/repo/activities"), &[&bearer(&viewer)], None).json();
    let push = &activities[0];
    assert_eq!(
        (push["type"].as_str(), push["state"].as_str(), push["result"].as_str()),
        (Some("push"), Some("complete"), Some("success"))
    );
    assert_eq!(push["environment"], "main");
    assert!(push["pusher"].as_str().is_some_and(|p| !p.is_empty()), "who pushed: {push}");
    assert!(push["timings"]["run_ms"].is_u64());
    let id = push["id"].as_i64().unwrap();
    let one = http("GET", &url(&format!("/api/activities/{id}")), &[&bearer(&viewer)], None).json();
    let phases: Vec<&str> = one["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(phases.contains(&"build") && phases.contains(&"deploy"), "{phases:?}");
    let log = http("GET", &url(&format!("/api/activities/{id}/log")), &[&bearer(&viewer)], None);
    assert!(log.headers.contains("text/plain") && log.body.contains("[build] Running hook `build`"), "{log:?}");
    assert_eq!(http("GET", &url(&format!("/api/activities/{id}/log")), &[&bearer(&other)], None).status, 403);

    // Acting: a viewer cannot redeploy, a developer can; nothing is queued by a refusal.
    let redeploy = url("/api/projects/repo/environments/main/redeploy");
    assert_eq!(http("POST", &redeploy, &[&bearer(&viewer)], None).status, 403);
    assert_eq!(http("POST", &redeploy, &[&bearer(&other)], None).status, 403);
    assert_eq!(http("POST", &redeploy, &[], None).status, 401);
    assert_eq!(s.jobs().len(), 1, "refused actions queue nothing");
    let queued = http("POST", &redeploy, &[&bearer(&dev)], None);
    assert_eq!(queued.status, 202, "{queued:?}");
    let queued = queued.json();
    assert_eq!(
        (queued["type"].as_str(), queued["state"].as_str(), queued["pusher"].as_str()),
        (Some("redeploy"), Some("pending"), Some("dev"))
    );
    serve(&s);
    let done = http("GET", &url(&format!("/api/activities/{}", queued["id"])), &[&bearer(&dev)], None).json();
    assert_eq!(
        done["result"],
        "success",
        "{}",
        http("GET", &url(&format!("/api/activities/{}/log", queued["id"])), &[&bearer(&dev)], None).body
    );
    let redeployed = release_of_main(&s);
    assert_ne!(redeployed, main["release"].as_str().unwrap(), "a new release");

    // Rollback: an admin's; to a release that is not kept, refused.
    let rollback = url("/api/projects/repo/environments/main/rollback");
    assert_eq!(http("POST", &rollback, &[&bearer(&dev)], None).status, 403);
    assert_eq!(http("POST", &rollback, &[&bearer(&admin)], Some(r#"{"release": 99}"#)).status, 409);
    let first = main["release"].as_str().unwrap().parse::<i64>().unwrap();
    let queued = http("POST", &rollback, &[&bearer(&admin)], Some(&format!(r#"{{"release": {first}}}"#)));
    assert_eq!(queued.status, 202, "{queued:?}");
    let queued = queued.json();
    assert_eq!(
        (queued["type"].as_str(), queued["options"]["release"].as_str()),
        (Some("rollback"), Some(first.to_string().as_str()))
    );
    assert_eq!(queued["commit"], main["commit"], "it names the commit it goes back to");
    serve(&s);
    assert_eq!(release_of_main(&s), first.to_string(), "main runs its first release again");
    let environments = http("GET", &url("/api/projects/repo/environments"), &[&bearer(&viewer)], None).json();
    assert_eq!(environments[0]["release"], first.to_string());

    // Cancel: a pending push, by a developer; the cancellation is an activity of its own.
    s.commit(&files_with(APP_FILE, &app_with_hooks("echo again", "true")), "second");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let pending = s.jobs().into_iter().last().unwrap();
    assert_eq!(pending["state"], "pending");
    let cancel = url(&format!("/api/activities/{}/cancel", pending["id"]));
    assert_eq!(http("POST", &cancel, &[&bearer(&viewer)], None).status, 403);
    let cancelled = http("POST", &cancel, &[&bearer(&dev)], None);
    assert_eq!(cancelled.status, 202, "{cancelled:?}");
    let cancelled = cancelled.json();
    assert_eq!((cancelled["type"].as_str(), cancelled["result"].as_str()), (Some("cancel"), Some("success")));
    assert_eq!(cancelled["options"]["activity"], pending["id"]);
    assert_eq!(s.jobs().into_iter().find(|j| j["id"] == pending["id"]).unwrap()["state"], "cancelled");
    assert_eq!(http("POST", &cancel, &[&bearer(&dev)], None).status, 409, "already ended");
    let activities = http("GET", &url("/api/projects/repo/activities"), &[&bearer(&viewer)], None).json();
    let types: Vec<&str> = activities.as_array().unwrap().iter().map(|a| a["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["cancel", "push", "rollback", "redeploy", "push"], "newest first");
    let page = http(
        "GET",
        &url(&format!("/api/projects/repo/activities?limit=2&before={}", activities[1]["id"])),
        &[&bearer(&viewer)],
        None,
    )
    .json();
    assert_eq!(
        page.as_array().unwrap().iter().map(|a| a["type"].as_str().unwrap()).collect::<Vec<_>>(),
        ["rollback", "redeploy"]
    );

    // A rollback done at once on the command line is an activity too.
    let out = runner(&s, &["rollback", "main", "--to", &redeployed]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let newest = &http("GET", &url("/api/projects/repo/activities?limit=1"), &[&bearer(&viewer)], None).json()[0];
    assert_eq!((newest["type"].as_str(), newest["result"].as_str()), (Some("rollback"), Some("success")), "{newest}");
    let log = http("GET", &url(&format!("/api/activities/{}/log", newest["id"])), &[&bearer(&viewer)], None).body;
    assert!(log.contains("[rollback] Environment main: `current` switched from release"), "{log}");

    // Revoked: refused at once.
    assert!(runner(&s, &["token", "revoke", "viewer"]).status.success());
    assert_eq!(http("GET", &url("/api/projects"), &[&bearer(&viewer)], None).status, 401);
}

#[test]
fn a_browser_session_is_a_cookie_and_cross_site_posts_are_refused() {
    let s = deployed("web-session", "echo building");
    let dev = token(&s, "dev", &["--project", "repo", "--role", "developer"]);
    let web = Web::start(&s, &["web"]);
    let url = |p: &str| format!("{}{p}", web.base);
    assert_eq!(http("POST", &url("/api/login"), &[], Some(r#"{"token": "wrong"}"#)).status, 401);
    let login = http("POST", &url("/api/login"), &[], Some(&format!(r#"{{"token": "{dev}"}}"#)));
    assert_eq!(login.status, 200);
    let set_cookie =
        login.headers.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap().to_owned();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let cookie = format!("Cookie: {}", set_cookie.split_once(':').unwrap().1.trim().split(';').next().unwrap());
    let csrf = login.json()["csrf"].as_str().unwrap().to_owned();
    // Reading with the cookie alone.
    assert_eq!(http("GET", &url("/api/projects/repo/environments"), &[&cookie], None).status, 200);
    let redeploy = url("/api/projects/repo/environments/main/redeploy");
    // A form posted from another site carries the cookie but not the CSRF header.
    assert_eq!(http("POST", &redeploy, &[&cookie, "Origin: http://evil.example"], None).status, 403);
    assert_eq!(http("POST", &redeploy, &[&cookie], None).status, 403);
    // A script elsewhere that somehow had the CSRF token: its Origin gives it away.
    let header = format!("X-CSRF-Token: {csrf}");
    assert_eq!(http("POST", &redeploy, &[&cookie, &header, "Origin: http://evil.example"], None).status, 403);
    assert_eq!(s.jobs().len(), 1, "nothing queued");
    let origin = format!("Origin: {}", web.base);
    assert_eq!(http("POST", &redeploy, &[&cookie, &header, &origin], None).status, 202);
    // Logged out: the cookie no longer works.
    assert_eq!(http("POST", &url("/api/logout"), &[&cookie], None).status, 204);
    assert_eq!(http("GET", &url("/api/projects"), &[&cookie], None).status, 401);
}

/// Reads SSE events from `curl -N` until `stop` says so; the events as (event, data) pairs.
fn events_until(reader: &mut impl BufRead, mut stop: impl FnMut(&str, &str) -> bool) -> Vec<(String, String)> {
    let mut events = Vec::new();
    let (mut event, mut data) = (String::new(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            return events;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            if !data.is_empty() || !event.is_empty() {
                let e = (std::mem::take(&mut event), std::mem::take(&mut data));
                let done = stop(&e.0, &e.1);
                events.push(e);
                if done {
                    return events;
                }
            }
        } else if let Some(d) = l.strip_prefix("data:") {
            data.push_str(d.strip_prefix(' ').unwrap_or(d));
        } else if let Some(e) = l.strip_prefix("event:") {
            event = e.trim().to_owned();
        }
    }
}

#[test]
fn the_live_log_streams_a_running_build_to_its_end_and_pushes_name_the_console() {
    let s = Server::new("web-live");
    let gate = s.markers().join("go");
    let build =
        format!("echo before-the-wait\nwhile [ ! -e {} ]; do sleep 0.05; done\necho after-the-wait", gate.display());
    s.commit(&files_with(APP_FILE, &app_with_hooks(&build, "true")), "slow");
    let viewer = token(&s, "viewer", &["--project", "repo", "--role", "viewer"]);
    // With the console alone (no runner), the push says where to follow its activity.
    let console = Web::start(&s, &["web"]);
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    let id = s.jobs()[0]["id"].as_i64().unwrap();
    assert!(
        push.output.contains(&format!("it stays queued. Follow it at {}/#activity/{id}", console.base)),
        "the push names the console's page of its activity: {}",
        push.output
    );
    drop(console);
    // A runner serving the API beside its workers takes the job.
    let web = Web::start(&s, &["serve"]);
    let mut curl = Command::new("curl")
        .args(["-s", "-N", "-H", "Accept: text/event-stream", "-H", &bearer(&viewer)])
        .arg(format!("{}/api/activities/{id}/log", web.base))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(curl.stdout.take().unwrap());
    let before = events_until(&mut reader, |_, data| data.ends_with("before-the-wait"));
    assert!(before.iter().any(|(_, d)| d.contains("[job] Job #")), "from the start: {before:?}");
    assert!(!before.iter().any(|(e, _)| e == "end"), "still running");
    std::fs::write(&gate, "").unwrap();
    let after = events_until(&mut reader, |event, _| event == "end");
    let _ = curl.kill();
    let _ = curl.wait();
    assert!(after.iter().any(|(_, d)| d.ends_with("after-the-wait")), "{after:?}");
    assert!(after.iter().any(|(_, d)| d.contains("[job] Deployed release")), "{after:?}");
    let (event, data) = after.last().unwrap();
    assert_eq!(event, "end");
    let end: Value = serde_json::from_str(data).unwrap();
    assert_eq!((end["id"].as_i64(), end["result"].as_str()), (Some(id), Some("success")));
}

#[test]
fn in_a_browser_one_logs_in_watches_a_build_and_rolls_back() {
    let browser_dir = crate::support::project_dir().join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and `npm ci --prefix tests/browser` (.ci/run installs both)"
    );
    let s = deployed("web-browser", "echo building");
    let gate = s.markers().join("go");
    let build =
        format!("echo before-the-wait\nwhile [ ! -e {} ]; do sleep 0.05; done\necho after-the-wait", gate.display());
    s.commit(&files_with(APP_FILE, &app_with_hooks(&build, "true")), "slow");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let id = s.jobs().into_iter().last().unwrap()["id"].as_i64().unwrap();
    let admin = token(&s, "alice", &["--project", "repo", "--role", "admin"]);
    let first = release_of_main(&s);
    assert!(runner(&s, &["env", "create", "repo", "staging", "--type", "staging"]).status.success());
    assert!(runner(&s, &["env", "create", "repo", "production", "--type", "production"]).status.success());
    let viewer = token(&s, "victor", &["--project", "repo", "--role", "viewer"]);
    let developer = token(&s, "dora", &["--project", "repo", "--role", "developer"]);
    let web = Web::start(&s, &["serve"]);
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let out = Command::new("node")
        .arg(browser_dir.join("console.mjs"))
        .args([&web.base, &admin, &id.to_string()])
        .arg(&gate)
        .arg(&screenshot)
        .args([&viewer, &developer])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("rolled back: main runs release"), "{said}");
    assert_eq!(release_of_main(&s), first, "the rollback pressed in the browser happened");
    assert!(said.contains("promoted: staging runs main's commit"), "{said}");
    let staging = envs(&s).into_iter().find(|e| e["environment"] == "staging").expect("staging deployed");
    assert_eq!(staging["commit"], envs(&s).into_iter().find(|e| e["environment"] == "main").unwrap()["commit"]);
    assert!(std::fs::metadata(&screenshot).map(|m| m.len() > 10_000).unwrap_or(false), "a screenshot of the console");
}

/// A receiver of webhooks: answers 500 to the first `failures` requests, then 200; the bodies.
fn receiver(failures: usize) -> (u16, std::sync::mpsc::Receiver<(String, String)>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let (mut request_line, mut line, mut length) = (String::new(), String::new(), 0usize);
            reader.read_line(&mut request_line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap();
                    }
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = if n < failures { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(reader.get_mut(), "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = tx.send((request_line.trim().to_owned(), String::from_utf8_lossy(&body).into_owned()));
        }
    });
    (port, rx)
}

#[test]
fn an_activitys_end_is_posted_to_the_projects_webhook_and_retried_when_it_fails() {
    let s = Server::new("web-hooks");
    let (port, posted) = receiver(1);
    let url = format!("http://127.0.0.1:{port}/services/T0/B0/s3cret-path");
    let out = runner(&s, &["webhook", "add", "repo", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&runner(&s, &["webhook", "list"]).stdout).into_owned();
    assert!(listed.contains(&format!("http://127.0.0.1:{port}/…")) && !listed.contains("s3cret"), "{listed}");
    s.commit(&files_with(APP_FILE, &app_with_hooks("echo building", "true")), "first");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let _runner = Web::start(&s, &["serve"]);
    let wait = std::time::Duration::from_secs(60);
    let (first_line, first) = posted.recv_timeout(wait).expect("a first delivery");
    let (_, second) = posted.recv_timeout(wait).expect("retried after the 500");
    assert_eq!(first_line, "POST /services/T0/B0/s3cret-path HTTP/1.1");
    assert_eq!(first, second, "the same payload, again");
    let body: Value = serde_json::from_str(&second).unwrap();
    assert!(body["text"].as_str().unwrap().starts_with("pushgate: push of repo/main ("), "{body}");
    assert!(body["text"].as_str().unwrap().contains(": success"), "{body}");
    assert_eq!(
        (body["activity"]["type"].as_str(), body["activity"]["result"].as_str()),
        (Some("push"), Some("success"))
    );
    let recorded = || String::from_utf8_lossy(&runner(&s, &["webhook", "deliveries"]).stdout).into_owned();
    assert!(eventually(30, || recorded().contains("2 attempt(s), last HTTP 200")), "{}", recorded());
    assert!(posted.recv_timeout(std::time::Duration::from_secs(3)).is_err(), "delivered once it succeeded");
}

#[test]
fn promotion_through_the_api_is_an_admins_and_says_why_it_is_refused() {
    let s = deployed("web-promote", "echo building");
    let out = runner(&s, &["env", "create", "repo", "staging", "--type", "staging"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let web = Web::start(&s, &["serve"]);
    let url = |p: &str| format!("{}{p}", web.base);
    let admin = token(&s, "alice", &["--project", "repo", "--role", "admin"]);
    let dev = token(&s, "dev", &["--project", "repo", "--role", "developer"]);
    // The console learns where promotions go, and each environment's type.
    let projects = http("GET", &url("/api/projects"), &[&bearer(&dev)], None).json();
    assert_eq!(projects[0]["promotion_targets"], serde_json::json!(["staging"]));
    let listed = http("GET", &url("/api/projects/repo/environments"), &[&bearer(&dev)], None).json();
    assert_eq!(listed[0]["type"], "integration");
    let promote = url("/api/projects/repo/environments/staging/promote");
    assert_eq!(http("POST", &promote, &[&bearer(&dev)], Some(r#"{"from": "main"}"#)).status, 403);
    assert_eq!(http("POST", &promote, &[], Some(r#"{"from": "main"}"#)).status, 401);
    let wrong = http("POST", &promote, &[&bearer(&admin)], Some(r#"{"from": "main", "commit": "0000000"}"#));
    assert_eq!(wrong.status, 409, "{wrong:?}");
    assert!(wrong.body.contains("not 0000000: promote what was tested"), "{wrong:?}");
    let to_main = http(
        "POST",
        &url("/api/projects/repo/environments/main/promote"),
        &[&bearer(&admin)],
        Some(r#"{"from": "main"}"#),
    );
    assert_eq!(to_main.status, 409, "{to_main:?}");
    let queued = http("POST", &promote, &[&bearer(&admin)], Some(r#"{"from": "main"}"#));
    assert_eq!(queued.status, 202, "{queued:?}");
    let activity = queued.json();
    assert_eq!((activity["type"].as_str(), activity["environment"].as_str()), (Some("promote"), Some("staging")));
    let commit = envs(&s)[0]["commit"].clone();
    assert!(eventually(60, || envs(&s).iter().any(|e| e["environment"] == "staging" && e["commit"] == commit)));
    let id = activity["id"].as_i64().unwrap();
    let log = crate::runner::log_of(&s, id);
    assert!(log.contains("Reusing existing build") && !log.contains("Running hook `build`"), "{log}");
}

#[test]
fn a_token_holds_a_bounded_number_of_sessions_and_live_logs() {
    let s = Server::new("web-bounds");
    s.commit(&files_with("", ""), "queued");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted(); // no runner: it stays pending, its log open
    let id = s.jobs()[0]["id"].as_i64().unwrap();
    let viewer = token(&s, "viewer", &["--project", "repo", "--role", "viewer"]);
    let web = Web::start(&s, &["web"]);
    let url = |p: &str| format!("{}{p}", web.base);

    // Logging in without end: the token's oldest sessions end, the newest work.
    let cookies: Vec<String> = (0..20)
        .map(|_| {
            let login = http("POST", &url("/api/login"), &[], Some(&format!(r#"{{"token": "{viewer}"}}"#)));
            assert_eq!(login.status, 200);
            let set = login.headers.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
            format!("Cookie: {}", set.split_once(':').unwrap().1.trim().split(';').next().unwrap())
        })
        .collect();
    let status = |cookie: &str| http("GET", &url("/api/projects"), &[cookie], None).status;
    assert_eq!(status(&cookies[0]), 401, "the oldest session ended");
    assert_eq!(status(&cookies[3]), 401);
    assert!(cookies[4..].iter().all(|c| status(c) == 200), "the newest 16 go on");

    // Live logs: 8 at once per token.
    let follow = || {
        let mut curl = Command::new("curl")
            .args(["-s", "-N", "-D", "-", "-H", "Accept: text/event-stream", "-H", &bearer(&viewer)])
            .arg(url(&format!("/api/activities/{id}/log")))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(curl.stdout.take().unwrap());
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        (curl, reader, status)
    };
    let mut open: Vec<_> = (0..8).map(|_| follow()).collect();
    assert!(open.iter().all(|(_, _, s)| s.contains(" 200")), "{:?}", open.iter().map(|o| &o.2).collect::<Vec<_>>());
    let ninth =
        http("GET", &url(&format!("/api/activities/{id}/log")), &["Accept: text/event-stream", &bearer(&viewer)], None);
    assert_eq!(ninth.status, 429, "{ninth:?}");
    assert!(ninth.body.contains("already follows 8 live logs"), "{}", ninth.body);
    // The whole log is still there to read, and a closed stream makes room.
    let whole = http("GET", &url(&format!("/api/activities/{id}/log")), &[&bearer(&viewer)], None);
    assert_eq!(whole.status, 200);
    let (mut first, _, _) = open.remove(0);
    let _ = first.kill();
    let _ = first.wait();
    assert!(eventually(10, || {
        let (mut c, _, status) = follow();
        let _ = c.kill();
        let _ = c.wait();
        status.contains(" 200")
    }));
    for (mut c, _, _) in open {
        let _ = c.kill();
        let _ = c.wait();
    }
}
