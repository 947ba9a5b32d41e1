//! The build queue under real pushes: one job per accepted branch push, none for a refused one,
//! coalescing, a killed post-receive, a queue that cannot be written, and concurrent clients.
//! Jobs are read with `pushgate-runner jobs --json` and the SQLite file itself.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::push::files_with;
use crate::support::{git, git_ok, Server, SmallDisk, TempDir};

fn set_hook(s: &Server, name: &str, script: &str) {
    let path = s.bare.join("hooks").join(name);
    // Replace the hook, never write through it: installed hooks are symlinks to the binary.
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, script).unwrap();
    std::process::Command::new("chmod").arg("755").arg(&path).status().unwrap();
}

fn jobs_for(jobs: &[Value], commit: &str) -> Vec<Value> {
    jobs.iter().filter(|j| j["commit"] == commit).cloned().collect()
}

#[test]
fn a_job_per_push_and_pending_pushes_coalesce() {
    a_job_per_push_and_pending_pushes_coalesce_on(Server::new("coalesce"));
}

#[test]
fn a_job_per_push_and_pending_pushes_coalesce_on_postgresql() {
    a_job_per_push_and_pending_pushes_coalesce_on(Server::with_postgres("coalesce"));
}

fn a_job_per_push_and_pending_pushes_coalesce_on(s: Server) {
    let mut commits = Vec::new();
    for i in 0..3 {
        s.write("app/code/Change.php", format!("<?php // {i}\n").as_bytes());
        let mut files = files_with("", "");
        let change = format!("<?php // {i}\n");
        files.push(("app/code/Change.php", &change));
        commits.push(s.commit(&files, &format!("change {i}")));
        s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    }
    let jobs = s.jobs();
    assert_eq!(jobs.len(), 3, "{jobs:#?}");
    for field in ["id", "repo", "ref", "commit", "environment", "state", "created_at", "updated_at"] {
        assert!(jobs.iter().all(|j| !j[field].is_null()), "field {field} missing: {jobs:#?}");
    }
    assert!(jobs
        .iter()
        .all(|j| j["repo"] == s.repo_id() && j["ref"] == "refs/heads/main" && j["environment"] == "main"));
    let states: Vec<&str> = jobs.iter().map(|j| j["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["superseded", "superseded", "pending"]);
    assert_eq!(jobs[0]["superseded_by"], jobs[1]["id"]);
    assert_eq!(jobs[1]["superseded_by"], jobs[2]["id"]);
    assert_eq!(jobs[2]["commit"], commits[2].as_str());
    assert_eq!(s.reservations(), 0);

    // The text listing shows the same.
    let out = std::process::Command::new(crate::support::runner_bin())
        .args(["jobs", "--data"])
        .arg(&s.data)
        .envs(s.queue_env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pending") && text.contains(&commits[2][..10]) && text.contains("refs/heads/main"), "{text}");
}

#[test]
fn a_killed_post_receive_still_yields_the_job() {
    a_killed_post_receive_still_yields_the_job_on(Server::new("killed"));
}

#[test]
fn a_killed_post_receive_still_yields_the_job_on_postgresql() {
    a_killed_post_receive_still_yields_the_job_on(Server::with_postgres("killed"));
}

fn a_killed_post_receive_still_yields_the_job_on(s: Server) {
    // The post-receive hook dies before pushgate runs, after git moved the ref.
    set_hook(&s, "post-receive", "#!/bin/sh\nkill -9 $$\n");
    let commit = s.commit(&files_with("", ""), "good");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    assert_eq!(s.server_ref("refs/heads/main").as_deref(), Some(commit.as_str()));
    assert_eq!(s.reservations(), 1, "the push is reserved, not yet a job");
    let jobs = s.jobs(); // settles the reservation: receive-pack is gone, the reflog has the update
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!((jobs[0]["commit"].as_str(), jobs[0]["state"].as_str()), (Some(commit.as_str()), Some("pending")));
    assert_eq!(s.reservations(), 0);
}

#[test]
fn pushes_git_refuses_after_pre_receive_yield_no_job() {
    pushes_git_refuses_after_pre_receive_yield_no_job_on(Server::new("phantom"));
}

#[test]
fn pushes_git_refuses_after_pre_receive_yield_no_job_on_postgresql() {
    pushes_git_refuses_after_pre_receive_yield_no_job_on(Server::with_postgres("phantom"));
}

fn pushes_git_refuses_after_pre_receive_yield_no_job_on(s: Server) {
    let base = s.commit(&files_with("", ""), "base");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();

    // 1. A non-fast-forward, refused by receive.denyNonFastForwards after pre-receive accepted it.
    git_ok(&s.bare, &["config", "receive.denyNonFastForwards", "true"]);
    git_ok(&s.work, &["commit", "-q", "--amend", "-m", "rewritten"]);
    let rewritten = git_ok(&s.work, &["rev-parse", "HEAD"]);
    let push = s.push(&["+HEAD:refs/heads/main"]);
    assert!(!push.ok, "{}", push.output);
    assert!(push.remote().contains("Validating configuration files of main"), "pre-receive ran: {}", push.output);

    // 2. Another hook (update) refuses the ref after pre-receive.
    set_hook(&s, "update", "#!/bin/sh\necho 'update hook: no'\nexit 1\n");
    s.write("app/code/A.php", b"<?php\n");
    let refused_by_update = s.commit_all("refused by update");
    let push = s.push(&["HEAD:refs/heads/other"]);
    assert!(!push.ok && push.output.contains("update hook: no"), "{}", push.output);

    // 3. An atomic push: one ref refused, so none is updated.
    set_hook(&s, "update", "#!/bin/sh\n[ \"$1\" = refs/heads/b ] && exit 1\nexit 0\n");
    git_ok(&s.work, &["branch", "-f", "a"]);
    git_ok(&s.work, &["branch", "-f", "b"]);
    let push = s.push(&["--atomic", "a:refs/heads/a", "b:refs/heads/b"]);
    assert!(!push.ok, "{}", push.output);
    assert_eq!(s.server_ref("refs/heads/a"), None);

    let jobs = s.jobs();
    assert_eq!(jobs.len(), 1, "only the base push has a job: {jobs:#?}");
    assert_eq!(jobs[0]["commit"], base.as_str());
    for phantom in [&rewritten, &refused_by_update] {
        assert!(jobs_for(&jobs, phantom).is_empty(), "job for a refused push: {phantom}");
    }
    assert_eq!(s.reservations(), 0, "refused reservations are dropped once their push is over");
}

#[test]
fn a_corrupt_queue_refuses_the_push() {
    let s = Server::new("corrupt");
    std::fs::create_dir_all(&s.data).unwrap();
    std::fs::write(s.data.join("queue.sqlite3"), vec![0x42u8; 8192]).unwrap();
    s.commit(&files_with("", ""), "good");
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&[
        "error: the build queue",
        "queue.sqlite3 cannot be opened",
        "file is not a database",
        "pushgate could not check and record this push, so it is refused; nothing was changed.",
    ]);
    assert_eq!(s.server_ref("refs/heads/main"), None);
}

#[test]
fn a_locked_queue_refuses_the_push() {
    let s = Server::new("locked");
    git_ok(&s.bare, &["config", "pushgate.queueTimeoutMs", "300"]);
    s.commit(&files_with("", ""), "good");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted(); // creates the queue
    let conn = rusqlite::Connection::open(s.data.join("queue.sqlite3")).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    s.write("app/code/A.php", b"<?php\n");
    let before = s.server_ref("refs/heads/main");
    s.commit_all("while locked");
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&["cannot be written: database is locked"]);
    assert_eq!(s.server_ref("refs/heads/main"), before);
    conn.execute_batch("ROLLBACK").unwrap();
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
}

#[test]
fn a_full_disk_refuses_the_push() {
    let s = Server::new("full");
    let mount = TempDir::new("tmpfs");
    let disk = SmallDisk::mount(mount.path(), "256k");
    let data = mount.join("data");
    git_ok(&s.bare, &["config", "pushgate.data", data.to_str().unwrap()]);
    s.commit(&files_with("", ""), "good");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    disk.fill();
    s.write("app/code/A.php", b"<?php\n");
    let before = s.server_ref("refs/heads/main");
    s.commit_all("while the disk is full");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_refused_with(&["error: the build queue", "is the disk of the data directory full", "so it is refused"]);
    assert_eq!(s.server_ref("refs/heads/main"), before);
}

/// 20 clients push at once: 10 to their own branches, 10 to one shared branch.
#[test]
fn concurrent_pushes_each_get_exactly_their_job() {
    concurrent_pushes_each_get_exactly_their_job_on(Server::new("stress"));
}

#[test]
fn concurrent_pushes_each_get_exactly_their_job_on_postgresql() {
    concurrent_pushes_each_get_exactly_their_job_on(Server::with_postgres("stress"));
}

fn concurrent_pushes_each_get_exactly_their_job_on(s: Server) {
    s.commit(&files_with("", ""), "base");
    s.push(&["HEAD:refs/heads/main", "HEAD:refs/heads/shared"]).assert_accepted();
    let clients: Vec<(TempDir, String)> = (0..20)
        .map(|i| {
            let dir = TempDir::new("client");
            git_ok(dir.path(), &["clone", "-q", "-b", "main", &s.url(), "c"]);
            let work = dir.join("c");
            std::fs::create_dir_all(work.join("app/code")).unwrap();
            std::fs::write(work.join(format!("app/code/C{i}.php")), format!("<?php // client {i}\n")).unwrap();
            git_ok(&work, &["add", "-A"]);
            git_ok(&work, &["commit", "-q", "-m", &format!("client {i}")]);
            let branch = if i % 2 == 0 { format!("own-{i}") } else { "shared".to_owned() };
            (dir, branch)
        })
        .collect();
    let barrier = std::sync::Barrier::new(clients.len());
    let results: Vec<(String, String, bool)> = std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter()
            .map(|(dir, branch)| {
                let barrier = &barrier;
                scope.spawn(move || {
                    let work = dir.join("c");
                    let commit = git_ok(&work, &["rev-parse", "HEAD"]);
                    barrier.wait();
                    let out = git(&work, &["push", "-q", "origin", &format!("HEAD:refs/heads/{branch}")]);
                    if std::env::var_os("PUSHGATE_DEBUG").is_some() {
                        eprintln!("{branch}: {}", String::from_utf8_lossy(&out.stderr));
                    }
                    (branch.clone(), commit, out.status.success())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let accepted: Vec<&(String, String, bool)> = results.iter().filter(|r| r.2).collect();
    assert_eq!(
        accepted.iter().filter(|r| r.0.starts_with("own-")).count(),
        10,
        "every own branch is accepted: {results:?}"
    );
    assert!(accepted.iter().any(|r| r.0 == "shared"), "one shared push wins: {results:?}");

    let jobs = s.jobs();
    let by_id: HashMap<i64, &Value> = jobs.iter().map(|j| (j["id"].as_i64().unwrap(), j)).collect();
    let mut seen = HashSet::new();
    for job in &jobs {
        let key = (job["ref"].as_str().unwrap().to_owned(), job["commit"].as_str().unwrap().to_owned());
        assert!(seen.insert(key.clone()), "duplicated job for {key:?}");
    }
    for (branch, commit, ok) in &results {
        let mine = jobs_for(&jobs, commit);
        if !ok {
            assert!(mine.is_empty(), "a refused push to {branch} has a job: {mine:?}");
            continue;
        }
        assert_eq!(mine.len(), 1, "accepted push {commit} to {branch}: {jobs:#?}");
        let job = &mine[0];
        match job["state"].as_str().unwrap() {
            "pending" => {}
            "superseded" => {
                let by = by_id[&job["superseded_by"].as_i64().expect("superseded jobs name their successor")];
                assert_eq!(by["environment"], job["environment"]);
            }
            other => panic!("unexpected state {other}"),
        }
    }
    let mut pending = HashSet::new();
    for job in jobs.iter().filter(|j| j["state"] == "pending") {
        assert!(
            pending.insert(job["environment"].as_str().unwrap().to_owned()),
            "two pending jobs for one environment"
        );
    }
    assert_eq!(s.reservations(), 0);
    // The shared branch's pending job is for the commit the branch points at.
    let tip = s.server_ref("refs/heads/shared").unwrap();
    assert!(jobs
        .iter()
        .any(|j| j["environment"] == "shared" && j["state"] == "pending" && j["commit"] == tip.as_str()));
}

#[test]
fn a_postgresql_queue_that_cannot_be_reached_refuses_the_push() {
    let s = Server::new("pg-down");
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    git_ok(&s.bare, &["config", "pushgate.queue", &format!("postgres://pushgate:s3cret@127.0.0.1:{port}/queue")]);
    s.commit(&files_with("", ""), "good");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_refused_with(&[
        &format!("the build queue at postgres://pushgate:***@127.0.0.1:{port}/queue cannot be reached"),
        "is PostgreSQL running and reachable",
    ]);
    assert!(!push.output.contains("s3cret"), "the password stays out of the output: {}", push.output);
    assert_eq!(s.server_ref("refs/heads/main"), None);
    // A URL that is not PostgreSQL's is refused too, saying so.
    git_ok(&s.bare, &["config", "pushgate.queue", "mysql://root@127.0.0.1/queue"]);
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&["is not a postgres:// URL"]);
}

/// The runner's side of both stores, through the library: claims under leases, one running job
/// per environment, a lost lease fences its runner out, cancel.
#[test]
fn claims_leases_and_fencing_on_both_stores() {
    use pushgate::core::{CommitId, EnvName, RefUpdate, RepoId};
    use pushgate::queue::{JobState, Location, Receiver, RefLog, Reservation, Scope};
    use std::time::Duration;

    struct Tips(HashMap<String, CommitId>);
    impl RefLog for Tips {
        fn was_updated(&self, _: &RepoId, _: &str, _: &CommitId, _: &CommitId) -> Option<bool> {
            Some(true)
        }
        fn tip(&self, _: &RepoId, r: &str) -> Option<CommitId> {
            self.0.get(r).cloned()
        }
    }
    let dir = TempDir::new("claims");
    let (url, db) = crate::support::create_database("claims");
    for location in [Location::Sqlite(dir.path().to_owned()), Location::Postgres(url)] {
        let mut q = location.open(Duration::from_secs(5)).unwrap();
        let receiver = Receiver { host: "h".into(), pid: 1, started: None };
        for (branch, c) in [("main", "a"), ("feature", "b"), ("main", "c")] {
            let commit = CommitId::parse(&c.repeat(40)).unwrap();
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
                pusher: Some("alice".into()),
            };
            q.reserve(std::slice::from_ref(&r)).unwrap();
            let tips = Tips([(r.ref_name.clone(), commit)].into());
            let update = RefUpdate { name: r.ref_name.clone(), old: r.old_commit.clone(), new: r.new_commit.clone() };
            let jobs = q.promote(&r.repo, &[update], &receiver, &tips).unwrap();
            assert_eq!(jobs.len(), 1, "{location}");
            assert_eq!(jobs[0].pusher.as_deref(), Some("alice"));
        }
        let states: Vec<JobState> = q.jobs().unwrap().iter().map(|j| j.state).collect();
        assert_eq!(states, [JobState::Superseded, JobState::Pending, JobState::Pending], "{location}");
        let lease = Duration::from_secs(60);
        let all = Scope::default();
        // A deploying runner takes nothing that is not built yet.
        let deploy_main = Scope {
            build: false,
            deploy: true,
            environments: Some(vec![EnvName::parse("main").unwrap()]),
            per_project: None,
        };
        assert!(q.claim("d1", lease, &deploy_main).unwrap().is_none(), "nothing built yet on {location}");
        // A build runner builds the oldest job (feature's) and hands it on; main's deploying
        // runner does not take it.
        let build = Scope { build: true, deploy: false, environments: None, per_project: None };
        let feature = q.claim("b1", lease, &build).unwrap().unwrap();
        assert_eq!(feature.environment.as_str(), "feature", "{location}");
        assert!(q.handoff(feature.id, "b1").unwrap());
        assert!(!q.handoff(feature.id, "b1").unwrap(), "handed on once on {location}");
        assert!(q.claim("d1", lease, &deploy_main).unwrap().is_none(), "not main's on {location}");
        let main = q.claim("b1", lease, &build).unwrap().unwrap();
        assert_eq!(main.environment.as_str(), "main", "{location}");
        assert!(q.handoff(main.id, "b1").unwrap());
        assert!(q.claim("b1", lease, &build).unwrap().is_none(), "nothing left to build on {location}");
        let deploying = q.claim("d1", lease, &deploy_main).unwrap().unwrap();
        assert_eq!((deploying.id, deploying.built_by.as_deref()), (main.id, Some("b1")), "{location}");
        assert!(q.finish(deploying.id, "d1", JobState::Succeeded, Some("1")).unwrap());
        let done = q.job(deploying.id).unwrap().unwrap();
        assert_eq!((done.built_by.as_deref(), done.deployed_by.as_deref()), (Some("b1"), Some("d1")), "{location}");
        // A new push of main.
        let commit = CommitId::parse(&"d".repeat(40)).unwrap();
        let r = Reservation {
            repo: RepoId::new("/r"),
            ref_name: "refs/heads/main".into(),
            environment: EnvName::parse("main").unwrap(),
            old_commit: CommitId::parse(&"c".repeat(40)).unwrap(),
            new_commit: commit.clone(),
            topology: "{}".into(),
            changes: "[]".into(),
            plan: "{}".into(),
            receiver: receiver.clone(),
            pusher: None,
        };
        q.reserve(std::slice::from_ref(&r)).unwrap();
        let update = RefUpdate { name: r.ref_name.clone(), old: r.old_commit.clone(), new: r.new_commit.clone() };
        q.promote(&r.repo, &[update], &receiver, &Tips([(r.ref_name.clone(), commit)].into())).unwrap();
        let first = q.claim("r1", lease, &all).unwrap().unwrap();
        let second = q.claim("r2", lease, &all).unwrap().unwrap();
        assert_ne!(first.environment, second.environment, "{location}");
        assert!(q.claim("r3", lease, &all).unwrap().is_none(), "nothing else is claimable on {location}");
        // r1 stops renewing; its lease runs out; r3 takes the job; r1 is fenced out.
        assert!(q.heartbeat(first.id, "r1", Duration::ZERO).unwrap());
        std::thread::sleep(Duration::from_millis(5));
        let again = q.claim("r3", lease, &all).unwrap().unwrap();
        assert_eq!(again.id, first.id, "{location}");
        assert!(!q.heartbeat(first.id, "r1", lease).unwrap(), "r1 lost it on {location}");
        assert!(!q.finish(first.id, "r1", JobState::Succeeded, None).unwrap(), "r1 cannot finish it on {location}");
        assert!(q.finish(first.id, "r3", JobState::Succeeded, Some("1")).unwrap());
        assert_eq!(q.job(first.id).unwrap().unwrap().release.as_deref(), Some("1"));
        assert_eq!(q.cancel(second.id).unwrap(), Some(JobState::Running));
        assert_eq!(q.cancel(second.id).unwrap(), None, "already ended on {location}");
        assert!(!q.heartbeat(second.id, "r2", lease).unwrap(), "a cancelled job stops on {location}");
        assert_eq!(q.projects().unwrap(), [RepoId::new("/r")]);
        // Logs shipped in chunks read back whole, or from an offset.
        q.append_log(first.id, 0, b"one\ntw").unwrap();
        q.append_log(first.id, 6, b"o\nthree\n").unwrap();
        q.append_log(first.id, 0, b"ignored: already kept").unwrap();
        assert_eq!(q.log_from(first.id, 0).unwrap(), b"one\ntwo\nthree\n", "{location}");
        assert_eq!(q.log_from(first.id, 4).unwrap(), b"two\nthree\n", "{location}");
        assert!(q.log_from(second.id, 0).unwrap().is_empty());
        let newest: Vec<_> = q.activities(None, None, 2).unwrap().iter().map(|j| j.id).collect();
        let expected: Vec<_> = q.jobs().unwrap().iter().rev().take(2).map(|j| j.id).collect();
        assert_eq!(newest, expected, "newest first on {location}");
    }
    crate::support::drop_database(&db);
}
