//! What makes an environment a running site: the router (nginx, from `routes.yaml` and each
//! app's `web.locations`), the apps (PHP-FPM pools, supervised start commands) and who they
//! run as. The release phase asks it to [`prepare`](Platform::prepare) a deployment (checked
//! before anything changes: runtimes, the router's configuration) and to
//! [`activate`](Platform::activate) it once `current` is switched; the runner
//! [reconciles](Platform::reconcile) what runs with what should (a fresh host, a deleted branch).
//!
//! ```text
//! DATA/platform.json             how environments are reached: {"router": ADDR, "domain": D}
//! DATA/runtimes.json             runtimes the admin declares (src/platform/runtimes.rs)
//! DATA/router/nginx.conf         the router's configuration; sites/KEY.conf one per environment
//! DATA/router/php/HASH/KEY.APP.conf  a PHP-FPM master per environment and app (and .env.json,
//!                                the master's own environment)
//! DATA/router/pools/HASH/        its socket, pid file and log (the project's user's)
//! DATA/router/services/KEY/      how the environment's service instances are started
//! DATA/router/apps/KEY.APP.json  a start command, as its supervisor runs it
//! DATA/router/run/, logs/        pid files, sockets, the processes' logs
//! ENV/site.json                  the environment's URLs and what serves it
//! ```

pub mod beneath;
pub mod cgroup;
pub mod disk;
pub mod egress;
pub mod layers;
pub mod network;
pub mod nginx;
pub mod php;
pub mod process;
pub mod routes;
pub mod runtimes;
pub mod sandbox;
pub mod services;
pub mod users;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::DataDir;
use routes::{Resolved, Site};
use users::User;

/// How environments are reached (`DATA/platform.json`; `serve --router --domain` override it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Where the router listens; no router without it.
    #[serde(default)]
    pub router: Option<SocketAddr>,
    /// The base domain: an environment is at `ENV.PROJECT.DOMAIN`.
    #[serde(default = "default_domain")]
    pub domain: String,
}

fn default_domain() -> String {
    "localhost".to_owned()
}

impl Default for Settings {
    fn default() -> Settings {
        Settings { router: None, domain: default_domain() }
    }
}

impl Settings {
    pub fn load(data: &DataDir) -> Result<Settings, String> {
        let path = data.platform_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

/// What an environment serves, kept beside it (`ENV/site.json`): its URLs for people and
/// `envs`, and what the runner keeps running for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// False once its branch is deleted: off the router, its processes stopped.
    pub active: bool,
    pub key: String,
    pub repo: String,
    pub branch: String,
    pub urls: Vec<String>,
    pub primary_url: Option<String>,
    /// `KEY.APP` of its PHP-FPM masters and supervised apps.
    pub pools: Vec<String>,
    pub apps: Vec<String>,
}

impl SiteRecord {
    /// The hosts of its URLs.
    pub fn hosts(&self) -> Vec<String> {
        let of_url = |u: &String| {
            let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
            rest.split(['/', ':']).next().unwrap_or_default().to_owned()
        };
        self.urls.iter().map(of_url).collect()
    }

    pub fn read(env_dir: &Path) -> Option<SiteRecord> {
        serde_json::from_str(&std::fs::read_to_string(env_dir.join("site.json")).ok()?).ok()
    }

    fn write(&self, env_dir: &Path) -> Result<(), String> {
        write_if_changed(&env_dir.join("site.json"), &serde_json::to_string_pretty(self).unwrap_or_default(), 0o644)
            .map(|_| ())
    }
}

/// A start command as its supervisor runs it (`DATA/router/apps/KEY.APP.json`, mode 0600:
/// it holds the app's credentials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StartCommand {
    command: String,
    dir: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
    user: Option<(u32, u32)>,
    /// In the app's sandbox: the whole program line (bubblewrap, then `sh -c COMMAND`) and
    /// its cgroup; empty: `sh -c COMMAND` as it is.
    #[serde(default)]
    program: Vec<String>,
    #[serde(default)]
    cgroups: Vec<PathBuf>,
    /// Its environment's network namespace (it listens on its port there, reached through the
    /// environment's forwarder); none: the host's network.
    #[serde(default)]
    netns: Option<PathBuf>,
}

/// What the release phase hands over for one environment.
pub struct Deployment<'a> {
    /// The environment's directory (`ENV`; its `current` is what is served).
    pub env_dir: &'a Path,
    pub repo: &'a str,
    pub branch: &'a str,
    pub environment: &'a str,
    pub plan: &'a crate::core::plan::Plan,
    pub topology: &'a crate::topology::Topology,
    /// The runtime environment of an app (its name, its directory).
    pub env_of: AppEnv<'a>,
}

/// The runtime environment of an app, by its name and directory.
pub type AppEnv<'a> = &'a dyn Fn(&str, &Path) -> Vec<(String, String)>;

/// A deployment checked and rendered, ready to be put in place.
pub struct Prepared {
    key: String,
    site: String,
    /// `KEY.APP`, its PHP-FPM, its configuration and its master's own environment.
    pools: Vec<(String, PathBuf, String, Vec<(String, String)>)>,
    apps: Vec<(String, StartCommand)>,
    record: SiteRecord,
    /// What the router leaves out or the host cannot do, for the deploy log.
    pub warnings: Vec<String>,
}

impl Prepared {
    pub fn urls(&self) -> &[String] {
        &self.record.urls
    }

    pub fn primary_url(&self) -> Option<&str> {
        self.record.primary_url.as_deref()
    }

