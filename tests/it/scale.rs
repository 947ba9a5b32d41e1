//! Runners on several machines: a PostgreSQL queue, the code fetched over git, slugs in an
//! S3-compatible store (moto's server) or a shared directory. Each runner has its own data
//! directory and cannot read the repository's path: it runs in a mount namespace of its own where
//! a tmpfs hides the bare repository, so it fetches over `git daemon` as a runner on another
//! machine would.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::push::{files_with, APP_FILE};
use crate::runner::{app_with_hooks, eventually};
use crate::support::{git_ok, runner_bin, Daemon, S3Server, Server, TempDir};

/// A runner on "another machine"; killed on drop.
struct Machine {
    child: Child,
    data: PathBuf,
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the machines keep slugs they share.
enum Slugs {
    S3(S3Server),
    Dir(PathBuf),
}

impl Slugs {
    fn arg(&self) -> String {
        match self {
            Slugs::S3(s3) => format!("s3://{}/slugs", s3.bucket),
            Slugs::Dir(dir) => dir.display().to_string(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Slugs::S3(s3) => s3.env(),
            Slugs::Dir(_) => Vec::new(),
        }
    }
}

impl Machine {
    fn start(s: &Server, data: &Path, slugs: &Slugs, args: &[&str]) -> Machine {
        std::fs::create_dir_all(data).unwrap();
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(data.with_extension("log")).unwrap();
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
            .args(["--slugs", &slugs.arg()])
            .args(args)
            .envs(s.queue_env())
            .envs(slugs.env())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Machine { child, data: data.to_owned() }
    }

