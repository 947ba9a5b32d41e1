//! The runner after real pushes: releases on disk, `current`, mounts, the environment each hook
//! sees, logs and states; failures that leave the previous release serving; rollback; slug
//! reuse; a runner killed mid-build; SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::push::{files_with, APP, APP_FILE};
use crate::support::{runner_bin, Server};

/// The example app with hooks that record what they see.
pub fn app_with_hooks(build: &str, deploy: &str) -> String {
    let hooks = format!(
        "hooks:\n    build: |\n{}\n    deploy: |\n{}\n    post_deploy: |\n        echo post > var/post_deploy.txt\n",
        indent(build),
        indent(deploy)
    );
    let start = APP.find("hooks:").unwrap();
    let end = APP.find("crons:").unwrap();
    format!("{}{hooks}{}", &APP[..start], &APP[end..])
}

fn indent(script: &str) -> String {
    script.lines().map(|l| format!("        {l}")).collect::<Vec<_>>().join("\n")
}

const RECORDING_BUILD: &str = "set -e\nenv | sort > build-env.txt\nmkdir -p pub && echo built > pub/built.txt";
const RECORDING_DEPLOY: &str = "env | sort > var/deploy-env.txt";

pub fn runner(s: &Server, args: &[&str]) -> Output {
    let flag = s.sandbox_flag().filter(|_| args.first() == Some(&"serve"));
    Command::new(runner_bin()).args(args).args(flag).arg("--data").arg(&s.data).envs(s.queue_env()).output().unwrap()
}

