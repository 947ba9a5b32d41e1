//! Faults the platform must survive, each reproduced on the real parts: deployments at the same
//! time, nginx killed under a running runner, pid files that name someone else after a reboot,
//! a PostgreSQL queue restarted under an idle runner, a build that fills the disk.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::router::{alive, project, router_file, Routed, APP};
use crate::runner::{eventually, log_of, runner};
use crate::support::{git_ok, runner_bin, Server, SmallDisk, TempDir};

/// Jobs of `commit`, once they have all ended (None while one runs).
fn ended_jobs(s: &Server, commit: &str, count: usize) -> Option<Vec<serde_json::Value>> {
    let jobs: Vec<_> = s.jobs().into_iter().filter(|j| j["commit"] == commit).collect();
    let ended = |j: &serde_json::Value| !matches!(j["state"].as_str(), Some("pending" | "running"));
    (jobs.len() == count && jobs.iter().all(ended)).then_some(jobs)
}

/// `branches` pushed in one push, `rounds` times, with a runner of as many workers: every
/// deployment succeeds and every environment serves its round's page.
fn simultaneous_deployments(label: &str, branches: &[&str], rounds: usize) {
    let workers = branches.len().to_string();
    let r = Routed::with_serve_args(label, &["--concurrency", &workers]);
    let refs: Vec<String> = branches.iter().map(|b| format!("HEAD:refs/heads/{b}")).collect();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let mut failed = Vec::new();
    for round in 0..rounds {
        let mut files = project(APP, &format!("round {round}"));
        files.retain(|(p, _)| *p != ".magento/services.yaml");
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
        let commit = r.s.commit(&files, &format!("round {round}"));
        r.s.push_with_options(&["pushgate.nowait"], &refs).assert_accepted();
        let mut jobs = None;
        assert!(
            eventually(120, || {
                jobs = ended_jobs(&r.s, &commit, branches.len());
                jobs.is_some()
            }),
            "round {round}: the jobs did not end\n{}",
            r.runner_log()
        );
        let jobs = jobs.unwrap();
        for job in &jobs {
            if job["state"] != "succeeded" {
                let id = job["id"].as_i64().unwrap();
                failed.push(format!("round {round}, job #{id}:\n{}", log_of(&r.s, id)));
            }
        }
        for branch in branches {
            let page = r.get(&r.host(branch), "/style.css");
            let logs: Vec<String> = jobs.iter().map(|j| log_of(&r.s, j["id"].as_i64().unwrap())).collect();
            assert!(
                page.body.contains(&format!("round {round} ")),
                "round {round}, {branch}: {page:?}\n{}\n{}",
                logs.join("\n"),
                r.runner_log()
            );
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} deployments failed:\n{}",
        failed.len(),
        rounds * branches.len(),
        failed.join("\n")
    );
}

#[test]
fn two_simultaneous_deployments_of_one_project_fail_none_of_50() {
    simultaneous_deployments("two-at-once", &["main", "feature"], 50);
}

#[test]
fn three_simultaneous_deployments_of_one_project_fail_none_of_50() {
    simultaneous_deployments("three-at-once", &["main", "feature", "preview"], 50);
}

/// nginx's master and the live processes of its group.
fn nginx_group(r: &Routed) -> (i32, Vec<i32>) {
    let master: i32 = std::fs::read_to_string(router_file(r, "run/nginx.pid")).unwrap().trim().parse().unwrap();
    (master, in_groups(&[master]))
}