    /// Whether any app has a deploy hook (and the environment needs a maintenance window).
    pub fn needs_maintenance(plan: &crate::core::plan::Plan) -> bool {
        plan.apps.iter().any(|a| a.config.pointer("/hooks/deploy").and_then(Value::as_str).is_some())
    }
}

/// The router and apps of one host.
#[derive(Debug)]
pub struct Platform {
    data: DataDir,
    listen: SocketAddr,
    domain: String,
    runtimes: runtimes::Runtimes,
    web_user: Option<User>,
    /// The sandbox apps run in (the hooks' kind: `serve` detects it, `--no-sandbox` turns it
    /// off for both).
    sandbox: sandbox::Sandbox,
}

impl Platform {
    /// The platform for `settings`; None without a router.
    pub fn new(data: &DataDir, settings: &Settings) -> Result<Option<Platform>, String> {
        let Some(listen) = settings.router else { return Ok(None) };
        let domain = settings.domain.trim_matches('.').to_ascii_lowercase();
        if domain.is_empty() || !domain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-') {
            return Err(format!("`{}` is not a domain name", settings.domain));
        }
        let root = data.root().display().to_string();
        if root.contains(|c: char| c.is_whitespace() || "\"'\\;{}$#".contains(c)) {
            return Err(format!("the data directory {root} has characters nginx cannot take in a path"));
        }
        let runtimes = runtimes::Runtimes::load(&data.runtimes_file())?;
        Ok(Some(Platform {
            data: data.clone(),
            listen,
            domain,
            runtimes,
            web_user: users::web_user()?,
            sandbox: sandbox::Sandbox::Off,
        }))
    }

    /// The platform a serving runner keeps its sites with: `DATA/platform.json` with `router`
    /// and `domain` given on the command line over it, its apps in `sandbox` (the hooks' kind:
    /// none with `--no-sandbox`), the router started with every active environment's sites.
    /// None without a router address.
    pub fn serving(
        data: &DataDir,
        router: Option<SocketAddr>,
        domain: Option<String>,
        sandbox: sandbox::Sandbox,
    ) -> Result<Option<Platform>, String> {
        std::fs::create_dir_all(data.root()).map_err(|e| format!("{}: {e}", data.root().display()))?;
        let mut settings = Settings::load(data)?;
        settings.router = router.or(settings.router);
        settings.domain = domain.unwrap_or(settings.domain);
        let Some(mut platform) = Platform::new(data, &settings)? else { return Ok(None) };
        platform.sandbox = sandbox;
        platform.start().map_err(|e| format!("the router cannot start: {e}"))?;
        tracing::info!(router = %platform.listen, domain = %platform.domain, "router running");
        Ok(Some(platform))
    }

    /// Starts the PHP-FPM master of pool `id` of the environment `env_dir`. In the sandbox
    /// (where the runner has one), as the project's user: the environment's releases and
    /// `current` read-only, its mounts and the pool's own directory (socket, pid file, log)
    /// writable, its configuration read-only; the rest of the data directory (other projects,
    /// the queue, the logs, the admin's files) absent; a private `/tmp`; in a cgroup of its own
    /// (`app-ID`: memory and processes bounded as the hooks' are by default).
    fn start_pool(&self, env_dir: &Path, repo: &str, id: &str, php_fpm: &Path) -> Result<(), String> {
        let files = self.pool_files(id);
        let limits = self.limits_of(repo);
        let user = self.pool_user(env_dir)?;
        let netns = network::Network::of(&self.data, &site_key(env_dir)).ensure()?;
        let sandboxed = |program: &Path, args: &[&std::ffi::OsStr]| {
            let mounts = env_dir.join("mounts");
            let pool_dir = files.socket.parent().unwrap_or(Path::new("/"));
            let mut writable = vec![pool_dir];
            if mounts.is_dir() {
                writable.push(&mounts);
            }
            let jail = sandbox::Jail {
                writable,
                readable: vec![env_dir, files.conf.parent().unwrap_or(Path::new("/"))],
                hidden: vec![self.data.root()],
                network: true,
                netns: netns.as_deref(),
                limits,
            };
            let made =
                self.sandbox.app_command(&jail, user.as_ref(), Path::new("/"), &short_hash(id), program, args)?;
            Ok(made.map(|(command, cgroup, status)| {
                // Recorded for whoever stops the pool: its cgroup goes with it.
                let _ = write_if_changed(
                    &files.conf.with_extension("cgroup.json"),
                    &serde_json::to_string(&cgroup).unwrap_or_default(),
                    0o600,
                );
                (command, status)
            }))
        };
        std::fs::create_dir_all(self.router().join("run")).map_err(|e| e.to_string())?;
        php::start(php_fpm, &files, sandboxed)
    }

    /// The limits of a project's apps: its hooks' (`sandbox.json`: `memory_mb`, `processes`).
    fn limits_of(&self, repo: &str) -> cgroup::Limits {
        crate::runner::declared::Declared::load(self.data.root(), Path::new(repo))
            .map(|d| d.sandbox.limits())
            .unwrap_or_else(|_| sandbox::Policy::default().limits())
    }

    /// Whether pools run in the sandbox (as the project's user, who cannot switch users).
    fn pools_sandboxed(&self) -> bool {
        self.sandbox.is_on()
    }

    /// The project's user of an environment (None where the runner cannot switch users).
    fn pool_user(&self, env_dir: &Path) -> Result<Option<User>, String> {
        users::app_user(env_dir.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or(""))
    }

    /// The pool's directory (socket, pid file, log), its master's and the router workers' alone:
    /// the project's user owns it, the workers reach it by group.
    /// A pool's directories. Its configuration's (`router/php/HASH`, root's, read by the
    /// project's group when the master runs sandboxed as the project's user; bound whole into
    /// the sandbox, so a configuration renamed into place is the one a reload reads). Its
    /// socket's, pid file's and log's (`router/pools/HASH`): the sandboxed master's own, the
    /// router's workers reaching it by group; root's where the master runs as root (no
    /// sandbox), since root must not write through what a project's user can change.
    fn pool_dir(&self, id: &str, user: Option<&User>) -> Result<(), String> {
        use std::os::unix::fs::PermissionsExt;
        let files = self.pool_files(id);
        let set = |dir: &Path, owner: u32, group: u32, mode: u32| -> Result<(), String> {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            std::os::unix::fs::lchown(dir, Some(owner), Some(group)).map_err(|e| format!("{}: {e}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: {e}", dir.display()))
        };
        let (conf_dir, run_dir) =
            (files.conf.parent().unwrap_or(Path::new("/")), files.socket.parent().unwrap_or(Path::new("/")));
        match (user, self.web_user.as_ref()) {
            (Some(user), Some(web)) if self.pools_sandboxed() => {
                set(conf_dir, 0, user.gid, 0o750)?;
                set(run_dir, user.uid, web.gid, 0o710)?;
                if files.conf.exists() {
                    std::os::unix::fs::lchown(&files.conf, Some(0), Some(user.gid))
                        .map_err(|e| format!("{}: {e}", files.conf.display()))?;
                    std::fs::set_permissions(&files.conf, std::fs::Permissions::from_mode(0o640))
                        .map_err(|e| format!("{}: {e}", files.conf.display()))?;
                }
            }
            (_, Some(web)) => {
                set(conf_dir, 0, 0, 0o700)?;
                set(run_dir, 0, web.gid, 0o750)?;
            }
            _ => {
                std::fs::create_dir_all(conf_dir).map_err(|e| format!("{}: {e}", conf_dir.display()))?;
                std::fs::create_dir_all(run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
            }
        }
        Ok(())
    }

    fn router(&self) -> PathBuf {
        self.data.router()
    }

    /// Starts the router if it is not running, with the current sites, and what every active
    /// environment needs.
    pub fn start(&self) -> Result<(), String> {
        let lock = self.lock_router()?;
        self.ensure_router(&lock)?;
        drop(lock);
        self.reconcile();
        Ok(())
    }

    /// Starts nginx again if it is gone (killed, crashed): what the serving loop calls every
    /// second. A router whose master is alive is left alone.
    pub fn supervise_router(&self) -> Result<(), String> {
        if self.router_pid().is_some() {
            return Ok(());
        }
        let lock = self.lock_router()?;
        self.ensure_router(&lock).map(|_| ())
    }

    fn lock_router(&self) -> Result<RouterLock, String> {
        RouterLock::take(&self.router())
    }

    fn router_pid(&self) -> Option<i32> {
        router_pid(&self.router())
    }

    /// The router's configuration written and nginx running with it (reloaded if it changed);
    /// true when nginx was started or reloaded.
    fn ensure_router(&self, _lock: &RouterLock) -> Result<bool, String> {
        let root = self.router();
        for dir in ["sites", "php", "apps", "run", "logs"] {
            std::fs::create_dir_all(root.join(dir)).map_err(|e| format!("{}: {e}", root.join(dir).display()))?;
        }
        if self.web_user.is_some() {
            // The workers go through the data directory to the releases; they may not list it.
            for dir in [self.data.root().to_owned(), self.data.environments()] {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::create_dir_all(&dir);
                if let Ok(meta) = std::fs::metadata(&dir) {
                    let mode = meta.permissions().mode();
                    if mode & 0o001 == 0 {
                        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o011));
                    }
                }
            }
        }
        let conf = root.join("nginx.conf");
        let main = nginx::render_main(&root, self.listen, self.web_user.as_ref().map(|u| u.name.as_str()));
        let changed = write_if_changed(&conf, &main, 0o644)?;
        match self.router_pid() {
            Some(pid) if changed => self.reload(pid)?,
            Some(_) => return Ok(false),
            None => {
                self.nginx(&["-t"])?;
                // A master killed alone leaves its workers serving the old configuration, and
                // holding the port: they go first (they finish the requests they have).
                let orphans = nginx::orphaned_workers(self.listen);
                if !orphans.is_empty() {
                    tracing::warn!(workers = ?orphans, "nginx's master is gone; stopping the workers it left");
                    process::stop_all(&orphans, libc::SIGQUIT, Duration::from_secs(2));
                }
                process::run_detached(&mut self.nginx_command(&[])).map_err(|e| format!("starting nginx: {e}"))?;
            }
        }
        Ok(true)
    }

    fn nginx_command(&self, args: &[&str]) -> std::process::Command {
        let root = self.router();
        let mut c = std::process::Command::new("nginx");
        c.arg("-p").arg(&root).arg("-e").arg(root.join("logs/error.log")).arg("-c").arg(root.join("nginx.conf"));
        c.args(args);
        c
    }

    fn nginx(&self, args: &[&str]) -> Result<(), String> {
        let out = self.nginx_command(args).output().map_err(|e| format!("running nginx: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// Reloads the router and waits until a worker of the new configuration runs.
    fn reload(&self, pid: i32) -> Result<(), String> {
        let before = children(pid);
        process::signal(pid, libc::SIGHUP);
        let since = std::time::Instant::now();
        // Done when workers of the new configuration run and the old ones stopped accepting
        // (gone, or finishing their open connections: "shutting down").
        let old_quiet = |c: &i32| {
            std::fs::read(format!("/proc/{c}/cmdline"))
                .map_or(true, |t| String::from_utf8_lossy(&t).contains("shutting down"))
        };
        while since.elapsed() < Duration::from_secs(5) {
            if children(pid).iter().any(|c| !before.contains(c)) && before.iter().all(old_quiet) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err("nginx did not start workers with the new configuration within 5 s (see DATA/router/logs/error.log)".into())
    }

    /// Checks and renders a deployment: its runtimes, its PHP-FPM pools, its router
    /// configuration (`nginx -t` with it in place of the environment's current one). Nothing
    /// changes yet; Err says why it cannot be served.
    pub fn prepare(&self, d: &Deployment<'_>) -> Result<Prepared, String> {
        let key = site_key(d.env_dir);
        let project = d.env_dir.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("project");
        let project = project.rsplit_once('-').map_or(project, |(name, _)| name);
        let site = Site {
            project,
            environment: d.environment,
            domain: &self.domain,
            port: self.listen.port(),
            default_environment: default_branch(d.repo).as_deref() == Some(d.branch),
        };
        let routes_json = match &d.plan.routes {
            Some(Value::Object(map)) => map.clone(),
            _ => default_routes(d.topology),
        };
        let (resolved, mut warnings) = routes::resolve(&routes_json, &site);
        self.check_hosts_free(d.env_dir, &resolved)?;
        let app_user =
            users::app_user(d.env_dir.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or(""))?;
        if app_user.is_none() {
            warnings.push(
                "the runner is not root: apps run as the runner's own user (start the runner as root to run each \
                 project's apps as a user of its own)"
                    .into(),
            );
        }
        let current = d.env_dir.join("current");
        let mut serves = BTreeMap::new();
        let mut pools = Vec::new();
        let mut apps = Vec::new();
        for app in &d.plan.apps {
            let kind = app.config.get("type").and_then(Value::as_str).unwrap_or_default();
            let runtime = self.runtimes.get(kind)?;
            let dir = current.join(&app.name);
            let id = format!("{key}.{}", app.name);
            let mut env = (d.env_of)(&app.name, &dir);
            let start =
                app.config.pointer("/web/commands/start").and_then(Value::as_str).filter(|s| !s.trim().is_empty());
            let backend = match (start, &runtime.php_fpm) {
                (None, Some(php_fpm)) => {
                    let files = self.pool_files(&id);
                    let php::Rendered { text, master_env, warnings: more } = php::render(&php::Pool {
                        name: &routes::label(&id),
                        pid_file: &files.pid,
                        error_log: &files.log,
                        socket: &files.socket,
                        user: app_user.as_ref(),
                        listener: self.web_user.as_ref(),
                        sandboxed: self.pools_sandboxed(),
                        dir: &dir,
                        env: &env,
                        config: &app.config,
                    });
                    warnings.extend(more);
                    self.pool_dir(&id, app_user.as_ref())?;
                    let candidate = files.conf.with_extension("conf.new");
                    write_if_changed(&candidate, &text, 0o600)?;
                    let as_user = app_user.as_ref().filter(|_| self.pools_sandboxed());
                    if let Some(user) = as_user {
                        use std::os::unix::fs::PermissionsExt;
                        let _ = std::os::unix::fs::lchown(&candidate, Some(0), Some(user.gid));
                        let _ = std::fs::set_permissions(&candidate, std::fs::Permissions::from_mode(0o640));
                    }
                    let checked = php::check(php_fpm, &candidate, as_user.map(|u| (u.uid, u.gid)));
                    let _ = std::fs::remove_file(&candidate);
                    checked.map_err(|e| format!("PHP-FPM refuses the configuration of app `{}`: {e}", app.name))?;
                    pools.push((id.clone(), php_fpm.clone(), text, master_env));
                    nginx::Backend::Fpm(files.socket)
                }
                (None, None) => {
                    return Err(format!(
                        "app `{}` ({kind}) has no `web.commands.start`: only PHP apps are served without one",
                        app.name
                    ))
                }
                (Some(command), _) => {
                    let port = self.port_of(&id)?;
                    let path = match &runtime.bin {
                        Some(bin) => format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
                        None => "/usr/local/bin:/usr/bin:/bin".to_owned(),
                    };
                    env.push(("PATH".into(), path));
                    env.push(("PORT".into(), port.to_string()));
                    env.push(("HOME".into(), dir.display().to_string()));
                    let user = app_user.as_ref().map(|u| (u.uid, u.gid));
                    let limits = self.limits_of(d.repo);
                    apps.push((
                        id.clone(),
                        self.start_command(d.env_dir, &id, command, dir.clone(), env, port, user, limits)?,
                    ));
                    nginx::Backend::Http(port)
                }
            };
            let web = app.config.get("web").cloned().unwrap_or(Value::Null);
            serves.insert(app.name.clone(), nginx::AppServe { dir, web, backend });
        }
        let maintenance = d.env_dir.join("maintenance");
        let (text, more) = nginx::render_site(&nginx::SiteConf {
            listen: self.listen,
            routes: &resolved,
            apps: &serves,
            maintenance: &maintenance,
        });
        warnings.extend(more);
        self.check_site(&key, &text)?;
        let primary_url = routes::primary(&resolved).map(|r| r.url.clone());
        let record = SiteRecord {
            active: true,
            key: key.clone(),
            repo: d.repo.to_owned(),
            branch: d.branch.to_owned(),
            urls: urls(&resolved),
            primary_url,
            pools: pools.iter().map(|p| p.0.clone()).collect(),
            apps: apps.iter().map(|a| a.0.clone()).collect(),
        };
        Ok(Prepared { key, site: text, pools, apps, record, warnings })
    }

    /// A host is served by one environment on the whole server: one that another environment
    /// (of this project or another) serves is refused, naming who serves it.
    fn check_hosts_free(&self, env_dir: &Path, resolved: &[Resolved]) -> Result<(), String> {
        // (The project's bare domain, which the default branch's environments share, is not
        // claimed here.)
        let mine: std::collections::BTreeSet<&str> = resolved.iter().map(|r| r.host.as_str()).collect();
        for env in crate::store::deployed::all(self.data.root()) {
            if env.root == env_dir {
                continue;
            }
            let Some(record) = SiteRecord::read(&env.root).filter(|r| r.active) else { continue };
            for host in record.hosts() {
                if mine.contains(host.as_str()) {
                    return Err(format!(
                        "host {host} is served by environment {} of {}: a host belongs to one environment on this \
                         server (change the route, or delete that environment)",
                        record.branch, record.repo
                    ));
                }
            }
        }
        Ok(())
    }

    /// `nginx -t` of the router with `text` as the site `key`.
    fn check_site(&self, key: &str, text: &str) -> Result<(), String> {
        let root = self.router();
        // A place of this check's own: deployments check their sites at the same time.
        let test_dir = root.join("run").join(format!("test.{}", unique_suffix()));
        let _ = std::fs::remove_dir_all(&test_dir);
        std::fs::create_dir_all(&test_dir).map_err(|e| format!("{}: {e}", test_dir.display()))?;
        let candidate = test_dir.join(format!("{key}.conf"));
        std::fs::write(&candidate, text).map_err(|e| format!("{}: {e}", candidate.display()))?;
        // The other sites as they are now: none is written meanwhile.
        let lock = self.lock_router()?;
        let mut includes = vec![candidate.clone()];
        for entry in std::fs::read_dir(root.join("sites")).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_str().unwrap_or_default();
            if name.ends_with(".conf") && name != format!("{key}.conf") {
                includes.push(entry.path());
            }
        }
        let main = nginx::render_main(&root, self.listen, self.web_user.as_ref().map(|u| u.name.as_str()));
        let list = includes.iter().map(|p| format!("    include \"{}\";\n", p.display())).collect::<String>();
        let main = main.replace(&format!("    include \"{}\";\n", root.join("sites/*.conf").display()), &list);
        let conf = test_dir.join("nginx.conf");
        std::fs::write(&conf, main).map_err(|e| format!("{}: {e}", conf.display()))?;
        let out = std::process::Command::new("nginx")
            .arg("-t")
            .arg("-p")
            .arg(&root)
            .arg("-e")
            .arg(root.join("logs/error.log"))
            .arg("-c")
            .arg(&conf)
            .output()
            .map_err(|e| format!("running nginx: {e}"));
        drop(lock);
        let _ = std::fs::remove_dir_all(&test_dir);
        let out = out?;
        if out.status.success() {
            Ok(())
        } else {
            let why = String::from_utf8_lossy(&out.stderr);
            let why: Vec<&str> = why.lines().filter(|l| !l.contains("test failed")).collect();
            Err(format!("the router refuses this environment's configuration: {}", why.join("; ")))
        }
    }

    /// Puts a prepared deployment in place once `current` points at its release: PHP-FPM
    /// masters started or reloaded when their configuration changed, start commands
    /// restarted, the site file written and the router reloaded only if its text changed.
    pub fn activate(&self, env_dir: &Path, prepared: &Prepared) -> Result<(), String> {
        let network = network::Network::of(&self.data, &prepared.key);
        // The start commands' ports, reached inside the environment's network.
        let ports: Vec<u16> = prepared.apps.iter().filter(|(_, a)| a.netns.is_some()).map(|(_, a)| a.port).collect();
        network.expose(&ports)?;
        let netns = network.ensure()?.filter(|_| self.pools_sandboxed());
        for (id, php_fpm, text, master_env) in &prepared.pools {
            let files = self.pool_files(id);
            let env_changed = write_if_changed(
                &php::env_file(&files.conf),
                &serde_json::to_string(master_env).unwrap_or_default(),
                0o600,
            )?;
            let changed = write_if_changed(&files.conf, text, 0o600)?;
            self.pool_dir(id, self.pool_user(env_dir)?.as_ref())?;
            let whose = process::Whose::PhpFpm(&files.conf);
            // A master of an earlier layout (its files under router/run) goes.
            let earlier = self.router().join("php").join(format!("{id}.conf"));
            process::stop(
                &self.router().join("run").join(format!("{id}.php.pid")),
                process::Whose::PhpFpm(&earlier),
                Duration::from_secs(30),
            );
            // And one that wrote its own pid file in its pool's directory (in the host's PID
            // namespace): started again in one of its own.
            stop_unconfined_pool(&self.router(), id);
            match process::alive(&files.pid, whose) {
                // A graceful reload keeps the master's environment: one that changed needs a
                // new master.
                // A master outside its environment's network (started before it had one).
                Some(pid) if env_changed || netns.as_ref().is_some_and(|ns| !network::same_namespace(pid, ns)) => {
                    process::stop(&files.pid, whose, Duration::from_secs(30));
                    self.start_pool(env_dir, &prepared.record.repo, id, php_fpm)?
                }
                Some(pid) if changed => process::signal(pid, libc::SIGUSR2),
                Some(_) => {}
                None => self.start_pool(env_dir, &prepared.record.repo, id, php_fpm)?,
            }
        }
        for (id, start) in &prepared.apps {
            let file = self.router().join("apps").join(format!("{id}.json"));
            write_if_changed(&file, &serde_json::to_string_pretty(start).unwrap_or_default(), 0o600)?;
            // The new release's code runs only in a new process; what the old one left in its
            // cgroup (a daemon outside its process group) goes too.
            process::stop(&self.app_pid(id), process::Whose::Supervisor, Duration::from_secs(10));
            if !start.cgroups.is_empty() {
                cgroup::Cgroup::at(start.cgroups.clone()).kill_and_keep();
            }
            self.start_app(id)?;
        }
        // What the previous release ran and this one does not.
        if let Some(old) = SiteRecord::read(env_dir) {
            for id in old.pools.iter().filter(|p| !prepared.record.pools.contains(p)) {
                let files = self.pool_files(id);
                process::stop(&files.pid, process::Whose::PhpFpm(&files.conf), Duration::from_secs(30));
            }
            for id in old.apps.iter().filter(|a| !prepared.record.apps.contains(a)) {
                process::stop(&self.app_pid(id), process::Whose::Supervisor, Duration::from_secs(10));
            }
        }
        let site = self.router().join("sites").join(format!("{}.conf", prepared.key));
        let lock = self.lock_router()?;
        if write_if_changed(&site, &prepared.site, 0o644)? {
            // Not `start`: reconciling is the serving loop's, never two at once.
            if !self.ensure_router(&lock)? {
                if let Some(pid) = self.router_pid() {
                    self.reload(pid)?;
                }
            }
        }
        drop(lock);
        prepared.record.write(env_dir)
    }

    fn pool_files(&self, id: &str) -> php::Files {
        pool_files(&self.router(), id)
    }

    fn app_pid(&self, id: &str) -> PathBuf {
        self.router().join("run").join(format!("{id}.app.pid"))
    }

    /// The port of a start command: the one it had, else a free one.
    fn port_of(&self, id: &str) -> Result<u16, String> {
        let file = self.router().join("apps").join(format!("{id}.json"));
        if let Some(old) =
            std::fs::read_to_string(&file).ok().and_then(|t| serde_json::from_str::<StartCommand>(&t).ok())
        {
            return Ok(old.port);
        }
        let socket = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
        socket.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
    }

    fn start_app(&self, id: &str) -> Result<(), String> {
        start_app(&self.router(), id)
    }

    /// A start command as its supervisor runs it: in the app's sandbox (where the runner has
    /// one), as the project's user, seeing the environment's releases read-only and its mounts
    /// writable, nothing else of the data directory, on the host's network (it listens on its
    /// port there), in a cgroup of its own.
    #[allow(clippy::too_many_arguments)]
    fn start_command(
        &self,
        env_dir: &Path,
        id: &str,
        command: &str,
        dir: PathBuf,
        env: Vec<(String, String)>,
        port: u16,
        user: Option<(u32, u32)>,
        limits: cgroup::Limits,
    ) -> Result<StartCommand, String> {
        let mounts = env_dir.join("mounts");
        let mut writable = Vec::new();
        if mounts.is_dir() {
            writable.push(mounts.as_path());
        }
        let netns = network::Network::of(&self.data, &site_key(env_dir)).ensure()?;
        let jail = sandbox::Jail {
            writable,
            readable: vec![env_dir],
            hidden: vec![self.data.root()],
            network: true,
            netns: netns.as_deref(),
            limits,
        };
        let sandboxed = self.sandbox.supervised(&jail, &dir, &short_hash(id), "sh", &["-c", command])?;
        // Its environment's network only in its sandbox (without one, apps share the host's).
        let netns = netns.filter(|_| sandboxed.is_some());
        let (program, cgroups) = sandboxed.unwrap_or_default();
        Ok(StartCommand { command: command.to_owned(), dir, env, port, user, program, cgroups, netns })
    }

    /// Brings what runs in line with what should: environments whose branch was deleted go off
    /// the router with their processes; active ones get their processes back if they died
    /// (a fresh host, a crash). Returns the environments taken off.
    pub fn reconcile(&self) -> Vec<String> {
        let mut taken_off = Vec::new();
        for env in crate::store::deployed::all(self.data.root()) {
            let Some(record) = SiteRecord::read(&env.root) else { continue };
            if !record.active {
                stop_processes(&self.router(), &record); // what a deactivation cut short left
                services::ensure_instances(&self.data, &env.root, false);
                network::Network::of(&self.data, &record.key).keep(false);
                continue;
            }
            if branch_deleted(&record.repo, &record.branch) {
                deactivate(&self.data, &env.root);
                taken_off.push(format!("{} ({})", record.branch, record.key));
                continue;
            }
            // The network first: the processes started again join it; the apps' disks too (a
            // restarted host has none mounted).
            network::Network::of(&self.data, &record.key).keep(true);
            if !disk::apps(&env.root).is_empty() {
                if let Ok(Some(user)) = self.pool_user(&env.root) {
                    let mut stop = || stop_processes(&self.router(), &record);
                    if let Err(why) = disk::mount_all(&env.root, &user, &mut stop) {
                        tracing::warn!(environment = %record.key, "the apps' disks cannot be mounted: {why}");
                    }
                }
            }
            for id in &record.pools {
                let files = self.pool_files(id);
                if process::alive(&files.pid, process::Whose::PhpFpm(&files.conf)).is_none() && files.conf.exists() {
                    let kind = self.php_fpm_of(&env.root, id);
                    if let Some(php_fpm) = kind {
                        stop_unconfined_pool(&self.router(), id);
                        let started = self
                            .pool_user(&env.root)
                            .and_then(|user| self.pool_dir(id, user.as_ref()))
                            .and_then(|()| self.start_pool(&env.root, &record.repo, id, &php_fpm));
                        if let Err(e) = started {
                            tracing::warn!(error = %e, pool = %id, "restarting PHP-FPM");
                        }
                    }
                }
            }
            services::ensure_instances(&self.data, &env.root, true);
            for id in &record.apps {
                if process::alive(&self.app_pid(id), process::Whose::Supervisor).is_none() {
                    if let Err(e) = self.start_app(id) {
                        tracing::warn!(error = %e, app = %id, "restarting a start command");
                    }
                }
            }
        }
        taken_off
    }

    /// The PHP-FPM binary of a pool, from the app's type in the deployed release.
    fn php_fpm_of(&self, env_dir: &Path, id: &str) -> Option<PathBuf> {
        let app = id.rsplit_once('.')?.1;
        let env = crate::store::deployed::EnvDir { root: env_dir.to_owned() };
        let info = env.info(&env.current_release()?)?;
        let plan = info.plan?;
        let kind = plan.apps.iter().find(|a| a.name == app)?.config.get("type")?.as_str()?.to_owned();
        self.runtimes.get(&kind).ok()?.php_fpm.clone()
    }
}

/// Where a pool's files are: its configuration beside the others' (the runner's), its socket,
/// pid file and log in a directory of its own (`DATA/router/pools/HASH/`: socket paths are
/// short, 108 bytes at most, so it is named by a hash of the id).
fn pool_files(router: &Path, id: &str) -> php::Files {
    let dir = router.join("pools").join(short_hash(id));
    php::Files {
        conf: router.join("php").join(short_hash(id)).join(format!("{id}.conf")),
        // The runner's (a sandboxed master runs in a PID namespace of its own: the runner
        // writes the pid the host knows it by).
        pid: router.join("run").join(format!("{id}.fpm.pid")),
        socket: dir.join("php.sock"),
        log: dir.join("php.log"),
    }
}

/// Starts the supervisor of a start command (it goes on after the runner).
fn start_app(root: &Path, id: &str) -> Result<(), String> {
    let file = root.join("apps").join(format!("{id}.json"));
    let start: StartCommand = serde_json::from_str(&std::fs::read_to_string(&file).map_err(|e| e.to_string())?)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let supervised = process::Supervised {
        pid_file: root.join("run").join(format!("{id}.app.pid")),
        log: root.join("logs").join(format!("{id}.app.log")),
        dir: start.dir.clone(),
        user: start.user,
        program: if start.program.is_empty() {
            vec!["sh".into(), "-c".into(), start.command.clone()]
        } else {
            start.program.clone()
        },
        cgroups: start.cgroups.clone(),
        netns: start.netns.clone(),
    };
    process::start_supervisor(&supervised, &start.env)
}

/// After `current` moved without a deploy (a rollback): start commands run the code of the
/// release they started in, so they are started again. PHP needs nothing: each request
/// resolves `current` anew.
pub fn restart_apps(data: &DataDir, env_dir: &Path) -> Result<(), String> {
    let Some(record) = SiteRecord::read(env_dir).filter(|r| r.active) else { return Ok(()) };
    let root = data.router();
    for id in &record.apps {
        process::stop(
            &root.join("run").join(format!("{id}.app.pid")),
            process::Whose::Supervisor,
            Duration::from_secs(10),
        );
        start_app(&root, id)?;
    }
    Ok(())
}

/// Stops an environment's processes (its disks change under them); they start again with its
/// next activation, or the serving runner's next round if it stays active.
pub fn pause(data: &DataDir, env_dir: &Path) {
    if let Some(record) = SiteRecord::read(env_dir) {
        stop_processes(&data.router(), &record);
    }
}

/// Takes an environment off the router and stops its processes; its releases and data stay.
pub fn deactivate(data: &DataDir, env_dir: &Path) {
    let Some(mut record) = SiteRecord::read(env_dir) else { return };
    let root = data.router();
    let site = root.join("sites").join(format!("{}.conf", record.key));
    if let Ok(_lock) = RouterLock::take(&root) {
        if std::fs::remove_file(&site).is_ok() {
            if let Some(pid) = router_pid(&root) {
                process::signal(pid, libc::SIGHUP);
            }
        }
    }
    // Recorded before the processes stop: `envs` shows it off at once, and a runner that dies
    // here leaves reconcile to stop what is left.
    record.active = false;
    let _ = record.write(env_dir);
    stop_processes(&root, &record);
    services::ensure_instances(data, env_dir, false);
    network::Network::of(data, &record.key).keep(false);
}

/// Stops the master of pool `id` that ran in the host's PID namespace (its pid file, its own,
/// in the pool's directory), as the runners before pools had a PID namespace left it.
fn stop_unconfined_pool(root: &Path, id: &str) {
    let files = pool_files(root, id);
    let own = files.socket.with_file_name("php.pid");
    process::stop(&own, process::Whose::PhpFpm(&files.conf), Duration::from_secs(30));
    let _ = std::fs::remove_file(own);
}

fn stop_processes(root: &Path, record: &SiteRecord) {
    for id in &record.pools {
        stop_unconfined_pool(root, id);
        let conf = pool_files(root, id).conf;
        process::stop(&pool_files(root, id).pid, process::Whose::PhpFpm(&conf), Duration::from_secs(30));
        // What its workers left (a daemon that left their process group) goes with its cgroup.
        if let Some(dirs) = app_cgroup(&conf.with_extension("cgroup.json")) {
            drop(cgroup::Cgroup::at(dirs));
        }
    }
    for id in &record.apps {
        process::stop(
            &root.join("run").join(format!("{id}.app.pid")),
            process::Whose::Supervisor,
            Duration::from_secs(10),
        );
        if let Some(dirs) = start_command_cgroup(root, id) {
            drop(cgroup::Cgroup::at(dirs));
        }
    }
}

/// The cgroup an app's sandbox was given (recorded beside its configuration), if any.
fn app_cgroup(file: &Path) -> Option<Vec<PathBuf>> {
    let dirs: Vec<PathBuf> = serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    (!dirs.is_empty()).then_some(dirs)
}

/// The cgroup of a start command's sandbox, if it has one.
fn start_command_cgroup(root: &Path, id: &str) -> Option<Vec<PathBuf>> {
    let file = root.join("apps").join(format!("{id}.json"));
    let start: StartCommand = serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
    (!start.cgroups.is_empty()).then_some(start.cgroups)
}

/// The router's lock (`DATA/router/run/router.lock`), held while its configuration changes and
/// nginx is checked, started or reloaded: by every worker of every runner on this host and by
/// the serving loop, one at a time (two reloads at once cannot tell whose workers they wait
/// for; two starts race for the port; a check must not read a site being written).
struct RouterLock {
    _held: std::fs::File,
}

impl RouterLock {
    fn take(router: &Path) -> Result<RouterLock, String> {
        let run = router.join("run");
        std::fs::create_dir_all(&run).map_err(|e| format!("{}: {e}", run.display()))?;
        Ok(RouterLock { _held: lock_file(&run.join("router.lock"))? })
    }
}

/// `path` opened (made if missing) and locked exclusively, until the file is dropped.
pub(crate) fn lock_file(path: &Path) -> Result<std::fs::File, String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.lock().map_err(|e| format!("locking {}: {e}", path.display()))?;
    Ok(file)
}

/// nginx's master, when it is the one this router started.
fn router_pid(router: &Path) -> Option<i32> {
    process::alive(&router.join("run/nginx.pid"), process::Whose::Nginx(&router.join("nginx.conf")))
}

/// A name no other check, write or process on this host uses at the same time.
fn unique_suffix() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{}.{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// `NAME-HASH.ENV`: names an environment's files in the router's directory.
pub fn site_key(env_dir: &Path) -> String {
    let name = |p: Option<&Path>| p.and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or("").to_owned();
    format!("{}.{}", name(env_dir.parent()), name(Some(env_dir)))
}

pub(crate) fn short_hash(text: &str) -> String {
    git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes())
        .map(|o| o.to_string()[..16].to_owned())
        .unwrap_or_default()
}

fn urls(resolved: &[Resolved]) -> Vec<String> {
    let mut urls: Vec<String> = resolved.iter().map(|r| r.url.clone()).collect();
    urls.sort();
    urls.dedup();
    urls
}

/// Without a routes file: what the topology's default routes are.
fn default_routes(topology: &crate::topology::Topology) -> serde_json::Map<String, Value> {
    topology
        .routes
        .iter()
        .map(|(url, route)| {
            let value = match route {
                crate::topology::Route::Upstream { upstream } => {
                    serde_json::json!({"type": "upstream", "upstream": upstream})
                }
                crate::topology::Route::Redirect { to } => serde_json::json!({"type": "redirect", "to": to}),
            };
            (url.clone(), value)
        })
        .collect()
}

/// The default branch of a bare repository: the one HEAD names, when it exists (servers set
/// it); else `main` or `master`, whichever exists (a repository made by `git init --bare`
/// whose HEAD names a branch nobody pushed).
pub fn default_branch(repo: &str) -> Option<String> {
    let repo = git2::Repository::open_bare(repo).ok()?;
    let exists = |b: &str| repo.find_reference(&format!("refs/heads/{b}")).is_ok();
    let head = repo.find_reference("HEAD").ok();
    let named = head.as_ref().and_then(|h| h.symbolic_target()).and_then(|t| t.strip_prefix("refs/heads/"));
    match named {
        Some(b) if exists(b) => Some(b.to_owned()),
        _ => ["main", "master"].into_iter().find(|b| exists(b)).map(str::to_owned),
    }
}

/// Whether the repository is there and the branch is not (a repository that cannot be read is
/// not a deletion).
fn branch_deleted(repo: &str, branch: &str) -> bool {
    let Ok(repo) = git2::Repository::open_bare(repo) else { return false };
    let found = repo.find_reference(&format!("refs/heads/{branch}"));
    matches!(found, Err(e) if e.code() == git2::ErrorCode::NotFound)
}

/// The pids whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else { continue };
        let ppid = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)).and_then(|p| p.parse().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Writes `text` to `path` (atomically, with `mode`) unless it holds it already; true when it
/// changed.
pub(crate) fn write_if_changed(path: &Path, text: &str, mode: u32) -> Result<bool, String> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    use std::os::unix::fs::OpenOptionsExt;
    // Of this write's own: two writers of one file each rename a whole file over it.
    let tmp = path.with_extension(format!("tmp.{}", unique_suffix()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(text.as_bytes())?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(true)
}