/// A runner serving until idle with a one-second lease, in the background: for tests that kill
/// it mid-job and let another runner take over once the lease runs out.
pub fn spawn_dying_runner(s: &Server) -> std::process::Child {
    Command::new(runner_bin())
        .args(["serve", "--until-idle", "--lease", "1", "--data"])
        .arg(&s.data)
        .args(s.sandbox_flag())
        .envs(s.queue_env())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

pub fn serve(s: &Server) -> String {
    let out = runner(s, &["serve", "--until-idle"]);
    assert!(out.status.success(), "serve: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The deployed environments (`envs --json` also lists those that run nothing, with a hint).
pub fn envs(s: &Server) -> Vec<Value> {
    let out = runner(s, &["envs", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.into_iter().filter(|e| e["release"] != "").collect()
}

pub fn log_of(s: &Server, job: i64) -> String {
    String::from_utf8_lossy(&runner(s, &["logs", &job.to_string()]).stdout).into_owned()
}

/// The slug a job packed, from its log.
pub fn slug_of(s: &Server, job: i64) -> PathBuf {
    let log = log_of(s, job);
    // (Under [deploy] when the slug was packed while the release was made.)
    let line = log.lines().find(|l| l.contains("] Slug ")).expect("a slug line");
    // The log names it within the data directory (a developer reads it, not the server's layout).
    s.data.join(line.split("] Slug ").nth(1).unwrap().split(' ').next().unwrap())
}

pub fn job_state(s: &Server, commit: &str) -> (i64, String) {
    let job = s.jobs().into_iter().find(|j| j["commit"] == commit).expect("a job for the commit");
    (job["id"].as_i64().unwrap(), job["state"].as_str().unwrap().to_owned())
}

/// `NAME=value` lines of a recorded environment.
fn env_file(path: &Path) -> std::collections::HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

fn decode(b64: &str) -> Value {
    let out = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(b64.as_bytes()).unwrap();
    let out = out.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{b64}: {e}"))
}

pub fn current_path(s: &Server) -> PathBuf {
    let env = envs(s).into_iter().find(|e| e["environment"] == "main").expect("main is deployed");
    PathBuf::from(env["path"].as_str().unwrap())
}

#[test]
fn a_push_becomes_a_running_release() {
    let s = Server::new("deploy");
    std::fs::create_dir_all(&s.data).unwrap();
    std::fs::write(
        s.data.join("services.json"),
        r#"{"mysql": {"host": "127.0.0.1", "port": 3306, "scheme": "mysql", "username": "root", "password": "", "path": "main"}}"#,
    )
    .unwrap();
    let app = app_with_hooks(RECORDING_BUILD, RECORDING_DEPLOY);
    let commit = s.commit(&files_with(APP_FILE, &app), "hooks");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    assert!(serve(&s).contains("Processed 1 job(s)."));
    let (id, state) = job_state(&s, &commit);
    assert_eq!(state, "succeeded");

    let env = envs(&s).into_iter().find(|e| e["environment"] == "main").unwrap();
    assert_eq!(env["commit"], commit.as_str());
    assert_eq!(env["release"], id.to_string());
    assert_eq!(env["state"], "active");
    for field in ["environment", "release", "commit", "path", "state", "deployed_at"] {
        assert!(!env[field].is_null(), "envs --json lacks {field}: {env}");
    }
    let release = PathBuf::from(env["path"].as_str().unwrap());
    let app_dir = release.join("mymagento");
    // The build's output is in the release, and the release is read-only.
    assert_eq!(std::fs::read_to_string(app_dir.join("pub/built.txt")).unwrap().trim(), "built");
    use std::os::unix::fs::PermissionsExt;
    // (The runner's, root's here: writable by root alone, and hooks never run as root.)
    let built = std::fs::metadata(app_dir.join("pub/built.txt")).unwrap();
    assert_eq!((std::os::unix::fs::MetadataExt::uid(&built), built.permissions().mode() & 0o022), (0, 0));
    assert_eq!(std::fs::metadata(&app_dir).unwrap().permissions().mode() & 0o222, 0);
    // `current` points at it.
    let env_root = release.parent().unwrap().parent().unwrap();
    assert_eq!(std::fs::read_link(env_root.join("current")).unwrap(), PathBuf::from(format!("releases/{id}")));
    // Mounts are writable directories outside the release, kept across releases.
    let var = std::fs::read_link(app_dir.join("var")).unwrap();
    assert!(var.starts_with(env_root.join("mounts")), "{}", var.display());
    assert_eq!(std::fs::read_to_string(app_dir.join("var/post_deploy.txt")).unwrap().trim(), "post");
    assert!(!env_root.join("maintenance").exists(), "maintenance ends");

    // The build saw the build environment, and no services.
    let build = env_file(&app_dir.join("build-env.txt"));
    assert_eq!(build["MAGENTO_CLOUD_APPLICATION_NAME"], "mymagento");
    assert_eq!(build["MAGENTO_CLOUD_TREE_ID"].len(), 40);
    assert!(build["MAGENTO_CLOUD_APP_DIR"].ends_with("mymagento") || build["MAGENTO_CLOUD_APP_DIR"].contains("builds"));
    assert_eq!(decode(&build["MAGENTO_CLOUD_APPLICATION"])["name"], "mymagento");
    assert!(decode(&build["MAGENTO_CLOUD_VARIABLES"]).is_object());
    assert!(!build.contains_key("MAGENTO_CLOUD_RELATIONSHIPS"));
    // The deploy hook saw the runtime environment, with relationships from services.json.
    let deploy = env_file(&app_dir.join("var/deploy-env.txt"));
    assert_eq!(deploy["MAGENTO_CLOUD_ENVIRONMENT"], "main");
    assert_eq!(deploy["MAGENTO_CLOUD_BRANCH"], "main");
    let rel = decode(&deploy["MAGENTO_CLOUD_RELATIONSHIPS"]);
    assert_eq!(rel["database"][0]["host"], "127.0.0.1");
    assert_eq!(rel["database"][0]["port"], 3306);
    let routes = decode(&deploy["MAGENTO_CLOUD_ROUTES"]);
    assert!(routes.as_object().unwrap().values().any(|r| r["upstream"] == "mymagento"), "{routes}");

    let log = log_of(&s, id);
    for phase in [
        "[build] Running hook `build`",
        "[slug] Preparing slug",
        "[deploy] Environment main in maintenance",
        "`current` switched to release",
        "[job] Deployed release",
    ] {
        assert!(log.contains(phase), "log lacks {phase:?}:\n{log}");
    }
    // redis has no declared endpoint: its relationship is empty, and the log says so.
    assert_eq!(rel["redis"], serde_json::json!([]));
    assert!(
        log.contains("W: relationship `redis` of `mymagento` (redis:redis): no endpoint for service `redis`"),
        "{log}"
    );
}

#[test]
fn a_broken_services_file_fails_the_deploy_before_anything_changes() {
    let s = Server::new("services-json");
    let first = s.commit(&files_with(APP_FILE, &app_with_hooks("true", "true")), "one");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    assert_eq!(job_state(&s, &first).1, "succeeded");
    let serving = current_path(&s);
    // The admin breaks the file (a trailing comma).
    std::fs::write(s.data.join("services.json"), "{\"mysql\": {\"host\": \"db\", \"port\": 3306,}}\n").unwrap();
    let second = s.commit(&files_with(APP_FILE, &app_with_hooks("true", "echo ran > var/deployed.txt")), "two");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &second);
    assert_eq!(state, "failed");
    assert_eq!(current_path(&s), serving);
    assert!(!serving.join("mymagento/var/deployed.txt").exists(), "the deploy hook never ran");
    let log = log_of(&s, id);
    assert!(log.contains("services.json: is not valid JSON at line 1, column"), "{log}");
    assert!(!log.contains("in maintenance"), "{log}");
    // Fixed, the next push deploys.
    std::fs::write(s.data.join("services.json"), "{\"mysql\": {\"host\": \"db\", \"port\": 3306}}\n").unwrap();
    let third = s.commit(&files_with(APP_FILE, &app_with_hooks("true", "true")), "three");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    assert_eq!(job_state(&s, &third).1, "succeeded");
}

#[test]
fn failures_leave_the_running_release_alone_and_rollback_goes_back() {
    let s = Server::new("fail");
    let first = s.commit(&files_with(APP_FILE, &app_with_hooks("echo one > pub.txt", "true")), "one");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (first_id, _) = job_state(&s, &first);
    let serving = current_path(&s);

    // A failing build.
    let broken_build =
        s.commit(&files_with(APP_FILE, &app_with_hooks("echo compiling\nfalse\necho never", "true")), "bad build");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &broken_build);
    assert_eq!(state, "failed");
    assert_eq!(current_path(&s), serving, "the failed build left current alone");
    let log = log_of(&s, id);
    assert!(
        log.contains("$ false")
            && log.contains("compiling")
            && log.contains("Hook `build` failed: the script exited with status 1"),
        "{log}"
    );
    assert!(!log.lines().any(|l| l == "never"), "sh -e stops at the failing command: {log}");

    // A build that leaves a way out of its release: a link to the host, and one through a link.
    for (label, links) in [("absolute", "ln -s /etc/passwd passwd"), ("chained", "ln -s . here\nln -s here/.. up")] {
        let escaping = s.commit(&files_with(APP_FILE, &app_with_hooks(links, "true")), label);
        s.push(&["HEAD:refs/heads/main"]).assert_accepted();
        serve(&s);
        let (id, state) = job_state(&s, &escaping);
        assert_eq!(state, "failed", "{label}");
        assert_eq!(current_path(&s), serving, "{label}");
        let log = log_of(&s, id);
        assert!(log.contains("outside the app: a slug may not point out of its release"), "{label}: {log}");
    }

    // A failing deploy hook: no site left in maintenance, current unchanged.
    let broken_deploy =
        s.commit(&files_with(APP_FILE, &app_with_hooks("true", "echo migrating; exit 7")), "bad deploy");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &broken_deploy);
    assert_eq!(state, "failed");
    assert_eq!(current_path(&s), serving);
    let env_root = serving.parent().unwrap().parent().unwrap().to_owned();
    assert!(!env_root.join("maintenance").exists());
    assert!(log_of(&s, id).contains("Hook `deploy` failed: the script exited with status 7"));

    // A good release, then a rollback to the first one, at once.
    let second = s.commit(&files_with(APP_FILE, &app_with_hooks("echo two > pub.txt", "true")), "two");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (second_id, _) = job_state(&s, &second);
    assert!(current_path(&s).ends_with(second_id.to_string()));
    let out = runner(&s, &["rollback", "main"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("from release {second_id} to release {first_id}")));
    assert_eq!(current_path(&s), serving);
    assert_eq!(std::fs::read_to_string(serving.join("mymagento/pub.txt")).unwrap().trim(), "one");
    // And forward again by name; a release that is not kept is named as such.
    assert!(runner(&s, &["rollback", "main", "--to", &second_id.to_string()]).status.success());
    let out = runner(&s, &["rollback", "main", "--to", "999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: release 999 is not kept (kept: "));
    assert!(current_path(&s).ends_with(second_id.to_string()));
}

#[test]
fn an_unchanged_tree_reuses_its_slug() {
    let s = Server::new("reuse");
    let commit =
        s.commit(&files_with(APP_FILE, &app_with_hooks("echo built >> ../builds-counter || true", "true")), "one");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    // The slug is old: reusing it renews it, so collection (which spares slugs used in the last
    // hour) cannot take it from under a deployment that is about to unpack it.
    let slug = slug_of(&s, job_state(&s, &commit).0);
    Command::new("touch").args(["-d", "2 hours ago"]).arg(&slug).status().unwrap();
    let age = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap().elapsed().unwrap_or_default();
    assert!(age(&slug) > std::time::Duration::from_secs(3600));
    // The same tree on another branch: a new job, no new build.
    s.push(&["HEAD:refs/heads/staging"]).assert_accepted();
    serve(&s);
    let jobs = s.jobs();
    let staging = jobs.iter().find(|j| j["environment"] == "staging").unwrap();
    assert_eq!(staging["state"], "succeeded");
    let log = log_of(&s, staging["id"].as_i64().unwrap());
    assert!(log.contains("Reusing existing build for this tree ID"), "{log}");
    assert!(!log.contains("Running hook `build`"), "{log}");
    assert!(age(&slug) < std::time::Duration::from_secs(3600), "reuse renewed the slug");
}

#[test]
fn a_runner_killed_mid_build_loses_its_job_to_the_next_runner() {
    let s = Server::new("killed-runner");
    let marker = s.markers().join("first-attempt");
    let build =
        format!("if [ ! -e {m} ]; then touch {m}; sleep 60; fi\necho finished > done.txt", m = marker.display());
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks(&build, "true")), "slow build");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let mut first = spawn_dying_runner(&s);
    // Started, and recorded by its runner (the record comes right after the hook starts).
    let recorded = || {
        std::fs::read_dir(s.data.join("environments"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|p| p.path().join("main/hook.pid").exists())
    };
    assert!(eventually(10, || marker.exists() && recorded()), "the first runner started the build");
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert_eq!(job_state(&s, &commit).1, "running", "the dead runner still holds it, until its lease runs out");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let out = runner(&s, &["serve", "--until-idle", "--lease", "1"]);
    assert!(out.status.success());
    let (id, state) = job_state(&s, &commit);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    assert!(current_path(&s).join("mymagento/done.txt").exists());
    assert_eq!(log_of(&s, id).matches("claimed by").count(), 2);
    // The dead runner's build did not go on beside the second one's.
    assert!(log_of(&s, id).contains("W: stopped the hooks an earlier attempt left running"), "{}", log_of(&s, id));
    assert!(!still_running(&marker), "the first attempt's hook is gone");
}

/// Whether a process whose command line mentions `path` still runs (a hook's `sh -c`).
pub fn still_running(path: &Path) -> bool {
    let out = Command::new("pgrep").arg("-f").arg(path).output().unwrap();
    out.status.success()
}

#[test]
fn a_runner_killed_mid_deploy_leaves_no_maintenance_and_no_hook_behind() {
    let s = Server::new("killed-deploy");
    let first = s.commit(&files_with(APP_FILE, &app_with_hooks("true", "true")), "one");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    assert_eq!(job_state(&s, &first).1, "succeeded");
    let serving = current_path(&s);
    let marker = s.markers().join("deploying");
    let deploy = format!("if [ ! -e {m} ]; then touch {m}; sleep 60; fi\necho migrated", m = marker.display());
    let second = s.commit(&files_with(APP_FILE, &app_with_hooks("true", &deploy)), "slow deploy");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let mut dying = spawn_dying_runner(&s);
    assert!(eventually(10, || marker.exists()), "the deploy hook started");
    dying.kill().unwrap(); // SIGKILL, mid-deploy: the site is in maintenance
    dying.wait().unwrap();
    assert_eq!(envs(&s)[0]["state"], "maintenance");
    assert_eq!(current_path(&s), serving, "the switch had not happened");
    std::thread::sleep(std::time::Duration::from_millis(2500)); // the lease runs out
    let out = runner(&s, &["serve", "--until-idle", "--lease", "1"]);
    assert!(out.status.success());
    let (id, state) = job_state(&s, &second);
    let log = log_of(&s, id);
    assert_eq!(state, "succeeded", "{log}");
    assert!(log.contains("W: stopped the hooks an earlier attempt left running"), "{log}");
    assert!(log.contains("W: ended the maintenance an earlier deploy left"), "{log}");
    assert!(!still_running(&marker), "the first attempt's deploy hook is gone");
    let env = &envs(&s)[0];
    assert_eq!(env["state"], "active");
    assert_eq!(env["release"], id.to_string());
}

#[test]
fn sigterm_stops_the_runner() {
    let s = Server::new("sigterm");
    std::fs::create_dir_all(&s.data).unwrap();
    let mut child = Command::new(runner_bin())
        .args(["serve", "--data"])
        .arg(&s.data)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(5, || s.data.join("wakeup").exists()); // serving
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let mut status = None;
    eventually(5, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("serve did not stop on SIGTERM within 5 s")
    });
    assert!(status.success());
    let mut out = String::new();
    use std::io::Read;
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(out.contains("Processed 0 job(s)."), "{out}");
}

