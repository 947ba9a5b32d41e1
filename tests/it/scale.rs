//! Runners on several machines: a PostgreSQL queue, the code fetched over git, slugs in a
//! shared directory. Each runner has its own data directory and cannot read the repository's
//! path: it runs in a mount namespace of its own where a tmpfs hides the bare repository, so it
//! fetches over `git daemon` as a runner on another machine would.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::push::{files_with, APP_FILE};
use crate::runner::{app_with_hooks, eventually};
use crate::support::{git_ok, runner_bin, Daemon, Server, TempDir};

/// A runner on "another machine"; killed on drop.
struct Machine {
    child: Child,
    data: std::path::PathBuf,
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Machine {
    fn start(s: &Server, data: &Path, slugs: &Path, args: &[&str]) -> Machine {
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                "mount -t tmpfs tmpfs \"$0\" && exec \"$@\"",
            ])
            .arg(&s.bare)
            .arg(runner_bin())
            .args(["serve", "--lease", "5", "--data"])
            .arg(data)
            .arg("--slugs")
            .arg(slugs)
            .args(args)
            .envs(s.queue_env())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.with_extension("log")).unwrap())
            .spawn()
            .unwrap();
        Machine { child, data: data.to_owned() }
    }

    fn envs(&self, s: &Server) -> Vec<Value> {
        let out = Command::new(runner_bin())
            .args(["envs", "--json", "--data"])
            .arg(&self.data)
            .envs(s.queue_env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A job's log as the git server's console and CLI show it.
fn log(s: &Server, id: i64) -> String {
    let out = Command::new(runner_bin())
        .args(["logs", &id.to_string(), "--data"])
        .arg(&s.data)
        .envs(s.queue_env())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn fifty_pushes_to_five_branches_built_once_per_tree_and_deployed_where_each_environment_lives() {
    let s = Server::with_postgres("scale");
    let daemon = Daemon::start(s.dir.path());
    git_ok(&s.bare, &["config", "pushgate.url", &daemon.url("repo.git")]);
    let machines = TempDir::new("machines");
    let slugs = machines.join("slugs");
    let (builder, east, west) = (machines.join("builder"), machines.join("east"), machines.join("west"));
    for d in [&builder, &east, &west] {
        std::fs::create_dir_all(d).unwrap();
    }
    let _build = Machine::start(&s, &builder, &slugs, &["--role", "build"]);
    let p1 = Machine::start(&s, &east, &slugs, &["--role", "deploy", "--environments", "main,b1,b2"]);
    let p2 = Machine::start(&s, &west, &slugs, &["--role", "deploy", "--environments", "b3,b4"]);
    let branches = ["main", "b1", "b2", "b3", "b4"];
    let mut last = HashMap::new();
    let app = app_with_hooks("echo building round", "true");
    for round in 0..10 {
        let mut files = files_with(APP_FILE, &app);
        let change = format!("<?php // round {round}\n");
        files.push(("app/code/Round.php", &change));
        let commit = s.commit(&files, &format!("round {round}"));
        for b in branches {
            s.push_with_options(&["pushgate.nowait"], &[&format!("HEAD:refs/heads/{b}")]).assert_accepted();
            last.insert(b, commit.clone());
        }
    }
    let settled = || {
        let jobs = s.jobs();
        jobs.len() == 50 && jobs.iter().all(|j| j["state"] != "pending" && j["state"] != "running")
    };
    assert!(
        eventually(240, settled),
        "every job ends: {:#?}\n{}",
        s.jobs().iter().map(|j| (j["id"].clone(), j["environment"].clone(), j["state"].clone())).collect::<Vec<_>>(),
        std::fs::read_to_string(east.with_extension("log")).unwrap_or_default()
    );
    let jobs = s.jobs();
    // Every environment runs its branch's last commit, on the machine that serves it.
    for (machine, names) in [(&p1, &["main", "b1", "b2"][..]), (&p2, &["b3", "b4"][..])] {
        let envs = machine.envs(&s);
        for name in names {
            let env = envs.iter().find(|e| e["environment"] == *name).unwrap_or_else(|| panic!("{name}: {envs:#?}"));
            assert_eq!(env["commit"], last[name].as_str(), "{name}");
        }
        assert_eq!(envs.len(), names.len(), "only its own environments: {envs:#?}");
    }
    // Every job ran once: built by the builder, deployed by its environment's machine.
    for job in jobs.iter().filter(|j| j["state"] == "succeeded") {
        let (built, deployed) = (job["built_by"].as_str().unwrap_or(""), job["deployed_by"].as_str().unwrap_or(""));
        assert!(!built.is_empty() && !deployed.is_empty() && built != deployed, "{job:#}");
        let text = log(&s, job["id"].as_i64().unwrap());
        assert_eq!(
            text.matches("[job] Job #").count(),
            2,
            "claimed once to build, once to deploy: {text}\n{}",
            std::fs::read_to_string(east.with_extension("log")).unwrap_or_default()
        );
    }
    for job in &jobs {
        assert!(matches!(job["state"].as_str(), Some("succeeded" | "superseded")), "{job:#}");
    }
    // Slugs built once per tree: each slug packed by one job at most.
    let mut packed = HashSet::new();
    for job in &jobs {
        for line in log(&s, job["id"].as_i64().unwrap()).lines().filter(|l| l.contains("[slug] Slug ")) {
            let slug = line.split("[slug] Slug ").nth(1).unwrap().split(' ').next().unwrap().to_owned();
            assert!(packed.insert(slug.clone()), "{slug} packed twice");
            assert!(slug.starts_with(&slugs.display().to_string()), "in the shared directory: {slug}");
        }
    }
    assert!(!packed.is_empty() && packed.len() <= 10, "at most one slug per tree (10 trees): {packed:?}");
    // The runners fetched: each has a mirror of the repository.
    for d in [&builder, &east, &west] {
        assert!(d.join("mirrors").read_dir().unwrap().count() == 1, "{} fetched over git", d.display());
    }
}
