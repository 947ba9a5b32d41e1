//! Services provisioned per environment on the real MariaDB, PostgreSQL and Redis of the host:
//! a deploy hook that writes with the relationships it is given, another environment that
//! cannot read it with its own credentials, and `env delete` dropping what it had.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::runner::{app_with_hooks, job_state, log_of, runner, serve};
use crate::support::Server;

const MYSQL: &str = "mysql:\n    type: mysql:10.11\n    disk: 2048\n";
const PG: &str = "pg:\n    type: postgresql:15\n    disk: 1024\n";
const REDIS_AND_QUEUE: &str = "redis:\n    type: redis:7.0\nqueue:\n    type: rabbitmq:3.10\n    disk: 512\n";

/// Reads the relationships as a hook does, and writes the environment's name into each service.
const READ: &str = r#"eval "$(php -r '$r = json_decode(base64_decode(getenv("MAGENTO_CLOUD_RELATIONSHIPS")), true);
foreach (["database" => "DB", "pgdb" => "PG", "redis" => "RD"] as $k => $p) { foreach (["host", "port", "username", "password", "path"] as $f) { echo $p, "_", strtoupper($f), "=", escapeshellarg((string) ($r[$k][0][$f] ?? "")), "\n"; } }')""#;
const WRITE_MYSQL: &str = r#"MYSQL_PWD="$DB_PASSWORD" mariadb --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u "$DB_USERNAME" "$DB_PATH" -e "CREATE TABLE IF NOT EXISTS t (v VARCHAR(64)); INSERT INTO t VALUES ('$MAGENTO_CLOUD_ENVIRONMENT')""#;
const WRITE_PG: &str = r#"PGPASSWORD="$PG_PASSWORD" psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USERNAME" -d "$PG_PATH" -c "CREATE TABLE IF NOT EXISTS t (v text); INSERT INTO t VALUES ('$MAGENTO_CLOUD_ENVIRONMENT')""#;
const WRITE_REDIS: &str =
    r#"redis-cli -h "$RD_HOST" -p "$RD_PORT" --no-auth-warning -a "$RD_PASSWORD" SET env "$MAGENTO_CLOUD_ENVIRONMENT""#;

/// The project: MariaDB, Redis, RabbitMQ, and PostgreSQL unless `with_pg` is false.
fn project(with_pg: bool) -> Vec<(&'static str, String)> {
    let mut deploy = vec![READ, WRITE_MYSQL, WRITE_REDIS, "echo $MAGENTO_CLOUD_ENVIRONMENT >> var/envs.txt"];
    let mut relationships =
        "    database: \"mysql:mysql\"\n    redis: \"redis:redis\"\n    rabbitmq: \"queue:rabbitmq\"\n".to_owned();
    let mut services = format!("{MYSQL}{REDIS_AND_QUEUE}");
    if with_pg {
        deploy.push(WRITE_PG);
        relationships.push_str("    pgdb: \"pg:postgresql\"\n");
        services.push_str(PG);
    }
    let app = app_with_hooks("echo building", &deploy.join("\n"))
        .replace("type: php:8.4", "type: php:8.2")
        .replace("    database: \"mysql:mysql\"\n    redis: \"redis:redis\"\n", &relationships);
    vec![
        (".magento.app.yaml", app),
        (".magento/services.yaml", services),
        (".magento/routes.yaml", crate::push::ROUTES.to_owned()),
    ]
}

/// An environment's provisioned services, as the runner keeps them.
fn provisioned(s: &Server, env: &str) -> serde_json::Map<String, Value> {
    let dir = s.data.join("services");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(&format!(".{env}.json")))
        .unwrap_or_else(|| panic!("no services of {env} in {}", dir.display()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(file.metadata().unwrap().permissions().mode() & 0o077, 0, "credentials only the runner reads");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(file.path()).unwrap()).unwrap();
    v["services"].as_object().unwrap().clone()
}