/// A runner serving in the background, stopped with SIGTERM when dropped.
struct Serving(std::process::Child);

impl Serving {
    fn start(s: &Server) -> Serving {
        let child = Command::new(runner_bin())
            .args(["serve", "--data"])
            .arg(&s.data)
            .args(s.sandbox_flag())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // It listens once its wake-up pipe exists.
        eventually(5, || s.data.join("wakeup").exists());
        Serving(child)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

#[test]
fn the_push_shows_the_deployment() {
    let s = Server::new("stream");
    crate::support::git_ok(&s.bare, &["config", "pushgate.pickupWaitMs", "20000"]);
    std::fs::create_dir_all(&s.data).unwrap();
    let _runner = Serving::start(&s);
    s.commit(&files_with(APP_FILE, &app_with_hooks("echo compiling assets", "echo migrating")), "one");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    let remote = push.remote();
    for line in [
        "Build #1 queued for environment main",
        "[build] Running hook `build`",
        "compiling assets",
        "[slug] Preparing slug",
        "[deploy] Environment main in maintenance",
        "migrating",
        "`current` switched to release 1",
        "Deployment of environment main succeeded (build #1).",
    ] {
        assert!(remote.contains(line), "missing {line:?} in:\n{remote}");
    }
    // -o pushgate.nowait returns at once; the runner still deploys.
    s.write("app/code/A.php", b"<?php\n");
    s.commit_all("two");
    let push = s.push_with_options(&["pushgate.nowait"], &["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert!(!push.remote().contains("Deployment of environment"), "{}", push.remote());
    // A failing build is shown as such, and the environment keeps its release.
    s.commit(&files_with(APP_FILE, &app_with_hooks("echo about to fail\nexit 4", "true")), "three");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    let remote = push.remote();
    assert!(
        remote.contains("about to fail")
            && remote.contains("for environment main failed; the environment keeps its previous release"),
        "{remote}"
    );
}

#[test]
fn without_a_runner_the_push_says_how_to_follow() {
    let s = Server::new("no-runner");
    s.commit(&files_with("", ""), "one");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert!(
        push.remote().contains(
            "No runner picked build #1 up within 0 s; it stays queued. Follow it with: pushgate-runner logs 1 --follow"
        ),
        "{}",
        push.remote()
    );
    // Asked before a runner started it, `logs` says where the job stands.
    let out = runner(&s, &["logs", "1"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Job #1 is pending and has no log yet; --follow waits for a runner to start it\n"
    );
    let out = runner(&s, &["logs", "7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no job #7"));
}

/// Polls `done` every 50 ms for at most `seconds`; whether it came true. A bound, not a timing:
/// the assertion after it says what should have happened.
pub fn eventually(seconds: u64, mut done: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < until {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    done()
}

/// Waits (at most 10 s) until `path` exists.
fn wait_for(path: &Path) {
    assert!(eventually(10, || path.exists()), "{} did not appear", path.display());
}

#[test]
fn a_hook_over_its_time_limit_is_killed() {
    let s = Server::new("timeout");
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks("echo starting\nsleep 30", "true")), "slow");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let started = std::time::Instant::now();
    let out = runner(&s, &["serve", "--until-idle", "--hook-timeout", "1"]);
    assert!(out.status.success());
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the hook was not killed");
    let (id, state) = job_state(&s, &commit);
    assert_eq!(state, "failed");
    assert!(log_of(&s, id).contains("Hook `build` killed after its time limit of 1 s"), "{}", log_of(&s, id));
}

#[test]
fn a_running_job_can_be_cancelled() {
    let s = Server::new("cancel");
    let marker = s.markers().join("building");
    let build = format!("touch {}\nsleep 30", marker.display());
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks(&build, "true")), "slow");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let mut serving = Command::new(runner_bin())
        .args(["serve", "--until-idle", "--lease", "3", "--data"])
        .arg(&s.data)
        .args(s.sandbox_flag())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&marker);
    let (id, _) = job_state(&s, &commit);
    let out = runner(&s, &["cancel", &id.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("Job #{id} cancelled (it was running).")));
    // The runner notices at its next heartbeat (a third of the lease), kills the hook, and is idle.
    let status = serving.wait().unwrap();
    assert!(status.success());
    assert_eq!(job_state(&s, &commit).1, "cancelled");
    assert!(log_of(&s, id).contains("Hook `build` killed: the job was cancelled"), "{}", log_of(&s, id));
    assert!(envs(&s).is_empty(), "nothing was deployed");
    // Cancelling it again says it has ended, and how.
    let out = runner(&s, &["cancel", &id.to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("activity #{id} has already ended: cancelled")));
}

#[test]
fn sigterm_returns_a_running_job_to_the_queue_after_the_grace_period() {
    let s = Server::new("grace");
    let marker = s.markers().join("building");
    let build = format!("if [ ! -e {m} ]; then touch {m}; sleep 30; fi", m = marker.display());
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks(&build, "true")), "slow");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let mut serving = Command::new(runner_bin())
        .args(["serve", "--grace", "1", "--data"])
        .arg(&s.data)
        .args(s.sandbox_flag())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&marker);
    Command::new("kill").arg("-TERM").arg(serving.id().to_string()).status().unwrap();
    let status = serving.wait().unwrap();
    assert!(status.success());
    let (id, state) = job_state(&s, &commit);
    assert_eq!(state, "pending", "{}", log_of(&s, id));
    assert!(log_of(&s, id).contains("the job goes back to the queue"));
    // The next runner finishes it.
    serve(&s);
    assert_eq!(job_state(&s, &commit).1, "succeeded");
}

