//! Every environment a running site: a runner with a router (the real nginx and PHP-FPM of the
//! host), real pushes, and requests over real sockets to the URLs the environments get.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::runner::{envs, eventually, job_state, log_of, runner};
use crate::support::{git_ok, runner_bin, Server};

/// A Magento-shaped app: `pub/` root, `/media` and `/static` served as files, everything else
/// passed to `index.php`.
pub const APP: &str = r#"name: shop
type: php:8.2
web:
    locations:
        "/":
            root: "pub"
            passthru: "/index.php"
            allow: false
            scripts: true
            rules:
                \.(css|txt)$:
                    allow: true
        "/media":
            root: "pub/media"
            allow: true
            scripts: false
            expires: 1y
            passthru: "/get.php"
        "/static":
            root: "pub/static"
            allow: true
            scripts: false
            passthru: "/index.php"
            rules:
                ^/static/version\d+/(?<resource>.*)$:
                    passthru: "/static/$resource"
disk: 2048
mounts:
    "var": "shared:files/var"
hooks:
    build: |
        echo building
"#;

pub const ROUTES: &str = r#""https://{default}/":
    type: upstream
    upstream: "shop:http"
"http://{default}/":
    type: redirect
    to: "https://{default}/"
"https://www.{default}/":
    type: redirect
    to: "https://{default}/"
"#;

pub const SERVICES: &str = "mysql:\n    type: mysql:11.4\n    disk: 2048\n";

pub const INDEX: &str = r#"<?php
echo "hello from ", getenv('MAGENTO_CLOUD_ENVIRONMENT'), " release ", basename(dirname(__DIR__, 2)),
    " uri=", $_SERVER['REQUEST_URI'], " user=", posix_getpwuid(posix_geteuid())['name'], "\n";
"#;

/// The project's files, with `app` as its app file and `marker` in a static file.
pub fn project(app: &str, marker: &str) -> Vec<(&'static str, String)> {
    vec![
        (".magento.app.yaml", app.to_owned()),
        (".magento/routes.yaml", ROUTES.to_owned()),
        (".magento/services.yaml", SERVICES.to_owned()),
        ("pub/index.php", INDEX.to_owned()),
        ("pub/get.php", "<?php echo 'media fallback ', $_SERVER['REQUEST_URI'];\n".to_owned()),
        ("pub/style.css", format!("body {{}} /* {marker} */\n")),
        ("pub/notes.md", "not for the public\n".to_owned()),
        ("pub/media/logo.txt", format!("logo {marker}\n")),
        ("pub/static/app.js", format!("// {marker}\n")),
    ]
}

/// A server with a runner that serves a router on a port of its own.
pub struct Routed {
    pub s: Server,
    pub port: u16,
    runner: Option<Child>,
    /// More arguments of `serve` (`--concurrency 3`).
    serve_args: Vec<String>,
}

impl Routed {
    pub fn new(label: &str) -> Routed {
        Routed::with_serve_args(label, &[])
    }

    pub fn with_serve_args(label: &str, serve_args: &[&str]) -> Routed {
        let s = Server::new(label);
        // The push follows its build to the end: its output shows the URLs.
        git_ok(&s.bare, &["config", "pushgate.pickupWaitMs", "30000"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let serve_args = serve_args.iter().map(|a| a.to_string()).collect();
        let mut routed = Routed { s, port, runner: None, serve_args };
        routed.start_runner();
        routed
    }

    pub fn start_runner(&mut self) {
        let runner = Command::new(runner_bin())
            .args(["serve", "--router", &format!("127.0.0.1:{}", self.port)])
            .args(&self.serve_args)
            .arg("--data")
            .arg(&self.s.data)
            // What the runner's environment holds reaches no project (tests/it/isolation.rs).
            .env("PUSHGATE_RUNNER_ONLY", "the runner's secret")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.s.dir.join("runner.log")).unwrap())
            .spawn()
            .unwrap();
        self.runner = Some(runner);
        let pid = self.s.data.join("router/run/nginx.pid");
        assert!(
            eventually(20, || pid.exists() && self.get("nowhere.localhost", "/").status == 404),
            "{}",
            self.runner_log()
        );
    }

    /// Whether the serving runner still runs.
    pub fn runner_running(&mut self) -> bool {
        self.runner.as_mut().is_some_and(|r| r.try_wait().ok().flatten().is_none())
    }

