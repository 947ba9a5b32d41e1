//! Hooks in their sandbox, attacked as a malicious developer of one project would on a server
//! with two: every attempt must fail, and the legitimate version of each step must work.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::push::{files_with, APP_FILE};
use crate::runner::{app_with_hooks, envs, job_state, log_of, serve};
use crate::support::{runner_bin, Server};

/// A shell line that tries `command` and says whether it got through. (The words it prints are
/// split in the script, which the log shows too.)
fn attempt(name: &str, command: &str) -> String {
    format!("if ( {command} ) >/dev/null 2>&1; then echo 'ESC''APED {name}'; else echo 'blo''cked {name}'; fi")
}

/// A shell line that must succeed (the hook runs with `sh -e`).
fn allowed(name: &str, command: &str) -> String {
    format!("{command}\necho 'allo''wed {name}'")
}

/// The names of the attempts in `script` that the log shows blocked; panics on any escape.
fn assert_all_blocked(log: &str, names: &[&str]) {
    assert!(!log.contains("ESCAPED"), "{log}");
    for name in names {
        assert!(log.contains(&format!("blocked {name}")), "{name} was not tried: {log}");
    }
}

/// Commits `build` and `deploy` as the app's hooks, pushes them to main and runs the queue:
/// the job's log, once it succeeded.
fn deployed_with_hooks(s: &Server, build: &str, deploy: &str) -> String {
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks(build, deploy)), "hooks");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(s);
    let (id, state) = job_state(s, &commit);
    let log = log_of(s, id);
    assert_eq!(state, "succeeded", "{log}");
    log
}

/// A server with another project (`other`) deployed to `staging`, holding secrets; returns the
/// other project's bare repository and its release.
fn with_a_victim(s: &Server) -> (PathBuf, PathBuf) {
    let other = s.other_project("other");
    std::fs::create_dir_all(other.join("pushgate")).unwrap();
    std::fs::write(other.join("pushgate/variables.json"), r#"{"project": {"env:SECRET": "the-other-secret"}}"#)
        .unwrap();
    s.commit(&files_with(APP_FILE, &app_with_hooks("true", "echo theirs > var/theirs.txt")), "victim");
    s.push_to(&format!("file://{}", other.display()), &["HEAD:refs/heads/staging"]).assert_accepted();
    serve(s);
    let staging = envs(s).into_iter().find(|e| e["environment"] == "staging").expect("the victim is deployed");
    (other, PathBuf::from(staging["path"].as_str().unwrap()))
}

/// Files under `dir` with their contents, to show nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else if path.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "disks") {
                // An app's disk image (root's, gigabytes, sparse): its files are seen where it is mounted.
                continue;
            } else {
                all.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
            }
        }
    }
    all.sort();
    all
}