#[test]
fn the_build_goes_on_when_the_pusher_hangs_up() {
    let s = Server::new("hangup");
    crate::support::git_ok(&s.bare, &["config", "pushgate.pickupWaitMs", "20000"]);
    std::fs::create_dir_all(&s.data).unwrap();
    let marker = s.markers().join("building");
    let _runner = Serving::start(&s);
    let build = format!("touch {}\nsleep 2\necho done", marker.display());
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks(&build, "true")), "slow");
    let mut push = Command::new("git")
        .args(["push", "-q", &s.url(), "HEAD:refs/heads/main"])
        .current_dir(&s.work)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", &s.work)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&marker);
    push.kill().unwrap(); // the developer's terminal goes away mid-build
    let _ = push.wait();
    eventually(10, || job_state(&s, &commit).1 == "succeeded");
    assert_eq!(job_state(&s, &commit).1, "succeeded");
    assert!(current_path(&s).join("mymagento").exists());
}

#[test]
fn slugs_no_release_needs_are_collected() {
    let s = Server::new("gc");
    let mut ids = Vec::new();
    for i in 0..3 {
        let commit = s.commit(&files_with(APP_FILE, &app_with_hooks(&format!("echo {i} > n.txt"), "true")), "v");
        s.push(&["HEAD:refs/heads/main"]).assert_accepted();
        if i == 1 {
            // The first release's slug is old by now, and --keep 1 dropped its release.
            let first = slug_of(&s, ids[0]);
            assert!(first.exists());
            Command::new("touch").args(["-d", "2 hours ago"]).arg(&first).status().unwrap();
        }
        assert!(runner(&s, &["serve", "--until-idle", "--keep", "1"]).status.success());
        ids.push(job_state(&s, &commit).0);
    }
    assert!(!slug_of(&s, ids[0]).exists(), "the unused old slug was collected");
    assert!(slug_of(&s, ids[1]).exists(), "a recent slug is kept (a build in progress may still need it)");
    assert!(slug_of(&s, ids[2]).exists(), "the current release's slug is kept");
    let env = envs(&s).into_iter().next().unwrap();
    assert_eq!(env["releases"].as_array().unwrap().len(), 1, "--keep 1");
}

