//! Services of `services.yaml`, provisioned per environment on backends the admin declares
//! once per host (`pushgate-runner backend add TYPE URL`, kept in `DATA/backends.json`, mode
//! 0600): each environment gets its own database and user with a generated password (MariaDB
//! and MySQL, PostgreSQL), its own RabbitMQ virtual host and user, or its own Redis instance (Redis and Valkey: an instance per
//! environment and service, supervised like a start command, because Magento uses several of
//! Redis's database numbers and no Redis ACL can confine a client to some of them). What was
//! provisioned is kept in `DATA/services/KEY.json` (mode 0600) and becomes the relationships
//! the hooks and apps see; nothing of it reaches a log.
//!
//! The backends are administered with their own clients (`mariadb`, `psql`, `redis-server`,
//! `rabbitmqctl`),
//! SQL and passwords going through standard input and the environment, never the command line.
//! A service whose type has no backend keeps the endpoint declared in `services.json`, shared,
//! and the deploy log says so.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::store::DataDir;

/// The backend kinds, and the service types each serves.
pub fn kind_of(service_type: &str) -> Option<&'static str> {
    match service_type.split(':').next().unwrap_or(service_type) {
        "mysql" | "mariadb" | "oracle-mysql" => Some("mysql"),
        "postgresql" => Some("postgresql"),
        "redis" | "redis-persistent" | "valkey" | "valkey-persistent" => Some("redis"),
        "rabbitmq" => Some("rabbitmq"),
        _ => None,
    }
}

/// The declared backends: kind -> admin URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backends(pub BTreeMap<String, String>);

impl Backends {
    pub fn load(data: &DataDir) -> Result<Backends, String> {
        let path = data.backends_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Backends::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn save(&self, data: &DataDir) -> Result<(), String> {
        std::fs::create_dir_all(data.root()).map_err(|e| e.to_string())?;
        write_secret(&data.backends_file(), &serde_json::to_string_pretty(self).unwrap_or_default())?;
        // A runner of the data directory's owner reads it too.
        data.give_to_owner().map_err(|e| format!("{}: {e}", data.root().display()))
    }

    /// Adds (or replaces) the backend of a kind, checking its URL's shape.
    pub fn add(&mut self, kind: &str, url: &str) -> Result<String, String> {
        let kind = kind_of(kind).ok_or_else(|| {
            format!(
                "no backend kind for `{kind}`: pushgate provisions mysql (mariadb, oracle-mysql), postgresql, redis \
                 (valkey), rabbitmq"
            )
        })?;
        let parsed = Url::parse(url)?;
        let schemes: &[&str] = match kind {
            "mysql" => &["mysql"],
            "postgresql" => &["postgres", "postgresql"],
            "rabbitmq" => &["amqp"],
            _ => &["redis"],
        };
        if !schemes.contains(&parsed.scheme.as_str()) {
            return Err(format!("a {kind} backend's URL starts with {}://", schemes[0]));
        }
        self.0.insert(kind.to_owned(), url.to_owned());
        Ok(kind.to_owned())
    }

    /// Declares the backend of a kind on this host (`backend add`): its URL checked, its
    /// accounts refused if anyone may use them, its version asked (which shows it answers),
    /// then kept. Returns the kind and the version it runs.
    pub fn declare(data: &DataDir, kind: &str, url: &str) -> Result<(String, String), String> {
        let mut backends = Backends::load(data)?;
        let kind = backends.add(kind, url)?;
        refuse_open_accounts(&kind, url)?;
        let versions = Versions::refresh(data, &backends)?;
        backends.save(data)?;
        let version = versions.0.get(&kind).cloned().unwrap_or_default();
        Ok((kind, version))
    }

    /// Forgets the backend of a kind (`backend remove`; what it provisioned stays). Returns
    /// the kind.
    pub fn withdraw(data: &DataDir, kind: &str) -> Result<String, String> {
        let mut backends = Backends::load(data)?;
        let kind = kind_of(kind).unwrap_or(kind).to_owned();
        if backends.0.remove(&kind).is_none() {
            return Err(format!("no {kind} backend is declared"));
        }
        backends.save(data)?;
        Versions::refresh(data, &backends)?;
        Ok(kind)
    }

    /// Each backend with its password hidden.
    pub fn masked(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(k, u)| (k.clone(), Url::parse(u).map(|u| u.masked()).unwrap_or_else(|_| "?".into())))
            .collect()
    }
}

/// What the hooks may know of the backends (`DATA/backends.public.json`, no credentials):
/// the version each runs, so that a push asking for an upgrade in place that the backend
/// cannot give is refused before anything changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions(pub BTreeMap<String, String>);