#[test]
fn a_build_hook_sees_its_own_build_and_nothing_of_the_server() {
    let s = Server::new("sandbox-build");
    let (other, their_release) = with_a_victim(&s);
    let queue = s.data.join("queue.sqlite3");
    let secrets = other.join("pushgate/variables.json");
    let their_mounts = their_release.join("mymagento/var");
    let before = (snapshot(&s.data.join("environments")), snapshot(&s.bare.join("hooks")), snapshot(&other));
    let attempts = [
        ("read-queue", format!("cat {}", queue.display())),
        ("write-queue", format!("echo x >> {}", queue.display())),
        ("list-data", format!("ls {} | grep -q queue", s.data.display())),
        ("read-other-variables", format!("cat {}", secrets.display())),
        ("list-bare-repository", format!("ls {}", s.bare.join("refs").display())),
        ("read-bare-repository", format!("cat {}", s.bare.join("HEAD").display())),
        ("write-repository-hooks", format!("echo evil > {}", s.bare.join("hooks/post-update").display())),
        ("write-other-repository-hooks", format!("echo evil > {}", other.join("hooks/post-update").display())),
        ("read-other-release", format!("cat {}", their_release.join("mymagento/.magento.app.yaml").display())),
        ("write-other-mounts", format!("echo evil > {}", their_mounts.join("evil.txt").display())),
        ("see-runner-processes", "ps -e | grep -q pushgate-runner".to_owned()),
    ];
    let mut build: Vec<String> = attempts.iter().map(|(name, command)| attempt(name, command)).collect();
    build.push(allowed("write-own-build", "mkdir -p pub && echo built > pub/built.txt"));
    build.push(allowed("own-tmp", "echo scratch > /tmp/scratch && cat /tmp/scratch"));
    build.push(allowed("system-tools", "ls /usr/bin/env && sh -c true"));
    let log = deployed_with_hooks(&s, &build.join("\n"), "true");
    assert_all_blocked(&log, &attempts.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    for name in ["write-own-build", "own-tmp", "system-tools"] {
        assert!(log.contains(&format!("allowed {name}")), "{log}");
    }
    assert!(!log.contains("the-other-secret"), "{log}");
    // What the build wrote is deployed; nothing of the other project or the repositories moved
    // (the new environment and its release aside).
    let main = envs(&s).into_iter().find(|e| e["environment"] == "main").unwrap();
    let release = PathBuf::from(main["path"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(release.join("mymagento/pub/built.txt")).unwrap(), "built\n");
    assert_eq!(snapshot(&s.bare.join("hooks")), before.1);
    assert_eq!(snapshot(&other), before.2);
    let theirs = |all: &[(PathBuf, Vec<u8>)]| {
        all.iter()
            .filter(|(p, _)| p.starts_with(their_release.ancestors().nth(3).unwrap()))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(theirs(&snapshot(&s.data.join("environments"))), theirs(&before.0));
}

#[test]
fn a_deploy_hook_writes_its_mounts_and_nothing_else() {
    let s = Server::new("sandbox-deploy");
    let (other, their_release) = with_a_victim(&s);
    let their_var = their_release.join("mymagento/var");
    let theirs_before = std::fs::read_to_string(their_var.join("theirs.txt")).unwrap();
    let attempts = [
        ("write-own-release", "echo evil > index-evil.php".to_owned()),
        ("replace-own-file", "echo evil > .magento.app.yaml".to_owned()),
        ("chmod-own-release", "chmod u+w .".to_owned()),
        ("write-current-release", "echo evil > ../../../current/mymagento/evil.php".to_owned()),
        ("write-other-mounts", format!("echo evil > {}", their_var.join("theirs.txt").display())),
        ("read-other-release", format!("ls {}", their_release.display())),
        ("write-repository-hooks", format!("echo evil > {}", other.join("hooks/post-update").display())),
        ("read-queue", format!("cat {}", s.data.join("queue.sqlite3").display())),
    ];
    let mut deploy: Vec<String> = attempts.iter().map(|(name, command)| attempt(name, command)).collect();
    deploy.push(allowed("write-own-mount", "echo ours > var/ours.txt"));
    deploy.push(allowed("read-own-release", "cat .magento.app.yaml > /dev/null"));
    let log = deployed_with_hooks(&s, "true", &deploy.join("\n"));
    assert_all_blocked(&log, &attempts.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    assert!(log.contains("allowed write-own-mount") && log.contains("allowed read-own-release"), "{log}");
    let main = envs(&s).into_iter().find(|e| e["environment"] == "main").unwrap();
    let app = PathBuf::from(main["path"].as_str().unwrap()).join("mymagento");
    assert_eq!(std::fs::read_to_string(app.join("var/ours.txt")).unwrap(), "ours\n");
    assert!(!app.join("index-evil.php").exists());
    assert_eq!(std::fs::read_to_string(their_var.join("theirs.txt")).unwrap(), theirs_before);
    assert!(!other.join("hooks/post-update").exists());
}

/// The host's processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let out = Command::new("ps").args(["-eo", "pid,args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle) && !l.contains("ps -eo"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_process_outlives_its_hook() {
    let s = Server::new("sandbox-leftovers");
    // Each way of staying behind, with a duration no other test uses, so that it can be found.
    let build = [
        // The legitimate version: a background step the hook waits for.
        "(sleep 0.2; echo waited > waited.txt) &",
        "step=$!",
        "sleep 1001 &",
        "(sleep 1002 &) &",
        "sh -c 'sleep 1003 & exit 0' &",
        "setsid sleep 1004 &",
        "nohup sleep 1005 >/dev/null 2>&1 &",
        "wait $step",
        "cat waited.txt",
    ];
    let log = deployed_with_hooks(&s, &build.join("\n"), "sleep 1006 &\nsetsid sleep 1007 &");
    assert!(log.contains("waited"), "{log}");
    for n in 1001..=1007 {
        let left = processes_with(&format!("sleep {n}"));
        assert!(left.is_empty(), "sleep {n} outlived its hook: {left:?}");
    }
}

/// A one-line HTTP server on the host's loopback: what a build's `curl` reaches.
fn http_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        if let Ok((mut stream, _)) = listener.accept() {
            use std::io::{Read, Write};
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\npackage");
        }
    });
    (port, handle)
}