#[test]
fn logs_follow_prints_until_the_job_ends() {
    let s = Server::new("follow");
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks("sleep 1\necho built it", "true")), "one");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let (id, _) = job_state(&s, &commit);
    let follower = Command::new(runner_bin())
        .args(["logs", &id.to_string(), "--follow", "--data"])
        .arg(&s.data)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    serve(&s);
    let out = follower.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("built it") && text.contains(&format!("Deployment of environment main succeeded (build #{id}).")),
        "{text}"
    );
}

#[test]
fn workers_build_environments_side_by_side_but_one_job_per_environment() {
    let s = Server::new("concurrency");
    std::fs::create_dir_all(&s.data).unwrap();
    let dir = s.markers();
    // A build marks its environment busy, says it started, and waits (up to 30 s) for `other`.
    let build = |me: &str, other: &str, n: u32| {
        let d = dir.display();
        format!(
            "# build {n}\n[ -e {d}/busy-{me} ] && echo overlap >> {d}/overlap\ntouch {d}/busy-{me} {d}/started-{me}-{n}\n\
             for i in $(seq 300); do [ -e {d}/started-{other}-1 ] && break; sleep 0.1; done\n\
             [ -e {d}/started-{other}-1 ]\nrm {d}/busy-{me}"
        )
    };
    let serving = Command::new(runner_bin())
        .args(["serve", "--concurrency", "3", "--data"])
        .arg(&s.data)
        .args(s.sandbox_flag())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _serving = Serving(serving);
    let main1 = s.commit(&files_with(APP_FILE, &app_with_hooks(&build("main", "staging", 1), "true")), "main 1");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    wait_for(&dir.join("started-main-1"));
    // Main is building and two workers are free: the next push to main still waits its turn.
    let main2 = s.commit(&files_with(APP_FILE, &app_with_hooks(&build("main", "staging", 2), "true")), "main 2");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    // Staging is another environment: it builds beside main's first job, which then finishes.
    let staging = s.commit(&files_with(APP_FILE, &app_with_hooks(&build("staging", "main", 1), "true")), "staging");
    s.push(&["HEAD:refs/heads/staging"]).assert_accepted();
    let commits = [&main1, &main2, &staging];
    eventually(60, || commits.iter().all(|c| job_state(&s, c).1 == "succeeded"));
    let states: Vec<_> = commits.iter().map(|c| job_state(&s, c).1).collect();
    let logs: Vec<String> = commits.iter().map(|c| log_of(&s, job_state(&s, c).0)).collect();
    // (When and how each job was queued and taken, beside the logs, if this ever fails.)
    assert_eq!(states, ["succeeded"; 3], "{}\n{}", serde_json::to_string_pretty(&s.jobs()).unwrap(), logs.join("\n"));
    assert!(!dir.join("overlap").exists(), "two jobs of main ran at once");
    assert!(dir.join("started-main-2").exists());
    let current: Vec<_> = envs(&s).iter().map(|e| e["commit"].as_str().unwrap().to_owned()).collect();
    assert!(current.contains(&main2) && current.contains(&staging), "{current:?}");
}

#[test]
fn a_full_disk_fails_the_job_and_leaves_nothing_behind() {
    let s = Server::new("runner-full");
    let _disk = crate::support::SmallDisk::mount(&s.data, "16m");
    // (The tmpfs hides the data directory's policy: sparse disks again.)
    std::fs::write(s.data.join("sandbox.json"), crate::support::SPARSE_DISKS).unwrap();
    let first = s.commit(&files_with(APP_FILE, &app_with_hooks("true", "true")), "small");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    assert_eq!(job_state(&s, &first).1, "succeeded");
    let serving = current_path(&s);
    // 12 MB that do not compress: the build fits, its slug does not.
    let big =
        s.commit(&files_with(APP_FILE, &app_with_hooks("head -c 12000000 /dev/urandom > big.bin", "true")), "big");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &big);
    assert_eq!(state, "failed");
    let log = log_of(&s, id);
    assert!(log.contains("No space left on device"), "{log}");
    assert_eq!(current_path(&s), serving);
    let left: Vec<_> = ["slugs", "builds"]
        .iter()
        .flat_map(|d| std::fs::read_dir(s.data.join(d)).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") || n == &id.to_string())
        .collect();
    assert!(left.is_empty(), "a failed job leaves no half slug or build directory: {left:?}");
    // The space came back: the next push deploys.
    let third = s.commit(&files_with(APP_FILE, &app_with_hooks("echo small again", "true")), "small again");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    assert_eq!(job_state(&s, &third).1, "succeeded");
}