    pub fn stop_runner(&mut self) {
        if let Some(mut runner) = self.runner.take() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(runner.id() as i32, libc::SIGTERM) };
            let _ = runner.wait();
        }
    }

    pub fn runner_log(&self) -> String {
        std::fs::read_to_string(self.s.dir.join("runner.log")).unwrap_or_default()
    }

    pub fn get(&self, host: &str, path: &str) -> Response {
        get(self.port, host, path)
    }

    /// The host of an environment of this project (`repo` is the bare repository's name).
    pub fn host(&self, env: &str) -> String {
        format!("{env}.repo.localhost")
    }

    /// Commits `files` and pushes them to `branch`; the commit.
    pub fn deploy(&self, files: &[(&str, String)], branch: &str) -> (String, String) {
        let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
        let commit = self.s.commit(&files, branch);
        let push = self.s.push(&[&format!("HEAD:refs/heads/{branch}")]);
        assert!(push.ok, "{}", push.output);
        (commit, push.output)
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        self.stop_runner();
        // What the router started outlives runners by design: the test stops it.
        let pools = std::fs::read_dir(self.s.data.join("router/pools")).into_iter().flatten().flatten();
        let pool_pid_files = pools.map(|d| d.path().join("php.pid"));
        let run = std::fs::read_dir(self.s.data.join("router/run")).into_iter().flatten().flatten().map(|e| e.path());
        for path in run.chain(pool_pid_files) {
            if path.extension().is_some_and(|e| e == "pid") {
                // Read as the runner reads them: a pool's directory is its app's, which may have put
                // a FIFO there.
                if let Some(pid) = pushgate::platform::process::read_pid(&path) {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
        }
        // And any PHP-FPM master of this router a pid file does not name (a test that failed).
        let ours = format!("php-fpm: master process ({}/", self.s.data.display());
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).starts_with(&ours) {
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let nginx = self.s.data.join("router/run/nginx.pid");
        eventually(5, || !nginx.exists());
    }
}

#[derive(Debug, Default)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request on a connection of its own (status 0 when the connection failed).
pub fn get(port: u16, host: &str, path: &str) -> Response {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else { return Response::default() };
    let mut conn = Conn { reader: BufReader::new(stream) };
    conn.request(host, path, true).unwrap_or_default()
}

/// An HTTP/1.1 connection that is kept alive between requests.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn { reader: BufReader::new(stream) })
    }

    /// Sends a GET and reads the whole response (Content-Length, chunked, or to the end).
    pub fn request(&mut self, host: &str, path: &str, close: bool) -> std::io::Result<Response> {
        let connection = if close { "close" } else { "keep-alive" };
        write!(self.reader.get_mut(), "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
        }
        let header = |name: &str| headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
            body.resize(len, 0);
            self.reader.read_exact(&mut body)?;
        } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| std::io::ErrorKind::InvalidData)?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            self.reader.read_to_end(&mut body)?;
        }
        Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    }
}

pub fn router_file(r: &Routed, name: &str) -> PathBuf {
    r.s.data.join("router").join(name)
}

pub fn pids_in(dir: &Path, suffix: &str) -> Vec<i32> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
        .collect()
}

/// The pids of the PHP-FPM masters (`DATA/router/run/*.fpm.pid`, the runner's).
pub fn pool_pids(r: &Routed) -> Vec<i32> {
    pids_in(&router_file(r, "run"), ".fpm.pid")
}