fn field(e: &Value, f: &str) -> String {
    match &e[f] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `mariadb` as the endpoint's user, on database `db`: its output, or its error.
fn mariadb(e: &Value, db: &str, sql: &str) -> Result<String, String> {
    let (host, port, user) = (field(e, "host"), field(e, "port"), field(e, "username"));
    client("mariadb", &["--protocol=tcp", "-N", "-h", &host, "-P", &port, "-u", &user, db, "-e", sql], ("MYSQL_PWD", e))
}

/// `psql` as the endpoint's role, on database `db`.
fn psql(e: &Value, db: &str, sql: &str) -> Result<String, String> {
    let (host, port, user) = (field(e, "host"), field(e, "port"), field(e, "username"));
    client("psql", &["-X", "-tA", "-h", &host, "-p", &port, "-U", &user, "-d", db, "-c", sql], ("PGPASSWORD", e))
}

/// A database client with the endpoint's password in `variable`: its output, or its error.
fn client(program: &str, args: &[&str], (variable, e): (&str, &Value)) -> Result<String, String> {
    let out = Command::new(program).args(args).env(variable, field(e, "password")).output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn redis_get(e: &Value) -> String {
    let out = Command::new("redis-cli")
        .args([
            "-h",
            &field(e, "host"),
            "-p",
            &field(e, "port"),
            "--no-auth-warning",
            "-a",
            &field(e, "password"),
            "GET",
            "env",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether the backend's admin sees database `db` (on the tests' own servers).
fn root_sees(kind: &str, db: &str) -> bool {
    let servers = crate::support::own_servers();
    let out = match kind {
        "mysql" => servers.mariadb_client().args(["-N", "-e", &format!("SHOW DATABASES LIKE '{db}'")]).output(),
        _ => servers.psql().args(["-tA", "-c", &format!("SELECT 1 FROM pg_database WHERE datname = '{db}'")]).output(),
    }
    .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

fn add_backends(s: &Server) {
    let servers = crate::support::own_servers();
    for (kind, url) in [
        ("mariadb", servers.mariadb()),
        ("postgresql", servers.postgres()),
        ("redis", "redis://127.0.0.1:6379".to_owned()),
        ("rabbitmq", crate::support::own_rabbitmq().url()),
    ] {
        let out = runner(s, &["backend", "add", kind, &url]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let list = String::from_utf8_lossy(&runner(s, &["backend", "list"]).stdout).into_owned();
    assert!(list.contains("mysql") && list.contains("postgresql") && list.contains("redis"), "{list}");
    let rabbit = crate::support::own_rabbitmq();
    assert!(list.contains(&format!("amqp://admin:****@127.0.0.1:{}/?node={}", rabbit.port, rabbit.node)), "{list}");
    assert!(!list.contains(&rabbit.password), "passwords hidden: {list}");
}

/// Drops what the test's environments were given, whatever happened.
struct Cleanup<'a>(&'a Server, &'a [&'a str]);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for env in self.1 {
            let _ = runner(self.0, &["env", "delete", env, "--yes"]);
        }
        let _ = runner(self.0, &["serve", "--until-idle"]);
    }
}

#[test]
fn each_environment_gets_services_of_its_own_that_no_other_can_read() {
    let s = Server::new("services");
    add_backends(&s);
    let _cleanup = Cleanup(&s, &["main", "feature", "solo"]);
    let files = project(true);
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let main = s.commit(&files, "main");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &main);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    // A queue in main's virtual host: a new environment starts with its definition.
    let main_vhost = field(&provisioned(&s, "main")["queue"], "vhost");
    let queue = format!(
        r#"{{"queues": [{{"name": "orders", "vhost": "{main_vhost}", "durable": true, "auto_delete": false, "arguments": {{}}}}]}}"#
    );
    let rabbit = crate::support::own_rabbitmq();
    let mut import =
        rabbit.ctl().args(["-q", "import_definitions", "--format", "json"]).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut import.stdin.take().unwrap(), queue.as_bytes()).unwrap();
    assert!(import.wait().unwrap().success());
    let queues = |vhost: &str| {
        let out = rabbit.ctl().args(["-q", "list_queues", "-p", vhost, "name"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(crate::runner::eventually(10, || queues(&main_vhost).contains("orders")));
    // New branches: one starts from main's data (the default), one empty.
    s.push(&["HEAD:refs/heads/feature"]).assert_accepted();
    s.push_with_options(&["environment.clone_parent_on_create=false"], &["HEAD:refs/heads/solo"]).assert_accepted();
    serve(&s);
    let failed: Vec<String> =
        s.jobs().iter().filter(|j| j["state"] != "succeeded").map(|j| log_of(&s, j["id"].as_i64().unwrap())).collect();
    assert!(failed.is_empty(), "{:?}\n{}", s.jobs(), failed.join("\n"));
    let feature_log = log_of(&s, s.jobs()[1]["id"].as_i64().unwrap());
    assert!(feature_log.contains("it starts with a copy of the data of environment main"), "{feature_log}");
    let (m, f, solo) = (provisioned(&s, "main"), provisioned(&s, "feature"), provisioned(&s, "solo"));
    let rows = |e: &Value| mariadb(e, &field(e, "path"), "SELECT GROUP_CONCAT(v ORDER BY v) FROM t").unwrap();
    assert_eq!(rows(&m["mysql"]), "main");
    assert_eq!(rows(&f["mysql"]), "feature,main", "main's row copied, then its own");
    assert_eq!(rows(&solo["mysql"]), "solo", "clone_parent_on_create=false: empty");
    let pg_rows = |e: &Value| psql(e, &field(e, "path"), "SELECT string_agg(v, ',' ORDER BY v) FROM t").unwrap();
    assert_eq!((pg_rows(&f["pg"]), pg_rows(&solo["pg"])), ("feature,main".to_owned(), "solo".to_owned()));
    let mounts = |env: &str| {
        let dir = std::fs::read_dir(s.data.join("environments")).unwrap().flatten().next().unwrap().path();
        std::fs::read_to_string(dir.join(env).join("mounts/mymagento/var/envs.txt")).unwrap_or_default()
    };
    assert_eq!((mounts("feature"), mounts("solo")), ("main\nfeature\n".to_owned(), "solo\n".to_owned()));
    let feature_vhost = field(&f["queue"], "vhost");
    assert!(
        crate::runner::eventually(10, || queues(&feature_vhost).contains("orders")),
        "the queue's definition is copied"
    );
    assert!(!queues(&field(&solo["queue"], "vhost")).contains("orders"));

    // Each deploy hook wrote into its own services, with the credentials it was given.
    let (mdb, fdb) = (&m["mysql"], &f["mysql"]);
    assert_ne!(field(mdb, "path"), field(fdb, "path"));
    let denied = mariadb(fdb, &field(mdb, "path"), "SELECT v FROM t").unwrap_err();
    assert!(denied.contains("Access denied"), "feature's user reads main's database: {denied}");
    let (mpg, fpg) = (&m["pg"], &f["pg"]);
    assert_eq!(psql(mpg, &field(mpg, "path"), "SELECT v FROM t").unwrap(), "main");
    let denied = psql(fpg, &field(mpg, "path"), "SELECT v FROM t").unwrap_err();
    assert!(denied.contains("permission denied"), "feature's role reads main's database: {denied}");
    let (mr, fr) = (&m["redis"], &f["redis"]);
    assert_ne!(field(mr, "port"), field(fr, "port"), "an instance each");
    assert_eq!((redis_get(mr), redis_get(fr)), ("main".to_owned(), "feature".to_owned()));
    // Not without the password.
    let out = Command::new("redis-cli").args(["-p", &field(mr, "port"), "GET", "env"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOAUTH"), "{out:?}");

    // RabbitMQ: a virtual host and a user each, with rights on its own virtual host only.
    let (mq, fq) = (&m["queue"], &f["queue"]);
    assert_eq!(field(mq, "vhost"), field(mq, "path"));
    let auth = rabbit
        .ctl()
        .args(["-q", "authenticate_user", &field(mq, "username"), &field(mq, "password")])
        .output()
        .unwrap();
    assert!(auth.status.success(), "{auth:?}");
    let perms = rabbit.ctl().args(["-q", "list_user_permissions", &field(fq, "username")]).output().unwrap();
    let perms = String::from_utf8_lossy(&perms.stdout).into_owned();
    assert!(perms.contains(&field(fq, "vhost")) && !perms.contains(&field(mq, "vhost")), "{perms}");

    // Nothing of it reached a log.
    let logs: String = s.jobs().iter().map(|j| log_of(&s, j["id"].as_i64().unwrap())).collect();
    for e in [mdb, fdb, mpg, fpg, mr, fr, mq, fq] {
        assert!(!logs.contains(&field(e, "password")), "a password in a job log");
    }

    // A redeploy keeps the same services and data.
    let again = s.commit(&files, "again");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    assert_eq!(job_state(&s, &again).1, "succeeded");
    assert_eq!(provisioned(&s, "main")["mysql"], m["mysql"]);
    assert_eq!(mariadb(mdb, &field(mdb, "path"), "SELECT count(*) FROM t").unwrap(), "2");

    // `env sync`: a job that gives feature main's data again, under the same credentials.
    let out = runner(&s, &["env", "sync", "feature"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sync of environment feature from main"));
    serve(&s);
    let sync = s.jobs().into_iter().last().unwrap();
    assert_eq!((sync["type"].as_str(), sync["state"].as_str()), (Some("sync"), Some("succeeded")), "{sync}");
    let log = log_of(&s, sync["id"].as_i64().unwrap());
    assert!(log.contains("Service `mysql`: emptied, then copied from main"), "{log}");
    assert_eq!(rows(&f["mysql"]), "main,main", "{log}");
    assert_eq!(pg_rows(&f["pg"]), "main,main");
    assert_eq!(mounts("feature"), mounts("main"));
    // Never the other way round.
    let refused = runner(&s, &["env", "sync", "main"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is the default branch's"), "{refused:?}");

    // A service the push removes, accepting the loss of its data, is dropped at deploy.
    let files = project(false);
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let removed = s.commit(&files, "no postgresql");
    s.push_with_options(&["pushgate.allow-data-loss"], &["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &removed);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    assert!(log_of(&s, id).contains("service `pg` is no longer declared: its data is dropped"));
    assert!(!root_sees("pg", &field(mpg, "path")), "main's PostgreSQL database is dropped");
    assert!(!provisioned(&s, "main").contains_key("pg"));
    assert!(root_sees("mysql", &field(mdb, "path")));

    // Deleting an environment drops its services, and only its own.
    let out = runner(&s, &["env", "delete", "feature", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deletion of environment feature"));
    serve(&s);
    let deletion = s.jobs().into_iter().last().unwrap();
    assert_eq!((deletion["type"].as_str(), deletion["state"].as_str()), (Some("delete"), Some("succeeded")));
    assert!(log_of(&s, deletion["id"].as_i64().unwrap()).contains("Its services are dropped: mysql, pg, queue, redis"));
    assert!(!root_sees("mysql", &field(fdb, "path")) && !root_sees("pg", &field(fpg, "path")));
    assert!(root_sees("mysql", &field(mdb, "path")), "main keeps its own");
    assert_eq!(redis_get(fr), "", "its Redis is stopped");
    assert_eq!(redis_get(mr), "main");
}

#[test]
fn without_a_backend_a_declared_endpoint_is_shared_and_the_log_says_so() {
    let s = Server::new("services-shared");
    std::fs::write(
        s.data.join("services.json"),
        r#"{"mysql": {"host": "127.0.0.1", "port": 3306, "scheme": "mysql"}}"#,
    )
    .unwrap();
    let files = project(true);
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    let commit = s.commit(&files, "main");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, _) = job_state(&s, &commit);
    let log = log_of(&s, id);
    assert!(
        log.contains("W: service `mysql` (mysql:10.11): no mysql backend (pushgate-runner backend add mysql URL)"),
        "{log}"
    );
    assert!(!Path::new(&s.data.join("services")).exists(), "nothing provisioned");
}

#[test]
fn a_runner_killed_while_copying_a_database_leaves_it_to_the_next_which_starts_it_again() {
    let s = Server::new("services-killed");
    add_backends(&s);
    let _cleanup = Cleanup(&s, &["main", "feature"]);
    let files = project(true);
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    s.commit(&files, "main");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let mdb = provisioned(&s, "main")["mysql"].clone();
    // Enough rows that copying them takes a while.
    let grow = "INSERT INTO t SELECT REPEAT('x', 60) FROM t";
    for _ in 0..18 {
        mariadb(&mdb, &field(&mdb, "path"), grow).unwrap();
    }
    let rows = mariadb(&mdb, &field(&mdb, "path"), "SELECT count(*) FROM t").unwrap();
    s.push(&["HEAD:refs/heads/feature"]).assert_accepted();
    let mut first = crate::runner::spawn_dying_runner(&s);
    let copying = || {
        Command::new("pgrep")
            .args(["-f", &format!("mariadb-dump.*{}", field(&mdb, "path"))])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(crate::runner::eventually(30, copying), "the first runner started copying");
    first.kill().unwrap(); // SIGKILL, mid-copy
    first.wait().unwrap();
    assert!(
        !Path::new(&s.data.join("services")).read_dir().unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .ends_with(".feature.json")
            && std::fs::read_to_string(e.path()).unwrap().contains("\"mysql\"")),
        "a copy cut short is not recorded"
    );
    std::thread::sleep(std::time::Duration::from_millis(2500)); // the lease runs out
    let out = runner(&s, &["serve", "--until-idle", "--lease", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job = s.jobs().into_iter().last().unwrap();
    assert_eq!(job["state"], "succeeded", "{}", log_of(&s, job["id"].as_i64().unwrap()));
    let fdb = provisioned(&s, "feature")["mysql"].clone();
    let copied: u64 = mariadb(&fdb, &field(&fdb, "path"), "SELECT count(*) FROM t").unwrap().parse().unwrap();
    assert_eq!(
        copied,
        rows.parse::<u64>().unwrap() + 1,
        "every row of main, then feature's own: nothing twice, nothing lost"
    );
}

#[test]
fn mariadb_schemas_and_endpoints_become_databases_and_users_with_their_rights() {
    let s = Server::new("services-schemas");
    add_backends(&s);
    let _cleanup = Cleanup(&s, &["main"]);
    let services = "mysql:\n    type: mysql:10.11\n    disk: 2048\n    configuration:\n        schemas: [main, legacy]\n\
                    \x20       endpoints:\n            mysql:\n                default_schema: main\n                privileges:\n\
                    \x20                   main: admin\n                    legacy: admin\n            reporter:\n\
                    \x20               default_schema: main\n                privileges:\n                    main: ro\n";
    let app = app_with_hooks("echo building", &[READ, WRITE_MYSQL].join("\n"))
        .replace("type: php:8.4", "type: php:8.2")
        .replace(
            "    database: \"mysql:mysql\"\n    redis: \"redis:redis\"\n",
            "    database: \"mysql:mysql\"\n    reports: \"mysql:reporter\"\n",
        );
    let files = [
        (".magento.app.yaml", app.as_str()),
        (".magento/services.yaml", services),
        (".magento/routes.yaml", crate::push::ROUTES),
    ];
    // The environment's 4 connections are shared by its two users.
    std::fs::write(s.data.join("sandbox.json"), r#"{"connections": 4, "disk_reserve": false}"#).unwrap();
    let commit = s.commit(&files, "schemas");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &commit);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    let mysql = provisioned(&s, "main")["mysql"].clone();
    let (admin, reporter) = (&mysql["endpoints"]["mysql"], &mysql["endpoints"]["reporter"]);
    let main_db = field(admin, "path");
    let legacy_db = main_db.replace("_main", "_legacy");
    assert!(main_db.ends_with("_main") && field(reporter, "path") == main_db, "{mysql}");
    // The deploy hook wrote with the `mysql` endpoint; the reporter reads it, and only reads.
    assert_eq!(mariadb(reporter, &main_db, "SELECT v FROM t").unwrap(), "main");
    assert!(mariadb(reporter, &main_db, "INSERT INTO t VALUES ('x')").unwrap_err().contains("denied"));
    assert!(mariadb(reporter, &legacy_db, "SELECT 1").unwrap_err().contains("denied"), "no right on legacy");
    assert!(mariadb(admin, &legacy_db, "CREATE TABLE l (v INT)").is_ok());
    // Two each: a third of either user is refused, so the two hold at most 4.
    let held = (hold("mysql", admin, 2), hold("mysql", reporter, 2));
    let (a, r) = (field(admin, "username"), field(reporter, "username"));
    assert!(crate::runner::eventually(20, || sleeping("mysql", &a) == 2 && sleeping("mysql", &r) == 2));
    for endpoint in [admin, reporter] {
        let refused = mariadb(endpoint, &main_db, "SELECT 1").unwrap_err();
        assert!(refused.contains("max_user_connections"), "{refused}");
    }
    drop(held);
    let servers = crate::support::own_servers();
    let kill = format!(
        "SELECT GROUP_CONCAT(CONCAT('KILL ', ID) SEPARATOR ';') FROM information_schema.PROCESSLIST WHERE USER IN ('{a}', '{r}')"
    );
    let out = servers.mariadb_client().args(["-N", "-e", &kill]).output().unwrap();
    let kills = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(servers.mariadb_client().args(["-e", &kills]).status().unwrap().success(), "{kills}");
    let out = runner(&s, &["env", "delete", "main", "--yes"]);
    assert!(out.status.success());
    serve(&s);
    assert!(!root_sees("mysql", &main_db) && !root_sees("mysql", &legacy_db));
}

#[test]
fn a_service_added_to_a_running_environment_is_provisioned_empty_at_its_next_deploy() {
    let s = Server::new("services-added");
    add_backends(&s);
    let _cleanup = Cleanup(&s, &["main"]);
    // First without Redis, then with it.
    let app = app_with_hooks("echo building", "true")
        .replace("type: php:8.4", "type: php:8.2")
        .replace("    redis: \"redis:redis\"\n", "");
    let services = MYSQL.to_owned();
    let files = [
        (".magento.app.yaml", app.as_str()),
        (".magento/services.yaml", services.as_str()),
        (".magento/routes.yaml", crate::push::ROUTES),
    ];
    s.commit(&files, "no redis");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    assert!(!provisioned(&s, "main").contains_key("redis"));
    let app =
        app_with_hooks("echo building", &[READ, WRITE_REDIS].join("\n")).replace("type: php:8.4", "type: php:8.2");
    let services = format!("{MYSQL}redis:\n    type: redis:7.0\n");
    let files = [
        (".magento.app.yaml", app.as_str()),
        (".magento/services.yaml", services.as_str()),
        (".magento/routes.yaml", crate::push::ROUTES),
    ];
    let added = s.commit(&files, "with redis");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert!(push.output.contains("redis (type: redis:7.0") && push.output.contains("[added]"), "{}", push.output);
    serve(&s);
    let (id, state) = job_state(&s, &added);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    let services = provisioned(&s, "main");
    assert_eq!(redis_get(&services["redis"]), "main", "the deploy hook reached the new Redis");
}

#[test]
fn a_version_the_backend_cannot_give_is_refused_at_push_time_on_every_branch() {
    let s = Server::new("services-upgrade");
    add_backends(&s);
    let _cleanup = Cleanup(&s, &["main"]);
    let app = app_with_hooks("echo building", "true")
        .replace("type: php:8.4", "type: php:8.2")
        .replace("    redis: \"redis:redis\"\n", "");
    let push = |version: &str| {
        let services = format!("mysql:\n    type: mysql:{version}\n    disk: 2048\n");
        let files = [
            (".magento.app.yaml", app.as_str()),
            (".magento/services.yaml", services.as_str()),
            (".magento/routes.yaml", crate::push::ROUTES),
        ];
        let commit = s.commit(&files, version);
        (commit, s.push(&["HEAD:refs/heads/main"]))
    };
    let (_, first) = push("10.6");
    first.assert_accepted();
    // 10.6 reached its end of life: the hint offers what this server's backend gives first.
    assert!(
        first.output.contains(
            "upgrade to a newer supported version: 10.11 (12.3, 11.8, 11.4 when this server's backend is upgraded)"
        ),
        "{}",
        first.output
    );
    serve(&s);
    // The backend runs MariaDB 10.11: 11.4 cannot be given in place.
    let (_, refused) = push("11.4");
    assert!(!refused.ok, "{}", refused.output);
    assert!(
        refused.output.contains("service `mysql` cannot be upgraded in place to mysql:11.4: the mysql backend of this server runs version 10.11"),
        "{}",
        refused.output
    );
    // 10.11 is what it runs: accepted, deployed, the data kept.
    let (commit, accepted) = push("10.11");
    accepted.assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &commit);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    assert!(log_of(&s, id).contains("now mysql:10.11, provisioned as mysql:10.6"), "{}", log_of(&s, id));
    // The same rule on every branch: a new environment asking for 11.4 is refused too, not
    // deployed on 10.11 without a word.
    let services = "mysql:\n    type: mysql:11.4\n    disk: 2048\n";
    let files = [
        (".magento.app.yaml", app.as_str()),
        (".magento/services.yaml", services),
        (".magento/routes.yaml", crate::push::ROUTES),
    ];
    s.commit(&files, "feature on 11.4");
    let refused = s.push(&["HEAD:refs/heads/feature"]);
    assert!(!refused.ok, "{}", refused.output);
    assert!(
        refused.output.contains("service `mysql` asks for mysql:11.4, which this server cannot give: the mysql backend of this server runs version 10.11"),
        "{}",
        refused.output
    );
}

#[test]
fn postgresql_databases_and_endpoints_become_databases_and_roles_with_their_rights() {
    let s = Server::new("services-pg-endpoints");
    add_backends(&s);
    let _cleanup = Cleanup(&s, &["main"]);
    let services = "pg:\n    type: postgresql:15\n    disk: 1024\n    configuration:\n        databases: [main, legacy]\n\
                    \x20       endpoints:\n            postgresql:\n                default_database: main\n                privileges:\n\
                    \x20                   main: admin\n                    legacy: admin\n            reporter:\n\
                    \x20               default_database: main\n                privileges:\n                    main: ro\n";
    let app = app_with_hooks("echo building", &[READ, WRITE_PG].join("\n"))
        .replace("type: php:8.4", "type: php:8.2")
        .replace(
            "    database: \"mysql:mysql\"\n    redis: \"redis:redis\"\n",
            "    pgdb: \"pg:postgresql\"\n    reports: \"pg:reporter\"\n",
        );
    let files = [
        (".magento.app.yaml", app.as_str()),
        (".magento/services.yaml", services),
        (".magento/routes.yaml", crate::push::ROUTES),
    ];
    let commit = s.commit(&files, "pg endpoints");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &commit);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    let pg = provisioned(&s, "main")["pg"].clone();
    let (owner, reporter) = (&pg["endpoints"]["postgresql"], &pg["endpoints"]["reporter"]);
    let main_db = field(owner, "path");
    let legacy_db = main_db.replace("_main", "_legacy");
    // The deploy hook wrote with the `postgresql` endpoint; the reporter reads it, and only reads.
    assert_eq!(psql(reporter, &main_db, "SELECT v FROM t").unwrap(), "main");
    assert!(psql(reporter, &main_db, "INSERT INTO t VALUES ('x')").unwrap_err().contains("permission denied"));
    assert!(psql(reporter, &legacy_db, "SELECT 1").unwrap_err().contains("permission denied"), "no right on legacy");
    assert!(psql(owner, &legacy_db, "CREATE TABLE l (v INT)").is_ok());
    let out = runner(&s, &["env", "delete", "main", "--yes"]);
    assert!(out.status.success());
    serve(&s);
    assert!(!root_sees("pg", &main_db) && !root_sees("pg", &legacy_db));
}

#[test]
fn a_new_environment_starts_with_a_copy_of_its_parents_persistent_redis() {
    let s = Server::new("services-redis-copy");
    add_backends(&s);
    let _cleanup = Cleanup(&s, &["main", "feature"]);
    let app =
        app_with_hooks("echo building", &[READ, WRITE_REDIS].join("\n")).replace("type: php:8.4", "type: php:8.2");
    let services = format!("{MYSQL}redis:\n    type: redis-persistent:7.0\n    disk: 512\n");
    let files = [
        (".magento.app.yaml", app.as_str()),
        (".magento/services.yaml", services.as_str()),
        (".magento/routes.yaml", crate::push::ROUTES),
    ];
    s.commit(&files, "persistent redis");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let main = provisioned(&s, "main")["redis"].clone();
    let out = Command::new("redis-cli")
        .args([
            "-p",
            &field(&main, "port"),
            "--no-auth-warning",
            "-a",
            &field(&main, "password"),
            "SET",
            "seed",
            "from-main",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    s.push(&["HEAD:refs/heads/feature"]).assert_accepted();
    serve(&s);
    let feature = provisioned(&s, "feature")["redis"].clone();
    assert_ne!(field(&main, "port"), field(&feature, "port"));
    let get = Command::new("redis-cli")
        .args(["-p", &field(&feature, "port"), "--no-auth-warning", "-a", &field(&feature, "password"), "GET", "seed"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "from-main", "the parent's data, copied");
    assert_eq!(redis_get(&feature), "feature", "then its own deploy hook's");
}

/// What `backend add` says of a server whose accounts anyone on the host may use, pinned.
/// Re-record with `PUSHGATE_BLESS=1 cargo test`.
#[test]
fn a_backend_whose_accounts_log_in_without_a_password_is_refused() {
    let s = Server::new("open-admin");
    // The host's servers trust every local user: MariaDB's root has no password, PostgreSQL's
    // pg_hba.conf says `trust`; a password in the URL changes nothing.
    let mut said = String::new();
    // The host's RabbitMQ has `guest`, whose password everyone knows.
    for (kind, url, account) in [
        ("mariadb", "mysql://root@127.0.0.1:3306", "root"),
        ("postgresql", "postgres://postgres:anything@127.0.0.1:5432/postgres", "postgres"),
        ("rabbitmq", "amqp://admin:anything@127.0.0.1:5672", "guest"),
    ] {
        let out = runner(&s, &["backend", "add", kind, url]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{kind} accepted: {err}");
        assert!(err.contains(&format!("account `{account}` logs in")), "{err}");
        said.push_str(&err);
    }
    let list = String::from_utf8_lossy(&runner(&s, &["backend", "list"]).stdout).into_owned();
    assert_eq!(list, "", "nothing is declared");
    let path = crate::support::project_dir().join("tests/it/snapshots/open_backend_refused.txt");
    if std::env::var_os("PUSHGATE_BLESS").is_some() {
        std::fs::write(&path, &said).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(said, expected, "the message changed; re-record with PUSHGATE_BLESS=1 if intended");

    // Servers that ask every account for its password are declared.
    let servers = crate::support::own_servers();
    let rabbit = crate::support::own_rabbitmq().url();
    for (kind, url) in [("mariadb", servers.mariadb()), ("postgresql", servers.postgres()), ("rabbitmq", rabbit)] {
        let out = runner(&s, &["backend", "add", kind, &url]);
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Holds `n` connections of the endpoint's user (each sleeping in the server) until dropped.
struct Held(Vec<std::process::Child>);

impl Drop for Held {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// How many connections of `user` sleep in its server (held by [`hold`]).
fn sleeping(kind: &str, user: &str) -> usize {
    let servers = crate::support::own_servers();
    let out = match kind {
        "mysql" => {
            let sql = format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{user}' AND INFO LIKE 'SELECT SLEEP%'"
            );
            servers.mariadb_client().args(["-N", "-e", &sql]).output()
        }
        _ => {
            let sql =
                format!("SELECT COUNT(*) FROM pg_stat_activity WHERE usename = '{user}' AND query LIKE 'SELECT pg_sleep%'");
            servers.psql().args(["-tA", "-c", &sql]).output()
        }
    }
    .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse::<usize>().unwrap_or(0)
}

fn hold(kind: &str, e: &Value, n: usize) -> Held {
    let (host, port, user, db) = (field(e, "host"), field(e, "port"), field(e, "username"), field(e, "path"));
    let children = (0..n)
        .map(|_| {
            let mut c = match kind {
                "mysql" => {
                    let mut c = Command::new("mariadb");
                    c.args(["--protocol=tcp", "-h", &host, "-P", &port, "-u", &user, &db, "-e", "SELECT SLEEP(60)"]);
                    c.env("MYSQL_PWD", field(e, "password"));
                    c
                }
                _ => {
                    let mut c = Command::new("psql");
                    c.args(["-X", "-h", &host, "-p", &port, "-U", &user, "-d", &db, "-c", "SELECT pg_sleep(60)"]);
                    c.env("PGPASSWORD", field(e, "password"));
                    c
                }
            };
            c.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
        })
        .collect();
    Held(children)
}

#[test]
fn an_environments_database_users_hold_at_most_their_share_of_the_server() {
    let s = Server::new("services-connections");
    add_backends(&s);
    let _cleanup = Cleanup(&s, &["main"]);
    std::fs::write(s.data.join("sandbox.json"), r#"{"connections": 2, "disk_reserve": false}"#).unwrap();
    let app = app_with_hooks("echo building", "true").replace("type: php:8.4", "type: php:8.2").replace(
        "    database: \"mysql:mysql\"\n    redis: \"redis:redis\"\n",
        "    database: \"mysql:mysql\"\n    pgdb: \"pg:postgresql\"\n",
    );
    let services = format!("{MYSQL}{PG}");
    let files = [
        (".magento.app.yaml", app.as_str()),
        (".magento/services.yaml", services.as_str()),
        (".magento/routes.yaml", crate::push::ROUTES),
    ];
    let first = s.commit(&files, "databases");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &first);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    let p = provisioned(&s, "main");
    let (db, pg) = (&p["mysql"], &p["pg"]);
    let servers = crate::support::own_servers();
    // Two connections held: a third of the same user is refused, on each server.
    let busy = |kind: &str| sleeping(kind, &field(if kind == "mysql" { db } else { pg }, "username"));
    let held = (hold("mysql", db, 2), hold("pg", pg, 2));
    assert!(crate::runner::eventually(20, || busy("mysql") == 2 && busy("pg") == 2), "the sleeping connections");
    let refused = mariadb(db, &field(db, "path"), "SELECT 1").unwrap_err();
    assert!(refused.contains("max_user_connections"), "{refused}");
    let refused = psql(pg, &field(pg, "path"), "SELECT 1").unwrap_err();
    assert!(refused.contains("too many connections for role"), "{refused}");
    drop(held);
    // A client killed leaves its query sleeping in the server: the admin ends them.
    let user = field(db, "username");
    let kill = format!(
        "SELECT GROUP_CONCAT(CONCAT('KILL ', ID) SEPARATOR ';') FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
    );
    let out = servers.mariadb_client().args(["-N", "-e", &kill]).output().unwrap();
    let kills = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(servers.mariadb_client().args(["-e", &kills]).status().unwrap().success(), "{kills}");
    let end =
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{}'", field(pg, "username"));
    assert!(servers.psql().args(["-c", &end]).status().unwrap().success());
    assert!(crate::runner::eventually(20, || busy("mysql") == 0 && busy("pg") == 0));
    assert_eq!(mariadb(db, &field(db, "path"), "SELECT 1").unwrap(), "1");

    // The admin raises the share: the users made before get it at the next deploy.
    std::fs::write(s.data.join("sandbox.json"), r#"{"connections": 3, "disk_reserve": false}"#).unwrap();
    let again = s.commit(&files, "again");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    assert_eq!(job_state(&s, &again).1, "succeeded");
    let held = (hold("mysql", db, 2), hold("pg", pg, 2));
    assert!(crate::runner::eventually(20, || busy("mysql") == 2 && busy("pg") == 2));
    assert_eq!(mariadb(db, &field(db, "path"), "SELECT 1").unwrap(), "1", "a third is allowed now");
    assert_eq!(psql(pg, &field(pg, "path"), "SELECT 1").unwrap(), "1");
    drop(held);
    assert!(servers.mariadb_client().args(["-e", &kill_all(&user)]).status().unwrap().success());
    assert!(servers.psql().args(["-c", &end]).status().unwrap().success());
    assert!(crate::runner::eventually(20, || busy("mysql") == 0 && busy("pg") == 0));

    // A branch is one more environment with users of its own: the project's 3 connections
    // are now shared by two users on each server, main's included.
    let _feature = Cleanup(&s, &["feature"]);
    s.push(&["HEAD:refs/heads/feature"]).assert_accepted();
    serve(&s);
    assert!(provisioned(&s, "feature")["mysql"]["username"] != db["username"], "feature has users of its own");
    let _held = (hold("mysql", db, 1), hold("pg", pg, 1));
    assert!(crate::runner::eventually(20, || busy("mysql") == 1 && busy("pg") == 1));
    let refused = mariadb(db, &field(db, "path"), "SELECT 1").unwrap_err();
    assert!(refused.contains("max_user_connections"), "main's user holds one now: {refused}");
    let refused = psql(pg, &field(pg, "path"), "SELECT 1").unwrap_err();
    assert!(refused.contains("too many connections for role"), "{refused}");
}

/// The statements that end every query of MariaDB user `user`.
fn kill_all(user: &str) -> String {
    let servers = crate::support::own_servers();
    let kill = format!(
        "SELECT GROUP_CONCAT(CONCAT('KILL ', ID) SEPARATOR ';') FROM information_schema.PROCESSLIST WHERE USER = '{user}'"
    );
    let out = servers.mariadb_client().args(["-N", "-e", &kill]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