#[test]
fn a_serving_runner_outlives_a_broken_queue() {
    let s = Server::new("queue-outage");
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks("true", "true")), "one");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    // The queue is replaced by garbage (a bad restore, a disk error) while the runner starts.
    let aside = s.dir.join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    let files = ["queue.sqlite3", "queue.sqlite3-wal", "queue.sqlite3-shm"];
    for f in files {
        let _ = std::fs::rename(s.data.join(f), aside.join(f));
    }
    std::fs::write(s.data.join("queue.sqlite3"), "not a database\n".repeat(100)).unwrap();
    let stderr = s.dir.join("runner.err");
    let serving = Command::new(runner_bin())
        .args(["serve", "--data"])
        .arg(&s.data)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut serving = Serving(serving);
    let said = || std::fs::read_to_string(&stderr).unwrap_or_default();
    eventually(10, || said().contains("trying again"));
    assert!(said().contains("cannot be opened") && said().contains("trying again in 250 ms"), "{}", said());
    // The queue comes back: the runner carries on by itself.
    for f in files {
        let _ = std::fs::remove_file(s.data.join(f));
        let _ = std::fs::rename(aside.join(f), s.data.join(f));
    }
    eventually(15, || job_state(&s, &commit).1 == "succeeded");
    assert_eq!(job_state(&s, &commit).1, "succeeded");
    assert!(serving.0.try_wait().unwrap().is_none(), "the runner is still serving");
}

#[test]
fn the_admins_variables_reach_the_hooks_that_may_see_them() {
    let s = Server::new("variables");
    std::fs::create_dir_all(&s.data).unwrap();
    let declare = |project_auth: &str, admin: &str| {
        let vars = serde_json::json!({
            "project": {"env:COMPOSER_AUTH": project_auth, "php:memory_limit": "2G"},
            "environments": {"main": {"env:ADMIN_EMAIL": admin}, "staging": {"env:ADMIN_EMAIL": "ops@staging"}}
        });
        std::fs::write(s.data.join("variables.json"), vars.to_string()).unwrap();
    };
    declare("{\"http-basic\": {}}", "admin@main");
    let build = "env | sort > build-env.txt\necho built";
    let deploy = "env | sort > var/deploy-env.txt";
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks(build, deploy)), "vars");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    assert_eq!(job_state(&s, &commit).1, "succeeded");
    let app = current_path(&s).join("mymagento");
    // The build sees project variables (composer's credentials), never an environment's.
    let built = env_file(&app.join("build-env.txt"));
    assert_eq!(built["COMPOSER_AUTH"], "{\"http-basic\": {}}");
    assert!(!built.contains_key("ADMIN_EMAIL"));
    let in_build = decode(&built["MAGENTO_CLOUD_VARIABLES"]);
    assert_eq!(in_build["php:memory_limit"], "2G");
    assert!(in_build.get("env:ADMIN_EMAIL").is_none());
    // The deploy hook sees both, its own environment's over the project's.
    let deployed = env_file(&app.join("var/deploy-env.txt"));
    assert_eq!(deployed["ADMIN_EMAIL"], "admin@main");
    assert_eq!(deployed["COMPOSER_AUTH"], "{\"http-basic\": {}}");
    assert_eq!(decode(&deployed["MAGENTO_CLOUD_VARIABLES"])["env:ADMIN_EMAIL"], "admin@main");

    // An environment's variable changes: same build, new deploy.
    declare("{\"http-basic\": {}}", "new-admin@main");
    s.push(&["HEAD:refs/heads/staging"]).assert_accepted();
    serve(&s);
    let staging = s.jobs().into_iter().find(|j| j["environment"] == "staging").unwrap();
    assert!(log_of(&s, staging["id"].as_i64().unwrap()).contains("Reusing existing build for this tree ID"));
    // A project variable changes: the build runs again with it.
    declare("{\"http-basic\": {\"repo.magento.com\": {}}}", "new-admin@main");
    let again = s.commit(&files_with(APP_FILE, &app_with_hooks(build, deploy)), "same tree, new credentials");
    s.push(&["HEAD:refs/heads/main", "--force"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &again);
    assert_eq!(state, "succeeded");
    assert!(log_of(&s, id).contains("Running hook `build`"), "{}", log_of(&s, id));
    let app = current_path(&s).join("mymagento");
    assert_eq!(env_file(&app.join("var/deploy-env.txt"))["ADMIN_EMAIL"], "new-admin@main");

    // The repository's own declarations win over the server-wide ones: two shops on one server
    // get their own database and their own admin.
    std::fs::write(
        s.data.join("services.json"),
        r#"{"mysql": {"host": "shared-db", "port": 3306}, "redis": {"host": "cache", "port": 6379}}"#,
    )
    .unwrap();
    std::fs::create_dir_all(s.bare.join("pushgate")).unwrap();
    std::fs::write(s.bare.join("pushgate/services.json"), r#"{"mysql": {"host": "shop-db", "port": 3307}}"#).unwrap();
    std::fs::write(
        s.bare.join("pushgate/variables.json"),
        r#"{"environments": {"main": {"env:ADMIN_EMAIL": "shop-admin@main"}}}"#,
    )
    .unwrap();
    let own = s.commit(&files_with(APP_FILE, &app_with_hooks(build, deploy)), "per repository");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    assert_eq!(job_state(&s, &own).1, "succeeded");
    let deployed = env_file(&current_path(&s).join("mymagento/var/deploy-env.txt"));
    assert_eq!(deployed["ADMIN_EMAIL"], "shop-admin@main");
    assert_eq!(deployed["COMPOSER_AUTH"], "{\"http-basic\": {\"repo.magento.com\": {}}}", "server-wide, kept");
    let rel = decode(&deployed["MAGENTO_CLOUD_RELATIONSHIPS"]);
    assert_eq!(
        (rel["database"][0]["host"].as_str(), rel["database"][0]["port"].as_i64()),
        (Some("shop-db"), Some(3307))
    );
    assert_eq!(rel["redis"][0]["host"], "cache");

    // A variable name without its group is refused before anything runs.
    std::fs::write(s.data.join("variables.json"), r#"{"project": {"COMPOSER_AUTH": "x"}}"#).unwrap();
    let broken = s.commit(&files_with(APP_FILE, &app_with_hooks("echo other", deploy)), "broken vars");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &broken);
    assert_eq!(state, "failed");
    assert!(log_of(&s, id).contains("`project.COMPOSER_AUTH` is not a variable name of the form group:name"));
}

/// A Platform.sh-format project with two apps in their own directories.
fn platform_project(admin_build: &str) -> Vec<(&'static str, String)> {
    let app = |name: &str, kind: &str, extra: &str, build: &str| {
        format!(
            "name: {name}\ntype: {kind}\ndisk: 256\n{extra}web:\n    locations:\n        \"/\":\n            \
             root: \"public\"\n            passthru: \"/index.php\"\nmounts:\n    \"var\":\n        source: local\n        \
             source_path: var\nhooks:\n    build: |\n        env | sort > build-env.txt\n        {build}\n    \
             deploy: |\n        env | sort > var/deploy-env.txt\n"
        )
    };
    vec![
        (".platform/services.yaml", "database:\n    type: postgresql:16\n    disk: 1024\n".to_owned()),
        (
            ".platform/routes.yaml",
            "\"https://{default}/\":\n    type: upstream\n    upstream: \"admin:http\"\n\
             \"https://{default}/api\":\n    type: upstream\n    upstream: \"api:http\"\n"
                .to_owned(),
        ),
        (
            "api/.platform.app.yaml",
            app("api", "php:8.4", "relationships:\n    database: \"database:postgresql\"\n", "echo api built"),
        ),
        ("admin/.platform.app.yaml", app("admin", "nodejs:20", "", admin_build)),
    ]
}

#[test]
fn a_platform_project_deploys_each_app_with_platform_variables() {
    let s = Server::new("platform");
    std::fs::create_dir_all(&s.data).unwrap();
    std::fs::write(
        s.data.join("services.json"),
        r#"{"database": {"host": "127.0.0.1", "port": 5432, "scheme": "pgsql"}}"#,
    )
    .unwrap();
    let files = platform_project("echo admin one");
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let commit = s.commit(&borrowed, "two apps");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (first, state) = job_state(&s, &commit);
    assert_eq!(state, "succeeded", "{}", log_of(&s, first));
    let release = current_path(&s);
    for (app, relationship) in [("api", true), ("admin", false)] {
        let built = env_file(&release.join(app).join("build-env.txt"));
        assert_eq!(built["PLATFORM_APPLICATION_NAME"], app);
        assert!(built.keys().all(|k| !k.starts_with("MAGENTO_CLOUD_")), "{app}: {built:?}");
        let deployed = env_file(&release.join(app).join("var/deploy-env.txt"));
        assert_eq!(deployed["PLATFORM_ENVIRONMENT"], "main");
        let rel = decode(&deployed["PLATFORM_RELATIONSHIPS"]);
        assert_eq!(rel.get("database").is_some(), relationship, "{app}: {rel}");
        if relationship {
            assert_eq!(rel["database"][0]["port"], 5432);
        }
        let routes = decode(&deployed["PLATFORM_ROUTES"]);
        assert!(routes.as_object().unwrap().values().any(|r| r["upstream"] == "api"), "{routes}");
    }
    // Only the admin app changes: its slug is built again, the api's is reused.
    let files = platform_project("echo admin two");
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let second = s.commit(&borrowed, "admin only");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &second);
    assert_eq!(state, "succeeded");
    let log = log_of(&s, id);
    assert!(log.contains("Reusing existing build for this tree ID") && log.contains("app api)"), "{log}");
    assert!(log.contains("Building application `admin`") && !log.contains("Building application `api`"), "{log}");
}