/// The pid the host knows a process of one of this router's start commands by, from the one
/// it has in its sandbox's PID namespace (what the app tells) and a word of its command line.
pub fn host_pid(r: &Routed, inner: i32, word: &str) -> Option<i32> {
    let supervisors = pids_in(&router_file(r, "run"), ".app.pid");
    let parent = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
    };
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ns: Vec<i32> = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))?
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if ns.len() < 2 || ns.last() != Some(&inner) {
            return None;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        if !String::from_utf8_lossy(&cmdline).contains(word) {
            return None;
        }
        let mut up = parent(pid);
        while let Some(p) = up.filter(|p| *p > 1) {
            if supervisors.contains(&p) {
                return Some(pid);
            }
            up = parent(p);
        }
        None
    })
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn a_magento_shaped_app_answers_at_its_url_and_a_second_branch_at_its_own() {
    let r = Routed::new("router-magento");
    let (commit, push) = r.deploy(&project(APP, "one"), "main");
    assert_eq!(job_state(&r.s, &commit).1, "succeeded", "{push}\n{}", r.runner_log());
    let main = r.host("main");
    let url = format!("http://{main}:{}/", r.port);
    assert!(push.contains("is live at") && push.contains(&format!("{url} (primary)")), "{push}");

    // The committed PHP answers, through passthru, as the project's user.
    let home = r.get(&main, "/");
    assert_eq!(home.status, 200, "{home:?}");
    assert!(home.body.starts_with("hello from main release "), "{home:?}");
    assert!(home.body.contains(" uri=/ user=pgapp-repo-"), "apps run as the project's user: {home:?}");
    let deep = r.get(&main, "/catalog/product/view/id/4?x=1");
    assert!(deep.body.contains("uri=/catalog/product/view/id/4?x=1"), "{deep:?}");
    // `/media` and `/static`: files from their roots, a fallback for the missing ones.
    let logo = r.get(&main, "/media/logo.txt");
    assert_eq!((logo.status, logo.body.as_str()), (200, "logo one\n"));
    assert!(logo.header("cache-control").is_some_and(|c| c.contains("max-age=31536000")), "{logo:?}");
    assert_eq!(r.get(&main, "/media/missing.jpg").body, "media fallback /media/missing.jpg");
    assert_eq!(r.get(&main, "/static/version123/app.js").body, "// one\n", "the rule's passthru with its capture");
    // `allow: false` with a rule: the stylesheet is served, other files are not.
    assert_eq!(r.get(&main, "/style.css").body, "body {} /* one */\n");
    let hidden = r.get(&main, "/notes.md");
    assert!(hidden.body.starts_with("hello from main"), "not served as a file: {hidden:?}");
    assert!(!r.get(&main, "/get.php").body.contains("<?php"), "a script is run, never sent");
    // Redirect routes, the default branch's own host, an unknown host.
    let www = r.get(&r.host("www.main"), "/a/b?c=1");
    assert_eq!((www.status, www.header("location")), (301, Some(format!("{url}a/b?c=1").as_str())), "{www:?}");
    assert!(r.get("repo.localhost", "/").body.starts_with("hello from main"), "the default branch owns PROJECT.DOMAIN");
    assert_eq!(r.get("other.localhost", "/").status, 404);

    let listed = envs(&r.s);
    let env = listed.iter().find(|e| e["environment"] == "main").unwrap();
    assert_eq!(env["primary_url"], url.as_str());
    assert!(env["urls"].as_array().unwrap().iter().any(|u| u == &format!("http://www.{main}:{}/", r.port)), "{env}");
    let text = String::from_utf8_lossy(&runner(&r.s, &["envs"]).stdout).into_owned();
    assert!(text.contains(&url), "{text}");

    // A second branch: its own URL, its own release; main is untouched.
    let (feature, _) = r.deploy(&project(APP, "two"), "feature-x");
    assert_eq!(job_state(&r.s, &feature).1, "succeeded");
    let fx = r.host("feature-x");
    assert!(r.get(&fx, "/").body.starts_with("hello from feature-x"));
    assert_eq!(r.get(&fx, "/media/logo.txt").body, "logo two\n");
    assert_eq!(r.get(&main, "/media/logo.txt").body, "logo one\n");
    assert_eq!(r.get("repo.localhost", "/media/logo.txt").body, "logo one\n", "only the default branch's");

    // Deleting the branch takes its site off the router and stops its PHP-FPM; its release stays.
    let pools_before = pool_pids(&r);
    assert_eq!(pools_before.len(), 2);
    let deleted = r.s.push(&[":refs/heads/feature-x"]);
    assert!(deleted.ok, "{}", deleted.output);
    assert!(eventually(20, || r.get(&fx, "/").status == 404), "{}", r.runner_log());
    assert!(r.get(&main, "/").body.starts_with("hello from main"));
    let one_pool = || pool_pids(&r).len() == 1;
    assert!(eventually(20, one_pool), "the deleted branch's pool is stopped");
    assert_eq!(pools_before.iter().filter(|p| alive(**p)).count(), 1);
    let listed = envs(&r.s);
    let gone = listed.iter().find(|e| e["environment"] == "feature-x").expect("its release stays");
    assert_eq!(gone["urls"].as_array().unwrap().len(), 0);
    let delete = runner(&r.s, &["env", "delete", "feature-x", "--yes"]);
    assert!(delete.status.success(), "{}", String::from_utf8_lossy(&delete.stderr));
    assert!(
        eventually(20, || envs(&r.s).iter().all(|e| e["environment"] != "feature-x")),
        "the serving runner deletes it"
    );
    // Its files go before the job is recorded as ended.
    let ended = || r.s.jobs().into_iter().last().is_some_and(|j| j["state"] != "running" && j["state"] != "pending");
    assert!(eventually(20, ended));
    let job = r.s.jobs().into_iter().last().unwrap();
    assert_eq!((job["type"].as_str(), job["state"].as_str()), (Some("delete"), Some("succeeded")));
}