    /// Pulls the plug: SIGKILL, no chance to return its jobs.
    fn kill(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
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

/// A git server with its PostgreSQL queue and `git daemon`, and the machines' directories.
struct Site {
    s: Server,
    _daemon: Daemon,
    machines: TempDir,
}

impl Site {
    fn new(name: &str) -> Site {
        let s = Server::with_postgres(name);
        let daemon = Daemon::start(s.dir.path());
        git_ok(&s.bare, &["config", "pushgate.url", &daemon.url("repo.git")]);
        Site { s, _daemon: daemon, machines: TempDir::new("machines") }
    }

    fn machine(&self, name: &str) -> PathBuf {
        self.machines.join(name)
    }

    /// `rounds` commits (a new tree each), each pushed to every branch without waiting. Returns
    /// each branch's last commit.
    fn push_rounds(&self, rounds: usize, branches: &[&'static str], app: &str) -> HashMap<&'static str, String> {
        let mut last = HashMap::new();
        for round in 0..rounds {
            let mut files = files_with(APP_FILE, app);
            let change = format!("<?php // round {round}\n");
            files.push(("app/code/Round.php", &change));
            let commit = self.s.commit(&files, &format!("round {round}"));
            for b in branches {
                self.s.push_with_options(&["pushgate.nowait"], &[&format!("HEAD:refs/heads/{b}")]).assert_accepted();
                last.insert(*b, commit.clone());
            }
        }
        last
    }

    fn settle(&self, jobs: usize) {
        let settled = || {
            let all = self.s.jobs();
            all.len() == jobs && all.iter().all(|j| j["state"] != "pending" && j["state"] != "running")
        };
        assert!(
            eventually(300, settled),
            "every job ends: {:#?}",
            self.s
                .jobs()
                .iter()
                .map(|j| (j["id"].clone(), j["environment"].clone(), j["state"].clone()))
                .collect::<Vec<_>>(),
        );
    }

    /// Every environment runs its branch's last commit on the machine that serves it, and only
    /// there; every job succeeded or was superseded.
    fn assert_deployed(&self, placement: &[(&Machine, &[&str])], last: &HashMap<&str, String>) {
        for (machine, names) in placement {
            let envs = machine.envs(&self.s);
            for name in *names {
                let env =
                    envs.iter().find(|e| e["environment"] == *name).unwrap_or_else(|| panic!("{name}: {envs:#?}"));
                assert_eq!(env["commit"], last[name].as_str(), "{name}");
            }
            assert_eq!(envs.len(), names.len(), "only its own environments: {envs:#?}");
        }
        for job in self.s.jobs() {
            assert!(matches!(job["state"].as_str(), Some("succeeded" | "superseded")), "{job:#}");
        }
    }

    /// The slugs packed, each once at most (path, size in bytes), read from the jobs' logs.
    fn packed(&self) -> HashMap<String, u64> {
        let mut packed = HashMap::new();
        for job in self.s.jobs() {
            for line in log(&self.s, job["id"].as_i64().unwrap()).lines().filter(|l| l.contains("[slug] Slug ")) {
                let rest = line.split("[slug] Slug ").nth(1).unwrap();
                let (path, size) = rest.split_once(" (").unwrap();
                let size = size.trim_end_matches(" bytes)").parse().unwrap();
                let name = Path::new(path).file_name().unwrap().to_string_lossy().into_owned();
                assert!(packed.insert(name, size).is_none(), "{path} packed twice");
            }
        }
        packed
    }
}

/// The S3 objects as (name, size), from the bucket's listing.
fn objects(s3: &S3Server) -> HashMap<String, u64> {
    let out = Command::new("curl")
        .args(["-sf", &format!("{}/{}?list-type=2&prefix=slugs/", s3.endpoint(), s3.bucket)])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    body.split("<Contents>")
        .skip(1)
        .map(|c| {
            let field = |tag: &str| c.split(&format!("<{tag}>")).nth(1).unwrap().split('<').next().unwrap().to_owned();
            (field("Key").trim_start_matches("slugs/").to_owned(), field("Size").parse().unwrap())
        })
        .collect()
}

const BRANCHES: [&str; 5] = ["main", "b1", "b2", "b3", "b4"];

#[test]
fn fifty_pushes_to_five_branches_built_once_per_tree_and_deployed_where_each_environment_lives() {
    let site = Site::new("scale");
    let slugs = Slugs::S3(S3Server::start("pushgate-slugs"));
    let _build = Machine::start(&site.s, &site.machine("builder"), &slugs, &["--role", "build"]);
    let east =
        Machine::start(&site.s, &site.machine("east"), &slugs, &["--role", "deploy", "--environments", "main,b1,b2"]);
    let west = Machine::start(&site.s, &site.machine("west"), &slugs, &["--role", "deploy", "--environments", "b3,b4"]);
    let last = site.push_rounds(10, &BRANCHES, &app_with_hooks("echo building round", "true"));
    site.settle(50);
    site.assert_deployed(&[(&east, &["main", "b1", "b2"]), (&west, &["b3", "b4"])], &last);
    // Every job ran once: built by the builder, deployed by its environment's machine.
    for job in site.s.jobs().iter().filter(|j| j["state"] == "succeeded") {
        let (built, deployed) = (job["built_by"].as_str().unwrap_or(""), job["deployed_by"].as_str().unwrap_or(""));
        assert!(!built.is_empty() && !deployed.is_empty() && built != deployed, "{job:#}");
        assert_eq!(job["runner"], serde_json::json!({"build": built, "deploy": deployed}), "{job:#}");
        let text = log(&site.s, job["id"].as_i64().unwrap());
        assert_eq!(text.matches("[job] Job #").count(), 2, "claimed once to build, once to deploy: {text}");
    }
    // Slugs built once per tree, and what was packed is what the store holds.
    let Slugs::S3(s3) = &slugs else { unreachable!() };
    let packed = site.packed();
    assert!(!packed.is_empty() && packed.len() <= 10, "at most one slug per tree (10 trees): {packed:?}");
    assert_eq!(objects(s3), packed, "every slug packed is stored whole, and nothing else");
    // The deploying machines fetched what they deployed; each machine fetched the code over git.
    for name in ["builder", "east", "west"] {
        let d = site.machine(name);
        assert!(d.join("mirrors").read_dir().unwrap().count() == 1, "{name} fetched over git");
    }
    for machine in [&east, &west] {
        let cached: HashSet<String> = std::fs::read_dir(machine.data.join("slugs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!cached.is_empty() && cached.iter().all(|c| packed.contains_key(c)), "{cached:?}");
    }
}

#[test]
fn runners_killed_mid_build_and_mid_deploy_lose_no_job_and_deploy_no_environment_twice_at_once() {
    let site = Site::new("scale-kill");
    let slugs = Slugs::S3(S3Server::start("pushgate-slugs"));
    let marks = site.machines.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // Hooks run as the project's user: the marks are theirs to write.
    std::fs::set_permissions(&marks, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let m = marks.display();
    // The first build and the first deploy of `main` hang, so that their runners are killed in
    // them. Each deploy hook checks that no other deploy hook of its environment is alive.
    let build = format!("if mkdir {m}/first-build 2>/dev/null; then sleep 60; fi");
    let env = "$MAGENTO_CLOUD_ENVIRONMENT";
    let deploy = format!(
        "if [ -e {m}/running-{env} ] && kill -0 $(cat {m}/running-{env}) 2>/dev/null; then echo {env} >> {m}/overlaps; fi\n\
         echo $$ > {m}/running-{env}\n\
         if [ {env} = main ] && mkdir {m}/first-deploy 2>/dev/null; then sleep 60; fi\n\
         echo {env} >> {m}/deployed"
    );
    // The hooks talk to the test through the marks on the host: no sandbox (sandbox.rs shows that
    // a sandboxed hook dies with its runner).
    let builder = Machine::start(&site.s, &site.machine("builder"), &slugs, &["--role", "build", "--no-sandbox"]);
    let east_args = ["--role", "deploy", "--environments", "main,b1,b2", "--no-sandbox"];
    let east = Machine::start(&site.s, &site.machine("east"), &slugs, &east_args);
    let west = Machine::start(
        &site.s,
        &site.machine("west"),
        &slugs,
        &["--role", "deploy", "--environments", "b3,b4", "--no-sandbox"],
    );
    let last = site.push_rounds(4, &BRANCHES, &app_with_hooks(&build, &deploy));

    // The builder dies mid-build; another machine takes its place.
    assert!(eventually(60, || marks.join("first-build").exists()), "a build started: {}", log(&site.s, 1));
    builder.kill();
    let _builder2 = Machine::start(&site.s, &site.machine("builder2"), &slugs, &["--role", "build", "--no-sandbox"]);
    // East dies mid-deploy of `main` and comes back (the machine restarts with its data).
    assert!(eventually(120, || marks.join("first-deploy").exists()), "main's deploy started");
    east.kill();
    let east = Machine::start(&site.s, &site.machine("east"), &slugs, &east_args);

    site.settle(20);
    site.assert_deployed(&[(&east, &["main", "b1", "b2"]), (&west, &["b3", "b4"])], &last);
    assert!(!marks.join("overlaps").exists(), "a deploy ran beside another of its environment");
    // The two interrupted jobs were taken over (claimed again), none was lost or run twice.
    let mut taken_over = 0;
    for job in site.s.jobs().iter().filter(|j| j["state"] == "succeeded") {
        let text = log(&site.s, job["id"].as_i64().unwrap());
        let claims = text.matches("[job] Job #").count();
        assert!(claims == 2 || claims == 3, "job {}: {claims} claims: {text}", job["id"]);
        taken_over += usize::from(claims == 3);
    }
    assert!(taken_over <= 2, "only the interrupted jobs were claimed again: {taken_over}");
    let Slugs::S3(s3) = &slugs else { unreachable!() };
    assert_eq!(objects(s3), site.packed(), "no half slug in the store: what it holds is what was packed");
}

#[test]
fn a_shared_directory_of_slugs_serves_a_build_runner_and_a_deploy_runner() {
    let site = Site::new("scale-dir");
    let shared = site.machines.join("shared-slugs");
    let slugs = Slugs::Dir(shared.clone());
    let _build = Machine::start(&site.s, &site.machine("builder"), &slugs, &["--role", "build"]);
    let deployer = Machine::start(&site.s, &site.machine("deployer"), &slugs, &["--role", "deploy"]);
    let last = site.push_rounds(2, &["main"], &app_with_hooks("echo building", "true"));
    site.settle(2);
    site.assert_deployed(&[(&deployer, &["main"])], &last);
    let packed = site.packed();
    let stored: HashSet<String> =
        std::fs::read_dir(&shared).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(stored, packed.keys().cloned().collect(), "slugs are packed in the shared directory");
    assert!(!deployer.data.join("slugs").exists(), "the deployer reads them where they are");
}