impl Versions {
    pub fn load(data: &DataDir) -> Versions {
        std::fs::read_to_string(data.backend_versions_file())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Asks each backend its version (which also shows it is reachable), and keeps them.
    pub fn refresh(data: &DataDir, backends: &Backends) -> Result<Versions, String> {
        let mut versions = Versions::default();
        for (kind, url) in &backends.0 {
            versions.0.insert(kind.clone(), server_version(kind, &Url::parse(url)?)?);
        }
        let path = data.backend_versions_file();
        std::fs::write(&path, serde_json::to_string_pretty(&versions).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        data.give_to_owner().map_err(|e| format!("{}: {e}", data.root().display()))?;
        Ok(versions)
    }

    /// Why a service of `service_type` cannot be given here (its backend runs an older
    /// version); None when it can, or no backend provisions it.
    pub fn cannot_give(&self, service_type: &str) -> Option<String> {
        let kind = kind_of(service_type)?;
        let runs = self.0.get(kind)?;
        let wanted = service_type.split_once(':')?.1;
        let numbers = |v: &str| -> Vec<u64> {
            v.split(|c: char| !c.is_ascii_digit())
                .take_while(|p| !p.is_empty())
                .filter_map(|p| p.parse().ok())
                .collect()
        };
        let (wanted_n, runs_n) = (numbers(wanted), numbers(runs));
        let runs_n: Vec<u64> = runs_n.into_iter().take(wanted_n.len()).collect();
        (wanted_n > runs_n).then(|| format!("the {kind} backend of this server runs version {runs}"))
    }
}

/// The version a backend runs.
fn server_version(kind: &str, admin: &Url) -> Result<String, String> {
    let out = match kind {
        "mysql" => mysql_client("mariadb", admin).args(["-N", "-e", "SELECT VERSION()"]).output(),
        "postgresql" => pg_client("psql", admin, None).args(["-X", "-tA", "-c", "SHOW server_version"]).output(),
        "redis" => Command::new(
            which("redis-server").or_else(|| which("valkey-server")).unwrap_or_else(|| "redis-server".into()),
        )
        .arg("--version")
        .output(),
        _ => rabbitmqctl(admin).args(["-q", "version"]).output(),
    }
    .map_err(|e| format!("asking the {kind} backend its version: {e}"))?;
    if !out.status.success() {
        return Err(format!("the {kind} backend cannot be reached: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // `Redis server v=7.0.15 sha=...`: the version is the word after `v=`.
    let version = match text.split_whitespace().find_map(|w| w.strip_prefix("v=")) {
        Some(v) => v.to_owned(),
        None => text.trim().to_owned(),
    };
    Ok(version)
}

/// Refuses a MariaDB or PostgreSQL backend where the admin's account, or the server's
/// superuser (`root`, `postgres`), logs in from this host without its password (an account
/// without one, `trust` in pg_hba.conf): every process on the host, and every app reaching
/// the server through its own relationship, could log in as it and read every environment's
/// data. Each is tried with a password it cannot have.
fn refuse_open_accounts(kind: &str, url: &str) -> Result<(), String> {
    let admin = Url::parse(url)?;
    if kind == "rabbitmq" {
        return refuse_guest(&admin);
    }
    let (superuser, how) = match kind {
        "mysql" => (
            "root",
            "give it a password, and make a passworded admin for pushgate: CREATE USER 'pushgate'@'127.0.0.1' \
             IDENTIFIED BY 'PASSWORD'; GRANT ALL PRIVILEGES ON *.* TO 'pushgate'@'127.0.0.1' WITH GRANT OPTION; \
             then `pushgate-runner backend add mysql mysql://pushgate:PASSWORD@127.0.0.1:3306`",
        ),
        "postgresql" => (
            "postgres",
            "make pg_hba.conf ask for passwords (`host all all 127.0.0.1/32 scram-sha-256`, no `trust` line) and \
             give the admin role one (CREATE ROLE pushgate LOGIN SUPERUSER PASSWORD 'PASSWORD'); then \
             `pushgate-runner backend add postgresql postgres://pushgate:PASSWORD@127.0.0.1:5432/postgres`",
        ),
        _ => return Ok(()),
    };
    let wrong = format!("pushgate-not-the-password-{}", password()?);
    let mut accounts = vec![if admin.user.is_empty() { superuser.to_owned() } else { admin.user.clone() }];
    if accounts[0] != superuser {
        accounts.push(superuser.to_owned());
    }
    // No password (an account without one), then a wrong one (`trust`); no option file or
    // password file of the runner's user answers for it.
    let tries = accounts.iter().flat_map(|u| [(u, ""), (u, wrong.as_str())]);
    for (user, password) in tries {
        let port = admin.port.unwrap_or(if kind == "mysql" { 3306 } else { 5432 }).to_string();
        let out = match kind {
            "mysql" => Command::new("mariadb")
                .args(["--no-defaults", "--protocol=tcp", "-h", &admin.host, "-P", &port, "-u", user])
                .args(["-N", "-e", "SELECT 1"])
                .env("MYSQL_PWD", password)
                .output(),
            _ => Command::new("psql")
                .args(["-X", "-w", "-tA", "-h", &admin.host, "-p", &port, "-U", user, "-d"])
                .arg(if admin.path.is_empty() { "postgres" } else { admin.path.as_str() })
                .args(["-c", "SELECT 1"])
                .env("PGPASSWORD", password)
                .env("PGPASSFILE", "/dev/null")
                .output(),
        }
        .map_err(|e| format!("checking the {kind} backend's accounts: {e}"))?;
        if out.status.success() {
            return Err(format!(
                "the {kind} backend's account `{user}` logs in from this host without its password: any process \
                 on the host, and any app through its own database's address, could log in as `{user}` and read \
                 every environment's data. Refused: {how}"
            ));
        }
    }
    Ok(())
}

/// Refuses a RabbitMQ whose `guest` account still logs in with its well-known password: the
/// broker lets it in from the host's loopback, which is where every app's connection to its
/// virtual host comes from (through its environment's forwarder), so any app could log in as
/// `guest`, an administrator, and use the default virtual host with every other project.
fn refuse_guest(admin: &Url) -> Result<(), String> {
    // The password is the one the world knows: nothing secret on this command line.
    let out = rabbitmqctl(admin).args(["-q", "authenticate_user", "guest", "guest"]).output().map_err(|e| {
        format!("checking the rabbitmq backend's accounts: {e} (the rabbitmq backend needs rabbitmqctl)")
    })?;
    if out.status.success() {
        return Err(format!(
            "the rabbitmq backend's account `guest` logs in with its well-known password `guest`: RabbitMQ \
             lets it in from this host, where every app's connection comes from, so any app could log in as \
             `guest` (an administrator) and share the default virtual host with every other project. Refused: \
             delete it (`rabbitmqctl{} delete_user guest`), then add the backend again",
            admin.param("node").map(|n| format!(" -n {n}")).unwrap_or_default()
        ));
    }
    Ok(())
}

/// `rabbitmqctl`, addressing the node the backend's URL names (`?node=rabbit@host`), else the
/// host's default node.
fn rabbitmqctl(admin: &Url) -> Command {
    let mut c = Command::new("rabbitmqctl");
    if let Some(node) = admin.param("node") {
        c.args(["-n", node]);
    }
    c
}

/// `scheme://user:password@host:port/path`, as backends are written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    scheme: String,
    user: String,
    password: String,
    host: String,
    port: Option<u16>,
    path: String,
    /// After `?`: `node=rabbit@host` names the RabbitMQ node `rabbitmqctl` manages.
    query: String,
}

impl Url {
    fn parse(url: &str) -> Result<Url, String> {
        // Not echoed: it may hold a password.
        let bad = || "the URL given is not one such as mysql://pushgate:PASSWORD@127.0.0.1:3306".to_owned();
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = authority.rsplit_once('@').unwrap_or(("", authority));
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse().map_err(|_| bad())?)),
            None => (hostport, None),
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Url {
            scheme: scheme.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            host: host.to_owned(),
            port,
            path: path.to_owned(),
            query: query.to_owned(),
        })
    }

    /// The value of `name` in the query.
    fn param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }

    fn masked(&self) -> String {
        let pw = if self.password.is_empty() { "" } else { ":****" };
        let user = if self.user.is_empty() { String::new() } else { format!("{}{pw}@", self.user) };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let query = if self.query.is_empty() { String::new() } else { format!("?{}", self.query) };
        format!("{}://{user}{}{port}/{}{query}", self.scheme, self.host, self.path)
    }
}

/// What one environment's services were given (`DATA/services/KEY.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provisioned {
    /// Service name -> its endpoint, in the relationships' shape.
    pub services: BTreeMap<String, Value>,
}

impl Provisioned {
    pub fn load(path: &Path) -> Provisioned {
        std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
    }
}

/// The environment services are provisioned for.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// `NAME-HASH.ENV`
    pub key: &'a str,
    pub env_dir: &'a Path,
    /// Who runs its instances (the project's user, when the runner can switch).
    pub user: Option<&'a super::users::User>,
    /// The environment whose data a new one starts with (its key).
    pub parent: Option<&'a str>,
    /// Where its instances run (the apps' sandbox: none with `--no-sandbox`), and within what.
    pub sandbox: &'a super::sandbox::Sandbox,
    pub limits: super::cgroup::Limits,
    /// The connections its project may hold at once on each database server.
    pub connections: u32,
}