/// The live processes of the process groups `groups`.
fn in_groups(groups: &[i32]) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // SAFETY: getpgid has no memory-safety preconditions.
        if groups.contains(&unsafe { libc::getpgid(pid) }) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn nginx_killed_under_a_running_runner_is_started_again() {
    let mut r = Routed::new("nginx-killed");
    r.deploy(&project(APP, "first"), "main");
    let host = r.host("main");
    assert_eq!(r.get(&host, "/").status, 200);

    // The whole router killed: master and workers.
    let (master, group) = nginx_group(&r);
    assert!(group.len() > 1, "nginx runs a master and workers: {group:?}");
    for pid in &group {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    assert!(eventually(10, || group.iter().all(|p| !alive(*p))));
    assert!(
        eventually(20, || r.get(&host, "/").status == 200),
        "the site is not back after nginx was killed\n{}",
        r.runner_log()
    );
    assert!(r.runner_running(), "the runner still runs");
    let (second, _) = nginx_group(&r);
    assert_ne!(second, master);

    // The master alone killed: its workers go on serving the old configuration and hold the
    // port; the router comes back with a master of its own, which then takes new deployments.
    // SAFETY: as above.
    unsafe { libc::kill(second, libc::SIGKILL) };
    assert!(
        eventually(20, || {
            let (now, _) = nginx_group(&r);
            now != second && alive(now)
        }),
        "no new master after the master alone was killed\n{}",
        r.runner_log()
    );
    r.deploy(&project(APP, "after the kills"), "main");
    assert!(r.get(&host, "/style.css").body.contains("after the kills"));
    let (third, group) = nginx_group(&r);
    let workers = group.iter().filter(|p| **p != third).count();
    assert!(workers > 0, "the new master has workers");
    let orphans = in_groups(&[master, second]);
    assert!(orphans.is_empty(), "workers of the killed masters still run: {orphans:?}");
}

/// A process that is not pushgate's, to be named by stale pid files.
fn bystander() -> Child {
    Command::new("sleep").arg("600").stdin(Stdio::null()).spawn().unwrap()
}

#[test]
fn pid_files_naming_other_processes_after_a_restart_are_not_trusted() {
    let mut r = Routed::new("stale-pids");
    r.deploy(&project(APP, "before the reboot"), "main");
    let host = r.host("main");
    assert_eq!(r.get(&host, "/").status, 200);

    // The machine goes down: the runner, nginx and PHP-FPM are gone, their pid files stay.
    r.stop_runner();
    let run = r.s.data.join("router/run");
    let pools = std::fs::read_dir(r.s.data.join("router/pools")).unwrap().flatten().map(|d| d.path().join("php.pid"));
    let pid_files: Vec<PathBuf> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .chain(pools)
        .filter(|p| p.extension().is_some_and(|e| e == "pid") && p.exists())
        .collect();
    assert!(pid_files.iter().any(|p| p.ends_with("nginx.pid")) && pid_files.len() >= 2, "{pid_files:?}");
    let pids: Vec<i32> =
        pid_files.iter().filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse().ok()).collect();
    for pid in pids {
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert!(eventually(10, || r.get(&host, "/").status == 0), "the router is down");
    // After the restart, each of their pids is another process's.
    let mut others: Vec<Child> = Vec::new();
    for file in &pid_files {
        let other = bystander();
        std::fs::write(file, format!("{}\n", other.id())).unwrap();
        others.push(other);
    }

    r.start_runner();
    assert!(eventually(20, || r.get(&host, "/").status == 200), "the site is not back\n{}", r.runner_log());
    assert!(r.get(&host, "/").body.contains("hello from main"));
    // A deployment reloads the router: still nobody else is signalled.
    r.deploy(&project(APP, "after the reboot"), "main");
    assert!(r.get(&host, "/style.css").body.contains("after the reboot"));
    for other in &mut others {
        assert!(other.try_wait().unwrap().is_none(), "process {} was signalled", other.id());
        let _ = other.kill();
        let _ = other.wait();
    }
}

/// A PostgreSQL server of the test's own, on a port of its own, that it can restart.
struct OwnPostgres {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let bin = crate::support::postgres_bin();
        let dir = TempDir::new("own-pg");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        // The server refuses to run as root: it runs as `postgres`, in a directory it owns.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
        assert!(chown.success());
        let pg = OwnPostgres { dir, bin, port };
        pg.as_postgres(&["initdb", "-A", "trust", "-U", "postgres", "-D", data.to_str().unwrap()]);
        pg.ctl("start");
        pg
    }

    fn as_postgres(&self, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(args[0]))
            .args(&args[1..])
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ctl(&self, action: &str) {
        let data = self.dir.join("data");
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let log = self.dir.join("server.log");
        let mut args = vec!["pg_ctl", "-w", "-D", data.to_str().unwrap(), "-l", log.to_str().unwrap()];
        if action != "stop" {
            args.extend(["-o", &options]);
        }
        args.extend(["-m", "fast", action]);
        self.as_postgres(&args);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Whether a session of pushgate LISTENs on its channel.
    fn listening(&self) -> bool {
        let out = Command::new("psql")
            .args([
                &self.url(),
                "-XAtc",
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN pushgate_jobs%'",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<i64>().unwrap_or(0) > 0
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-w", "-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
    }
}

/// The CPU time (user and system) a process used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // utime and stime are the 12th and 13th fields after the command's name.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// A runner serving the queue at `url` (no router).
fn serve_on(s: &Server, url: &str, log: &Path) -> Child {
    Command::new(runner_bin())
        .args(["serve", "--queue", url, "--data"])
        .arg(&s.data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Pushes a commit and says how long until its job was claimed (None if it was not, or did
/// not succeed, within 30 s).
fn push_and_time_the_claim(s: &Server, marker: &str) -> Option<Duration> {
    let mut files = crate::push::files_with("", "");
    files.push(("marker.txt", marker));
    let commit = s.commit(&files, marker);
    let pushed = Instant::now();
    s.push_with_options(&["pushgate.nowait"], &["HEAD:refs/heads/main"]).assert_accepted();
    let claimed = eventually(30, || s.jobs().iter().any(|j| j["commit"] == commit && j["state"] != "pending"));
    let took = pushed.elapsed();
    // Ended before the test goes on (a runner killed while it runs would hold the environment).
    let ended = eventually(30, || s.jobs().iter().any(|j| j["commit"] == commit && j["state"] == "succeeded"));
    (claimed && ended).then_some(took)
}

#[test]
fn an_idle_runner_stays_idle_when_its_postgresql_restarts_and_listens_again() {
    let pg = OwnPostgres::start();
    let s = Server::with_queue_url("pg-restart", &pg.url());
    let log = s.dir.join("runner.log");
    let mut serving = serve_on(&s, &pg.url(), &log);
    let runner_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(eventually(20, || pg.listening()), "{}", runner_log());
    assert!(push_and_time_the_claim(&s, "before").is_some(), "{}", runner_log());

    pg.ctl("restart");
    // Back and listening, then idle.
    assert!(eventually(20, || pg.listening()), "the runner does not LISTEN again\n{}", runner_log());
    let before = cpu_time(serving.id());
    std::thread::sleep(Duration::from_secs(10));
    let used = cpu_time(serving.id()) - before;
    eprintln!("idle runner after a PostgreSQL restart: {:.2} CPU-s in 10 s", used.as_secs_f64());
    assert!(used < Duration::from_secs(1), "the idle runner used {used:?} of CPU in 10 s\n{}", runner_log());
    let claimed = push_and_time_the_claim(&s, "after").expect("the push after the restart is claimed");
    eprintln!("a push after the restart claimed in {:.3} s", claimed.as_secs_f64());

    // A runner started while the server is down listens once it is up.
    let _ = serving.kill();
    let _ = serving.wait();
    pg.ctl("stop");
    let mut late = serve_on(&s, &pg.url(), &log);
    std::thread::sleep(Duration::from_secs(2));
    let before = cpu_time(late.id());
    std::thread::sleep(Duration::from_secs(5));
    let used = cpu_time(late.id()) - before;
    assert!(used < Duration::from_secs(1), "a runner waiting for its server used {used:?} of CPU in 5 s");
    pg.ctl("start");
    assert!(
        eventually(20, || pg.listening()),
        "a runner started while the server was down never listens\n{}",
        runner_log()
    );
    let claimed = push_and_time_the_claim(&s, "late").expect("the runner started while the server was down claims");
    eprintln!("a push to a runner started while its server was down claimed in {:.3} s", claimed.as_secs_f64());
    let _ = late.kill();
    let _ = late.wait();
}

#[test]
fn a_build_that_fills_the_disk_fails_once_with_its_cause_and_frees_it() {
    fills_the_disk("head -c 200000000 /dev/zero > filler");
}

#[test]
fn a_build_that_fills_the_disk_and_goes_on_fails_once_with_its_cause_and_frees_it() {
    fills_the_disk("head -c 200000000 /dev/zero > filler || true");
}

#[test]
fn a_build_whose_output_would_fill_the_disk_is_cut_in_its_log_not_on_the_disk() {
    let s = Server::new("floods-log");
    let mount = TempDir::new("tmpfs");
    let _disk = SmallDisk::mount(mount.path(), "96m");
    let data = mount.join("data");
    git_ok(&s.bare, &["config", "pushgate.data", data.to_str().unwrap()]);
    let app = "name: app\ntype: php:8.2\ndisk: 256\nhooks:\n    build: |\n        head -c 150000000 /dev/zero | base64\n        echo built\n";
    let commit = s.commit(&[(".magento.app.yaml", app), ("index.php", "<?php\n")], "floods its log");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let data_s = data.to_str().unwrap().to_owned();
    let out = Command::new(runner_bin()).args(["serve", "--until-idle", "--data", &data_s]).output().unwrap();
    let jobs = crate::support::jobs_in(&data);
    let job = jobs.iter().find(|j| j["commit"] == commit).expect("its job");
    assert_eq!(job["state"], "succeeded", "{job}\n{}", String::from_utf8_lossy(&out.stderr));
    let id = job["id"].as_i64().unwrap();
    let log_file = data.join(format!("logs/{id}.log"));
    let size = std::fs::metadata(&log_file).map(|m| m.len()).unwrap_or_else(|e| panic!("{}: {e}", log_file.display()));
    assert!(size < (65 << 20), "the log is bounded: {size} bytes");
    let log = std::fs::read(&log_file).unwrap();
    let tail = String::from_utf8_lossy(&log[log.len().saturating_sub(4096)..]).into_owned();
    assert!(tail.contains("bytes of output were left out of this log"), "{tail}");
    assert!(tail.contains("Hook `build` succeeded"), "{tail}");
}

fn fills_the_disk(hook: &str) {
    let s = Server::new("fills-disk");
    let mount = TempDir::new("tmpfs");
    let _disk = SmallDisk::mount(mount.path(), "96m");
    let data = mount.join("data");
    git_ok(&s.bare, &["config", "pushgate.data", data.to_str().unwrap()]);
    let free = || {
        // SAFETY: statvfs writes into the struct it is given.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(mount.path().to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    };
    let app = format!("name: app\ntype: php:8.2\ndisk: 256\nhooks:\n    build: |\n        {hook}\n");
    let commit = s.commit(&[(".magento.app.yaml", &app), ("index.php", "<?php\n")], "fills the disk");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let before = free();
    let data_s = data.to_str().unwrap().to_owned();
    let serve = |args: &[&str]| {
        Command::new(runner_bin()).args(args).args(["--lease", "2", "--data", &data_s]).output().unwrap()
    };
    let out = serve(&["serve", "--until-idle"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // What a serving runner would do next: anything left to take is taken again.
    std::thread::sleep(Duration::from_secs(3));
    let again = serve(&["serve", "--until-idle"]);
    let jobs = crate::support::jobs_in(&data);
    let job = jobs.iter().find(|j| j["commit"] == commit).expect("its job");
    assert_eq!(job["state"], "failed", "{job}\n{stderr}\n{}", String::from_utf8_lossy(&again.stderr));
    let id = job["id"].as_i64().unwrap();
    let log = String::from_utf8_lossy(
        &Command::new(runner_bin()).args(["logs", &id.to_string(), "--data", &data_s]).output().unwrap().stdout,
    )
    .into_owned();
    assert_eq!(log.matches(" claimed by ").count(), 1, "the build ran once:\n{log}");
    assert!(log.contains("No space left on device"), "the cause is in the log:\n{log}");
    let after = free();
    assert!(
        after + (8 << 20) >= before,
        "the build's files are gone: {} MB free before, {} MB after",
        before >> 20,
        after >> 20
    );
    // Other pushes are taken again.
    s.write("index.php", b"<?php echo 1;\n");
    s.commit_all("after");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let _ = runner(&s, &["jobs"]);
}