#[test]
fn deleting_a_branch_cancels_its_pending_build() {
    let s = Server::new("delete-branch");
    s.commit(&files_with(APP_FILE, &app_with_hooks("true", "true")), "one");
    s.push(&["HEAD:refs/heads/main", "HEAD:refs/heads/feature"]).assert_accepted();
    let feature = s.jobs().into_iter().find(|j| j["environment"] == "feature").unwrap();
    assert_eq!(feature["state"], "pending");
    let push = s.push(&[":refs/heads/feature"]);
    push.assert_accepted();
    assert!(
        push.remote().contains(&format!("Branch feature deleted: its pending build #{} is cancelled", feature["id"])),
        "{}",
        push.remote()
    );
    assert!(serve(&s).contains("Processed 1 job(s)."));
    let mut states: Vec<_> = s.jobs().iter().map(|j| (j["environment"].clone(), j["state"].clone())).collect();
    states.sort_by_key(|(env, _)| env.to_string());
    assert_eq!(states, [("feature".into(), "cancelled".into()), ("main".into(), "succeeded".into())]);
    let deployed: Vec<_> = envs(&s).iter().map(|e| e["environment"].as_str().unwrap().to_owned()).collect();
    assert_eq!(deployed, ["main"]);
}

#[test]
fn serve_runs_only_as_the_owner_of_the_data_directory() {
    let s = Server::new("owner");
    s.commit(&files_with("", ""), "shop");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    // The data directory belongs to root; a runner running as another user (`nobody`) is refused.
    let out = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(runner_bin())
        .args(["serve", "--until-idle", "--data"])
        .arg(&s.data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("belongs to user root") && stderr.contains("--allow-user-mismatch"), "{stderr}");
    assert_eq!(s.jobs()[0]["state"], "pending", "nothing was claimed");
    // Root may serve the data directory of the git user (here `nobody`): it drops privileges for
    // what it runs, and what the hooks write stays theirs.
    std::os::unix::fs::chown(&s.data, Some(65534), Some(65534)).unwrap();
    let queue = s.data.join("queue.sqlite3");
    std::os::unix::fs::chown(&queue, Some(65534), Some(65534)).unwrap();
    let out = runner(&s, &["serve", "--until-idle"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.jobs()[0]["state"], "succeeded");
    use std::os::unix::fs::MetadataExt;
    for file in ["queue.sqlite3", "queue.sqlite3-wal", "queue.sqlite3-shm"] {
        if let Ok(meta) = std::fs::metadata(s.data.join(file)) {
            assert_eq!(meta.uid(), 65534, "{file} stays the hooks' user's");
        }
    }
}

#[test]
fn a_job_whose_log_cannot_be_written_fails_at_once() {
    let s = Server::new("no-log");
    s.commit(&files_with("", ""), "shop");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let _ = std::fs::remove_dir_all(s.data.join("logs"));
    std::fs::write(s.data.join("logs"), "not a directory").unwrap();
    let out = runner(&s, &["serve", "--until-idle"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("job #1 failed: its log cannot be written"), "{stderr}");
    assert_eq!(s.jobs()[0]["state"], "failed", "never left running");
}

#[test]
fn serve_logs_each_claim_phase_and_outcome_for_the_admin() {
    let s = Server::new("operator-log");
    s.commit(&files_with("", ""), "shop");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let out = runner(&s, &["serve", "--until-idle", "--log-format", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Vec<Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object a line: {l}: {e}")))
        .collect();
    let message = |e: &Value| e["fields"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(events.iter().any(|e| message(e) == "serving"), "{events:?}");
    let of_job: Vec<&Value> = events.iter().filter(|e| e["span"]["job"] == 1).collect();
    for e in &of_job {
        assert_eq!(e["span"]["environment"], "main");
        assert!(e["span"]["runner"].as_str().is_some_and(|r| r.contains(':')), "{e}");
    }
    let phases: Vec<&str> = of_job.iter().filter_map(|e| e["fields"]["phase"].as_str()).collect();
    assert_eq!(phases, ["job", "build", "slug", "deploy", "job"], "{of_job:?}");
    assert_eq!(message(of_job[0]), "claimed");
    assert_eq!(message(of_job.last().unwrap()), "succeeded");
    // The default is a line a person reads, with the same fields.
    s.write("app/code/A.php", b"<?php\n");
    s.commit_all("change");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let out = runner(&s, &["serve", "--until-idle"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.lines().any(|l| l.contains("job{job=2 environment=main runner=") && l.contains("claimed")), "{text}");
}

#[test]
fn a_runner_whose_log_goes_nowhere_still_deploys_and_exits() {
    // Its standard error closed (a journal that went away): writing the log fails, and used to
    // panic the worker and leave the runner waiting for it forever.
    let s = Server::new("closed-log");
    s.commit(&files_with("", ""), "shop");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let mut child = Command::new(runner_bin())
        .args(["serve", "--until-idle", "--data"])
        .arg(&s.data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reader is gone before anything is logged
    assert!(eventually(60, || child.try_wait().unwrap().is_some()), "the runner hung");
    assert_eq!(s.jobs()[0]["state"], "succeeded");
}

#[test]
fn the_runner_builds_the_plan_the_push_was_judged_on() {
    let s = Server::new("plan");
    let app = app_with_hooks("mkdir -p pub && echo as-pushed > pub/built.txt", "true");
    let first = s.commit(&files_with(APP_FILE, &app), "plan");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    // What the runner runs is the configuration stored with the job (here altered in the
    // queue, to tell it apart from the commit's own): it does not validate the commit again.
    let conn = rusqlite::Connection::open(s.data.join("queue.sqlite3")).unwrap();
    let changed = conn
        .execute(
            "UPDATE documents SET body = replace(body, 'as-pushed', 'as-stored') WHERE body LIKE '%as-pushed%'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1, "the plan is stored once");
    serve(&s);
    let (id, state) = job_state(&s, &first);
    let log = log_of(&s, id);
    assert_eq!(state, "succeeded", "{log}");
    assert!(log.contains("Building the configuration validated when it was pushed"), "{log}");
    let built = current_path(&s).join("mymagento/pub/built.txt");
    assert_eq!(std::fs::read_to_string(built).unwrap().trim(), "as-stored");

    // A job queued without a plan (by an earlier version) is validated by the runner, as before.
    s.write("app/code/A.php", b"<?php\n");
    let second = s.commit_all("no plan");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    conn.execute("UPDATE jobs SET plan_id = NULL WHERE new_commit = ?1", [&second]).unwrap();
    serve(&s);
    let (id, state) = job_state(&s, &second);
    let log = log_of(&s, id);
    assert_eq!(state, "succeeded", "{log}");
    assert!(log.contains("Validating the configuration (the job was queued without its plan)"), "{log}");
    assert_eq!(std::fs::read_to_string(current_path(&s).join("mymagento/pub/built.txt")).unwrap().trim(), "as-pushed");
}

#[test]
fn a_data_directory_the_projects_user_cannot_reach_fails_the_job_saying_where() {
    let s = Server::new("unreachable");
    let commit = s.commit(&files_with("", ""), "shop");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    serve(&s);
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (id, state) = job_state(&s, &commit);
    assert_eq!(state, "failed");
    let log = log_of(&s, id);
    let expected = format!("{} (mode 700) keeps other users out", s.dir.path().display());
    assert!(log.contains(&expected) && log.contains("chmod o+x"), "{log}");
}

#[test]
fn a_runner_on_the_postgresql_queue_deploys_what_was_pushed() {
    let s = Server::with_postgres("runner-pg");
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks("echo built-from-postgres", "true")), "first");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    assert!(!s.data.join("queue.sqlite3").exists(), "the hooks wrote to PostgreSQL, not SQLite");
    serve(&s);
    let (id, state) = job_state(&s, &commit);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    assert!(log_of(&s, id).contains("built-from-postgres"));
    assert_eq!(envs(&s)[0]["commit"], commit.as_str());
}