/// Provisions the services of `topology` that have a backend and are not provisioned yet, for
/// the environment `key` (`NAME-HASH.ENV`); returns every provisioned service's endpoint and
/// warnings for the services left shared.
pub fn provision(
    data: &DataDir,
    target: &Target<'_>,
    topology: &crate::topology::Topology,
    declared: &Map<String, Value>,
    configs: Option<&Value>,
) -> Result<(Map<String, Value>, Vec<String>), String> {
    let Target { key, parent, .. } = *target;
    let backends = Backends::load(data)?;
    let file = data.services_dir().join(format!("{key}.json"));
    let mut provisioned = Provisioned::load(&file);
    let parents = parent.map(|p| Provisioned::load(&data.services_dir().join(format!("{p}.json"))));
    let mut warnings = Vec::new();
    for (name, service) in &topology.services {
        let Some(kind) = kind_of(&service.kind) else {
            if declared.contains_key(name) {
                warnings.push(format!("service `{name}` ({}): no backend provisions it; it uses the endpoint declared in services.json, shared with every environment that declares it", service.kind));
            }
            continue;
        };
        let Some(url) = backends.0.get(kind) else {
            if declared.contains_key(name) {
                warnings.push(format!("service `{name}` ({}): no {kind} backend (pushgate-runner backend add {kind} URL); it uses the endpoint declared in services.json, shared, not provisioned", service.kind));
            }
            continue;
        };
        if provisioned.services.contains_key(name) {
            if provisioned.services[name].get("type").and_then(Value::as_str) != Some(service.kind.as_str()) {
                warnings.push(format!(
                    "service `{name}`: now {}, provisioned as {}; the {kind} backend runs the version it runs, and the \
                     data stays as it is",
                    service.kind,
                    provisioned.services[name].get("type").and_then(Value::as_str).unwrap_or("?")
                ));
                // Said once: the version asked for is the service's from now on.
                if let Some(e) = provisioned.services.get_mut(name) {
                    e["type"] = json!(service.kind);
                }
                write_secret(&file, &serde_json::to_string_pretty(&provisioned).unwrap_or_default())?;
            }
            if kind == "redis" {
                // The instance exists: running again if its environment was off.
                // Made again from what the runner knows, never from the environment's files (a
                // spec provisioned before specs were the runner's, or before its sandbox, is
                // replaced, and the instance started again in it).
                let spec = instance_spec(data, key, name);
                let s = redis_supervised(data, target, name)?;
                // Its configuration as this runner writes it (an instance made before the
                // dangerous commands were removed gets the new one, and starts again).
                let endpoint = &provisioned.services[name];
                let conf = redis_conf(
                    &s.dir,
                    endpoint.get("port").and_then(Value::as_u64).unwrap_or_default() as u16,
                    endpoint.get("password").and_then(Value::as_str).unwrap_or_default(),
                    service.kind.contains("persistent"),
                );
                let conf_changed = super::write_if_changed(&s.dir.join("redis.conf"), &conf, 0o600)?;
                if let (true, Some(u)) = (conf_changed, target.user) {
                    let _ = std::os::unix::fs::lchown(s.dir.join("redis.conf"), Some(u.uid), Some(u.gid));
                }
                if conf_changed || super::process::Supervised::load(&spec).ok().as_ref() != Some(&s) {
                    super::process::start_supervised(&s, &spec)?;
                }
                let _ = super::process::ensure_supervised(&spec, true);
                if let (Some(port), Ok(s)) = (
                    provisioned.services[name].get("port").and_then(Value::as_u64),
                    super::process::Supervised::load(&spec),
                ) {
                    super::process::wait_listening(port as u16, &s.pid_file, Duration::from_secs(20))
                        .map_err(|e| format!("the Redis instance of `{name}` did not start: {e}"))?;
                }
            }
            continue;
        }
        let admin = Url::parse(url)?;
        let id = service_id(key, name);
        // The parent's copy of the same service, if the environment starts from its data.
        let from = parents
            .as_ref()
            .and_then(|p| p.services.get(name))
            .filter(|e| e.get("type").and_then(Value::as_str).and_then(kind_of) == Some(kind))
            .and_then(|_| parent.map(|p| service_id(p, name)));
        let endpoint = match kind {
            "mysql" | "postgresql" => {
                // With `configuration` (schemas or databases, endpoints): a database each and a
                // user per endpoint; else one database and its user.
                let config = configs.and_then(|c| c.get(name)).and_then(|s| s.get("configuration"));
                let several = |keys: &str| config.filter(|c| keys.split(',').any(|k| c.get(k).is_some()));
                let e = match (kind, several("schemas,endpoints"), several("databases,endpoints")) {
                    ("mysql", Some(c), _) => mysql_schemas(&admin, &id, name, &service.kind, c)?,
                    ("mysql", None, _) => mysql(&admin, &id, name, &service.kind)?,
                    (_, _, Some(c)) => postgresql_databases(&admin, &id, name, &service.kind, c)?,
                    (_, _, None) => postgresql(&admin, &id, name, &service.kind)?,
                };
                if let (Some(from), Some(theirs)) = (&from, parents.as_ref().and_then(|p| p.services.get(name))) {
                    let theirs = databases(theirs);
                    for suffix in databases(&e).iter().filter(|s| theirs.contains(s)) {
                        let (from, to) = (format!("{from}{suffix}"), format!("{id}{suffix}"));
                        match kind {
                            "mysql" => copy_mysql(&admin, &from, &to)?,
                            _ => copy_postgresql(&admin, &from, &to, &id)?,
                        }
                    }
                    warnings.push(format!("service `{name}` starts with a copy of the parent's data"));
                }
                e
            }
            "rabbitmq" => {
                let e = rabbitmq(&admin, &id, name, &service.kind)?;
                if let Some(from) = &from {
                    copy_rabbitmq(&admin, from, &id)?;
                    warnings.push(format!(
                        "service `{name}` starts with the parent's queues, exchanges and bindings (not their messages)"
                    ));
                }
                e
            }
            _ => {
                let parent_instance = from.as_ref().and(parents.as_ref()).and_then(|p| p.services.get(name));
                let e = redis(data, &admin, target, (name, &service.kind), parent_instance)?;
                if parent_instance.is_some() && service.kind.contains("persistent") {
                    warnings.push(format!("service `{name}` starts with a copy of the parent's data"));
                }
                e
            }
        };
        provisioned.services.insert(name.clone(), endpoint);
        // Saved after each one: a runner killed halfway finds what exists and does the rest.
        std::fs::create_dir_all(data.services_dir()).map_err(|e| e.to_string())?;
        write_secret(&file, &serde_json::to_string_pretty(&provisioned).unwrap_or_default())?;
    }
    // A service the push removed (the push accepted losing its data): dropped.
    let removed: Vec<String> =
        provisioned.services.keys().filter(|n| !topology.services.contains_key(*n)).cloned().collect();
    for name in removed {
        if let Some(endpoint) = provisioned.services.remove(&name) {
            drop_one(data, &backends, key, &name, &endpoint)?;
            warnings.push(format!("service `{name}` is no longer declared: its data is dropped"));
            write_secret(&file, &serde_json::to_string_pretty(&provisioned).unwrap_or_default())?;
        }
    }
    share_connections(data, &backends, key, target.connections)?;
    let endpoints = provisioned.services.into_iter().collect();
    Ok((endpoints, warnings))
}