#[test]
fn a_runner_restart_keeps_sites_up_and_a_fresh_start_brings_their_processes_back() {
    let mut r = Routed::new("router-restart");
    let (commit, push) = r.deploy(&project(APP, "one"), "main");
    assert_eq!(job_state(&r.s, &commit).1, "succeeded", "{push}");
    let main = r.host("main");
    r.stop_runner();
    assert!(r.get(&main, "/").body.starts_with("hello from main"), "the site outlives its runner");
    // The host rebooted: nothing of the site runs; a new runner starts what it needs.
    for pid in pids_in(&router_file(&r, "run"), ".pid") {
        // Each is the leader of its process group (nginx's workers, PHP-FPM's children).
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    assert!(eventually(10, || r.get(&main, "/").status == 0));
    r.start_runner();
    assert!(eventually(20, || r.get(&main, "/").body.starts_with("hello from main")), "{}", r.runner_log());
}

#[test]
fn a_runtime_the_host_lacks_fails_the_deploy_and_says_which_it_has() {
    let r = Routed::new("router-runtime");
    let (first, _) = r.deploy(&project(APP, "one"), "main");
    assert_eq!(job_state(&r.s, &first).1, "succeeded");
    let app = APP.replace("type: php:8.2", "type: php:7.0");
    let (commit, push) = r.deploy(&project(&app, "two"), "main");
    let (id, state) = job_state(&r.s, &commit);
    assert_eq!(state, "failed", "{push}");
    let log = log_of(&r.s, id);
    assert!(log.contains("runtime `php:7.0` is not installed on this host (it has php:8.2"), "{log}");
    assert!(r.get(&r.host("main"), "/media/logo.txt").body == "logo one\n", "the previous release still serves");
}

#[test]
fn a_router_configuration_nginx_refuses_fails_the_job_and_the_previous_one_serves() {
    let r = Routed::new("router-invalid");
    let (first, _) = r.deploy(&project(APP, "one"), "main");
    assert_eq!(job_state(&r.s, &first).1, "succeeded");
    let sites = router_file(&r, "sites");
    let before: Vec<String> =
        std::fs::read_dir(&sites).unwrap().flatten().map(|e| std::fs::read_to_string(e.path()).unwrap()).collect();
    // Valid YAML and schema (a rule is any string), not a regular expression nginx compiles.
    let app = APP.replace(r"\.(css|txt)$:", r"\.(css|txt$:");
    let (commit, _) = r.deploy(&project(&app, "two"), "main");
    let (id, state) = job_state(&r.s, &commit);
    assert_eq!(state, "failed");
    let log = log_of(&r.s, id);
    assert!(log.contains("the router refuses this environment's configuration") && log.contains("pcre"), "{log}");
    let after: Vec<String> =
        std::fs::read_dir(&sites).unwrap().flatten().map(|e| std::fs::read_to_string(e.path()).unwrap()).collect();
    assert_eq!(before, after, "the previous configuration stays in place");
    assert_eq!(r.get(&r.host("main"), "/media/logo.txt").body, "logo one\n");
}

const NODE_APP: &str = r#"name: api
type: nodejs:20
web:
    commands:
        start: "node server.js"
    locations:
        "/":
            passthru: true
disk: 512
"#;

const NODE_SERVER: &str = r#"const BOOT = Math.random().toString(36).slice(2);
require('http').createServer((req, res) => {
  res.end('node ' + process.env.MAGENTO_CLOUD_ENVIRONMENT + ' ' + req.url + ' boot=' + BOOT + ' pid=' + process.pid);
}).listen(process.env.PORT, '127.0.0.1');
"#;

#[test]
fn a_start_command_app_is_served_and_restarted_when_it_dies() {
    let r = Routed::new("router-node");
    let files = vec![
        (".magento.app.yaml", NODE_APP.to_owned()),
        (
            ".magento/routes.yaml",
            "\"https://{default}/\":\n    type: upstream\n    upstream: \"api:http\"\n".to_owned(),
        ),
        ("server.js", NODE_SERVER.to_owned()),
    ];
    let (commit, push) = r.deploy(&files, "main");
    assert_eq!(job_state(&r.s, &commit).1, "succeeded", "{push}\n{}", r.runner_log());
    let main = r.host("main");
    let mut first = Response::default();
    assert!(
        eventually(20, || {
            first = r.get(&main, "/hello");
            first.body.starts_with("node main /hello boot=")
        }),
        "{first:?}"
    );
    // The app dies: its supervisor starts it again. It tells its pid in its own PID namespace.
    let inner: i32 = first.body.rsplit('=').next().unwrap().parse().unwrap();
    let pid = host_pid(&r, inner, "server.js").expect("the app's process on the host");
    let boot = first.body.split("boot=").nth(1).unwrap().split(' ').next().unwrap().to_owned();
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut again = Response::default();
    assert!(
        eventually(20, || {
            again = r.get(&main, "/");
            again.body.starts_with("node main / boot=") && !again.body.contains(&format!("boot={boot} "))
        }),
        "{again:?}"
    );
}

/// Requests from `threads` keep-alive connections until `stop`; the statuses seen, and the
/// connection errors.
fn load(
    port: u16,
    host: String,
    threads: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<(Vec<u16>, Vec<String>)>> {
    (0..threads)
        .map(|_| {
            let (host, stop) = (host.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut statuses, mut errors) = (Vec::new(), Vec::new());
                let mut conn = Conn::open(port).ok();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let Some(c) = conn.as_mut() else {
                        errors.push("connect".into());
                        conn = Conn::open(port).ok();
                        continue;
                    };
                    match c.request(&host, "/catalog", false) {
                        Ok(resp) => {
                            if resp.status != 200 && resp.status != 503 {
                                errors.push(format!("{} {}", resp.status, resp.body));
                            }
                            if resp.status == 503 && resp.header("retry-after").is_none() {
                                errors.push("503 without Retry-After".into());
                            }
                            statuses.push(resp.status);
                            if resp.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
                                conn = Conn::open(port).ok();
                            }
                        }
                        Err(e) => {
                            errors.push(e.to_string());
                            conn = Conn::open(port).ok();
                        }
                    }
                }
                (statuses, errors)
            })
        })
        .collect()
}

