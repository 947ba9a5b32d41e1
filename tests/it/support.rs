//! Test support: temporary directories, the real `git`, repositories set up by install.sh, and
//! a `git daemon` to push through a real transport. No mock git anywhere.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository checkout (install.sh, the corpus beside it).
pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/corpus/real`, present on developers' machines and in CI.
pub fn corpus_dir() -> PathBuf {
    project_dir().join("../shared/corpus/real")
}

pub fn hook_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pushgate-hook"))
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("pushgate-it-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        stop_supervised_below(&self.0);
        unmount_below(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the supervisors and network forwarders whose command line names a path below `dir`
/// (they outlive runners by design; a test whose data directory is gone, a tmpfs unmounted or
/// a machine of its own, cannot find them by their pid files).
pub fn stop_supervised_below(dir: &Path) {
    let below = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let ours = args.first().is_some_and(|a| a.ends_with("pushgate-runner"))
            && args.get(1).is_some_and(|a| a == "supervise" || a == "forward");
        if ours && args.iter().any(|a| a.starts_with(&below)) {
            // SAFETY: kill(2) of a process this test's runner started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Unmounts what is mounted below `dir` (the apps' disks of a test's environments that the test
/// did not delete), deepest first.
pub fn unmount_below(dir: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir) && p != dir)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = Command::new("umount").arg("-l").arg(&point).status();
    }
}

/// `git` with an isolated configuration (no user or system config leaks into tests).
pub fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"])
        .args(["-c", "protocol.file.allow=always", "-c", "advice.detachedHead=false"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .stdin(Stdio::null())
        .output()
        .expect("git runs")
}

/// `git` that must succeed; returns its stdout.
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The result of a push: its exit status and everything git printed.
pub struct Push {
    pub ok: bool,
    pub output: String,
}

impl Push {
    /// The `remote:` lines, without the prefix and git's trailing padding.
    pub fn remote(&self) -> String {
        self.output.lines().filter_map(|l| l.strip_prefix("remote: ")).map(str::trim_end).collect::<Vec<_>>().join("\n")
    }

    pub fn assert_refused_with(&self, needles: &[&str]) {
        assert!(!self.ok, "push should be refused:\n{}", self.output);
        let remote = self.remote();
        for n in needles {
            assert!(remote.contains(n), "missing {n:?} in remote lines:\n{remote}");
        }
    }

    pub fn assert_accepted(&self) {
        assert!(self.ok, "push should be accepted:\n{}", self.output);
    }
}

/// A server: a bare repository set up by install.sh, and a work tree to push from.
/// A small tmpfs mounted on `at`, to fill up; unmounted when dropped. The tests run as root on
/// these machines (and in CI).
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a {size} tmpfs on {}", at.display());
        SmallDisk(at.to_owned())
    }

    /// Fills what is left with a file (the write stops at the first error: the disk is full).
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Removes the system users the runner created for the projects of a test (each test's
/// repositories are new projects: without this, a test run leaves a hundred users behind).
impl Drop for Server {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(self.dir.path()).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with(".git") {
                let Ok(path) = std::fs::canonicalize(entry.path()) else { continue };
                let repo = pushgate::core::RepoId::new(path.display().to_string());
                let user = pushgate::platform::users::app_user_name(&pushgate::store::DataDir::project_key(&repo));
                if pushgate::platform::users::lookup(&user).is_some() {
                    let _ = Command::new("userdel").arg("--force").arg(&user).output();
                }
            }
        }
        if let Some(db) = &self.pg_database {
            drop_database(db);
        }
        // The environments' network forwarders and namespaces (outside the test's directory).
        for entry in std::fs::read_dir(self.data.join("router/net")).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            if let Some(pid_file) = v["pid_file"].as_str() {
                let pid = std::fs::read_to_string(pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok());
                // SAFETY: kill(2) with a pid the forwarder's supervisor wrote.
                if let Some(pid) = pid.filter(|p| *p > 1) {
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
            if let Some(ns) = v["ns"].as_str() {
                let _ = Command::new("umount").arg("-l").arg(ns).output();
                let _ = std::fs::remove_file(ns);
            }
        }
    }
}

/// The local PostgreSQL (trust authentication, user postgres), as tests reach it.
pub const PG: &str = "postgres://postgres@127.0.0.1:5432";

/// A new, empty PostgreSQL database for one test; its URL.
pub fn create_database(label: &str) -> (String, String) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("pushgate_it_{}_{n}_{}", std::process::id(), label.replace('-', "_"));
    let out = Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
        .arg(format!("CREATE DATABASE \"{name}\""))
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "creating {name}: {}", String::from_utf8_lossy(&out.stderr));
    (format!("{PG}/{name}"), name)
}

pub fn drop_database(name: &str) {
    let _ = Command::new("psql")
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
        .arg(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .output();
}

/// One value from the test's PostgreSQL queue.
pub fn pg_value(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args(["-X", "-q", "-t", "-A", url, "-c", sql]).output().expect("psql runs");
    assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub struct Server {
    pub dir: TempDir,
    pub bare: PathBuf,
    pub work: PathBuf,
    pub prefix: PathBuf,
    pub data: PathBuf,
    /// The PostgreSQL queue's URL, when the test uses one instead of the data directory's SQLite.
    pub queue: Option<String>,
    pg_database: Option<String>,
    /// Set by `markers`: the test's hooks write to the host, so its runners run them without a
    /// sandbox (tests/it/sandbox.rs shows what the sandbox stops).
    hooks_reach_the_host: std::sync::atomic::AtomicBool,
}

/// The server-wide policy of the tests' data directories: `{"disk_reserve": false}`.
pub const SPARSE_DISKS: &str = r#"{"disk_reserve": false}"#;

impl Server {
    pub fn new(label: &str) -> Server {
        let dir = TempDir::new(label);
        let bare = dir.join("repo.git");
        let (prefix, data) = (dir.join("prefix"), dir.join("data"));
        let install = run_install(&prefix, &data, &[&bare]);
        assert!(install.status.success(), "install.sh failed: {}", String::from_utf8_lossy(&install.stderr));
        // No runner runs in most tests: pushes say so at once instead of waiting for one.
        git_ok(&bare, &["config", "pushgate.pickupWaitMs", "0"]);
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git_ok(&work, &["init", "-q"]);
        // Apps' disks sparse: reserved, the suite's hundred environments of 5 GB disks would
        // need the machine's whole disk (the tests of reservation say otherwise).
        std::fs::write(data.join("sandbox.json"), SPARSE_DISKS).unwrap();
        Server { dir, bare, work, prefix, data, queue: None, pg_database: None, hooks_reach_the_host: false.into() }
    }

    /// The same, with its queue in a new PostgreSQL database (`git config pushgate.queue`, and
    /// `--queue` for every runner command the test runs).
    pub fn with_postgres(label: &str) -> Server {
        let (url, name) = create_database(label);
        let mut s = Server::with_queue_url(label, &url);
        s.pg_database = Some(name);
        s
    }

    /// The same, with its queue at `url` (a server of the test's own).
    pub fn with_queue_url(label: &str, url: &str) -> Server {
        let mut s = Server::new(label);
        let url = url.to_owned();
        // As an admin does it: install.sh --queue records the URL for the hooks.
        let bin_dir = hook_bin().parent().unwrap().to_owned();
        let install = Command::new("bash")
            .arg(project_dir().join("install.sh"))
            .args(["--queue", &url, "--prefix"])
            .arg(&s.prefix)
            .arg("--data")
            .arg(&s.data)
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg(&s.bare)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("install.sh runs");
        assert!(install.status.success(), "install.sh --queue: {}", String::from_utf8_lossy(&install.stderr));
        s.queue = Some(url);
        s
    }

    /// The environment a runner command of this test needs (its queue).
    pub fn queue_env(&self) -> Vec<(&'static str, String)> {
        self.queue.iter().map(|u| ("PUSHGATE_QUEUE", u.clone())).collect()
    }

    /// Replaces the work tree's files with `files` (path, content) and commits them.
    pub fn commit(&self, files: &[(&str, &str)], message: &str) -> String {
        self.clear();
        for (path, content) in files {
            self.write(path, content.as_bytes());
        }
        self.commit_all(message)
    }

    /// Replaces the work tree's files with a copy of a corpus set and commits it.
    pub fn commit_corpus(&self, set: &str) -> String {
        self.clear();
        copy_dir(&corpus_dir().join(set), &self.work);
        self.commit_all(set)
    }

    pub fn write(&self, path: &str, content: &[u8]) {
        let full = self.work.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    pub fn commit_all(&self, message: &str) -> String {
        git_ok(&self.work, &["add", "-A"]);
        git_ok(&self.work, &["commit", "-q", "--allow-empty", "-m", message]);
        git_ok(&self.work, &["rev-parse", "HEAD"])
    }

    fn clear(&self) {
        for entry in std::fs::read_dir(&self.work).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != ".git" {
                let p = entry.path();
                if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(p).unwrap();
                } else {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
    }

    /// A directory every user may write: for what hooks leave for the test to see (a runner
    /// started as root runs them as the project's user). A sandboxed hook cannot reach it: the
    /// test's runners then run with `--no-sandbox` (see `sandbox_flag`).
    pub fn markers(&self) -> PathBuf {
        self.hooks_reach_the_host.store(true, std::sync::atomic::Ordering::Relaxed);
        let dir = self.dir.join("markers");
        std::fs::create_dir_all(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        dir
    }

    /// `--no-sandbox` for `serve` when the test's hooks write to the host (`markers`).
    pub fn sandbox_flag(&self) -> Option<&'static str> {
        self.hooks_reach_the_host.load(std::sync::atomic::Ordering::Relaxed).then_some("--no-sandbox")
    }

    /// Another project on the same server: its own bare repository, the same data directory.
    pub fn other_project(&self, name: &str) -> PathBuf {
        let bare = self.dir.join(&format!("{name}.git"));
        let install = run_install(&self.prefix, &self.data, &[&bare]);
        assert!(install.status.success(), "install.sh failed: {}", String::from_utf8_lossy(&install.stderr));
        git_ok(&bare, &["config", "pushgate.pickupWaitMs", "0"]);
        bare
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    /// `git push URL REFSPEC...` from the work tree.
    pub fn push_to(&self, url: &str, args: &[&str]) -> Push {
        let mut all = vec!["push", "--porcelain", url];
        all.extend_from_slice(args);
        let out = git(&self.work, &all);
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Push { ok: out.status.success(), output }
    }

    pub fn push(&self, args: &[&str]) -> Push {
        self.push_to(&self.url(), args)
    }

    /// `git push -o OPTION... URL REFSPEC...`
    pub fn push_with_options(&self, options: &[&str], args: &[&str]) -> Push {
        let mut all = vec!["push", "--porcelain"];
        for o in options {
            all.extend_from_slice(&["-o", o]);
        }
        let url = self.url();
        all.push(&url);
        all.extend_from_slice(args);
        let out = git(&self.work, &all);
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Push { ok: out.status.success(), output }
    }

    /// The jobs as `pushgate-runner jobs --json` lists them (it settles reservations first).
    pub fn jobs(&self) -> Vec<serde_json::Value> {
        let out = Command::new(runner_bin())
            .arg("jobs")
            .arg("--json")
            .arg("--data")
            .arg(&self.data)
            .envs(self.queue_env())
            .output()
            .unwrap();
        assert!(out.status.success(), "pushgate-runner jobs: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("jobs --json prints one JSON array")
    }

    /// The repository as the queue names it.
    pub fn repo_id(&self) -> String {
        std::fs::canonicalize(&self.bare).unwrap().display().to_string()
    }

    /// Reservations left in the SQLite queue (read directly).
    pub fn reservations(&self) -> i64 {
        if let Some(url) = &self.queue {
            return pg_value(url, "SELECT count(*) FROM reservations").parse().unwrap();
        }
        let conn = rusqlite::Connection::open(self.data.join("queue.sqlite3")).unwrap();
        conn.query_row("SELECT count(*) FROM reservations", [], |r| r.get(0)).unwrap()
    }

    /// The commit a ref of the bare repository points at, if any.
    pub fn server_ref(&self, name: &str) -> Option<String> {
        let out = git(&self.bare, &["rev-parse", "--verify", "-q", name]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

pub fn runner_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pushgate-runner"))
}

/// `pushgate-runner jobs --json --data DIR`, parsed.
pub fn jobs_in(data: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(runner_bin()).arg("jobs").arg("--json").arg("--data").arg(data).output().unwrap();
    assert!(out.status.success(), "pushgate-runner jobs: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("jobs --json prints one JSON array")
}

/// Runs install.sh with the binaries of this test build.
pub fn run_install(prefix: &Path, data: &Path, repos: &[&Path]) -> Output {
    let bin_dir = hook_bin().parent().unwrap().to_owned();
    let mut cmd = Command::new("bash");
    cmd.arg(project_dir().join("install.sh"))
        .arg("--prefix")
        .arg(prefix)
        .arg("--data")
        .arg(data)
        .arg("--bin-dir")
        .arg(bin_dir)
        .args(repos)
        .env("GIT_CONFIG_NOSYSTEM", "1");
    cmd.output().expect("install.sh runs")
}

pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            let mut perms = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).unwrap();
        }
    }
}

/// A `git daemon` serving a directory with receive-pack enabled, on a free local port.
pub struct Daemon {
    child: Child,
    pub port: u16,
}

impl Daemon {
    pub fn start(base: &Path) -> Daemon {
        use std::os::unix::process::CommandExt;
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // `git daemon` would run `git-daemon` as a child of its own, which outlived the wrapper
        // the test killed: run `git-daemon` itself, our child to reap, in a process group of its
        // own with the processes it forks per connection, so that dropping it stops them all.
        let exec_path = String::from_utf8(Command::new("git").arg("--exec-path").output().unwrap().stdout).unwrap();
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .process_group(0)
            .args(["--reuseaddr", "--export-all", "--enable=receive-pack", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        // Wait until it listens (bounded: 10 s).
        let daemon = Daemon { child, port }; // dropped (killed and reaped) if it never listens
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return daemon;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("git daemon did not start on port {port}");
    }

    pub fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Daemon {
    /// The process group of the daemon and whatever it started.
    pub fn group(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the daemon's own process group.
        unsafe { libc::kill(-self.group(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// The processes of a process group still alive (not yet reaped zombies included).
pub fn processes_in_group(group: i32) -> Vec<String> {
    let out = Command::new("pgrep").arg("-g").arg(group.to_string()).arg("-a").output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// An S3-compatible server on localhost (moto's, from PyPI), with one bucket; stopped on drop.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub bucket: String,
}

impl S3Server {
    pub fn start(bucket: &str) -> S3Server {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server starts (.ci/run installs moto[server])");
        let server = S3Server { child, port, bucket: bucket.to_owned() };
        assert!(
            (0..400).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(50));
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            }),
            "the S3 server did not start on port {port}"
        );
        let made = Command::new("curl")
            .args(["-sf", "-X", "PUT", &format!("{}/{bucket}", server.endpoint())])
            .status()
            .unwrap();
        assert!(made.success(), "bucket {bucket} created");
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The variables a runner reads to reach it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_ACCESS_KEY_ID", "pushgate-test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "pushgate-test-secret".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A MariaDB and a PostgreSQL server of the test run's own that require passwords (the host's
/// trust every local user, which `backend add` refuses): started on first use, one for the whole
/// run, and ended with it (their parent is a thread that lives as long as the run).
pub struct OwnServers {
    pub mariadb_port: u16,
    pub postgres_port: u16,
    pub password: String,
}

impl OwnServers {
    /// The MariaDB admin's URL (`admin`, with its password).
    pub fn mariadb(&self) -> String {
        format!("mysql://admin:{}@127.0.0.1:{}", self.password, self.mariadb_port)
    }

    /// The PostgreSQL superuser's URL (`postgres`, with its password).
    pub fn postgres(&self) -> String {
        format!("postgres://postgres:{}@127.0.0.1:{}/postgres", self.password, self.postgres_port)
    }

    /// `mariadb` as the admin, its arguments to follow.
    pub fn mariadb_client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.args(["--protocol=tcp", "-h", "127.0.0.1", "-P", &self.mariadb_port.to_string(), "-u", "admin"]);
        c.env("MYSQL_PWD", &self.password);
        c
    }

    /// `psql` as the superuser on database `postgres`, its arguments to follow.
    pub fn psql(&self) -> Command {
        let mut c = Command::new("psql");
        c.args(["-X", "-h", "127.0.0.1", "-p", &self.postgres_port.to_string(), "-U", "postgres", "-d", "postgres"]);
        c.env("PGPASSWORD", &self.password);
        c
    }
}

pub fn own_servers() -> &'static OwnServers {
    static SERVERS: std::sync::OnceLock<OwnServers> = std::sync::OnceLock::new();
    SERVERS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The servers' parent: they get SIGKILL when it ends, which is when the run ends.
        std::thread::spawn(move || {
            let servers = start_own_servers();
            tx.send(servers).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the tests' own database servers start")
    })
}

fn start_own_servers() -> OwnServers {
    use std::os::unix::process::CommandExt;
    // What earlier runs left (their servers died with them).
    for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("pushgate-it-servers-").and_then(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    // In memory: nothing of it needs to outlive the run, and the disk is the tests' bottleneck.
    let dir = PathBuf::from(format!("/dev/shm/pushgate-it-servers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let password: String = format!("it{:x}{:x}", std::process::id(), rand_u64());
    let free_port = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mariadb_port, postgres_port) = (free_port(), free_port());
    let dies_with_run = |c: &mut Command| {
        // SAFETY: prctl is async-signal-safe; it runs after the change of user, which clears it.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            })
        };
    };
    let ids = |name: &str| {
        let out = Command::new("id").args(["-u", name]).output().unwrap();
        let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let out = Command::new("id").args(["-g", name]).output().unwrap();
        (uid, String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap())
    };

    // MariaDB: root only through the socket (the default), an admin with a password.
    let m = dir.join("mariadb");
    std::fs::create_dir_all(&m).unwrap();
    assert!(Command::new("chown").args(["-R", "mysql:mysql"]).arg(&m).status().unwrap().success());
    let install = Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", m.join("data").display()))
        .args(["--user=mysql", "--skip-test-db"])
        .output()
        .unwrap();
    assert!(install.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&install.stderr));
    let init = m.join("init.sql");
    std::fs::write(
        &init,
        format!(
            "CREATE USER 'admin'@'%' IDENTIFIED BY '{password}';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'admin'@'%' WITH GRANT OPTION;\n"
        ),
    )
    .unwrap();
    assert!(Command::new("chown").args(["mysql:mysql"]).arg(&init).status().unwrap().success());
    let (uid, gid) = ids("mysql");
    let mut mariadbd = Command::new("/usr/sbin/mariadbd");
    mariadbd
        .arg("--no-defaults")
        .arg(format!("--datadir={}", m.join("data").display()))
        .arg(format!("--port={mariadb_port}"))
        .args(["--bind-address=127.0.0.1", "--skip-name-resolve"])
        .arg(format!("--socket={}", m.join("mysqld.sock").display()))
        .arg(format!("--init-file={}", init.display()))
        .arg(format!("--log-error={}", m.join("error.log").display()))
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    dies_with_run(&mut mariadbd);
    std::mem::forget(mariadbd.spawn().expect("mariadbd starts"));

    // PostgreSQL: every connection asks for a password (scram-sha-256).
    let p = dir.join("postgres");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("pwfile"), &password).unwrap();
    assert!(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&p).status().unwrap().success());
    let bin = postgres_bin();
    let (uid, gid) = ids("postgres");
    let initdb = Command::new(bin.join("initdb"))
        .args(["-A", "scram-sha-256", "-U", "postgres", "--pwfile"])
        .arg(p.join("pwfile"))
        .arg("-D")
        .arg(p.join("data"))
        .current_dir(&p)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap();
    assert!(initdb.status.success(), "initdb: {}", String::from_utf8_lossy(&initdb.stderr));
    let mut postgres = Command::new(bin.join("postgres"));
    postgres
        .arg("-D")
        .arg(p.join("data"))
        .args(["-p", &postgres_port.to_string(), "-k"])
        .arg(&p)
        .args(["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200", "-c", "fsync=off"])
        .current_dir(&p)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    dies_with_run(&mut postgres);
    std::mem::forget(postgres.spawn().expect("postgres starts"));

    let servers = OwnServers { mariadb_port, postgres_port, password };
    let since = std::time::Instant::now();
    loop {
        let m = servers.mariadb_client().args(["-e", "SELECT 1"]).output().unwrap();
        let p = servers.psql().args(["-c", "SELECT 1"]).output().unwrap();
        if m.status.success() && p.status.success() {
            return servers;
        }
        assert!(
            since.elapsed() < std::time::Duration::from_secs(60),
            "the tests' own servers did not start: {}{}",
            String::from_utf8_lossy(&m.stderr),
            String::from_utf8_lossy(&p.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A RabbitMQ node of the test run's own, without the `guest` account (the host's has it, which
/// `backend add` refuses): started on first use, one for the whole run, ended with it.
pub struct OwnRabbitmq {
    pub node: String,
    pub port: u16,
    pub password: String,
}

impl OwnRabbitmq {
    /// The backend's URL: its admin, and the node `rabbitmqctl` addresses.
    pub fn url(&self) -> String {
        format!("amqp://admin:{}@127.0.0.1:{}/?node={}", self.password, self.port, self.node)
    }

    /// `rabbitmqctl` on this node, its arguments to follow.
    pub fn ctl(&self) -> Command {
        let mut c = Command::new("rabbitmqctl");
        c.args(["-n", &self.node]);
        c
    }
}

pub fn own_rabbitmq() -> &'static OwnRabbitmq {
    static NODE: std::sync::OnceLock<OwnRabbitmq> = std::sync::OnceLock::new();
    NODE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The node's parent, as for the database servers.
        std::thread::spawn(move || {
            tx.send(start_own_rabbitmq()).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the tests' own RabbitMQ starts")
    })
}

fn start_own_rabbitmq() -> OwnRabbitmq {
    use std::os::unix::process::CommandExt;
    let prefix = "pushgate-it-rabbitmq-";
    for entry in std::fs::read_dir("/dev/shm").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(prefix).and_then(|p| p.parse::<u32>().ok()) {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = PathBuf::from(format!("/dev/shm/{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let free_port = || TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, dist_port) = (free_port(), free_port());
    let password = format!("it{:x}", rand_u64());
    let node = format!("pushgate-it-{}@localhost", std::process::id());
    // `default_user` replaces `guest`: the node never has it.
    std::fs::write(
        dir.join("rabbitmq.conf"),
        format!("listeners.tcp.default = 127.0.0.1:{port}\ndefault_user = admin\ndefault_pass = {password}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
    assert!(Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(&dir).status().unwrap().success());
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "rabbitmq"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap()
    };
    let mut server = Command::new("/usr/lib/rabbitmq/bin/rabbitmq-server");
    server
        .env("HOME", "/var/lib/rabbitmq") // its Erlang cookie, which rabbitmqctl uses too
        .env("RABBITMQ_NODENAME", &node)
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_PID_FILE", dir.join("pid"))
        // The script then runs the Erlang VM in its own place, which dies with this thread.
        .env("RUNNING_UNDER_SYSTEMD", "1")
        .current_dir(&dir)
        .uid(id("-u"))
        .gid(id("-g"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe; it runs after the change of user, which clears it.
    unsafe {
        server.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        })
    };
    std::mem::forget(server.spawn().expect("rabbitmq-server starts"));
    let rabbit = OwnRabbitmq { node, port, password };
    // `await_startup` waits for a node that runs; until the node is registered, it fails at once.
    let since = std::time::Instant::now();
    loop {
        let started = rabbit.ctl().args(["-q", "await_startup", "--timeout", "120"]).output().unwrap();
        if started.status.success() {
            return rabbit;
        }
        assert!(since.elapsed().as_secs() < 120, "the tests' own RabbitMQ did not start: {started:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A number no other run picks.
fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    u64::from_le_bytes(b)
}

/// Where Debian keeps PostgreSQL's server programs (initdb, postgres, pg_ctl).
pub fn postgres_bin() -> PathBuf {
    std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries")
        .flatten()
        .map(|e| e.path().join("bin"))
        .find(|b| b.join("initdb").exists())
        .expect("initdb")
}