#[test]
fn the_build_goes_out_through_its_proxy_where_the_admin_allows_and_never_to_the_hosts_loopback() {
    let s = Server::new("sandbox-network");
    // A service on the host's loopback (a database, the runner's API): not for the build.
    let (port, _server) = http_server();
    let direct = format!("curl -sf --max-time 5 http://127.0.0.1:{port}/");
    let through_proxy = |port: u16| {
        format!("curl -sf --max-time 5 --noproxy '' --proxytunnel -x \"$https_proxy\" http://127.0.0.1:{port}/ > fetched.txt")
    };
    let log = deployed_with_hooks(&s, &attempt("loopback", &direct), "true");
    assert_all_blocked(&log, &["loopback"]);
    // Where the admin allows it, the build reaches it through its proxy, as composer and npm reach
    // their registries (they read `https_proxy`); by default, HTTPS to public addresses.
    let (port, server) = http_server();
    std::fs::create_dir_all(s.bare.join("pushgate")).unwrap();
    let policy = format!(r#"{{"egress": ["127.0.0.1:{port}"]}}"#);
    std::fs::write(s.bare.join("pushgate/sandbox.json"), &policy).unwrap();
    deployed_with_hooks(&s, &allowed("network", &through_proxy(port)), "true");
    server.join().unwrap();
    // The admin turns this project's build network off: no way out at all.
    let (port, _server) = http_server();
    let policy = format!(r#"{{"network": false, "egress": ["127.0.0.1:{port}"]}}"#);
    std::fs::write(s.bare.join("pushgate/sandbox.json"), &policy).unwrap();
    let tries = [
        attempt("network", &through_proxy(port)),
        attempt("direct", &format!("curl -sf --max-time 5 http://127.0.0.1:{port}/")),
    ]
    .join("\n");
    let log = deployed_with_hooks(&s, &tries, "true");
    assert_all_blocked(&log, &["network", "direct"]);
}

#[test]
fn a_fork_bomb_or_a_memory_hog_fails_its_job_with_the_cause_and_the_runner_goes_on() {
    let s = Server::new("sandbox-limits");
    std::fs::create_dir_all(s.bare.join("pushgate")).unwrap();
    std::fs::write(s.bare.join("pushgate/sandbox.json"), r#"{"processes": 64, "memory_mb": 64}"#).unwrap();
    // The legitimate version first: a few processes and a little memory are fine.
    let modest =
        "for i in 1 2 3 4 5 6 7 8; do sleep 0.1 & done; wait\nhead -c 8000000 /dev/zero | tail -c 8000000 | wc -c";
    let fine = s.commit(&files_with(APP_FILE, &app_with_hooks(modest, "true")), "modest");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let bomb = "bomb() { bomb | bomb & }\nbomb\nsleep 3";
    let bombed = s.commit(&files_with(APP_FILE, &app_with_hooks(bomb, "true")), "fork bomb");
    s.push(&["HEAD:refs/heads/bomb"]).assert_accepted();
    let hog = "head -c 400000000 /dev/zero | tail -c 400000000 | wc -c";
    let hogged = s.commit(&files_with(APP_FILE, &app_with_hooks(hog, "true")), "memory hog");
    s.push(&["HEAD:refs/heads/hog"]).assert_accepted();
    let after = s.commit(&files_with(APP_FILE, &app_with_hooks("echo still building", "true")), "after");
    s.push(&["HEAD:refs/heads/after"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &fine);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    let (id, state) = job_state(&s, &bombed);
    let log = log_of(&s, id);
    assert_eq!(state, "failed", "{log}");
    assert!(log.contains("too many processes: the hook reached its limit of 64 processes"), "{log}");
    let (id, state) = job_state(&s, &hogged);
    let log = log_of(&s, id);
    assert_eq!(state, "failed", "{log}");
    assert!(log.contains("out of memory: the hook's processes reached their limit of 64 MB"), "{log}");
    // The runner went on to the next job, and nothing of the bomb is left.
    let (id, state) = job_state(&s, &after);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    assert!(processes_with("bomb").is_empty());
}

#[test]
fn a_runner_that_cannot_build_the_sandbox_refuses_to_run_hooks_unless_told() {
    let s = Server::new("sandbox-missing");
    s.commit(&files_with("", ""), "shop");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    // A host without bubblewrap: a PATH with every program but bwrap.
    let bin = s.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for dir in ["/usr/sbin", "/usr/bin"] {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_name() != "bwrap" {
                let _ = std::os::unix::fs::symlink(entry.path(), bin.join(entry.file_name()));
            }
        }
    }
    let serve_without = |extra: &[&str]| {
        Command::new(runner_bin())
            .args(["serve", "--until-idle"])
            .args(extra)
            .arg("--data")
            .arg(&s.data)
            .env("PATH", &bin)
            .output()
            .unwrap()
    };
    let out = serve_without(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bubblewrap is not installed") && stderr.contains("--no-sandbox"), "{stderr}");
    assert_eq!(s.jobs()[0]["state"], "pending", "nothing was claimed");
    // The admin opts out, knowingly: the job runs, and its log says how.
    let out = serve_without(&["--no-sandbox"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.jobs()[0]["state"], "succeeded");
    assert!(log_of(&s, 1).contains("W: this runner runs hooks without a sandbox (--no-sandbox)"), "{}", log_of(&s, 1));
}

#[test]
fn a_hook_dies_with_its_runner_and_at_its_time_limit() {
    let s = Server::new("sandbox-ends");
    let build = "echo started\nsleep 1011 &\nsetsid sleep 1012 &\nsleep 1013";
    let killed = s.commit(&files_with(APP_FILE, &app_with_hooks(build, "true")), "slow");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let mut dying = crate::runner::spawn_dying_runner(&s);
    assert!(crate::runner::eventually(30, || log_of(&s, 1).contains("started")), "{}", log_of(&s, 1));
    dying.kill().unwrap(); // SIGKILL: the runner cannot clean up; the kernel does
    dying.wait().unwrap();
    for n in 1011..=1013 {
        assert!(
            crate::runner::eventually(5, || processes_with(&format!("sleep {n}")).is_empty()),
            "sleep {n} outlived its runner"
        );
    }
    // At the project's time limit, the whole sandbox goes.
    std::fs::create_dir_all(s.bare.join("pushgate")).unwrap();
    std::fs::write(s.bare.join("pushgate/sandbox.json"), r#"{"time_limit_s": 1}"#).unwrap();
    let build = "sleep 1014 &\nsetsid sleep 1015 &\nsleep 1016";
    let limited = s.commit(&files_with(APP_FILE, &app_with_hooks(build, "true")), "too slow");
    s.push(&["HEAD:refs/heads/other"]).assert_accepted();
    std::thread::sleep(std::time::Duration::from_millis(2500)); // the dead runner's lease runs out
    serve(&s);
    let (id, state) = job_state(&s, &limited);
    let log = log_of(&s, id);
    assert_eq!(state, "failed", "{log}");
    assert!(log.contains("Hook `build` killed after its time limit of 1 s"), "{log}");
    for n in 1014..=1016 {
        assert!(processes_with(&format!("sleep {n}")).is_empty(), "sleep {n} outlived its time limit");
    }
    // The killed runner's job was taken over, and its retry met the same limit.
    assert_eq!(job_state(&s, &killed).1, "failed");
}