/// 20 deploys and 5 rollbacks under load; the statuses seen and the errors.
fn deploys_under_load(r: &Routed, app: &str) -> (Vec<u16>, Vec<String>) {
    let (first, _) = r.deploy(&project(app, "v0"), "main");
    assert_eq!(job_state(&r.s, &first).1, "succeeded");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = load(r.port, r.host("main"), 4, stop.clone());
    for i in 1..=20 {
        let (commit, push) = r.deploy(&project(app, &format!("v{i}")), "main");
        assert_eq!(job_state(&r.s, &commit).1, "succeeded", "{push}");
        if i % 4 == 0 {
            let back = runner(&r.s, &["rollback", "main"]);
            assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut statuses, mut errors) = (Vec::new(), Vec::new());
    for c in clients {
        let (s, e) = c.join().unwrap();
        statuses.extend(s);
        errors.extend(e);
    }
    (statuses, errors)
}

#[test]
fn deploys_and_rollbacks_under_load_fail_no_request() {
    let r = Routed::new("router-load");
    // With a deploy hook: the maintenance answer while it runs, else 200; never an error.
    let app = APP.replace("        echo building\n", "        echo building\n    deploy: |\n        sleep 0.2\n");
    let (statuses, errors) = deploys_under_load(&r, &app);
    assert!(errors.is_empty(), "{} errors, first: {:?}", errors.len(), errors.first());
    assert!(statuses.iter().filter(|s| **s == 200).count() > 100, "the load ran: {}", statuses.len());
    assert!(statuses.contains(&503), "the deploy hooks' maintenance was seen");

    // Without a deploy hook there is no maintenance window: every answer is 200.
    let r = Routed::new("router-load-nohook");
    let (statuses, errors) = deploys_under_load(&r, APP);
    assert!(errors.is_empty(), "{} errors, first: {:?}", errors.len(), errors.first());
    assert!(statuses.iter().all(|s| *s == 200), "{} non-200", statuses.iter().filter(|s| **s != 200).count());
    assert!(statuses.len() > 100);
}