/// The project's connections on each database server, shared among all its database users
/// there: every environment's (a branch is one more environment), every endpoint's (an
/// endpoint is one more user). However many it declares, one project holds at most
/// `budget` of a server's `max_connections`. Every user's part is set again at each deploy
/// (one statement per user), under the project's lock: the last deploy to count sees every
/// user, and a user made again under an old name gets its part too.
fn share_connections(data: &DataDir, backends: &Backends, key: &str, budget: u32) -> Result<(), String> {
    let project = key.split_once('.').map_or(key, |(p, _)| p);
    let dir = data.services_dir();
    if !dir.is_dir() {
        return Ok(()); // nothing provisioned, no user to bound
    }
    let _lock = super::lock_file(&dir.join(format!("{project}.lock")))?;
    let mut users: BTreeMap<&'static str, std::collections::BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{project}.")) || !name.ends_with(".json") {
            continue;
        }
        for endpoint in Provisioned::load(&entry.path()).services.values() {
            let kind = endpoint.get("type").and_then(Value::as_str).and_then(kind_of);
            if let Some(kind @ ("mysql" | "postgresql")) = kind {
                users.entry(kind).or_default().extend(database_users(endpoint).into_iter().map(str::to_owned));
            }
        }
    }
    for (kind, users) in &users {
        let share = budget / users.len().max(1) as u32;
        if share == 0 {
            return Err(format!(
                "the project's {} database users on {kind} (one per endpoint of each environment) cannot share the \
                 {budget} connections it may hold (`connections` in its sandbox.json): declare fewer endpoints, \
                 deactivate environments, or ask the admin for more",
                users.len()
            ));
        }
        let Some(url) = backends.0.get(*kind) else { continue };
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        limit_users(&Url::parse(url)?, kind, &users, share)?;
    }
    Ok(())
}

/// Empties each MariaDB and PostgreSQL database of environment `key` that the environment
/// `parent` also has, and copies the parent's into it, under the same credentials. The names.
pub fn resync(data: &DataDir, key: &str, parent: &str) -> Result<Vec<String>, String> {
    let backends = Backends::load(data)?;
    let mine = Provisioned::load(&data.services_dir().join(format!("{key}.json")));
    let theirs = Provisioned::load(&data.services_dir().join(format!("{parent}.json")));
    let mut copied = Vec::new();
    for (name, endpoint) in &mine.services {
        let kind = endpoint.get("type").and_then(Value::as_str).and_then(kind_of).unwrap_or("");
        let same = theirs.services.get(name).and_then(|e| e.get("type")).and_then(Value::as_str).and_then(kind_of);
        let Some(url) = backends.0.get(kind).filter(|_| same == Some(kind)) else { continue };
        let admin = Url::parse(url)?;
        let (id, from) = (service_id(key, name), service_id(parent, name));
        let theirs = databases(&theirs.services[name]);
        for suffix in databases(endpoint).iter().filter(|s| theirs.contains(s)) {
            let (db, parent_db) = (format!("{id}{suffix}"), format!("{from}{suffix}"));
            match kind {
                "mysql" => {
                    // Emptied in place: the endpoints' grants on it stay.
                    // Table names are the project's: read as hex (nothing of them is lost or
                    // taken for SQL), each quoted as an identifier.
                    let tables = mysql_query(
                        &admin,
                        &format!("SELECT HEX(table_name) FROM information_schema.tables WHERE table_schema = '{db}'"),
                    )?;
                    let drops: String = tables
                        .lines()
                        .map(|t| format!("DROP TABLE IF EXISTS {}.{};\n", mysql_ident(&db), mysql_ident(&unhex(t))))
                        .collect();
                    run_mysql(&admin, &format!("SET FOREIGN_KEY_CHECKS = 0;\n{drops}"))?;
                    copy_mysql(&admin, &parent_db, &db)?;
                }
                "postgresql" => {
                    run_psql(
                        &admin,
                        &format!(
                            "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE);\nCREATE DATABASE \"{db}\" OWNER \"{id}\";\n\
                             REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC;\n{}",
                            pg_grants(endpoint, &id, suffix)
                        ),
                    )?;
                    copy_postgresql(&admin, &parent_db, &db, &id)?;
                }
                _ => continue,
            }
        }
        if !matches!(kind, "mysql" | "postgresql") {
            continue;
        }
        copied.push(name.clone());
    }
    Ok(copied)
}

/// Drops what an environment was given (its databases and users, its Redis instances).
pub fn deprovision(data: &DataDir, key: &str) -> Result<Vec<String>, String> {
    let file = data.services_dir().join(format!("{key}.json"));
    let provisioned = Provisioned::load(&file);
    let backends = Backends::load(data)?;
    let mut dropped = Vec::new();
    for (name, endpoint) in &provisioned.services {
        if drop_one(data, &backends, key, name, endpoint)? {
            dropped.push(name.clone());
        }
    }
    let _ = std::fs::remove_file(&file);
    Ok(dropped)
}

/// Writes what an environment's services hold into `into` (one SQL dump per MariaDB or
/// PostgreSQL database, a copy of each Redis instance's data directory), before they are
/// dropped: a deactivated environment keeps a final backup. Returns what was written.
pub fn backup(data: &DataDir, key: &str, into: &Path) -> Result<Vec<String>, String> {
    let provisioned = Provisioned::load(&data.services_dir().join(format!("{key}.json")));
    let backends = Backends::load(data)?;
    std::fs::create_dir_all(into).map_err(|e| format!("{}: {e}", into.display()))?;
    let mut written = Vec::new();
    for (name, endpoint) in &provisioned.services {
        let kind = endpoint.get("type").and_then(Value::as_str).and_then(kind_of).unwrap_or("");
        let id = service_id(key, name);
        let admin = backends.0.get(kind).map(|u| Url::parse(u)).transpose()?;
        let mut dump_into = |mut command: Command, file: String| -> Result<(), String> {
            let path = into.join(&file);
            let out = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let done = command.stdout(out).stderr(Stdio::piped()).output().map_err(|e| format!("{file}: {e}"))?;
            if !done.status.success() {
                return Err(format!("backing up {file}: {}", String::from_utf8_lossy(&done.stderr).trim()));
            }
            written.push(file);
            Ok(())
        };
        match (kind, admin) {
            ("mysql", Some(admin)) => {
                for suffix in databases(endpoint) {
                    let db = format!("{id}{suffix}");
                    let mut dump = mysql_client("mariadb-dump", &admin);
                    dump.args(["--single-transaction", "--routines", "--triggers", "--events", &db]);
                    dump_into(dump, format!("{name}{suffix}.sql"))?;
                }
            }
            ("postgresql", Some(admin)) => {
                for suffix in databases(endpoint) {
                    let db = format!("{id}{suffix}");
                    let mut dump = pg_client("pg_dump", &admin, Some(&db));
                    dump.args(["--no-owner", "--no-privileges"]);
                    dump_into(dump, format!("{name}{suffix}.sql"))?;
                }
            }
            ("redis", _) => {
                if let Some((project, env)) = key.rsplit_once('.') {
                    let dir = data.environments().join(project).join(env).join("services").join(name);
                    if dir.is_dir() {
                        let to = into.join(format!("{name}.redis"));
                        let copied = Command::new("cp").arg("-a").arg(&dir).arg(&to).output();
                        if copied.as_ref().is_ok_and(|o| o.status.success()) {
                            written.push(format!("{name}.redis/"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(written)
}

/// Drops one provisioned service; false when its backend is gone (nothing to drop it with).
fn drop_one(data: &DataDir, backends: &Backends, key: &str, name: &str, endpoint: &Value) -> Result<bool, String> {
    let kind = endpoint.get("type").and_then(Value::as_str).and_then(kind_of).unwrap_or("");
    let id = service_id(key, name);
    let admin = backends.0.get(kind).map(|u| Url::parse(u)).transpose()?;
    match (kind, admin) {
        ("mysql", Some(admin)) => {
            for suffix in databases(endpoint) {
                drop_mysql(&admin, &format!("{id}{suffix}"))?;
            }
            for user in endpoint
                .get("endpoints")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(e, _)| format!("{id}_{}", ident(e)))
            {
                run_mysql(&admin, &format!("DROP USER IF EXISTS '{user}'@'%';\n"))?;
            }
        }
        ("postgresql", Some(admin)) => {
            let mut sql = String::new();
            for suffix in databases(endpoint) {
                sql.push_str(&format!("DROP DATABASE IF EXISTS \"{id}{suffix}\" WITH (FORCE);\n"));
            }
            for (e, _) in endpoint.get("endpoints").and_then(Value::as_object).into_iter().flatten() {
                sql.push_str(&format!("DROP ROLE IF EXISTS \"{id}_{}\";\n", ident(e)));
            }
            run_psql(&admin, &sql)?;
            drop_postgresql(&admin, &id)?;
        }
        ("rabbitmq", Some(admin)) => drop_rabbitmq(&admin, &id)?,
        ("redis", _) => {
            super::process::stop(
                &data.router().join("run").join(format!("{key}.{name}.redis.pid")),
                super::process::Whose::Supervisor,
                std::time::Duration::from_secs(10),
            );
            let _ = std::fs::remove_file(instance_spec(data, key, name));
            // Its data directory goes with the environment's, or now if the service alone goes.
            if let Some((project, env)) = key.rsplit_once('.') {
                let _ =
                    std::fs::remove_dir_all(data.environments().join(project).join(env).join("services").join(name));
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Copies database `from` into `to` (both on the admin's server), in one consistent snapshot.
fn copy_mysql(admin: &Url, from: &str, to: &str) -> Result<(), String> {
    let mut dump = mysql_client("mariadb-dump", admin);
    dump.args(["--single-transaction", "--routines", "--triggers", "--events", from]);
    let mut load = mysql_client("mariadb", admin);
    load.arg(to);
    pipe(dump, load, "", "copying a MariaDB database")
}

/// Copies database `from` into `to`, the objects owned by `to`'s role.
fn copy_postgresql(admin: &Url, from: &str, to: &str, owner: &str) -> Result<(), String> {
    let mut dump = pg_client("pg_dump", admin, Some(from));
    dump.args(["--no-owner", "--no-privileges"]);
    let mut load = pg_client("psql", admin, Some(to));
    load.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    pipe(dump, load, &format!("SET ROLE \"{owner}\";\n"), "copying a PostgreSQL database")
}

/// `from | to`, with `preamble` written first; the error output of whichever failed.
fn pipe(mut from: Command, mut to: Command, preamble: &str, what: &str) -> Result<(), String> {
    let mut source = from.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("{what}: {e}"))?;
    let mut sink = to
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let copied = (|| -> std::io::Result<()> {
        let mut input = sink.stdin.take().ok_or_else(|| std::io::Error::other("no stdin"))?;
        input.write_all(preamble.as_bytes())?;
        let mut output = source.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        std::io::copy(&mut output, &mut input)?;
        Ok(())
    })();
    let source = source.wait_with_output().map_err(|e| format!("{what}: {e}"))?;
    let sink = sink.wait_with_output().map_err(|e| format!("{what}: {e}"))?;
    if !source.status.success() {
        return Err(format!("{what}: {}", String::from_utf8_lossy(&source.stderr).trim()));
    }
    if !sink.status.success() {
        return Err(format!("{what}: {}", String::from_utf8_lossy(&sink.stderr).trim()));
    }
    copied.map_err(|e| format!("{what}: {e}"))
}

fn drop_mysql(admin: &Url, id: &str) -> Result<(), String> {
    run_mysql(admin, &format!("DROP DATABASE IF EXISTS `{id}`;\nDROP USER IF EXISTS '{id}'@'%';\n"))
}

/// The databases of a MariaDB service, as suffixes of its id: one (`""`) without
/// `configuration.schemas`, else `_SCHEMA` each.
fn databases(endpoint: &Value) -> Vec<String> {
    match endpoint.get("schemas").and_then(Value::as_array) {
        Some(schemas) => schemas.iter().filter_map(Value::as_str).map(|s| format!("_{}", ident(s))).collect(),
        None => vec![String::new()],
    }
}

/// An identifier quoted for MariaDB: in backticks, each backtick doubled.
fn mysql_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The text of a hexadecimal column (`HEX(...)`); bytes that are not UTF-8 are replaced.
fn unhex(hex: &str) -> String {
    let bytes: Vec<u8> = hex
        .trim()
        .as_bytes()
        .chunks(2)
        .filter_map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A schema or endpoint name as part of a database or user name.
fn ident(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' })
        .take(40)
        .collect()
}

/// A query's rows, one a line (as the admin).
fn mysql_query(admin: &Url, sql: &str) -> Result<String, String> {
    let out =
        mysql_client("mariadb", admin).args(["-N", "-B", "-e", sql]).output().map_err(|e| format!("mariadb: {e}"))?;
    if !out.status.success() {
        return Err(format!("mariadb failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The grants of a PostgreSQL service's endpoints on its database `suffix`, run in it.
fn pg_grants(service: &Value, id: &str, suffix: &str) -> String {
    let db = format!("{id}{suffix}");
    let mut sql = format!("\\connect \"{db}\"\n");
    for (endpoint, spec) in service.get("endpoints").and_then(Value::as_object).into_iter().flatten() {
        let role = format!("{id}_{}", ident(endpoint));
        let privilege =
            spec.get("privileges").and_then(|p| p.get(suffix.trim_start_matches('_'))).and_then(Value::as_str);
        let rights = match privilege {
            Some("admin") => {
                sql.push_str(&format!("GRANT CONNECT ON DATABASE \"{db}\" TO \"{role}\";\n"));
                continue;
            }
            Some("rw") => "SELECT, INSERT, UPDATE, DELETE",
            Some("ro") => "SELECT",
            _ => continue,
        };
        sql.push_str(&format!(
            "GRANT CONNECT ON DATABASE \"{db}\" TO \"{role}\";\nGRANT USAGE ON SCHEMA public TO \"{role}\";\n\
             GRANT {rights} ON ALL TABLES IN SCHEMA public TO \"{role}\";\n\
             ALTER DEFAULT PRIVILEGES FOR ROLE \"{id}\" IN SCHEMA public GRANT {rights} ON TABLES TO \"{role}\";\n"
        ));
    }
    sql.push_str("\\connect postgres\n");
    sql
}

/// A PostgreSQL service with `configuration.databases` and `endpoints`: a database per entry,
/// owned by the service's role (which logs in as no one); a role per endpoint, acting as the
/// owner (`admin`) or with read-write (`rw`) or read (`ro`) rights, on the databases it names.
fn postgresql_databases(admin: &Url, id: &str, name: &str, kind: &str, config: &Value) -> Result<Value, String> {
    drop_postgresql(admin, id)?;
    let names: Vec<String> = match config.get("databases").and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        None => vec!["main".to_owned()],
    };
    let default_endpoints =
        json!({"postgresql": {"default_database": names[0], "privileges": {names[0].clone(): "admin"}}});
    let endpoints =
        config.get("endpoints").and_then(Value::as_object).unwrap_or_else(|| default_endpoints.as_object().unwrap());
    let mut sql = format!(
        "SELECT 'CREATE ROLE \"{id}\" NOLOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{id}')\\gexec\n"
    );
    for db in &names {
        let db = format!("{id}_{}", ident(db));
        sql.push_str(&format!(
            "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE);\nCREATE DATABASE \"{db}\" OWNER \"{id}\";\nREVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC;\n"
        ));
    }
    let mut out = Map::new();
    for (endpoint, spec) in endpoints {
        let role = format!("{id}_{}", ident(endpoint));
        let password = password()?;
        sql.push_str(&format!(
            "DROP ROLE IF EXISTS \"{role}\";\nCREATE ROLE \"{role}\" LOGIN PASSWORD '{password}';\n"
        ));
        for (db, privilege) in spec.get("privileges").and_then(Value::as_object).into_iter().flatten() {
            if !names.contains(db) {
                return Err(format!(
                    "service `{name}`: endpoint `{endpoint}` names database `{db}`, which is not in `databases`"
                ));
            }
            if !matches!(privilege.as_str(), Some("admin" | "rw" | "ro")) {
                return Err(format!(
                    "service `{name}`: endpoint `{endpoint}`: unknown privilege {privilege} (admin, rw, ro)"
                ));
            }
            if privilege == "admin" {
                // Acting as the owner: what it creates is the owner's, readable by the others.
                sql.push_str(&format!("GRANT \"{id}\" TO \"{role}\";\nALTER ROLE \"{role}\" SET role = '{id}';\n"));
            }
        }
        let db = spec.get("default_database").and_then(Value::as_str).unwrap_or(&names[0]);
        let mut e = endpoint_of(admin, 5432, "pgsql", &role, &password, &format!("{id}_{}", ident(db)), name, kind);
        // Kept for the grants a sync gives again; not part of the relationship.
        e["privileges"] = spec.get("privileges").cloned().unwrap_or(Value::Null);
        out.insert(endpoint.clone(), e);
    }
    let mut e = out.get("postgresql").or_else(|| out.values().next()).cloned().unwrap_or(Value::Null);
    if let Some(e) = e.as_object_mut() {
        e.remove("privileges");
    }
    e["endpoints"] = Value::Object(out);
    e["schemas"] = json!(names);
    for suffix in databases(&e) {
        sql.push_str(&pg_grants(&e, id, &suffix));
    }
    run_psql(admin, &sql)?;
    Ok(e)
}

/// A MariaDB service with `configuration.schemas` and `endpoints`, as Platform.sh defines them:
/// a database per schema, a user per endpoint with `admin` (all), `rw` (read and write) or
/// `ro` (read) rights on the schemas it names. The endpoint `mysql` (else the first) is the
/// service's default.
fn mysql_schemas(admin: &Url, id: &str, name: &str, kind: &str, config: &Value) -> Result<Value, String> {
    let schemas: Vec<String> = match config.get("schemas").and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        None => vec!["main".to_owned()],
    };
    let default_endpoints =
        json!({"mysql": {"default_schema": schemas[0], "privileges": {schemas[0].clone(): "admin"}}});
    let endpoints =
        config.get("endpoints").and_then(Value::as_object).unwrap_or_else(|| default_endpoints.as_object().unwrap());
    let mut sql = String::new();
    let mut drop = String::new();
    for schema in &schemas {
        let db = format!("{id}_{}", ident(schema));
        drop.push_str(&format!("DROP DATABASE IF EXISTS `{db}`;\n"));
        sql.push_str(&format!("CREATE DATABASE `{db}`;\n"));
    }
    let mut out = Map::new();
    for (endpoint, spec) in endpoints {
        let user = format!("{id}_{}", ident(endpoint));
        let password = password()?;
        drop.push_str(&format!("DROP USER IF EXISTS '{user}'@'%';\n"));
        sql.push_str(&format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';\n"));
        for (schema, privilege) in spec.get("privileges").and_then(Value::as_object).into_iter().flatten() {
            if !schemas.contains(schema) {
                return Err(format!(
                    "service `{name}`: endpoint `{endpoint}` names schema `{schema}`, which is not in `schemas`"
                ));
            }
            let rights = match privilege.as_str() {
                Some("admin") => "ALL PRIVILEGES",
                Some("rw") => {
                    "SELECT, INSERT, UPDATE, DELETE, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, SHOW VIEW"
                }
                Some("ro") => "SELECT, SHOW VIEW",
                other => {
                    return Err(format!(
                        "service `{name}`: endpoint `{endpoint}`: unknown privilege {other:?} (admin, rw, ro)"
                    ))
                }
            };
            sql.push_str(&format!("GRANT {rights} ON `{id}_{}`.* TO '{user}'@'%';\n", ident(schema)));
        }
        let schema = spec.get("default_schema").and_then(Value::as_str).unwrap_or(&schemas[0]);
        out.insert(
            endpoint.clone(),
            endpoint_of(admin, 3306, "mysql", &user, &password, &format!("{id}_{}", ident(schema)), name, kind),
        );
    }
    run_mysql(admin, &format!("{drop}{sql}"))?;
    let default = out.get("mysql").or_else(|| out.values().next()).cloned().unwrap_or(Value::Null);
    let mut e = default;
    e["endpoints"] = Value::Object(out);
    e["schemas"] = json!(schemas);
    Ok(e)
}

/// The database users of `endpoint`: its own, or one per endpoint.
fn database_users(endpoint: &Value) -> Vec<&str> {
    let mut users: Vec<&str> = match endpoint.get("endpoints").and_then(Value::as_object) {
        Some(all) => all.values().filter_map(|e| e.get("username").and_then(Value::as_str)).collect(),
        None => endpoint.get("username").and_then(Value::as_str).into_iter().collect(),
    };
    users.sort_unstable();
    users.dedup();
    users
}

/// Bounds the connections each of `users` may hold at once: `MAX_USER_CONNECTIONS` on
/// MariaDB, `CONNECTION LIMIT` on PostgreSQL.
fn limit_users(admin: &Url, kind: &str, users: &[&str], connections: u32) -> Result<(), String> {
    let sql: String = users
        .iter()
        .map(|user| match kind {
            "mysql" => format!("ALTER USER {} WITH MAX_USER_CONNECTIONS {connections};\n", mysql_account(user)),
            _ => format!("ALTER ROLE {} CONNECTION LIMIT {connections};\n", pg_ident(user)),
        })
        .collect();
    match kind {
        "mysql" => run_mysql(admin, &sql),
        _ => run_psql(admin, &sql),
    }
}

/// `'user'@'%'`, quoted for MariaDB.
fn mysql_account(user: &str) -> String {
    format!("'{}'@'%'", user.replace('\\', "\\\\").replace('\'', "''"))
}

/// `"name"`, quoted for PostgreSQL.
fn pg_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn drop_postgresql(admin: &Url, id: &str) -> Result<(), String> {
    run_psql(admin, &format!("DROP DATABASE IF EXISTS \"{id}\" WITH (FORCE);\nDROP ROLE IF EXISTS \"{id}\";\n"))
}

fn drop_rabbitmq(admin: &Url, id: &str) -> Result<(), String> {
    for what in ["delete_user", "delete_vhost"] {
        let out = rabbitmqctl(admin).args(["-q", what, id]).output().map_err(|e| format!("rabbitmqctl: {e}"))?;
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !err.contains("not found") && !err.contains("does not exist") {
            return Err(format!("rabbitmqctl {what}: {}", err.trim()));
        }
    }
    Ok(())
}

/// Copies the definitions of virtual host `from` (queues, exchanges, bindings, policies; not
/// the messages) into virtual host `to`.
fn copy_rabbitmq(admin: &Url, from: &str, to: &str) -> Result<(), String> {
    let out = rabbitmqctl(admin)
        .args(["-q", "export_definitions", "-", "--format", "json"])
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    if !out.status.success() {
        return Err(format!("rabbitmqctl export_definitions: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let all: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("rabbitmqctl export_definitions: {e}"))?;
    let mut copy = Map::new();
    for section in ["queues", "exchanges", "bindings", "policies"] {
        let items: Vec<Value> = all[section]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|item| item["vhost"] == from)
            .map(|item| {
                let mut item = item.clone();
                item["vhost"] = json!(to);
                item
            })
            .collect();
        copy.insert(section.to_owned(), Value::Array(items));
    }
    let mut command = rabbitmqctl(admin);
    command.args(["-q", "import_definitions", "--format", "json"]);
    feed(command, &Value::Object(copy).to_string(), "rabbitmqctl import_definitions")
}

/// A RabbitMQ virtual host and a user with rights on it alone. The user is imported with the
/// SHA-256 hash of its password (`rabbitmqctl import_definitions`): the password is never on a
/// command line. Needs `rabbitmqctl` on this host, run by root.
fn rabbitmq(admin: &Url, id: &str, name: &str, kind: &str) -> Result<Value, String> {
    use sha2::{Digest, Sha256};
    drop_rabbitmq(admin, id)?; // a fresh one: what a killed runner left is not handed out
    let password = password()?;
    let salt = crate::secret::random::<4>()?;
    let mut hashed = salt.to_vec();
    hashed.extend(Sha256::new().chain_update(salt).chain_update(password.as_bytes()).finalize());
    let definitions = json!({
        "users": [{"name": id, "password_hash": crate::runner::env::base64(&hashed),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""}],
        "vhosts": [{"name": id}],
        "permissions": [{"user": id, "vhost": id, "configure": ".*", "write": ".*", "read": ".*"}],
    });
    // Through standard input: no file the broker's user would have to read.
    let mut command = rabbitmqctl(admin);
    command.args(["-q", "import_definitions", "--format", "json"]);
    feed(command, &definitions.to_string(), "rabbitmqctl import_definitions")
        .map_err(|e| format!("{e} (the rabbitmq backend needs rabbitmqctl on this host, run by root)"))?;
    // The import is asynchronous: the user's rights are there once it is done.
    let since = std::time::Instant::now();
    loop {
        let out = rabbitmqctl(admin).args(["-q", "list_user_permissions", id]).output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(id)) {
            break;
        }
        if since.elapsed() > std::time::Duration::from_secs(30) {
            return Err(format!("RabbitMQ did not create user {id} within 30 s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mut e = endpoint_of(admin, 5672, "amqp", id, &password, id, name, kind);
    e["vhost"] = json!(id);
    Ok(e)
}

fn mysql(admin: &Url, id: &str, name: &str, kind: &str) -> Result<Value, String> {
    // A fresh one: what a runner killed halfway left is never handed to a deploy hook.
    drop_mysql(admin, id)?;
    let password = password()?;
    run_mysql(
        admin,
        &format!(
            "CREATE DATABASE IF NOT EXISTS `{id}`;\nCREATE USER IF NOT EXISTS '{id}'@'%' IDENTIFIED BY '{password}';\n\
             ALTER USER '{id}'@'%' IDENTIFIED BY '{password}';\nGRANT ALL PRIVILEGES ON `{id}`.* TO '{id}'@'%';\n"
        ),
    )?;
    Ok(endpoint_of(admin, 3306, "mysql", id, &password, id, name, kind))
}

fn postgresql(admin: &Url, id: &str, name: &str, kind: &str) -> Result<Value, String> {
    drop_postgresql(admin, id)?; // a fresh one, as above
    let password = password()?;
    run_psql(
        admin,
        &format!(
            "SELECT 'CREATE ROLE \"{id}\" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{id}')\\gexec\n\
             ALTER ROLE \"{id}\" LOGIN PASSWORD '{password}';\n\
             SELECT 'CREATE DATABASE \"{id}\" OWNER \"{id}\"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{id}')\\gexec\n\
             REVOKE ALL ON DATABASE \"{id}\" FROM PUBLIC;\n"
        ),
    )?;
    Ok(endpoint_of(admin, 5432, "pgsql", id, &password, id, name, kind))
}

/// A Redis instance of the environment's own, supervised, as the project's user.
fn redis(
    data: &DataDir,
    admin: &Url,
    target: &Target<'_>,
    (name, kind): (&str, &str),
    copy_from: Option<&Value>,
) -> Result<Value, String> {
    let Target { key, env_dir, user, .. } = *target;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))?;
    let password = password()?;
    let dir = env_dir.join("services").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // A persistent one snapshots its data within 5 s of a change (as often as an append-only
    // file synced every second), into the file a new environment's copy starts from.
    let persistent = kind.contains("persistent");
    let conf = dir.join("redis.conf");
    write_secret(&conf, &redis_conf(&dir, port, &password, persistent))?;
    if let Some(parent) = copy_from.filter(|_| persistent) {
        // The parent's data, as a snapshot the new instance loads when it starts.
        let out = Command::new("redis-cli")
            .args(["-h", parent["host"].as_str().unwrap_or("127.0.0.1"), "-p", &parent["port"].to_string(), "--rdb"])
            .arg(dir.join("dump.rdb"))
            .env("REDISCLI_AUTH", parent["password"].as_str().unwrap_or_default())
            .output()
            .map_err(|e| format!("redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!("copying the parent's Redis: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
    }
    if let Some(u) = user {
        super::users::chown_tree(&dir, u).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let supervised = redis_supervised(data, target, name)?;
    super::process::start_supervised(&supervised, &instance_spec(data, key, name))?;
    super::process::wait_listening(port, &supervised.pid_file, Duration::from_secs(20)).map_err(|e| {
        format!("the Redis instance of `{name}` did not start: {e} (its log: {})", supervised.log.display())
    })?;
    let host = if admin.host == "localhost" { "127.0.0.1".to_owned() } else { admin.host.clone() };
    let mut e =
        endpoint_of(&Url { host, port: Some(port), ..admin.clone() }, 6379, "redis", "", &password, "", name, kind);
    e["username"] = Value::Null;
    Ok(e)
}

/// The configuration of an environment's Redis instance. The instance runs on the host's
/// network (the environment reaches it through its forwarder), so whatever would make it
/// connect somewhere or listen elsewhere for a client that knows its password (the app, the
/// deploy hook) is removed: MIGRATE, REPLICAOF/SLAVEOF and FAILOVER connect to any address,
/// CONFIG changes its port, directory and files, MODULE loads code, DEBUG crashes it. The
/// runner copies a parent's data with SYNC (`redis-cli --rdb`), which stays.
fn redis_conf(dir: &Path, port: u16, password: &str, persistent: bool) -> String {
    let mut conf = format!(
        "bind 127.0.0.1\nport {port}\nrequirepass {password}\ndir {}\ndaemonize no\nappendonly no\n\
         dbfilename dump.rdb\nsave {}\n",
        dir.display(),
        if persistent { "5 1" } else { "\"\"" }
    );
    for command in ["MIGRATE", "REPLICAOF", "SLAVEOF", "FAILOVER", "CONFIG", "MODULE", "DEBUG"] {
        conf.push_str(&format!("rename-command {command} \"\"\n"));
    }
    conf
}

/// How the Redis instance `name` of an environment runs: as the project's user, in its
/// directory, with the configuration the runner wrote.
fn redis_supervised(data: &DataDir, target: &Target<'_>, name: &str) -> Result<super::process::Supervised, String> {
    let server = ["redis-server", "valkey-server"]
        .into_iter()
        .find_map(which)
        .ok_or("no redis-server on this host (Debian's redis-server package)")?;
    let dir = target.env_dir.join("services").join(name);
    let root = data.router();
    for sub in ["run", "logs"] {
        std::fs::create_dir_all(root.join(sub)).map_err(|e| e.to_string())?;
    }
    let key = target.key;
    let conf = dir.join("redis.conf").display().to_string();
    // In the apps' sandbox: its own directory, nothing else of the data directory (a client
    // that moves its `dir` with CONFIG SET reaches nothing more than the app does).
    let jail = super::sandbox::Jail {
        writable: vec![&dir],
        readable: vec![],
        hidden: vec![data.root()],
        network: true,
        // The host's: it listens there, reached by its environment through the forwarder.
        netns: None,
        limits: target.limits,
    };
    let cgroup = super::short_hash(&format!("{key}.{name}"));
    let sandboxed = target.sandbox.supervised(&jail, &dir, &cgroup, &server.display().to_string(), &[&conf])?;
    let (program, cgroups) =
        sandboxed.unwrap_or_else(|| (vec![server.display().to_string(), conf.clone()], Vec::new()));
    Ok(super::process::Supervised {
        pid_file: root.join("run").join(format!("{key}.{name}.redis.pid")),
        log: root.join("logs").join(format!("{key}.{name}.redis.log")),
        dir: dir.clone(),
        user: target.user.map(|u| (u.uid, u.gid)),
        program,
        cgroups,
        netns: None,
    })
}

/// Where the runner keeps how a service instance of environment `key` is started
/// (`DATA/router/services/KEY/NAME.json`, the runner's alone): root reads it to decide what
/// to run, as whom, and what to stop. Never in the environment's service directory, which the
/// project's user owns: a file there could name any program, no user, and any pid.
fn instance_spec(data: &DataDir, key: &str, name: &str) -> PathBuf {
    data.router().join("services").join(key).join(format!("{name}.json"))
}

/// Starts (`run`) or stops the service instances of an environment (its Redis servers), as
/// the runner's own specs describe them. A spec an older runner left in the environment's
/// service directory is never read: it is removed (the next deploy makes the runner's own).
pub fn ensure_instances(data: &DataDir, env_dir: &Path, run: bool) {
    for entry in std::fs::read_dir(env_dir.join("services")).into_iter().flatten().flatten() {
        let legacy = entry.path().join("supervised.json");
        if std::fs::symlink_metadata(&legacy).is_ok() {
            tracing::warn!(spec = %legacy.display(), "a service spec in the environment's directory is not trusted: removed");
            let _ = std::fs::remove_file(&legacy);
        }
    }
    let key = super::site_key(env_dir);
    for entry in std::fs::read_dir(data.router().join("services").join(&key)).into_iter().flatten().flatten() {
        let spec = entry.path();
        if spec.extension().is_some_and(|e| e == "json") {
            if let Err(e) = super::process::ensure_supervised(&spec, run) {
                tracing::warn!(error = %e, "a service instance");
            }
        }
    }
}

/// An endpoint in the shape of Platform.sh's relationships.
#[allow(clippy::too_many_arguments)]
fn endpoint_of(
    at: &Url,
    default_port: u16,
    scheme: &str,
    user: &str,
    password: &str,
    path: &str,
    name: &str,
    kind: &str,
) -> Value {
    let host = if at.host == "localhost" { "127.0.0.1" } else { at.host.as_str() };
    json!({
        "host": host,
        "hostname": host,
        "ip": host,
        "port": at.port.unwrap_or(default_port),
        "scheme": scheme,
        "username": user,
        "password": password,
        "path": path,
        "query": {"is_master": true},
        "service": name,
        "type": kind,
        "public": false,
        "host_mapped": false,
        "cluster": "pushgate",
    })
}

/// A MariaDB client program (`mariadb`, `mariadb-dump`) connected as the admin, the password
/// in its environment.
fn mysql_client(program: &str, admin: &Url) -> Command {
    let mut c = Command::new(program);
    c.args(["--protocol=tcp", "-h", &admin.host, "-P", &admin.port.unwrap_or(3306).to_string()]);
    if !admin.user.is_empty() {
        c.args(["-u", &admin.user]);
    }
    c.env("MYSQL_PWD", &admin.password);
    c
}

/// A PostgreSQL client program (`psql`, `pg_dump`) connected as the admin to database `db`
/// (the admin URL's, else `postgres`).
fn pg_client(program: &str, admin: &Url, db: Option<&str>) -> Command {
    let mut c = Command::new(program);
    let db = db.unwrap_or(if admin.path.is_empty() { "postgres" } else { admin.path.as_str() });
    c.args(["-h", &admin.host, "-p", &admin.port.unwrap_or(5432).to_string(), "-d", db]);
    if !admin.user.is_empty() {
        c.args(["-U", &admin.user]);
    }
    c.env("PGPASSWORD", &admin.password);
    c
}

fn run_mysql(admin: &Url, sql: &str) -> Result<(), String> {
    let mut c = mysql_client("mariadb", admin);
    c.arg("--batch");
    feed(c, sql, "mariadb")
}

fn run_psql(admin: &Url, sql: &str) -> Result<(), String> {
    let mut c = pg_client("psql", admin, None);
    c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    feed(c, sql, "psql")
}

/// Runs a client with `sql` on its standard input; its error output (never the SQL, which
/// holds passwords) when it fails.
fn feed(mut c: Command, sql: &str, what: &str) -> Result<(), String> {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e} (install the backend's client)"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(sql.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// 24 random letters and digits.
fn password() -> Result<String, String> {
    let bytes = crate::secret::random::<64>()?;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // 248 = 4 * 62: no modulo bias.
    Ok(bytes.iter().filter(|b| **b < 248).take(24).map(|b| ALPHABET[(*b % 62) as usize] as char).collect())
}

/// The name of what service `name` of environment `key` is given on its backend (database,
/// user, virtual host): `pg` and 14 hex digits, the same on every runner.
fn service_id(key: &str, name: &str) -> String {
    let hash = git2::Oid::hash_object(git2::ObjectType::Blob, format!("{key}/{name}").as_bytes())
        .map(|o| o.to_string())
        .unwrap_or_default();
    format!("pg{}", &hash[..14])
}

fn which(binary: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

/// Writes a file only its owner may read (atomically).
fn write_secret(path: &Path, text: &str) -> Result<(), String> {
    super::write_if_changed(path, text, 0o600).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_check_their_urls_and_hide_passwords() {
        let mut b = Backends::default();
        assert_eq!(b.add("mariadb", "mysql://root:s3cret@127.0.0.1:3306").unwrap(), "mysql");
        assert!(b.add("postgresql", "mysql://x@h").unwrap_err().contains("postgres://"));
        assert!(b.add("solr", "http://h").unwrap_err().contains("no backend kind"));
        assert!(b.add("redis", "nonsense:s3cret").unwrap_err().contains("is not one such as"));
        assert_eq!(b.masked(), [("mysql".to_owned(), "mysql://root:****@127.0.0.1:3306/".to_owned())]);
        let p = password().unwrap();
        assert_eq!(p.len(), 24);
        assert!(p.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
