//! A project's code attacks the server it runs on, as another project's developer would with
//! nothing but push access: each attack first reproduced on the code before its fix, then
//! shown closed, and the legitimate use beside it shown working.

use std::path::PathBuf;

use crate::router::{Response, Routed};
use crate::runner::{eventually, runner};

/// A PHP app served at `/`, its code `index`.
fn php_app(name: &str, extra: &str, index: &str) -> Vec<(&'static str, String)> {
    let app = format!(
        "name: {name}\ntype: php:8.2\ndisk: 512\n{extra}web:\n    locations:\n        \"/\":\n            root: \"\"\n            \
         passthru: \"/index.php\"\n            scripts: true\n            allow: false\n"
    );
    vec![
        (".magento.app.yaml", app),
        (
            ".magento/routes.yaml",
            "\"http://{default}/\":\n    type: upstream\n    upstream: \"app:http\"\n"
                .replace("app:", &format!("{name}:")),
        ),
        ("index.php", index.to_owned()),
    ]
}

/// The directory of environment main of the test's project (`repo`).
fn main_env_dir(r: &Routed) -> PathBuf {
    std::fs::read_dir(r.s.data.join("environments"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("repo-"))
        .unwrap()
        .join("main")
}

/// A file no test writes but an attack that worked: where it would be, gone first.
fn proof(label: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("pushgate-proof-{}-{label}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn owner_of(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.uid())
}

#[test]
fn a_redis_spec_the_app_rewrites_is_never_what_root_runs() {
    let r = Routed::new("redis-spec");
    let out = runner(&r.s, &["backend", "add", "redis", "redis://127.0.0.1:6379"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let proof = proof("redis-spec");
    // The app, as the project's user, rewrites the spec of its Redis instance the way the
    // runner wrote it before: no user, a program of its choosing, a pid file naming nobody.
    let index = format!(
        r#"<?php
$env = dirname(__DIR__, 3);
if (($_GET['do'] ?? '') === 'attack') {{
    $spec = json_encode(["pid_file" => "/tmp/none-{pid}.pid", "log" => "/tmp/none-{pid}.log", "dir" => "/",
        "user" => null, "program" => ["sh", "-c", "id -u > {proof}"]]);
    // The file is root's, but the directory is the project's: replaced, not written in place.
    @unlink("$env/services/cache/supervised.json");
    $written = @file_put_contents("$env/services/cache/supervised.json", $spec);
    $runner = glob(dirname($env, 3) . "/router/services/*/cache.json") ?: [];
    $also = $runner ? @file_put_contents($runner[0], $spec) : false;
    echo "written=", $written === false ? "no" : "yes", " runner-spec=", $also === false ? "no" : "yes", "\n";
}} else {{
    $r = json_decode(base64_decode(getenv('MAGENTO_CLOUD_RELATIONSHIPS')), true)['redis'][0];
    $s = fsockopen($r['host'], $r['port']);
    fwrite($s, "AUTH {{$r['password']}}\r\nPING\r\n");
    echo "redis says ", trim(fgets($s)), " ", trim(fgets($s)), "\n";
}}
"#,
        pid = std::process::id(),
        proof = proof.display()
    );
    let mut files = php_app("app", "relationships:\n    redis: \"cache:redis\"\n", &index);
    files.push((".magento/services.yaml", "cache:\n    type: redis:7.0\n".to_owned()));
    r.deploy(&files, "main");
    let host = r.host("main");
    let page: Response = r.get(&host, "/");
    assert!(page.body.contains("redis says +OK +PONG"), "the app uses its Redis: {page:?}\n{}", r.runner_log());

    let attack = r.get(&host, "/?do=attack");
    assert!(attack.body.contains("runner-spec=no"), "the runner's spec is out of the app's reach: {attack:?}");
    // The serving loop looks at the instances every 3 s.
    eventually(8, || proof.exists());
    assert_ne!(owner_of(&proof), Some(0), "root ran the program of a spec the app wrote: {attack:?}");
    assert!(!proof.exists(), "a program of the app's spec ran");
    // Its own instance still runs as the runner started it.
    assert!(r.get(&host, "/").body.contains("redis says +OK +PONG"));
}

/// A second repository on the server, installed like the first: `path` under the test's
/// directory (`evil.git`, `team2/repo.git`); pushes wait for its deployment.
fn another_repository(r: &Routed, path: &str) -> String {
    let bare = r.s.dir.join(path);
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    let install = crate::support::run_install(&r.s.prefix, &r.s.data, &[&bare]);
    assert!(install.status.success(), "install.sh failed: {}", String::from_utf8_lossy(&install.stderr));
    crate::support::git_ok(&bare, &["config", "pushgate.pickupWaitMs", "30000"]);
    format!("file://{}", bare.display())
}

/// Commits `files` in the test's work tree and pushes them to `url`'s `main`.
fn push_files(r: &Routed, url: &str, files: &[(&str, String)]) -> crate::support::Push {
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (*p, c.as_str())).collect();
    r.s.commit(&files, "files");
    r.s.push_to(url, &["HEAD:refs/heads/main"])
}

#[test]
fn a_route_host_cannot_borrow_another_projects_host() {
    let r = Routed::new("hosts");
    let victim = php_app("app", "", "<?php echo 'the real shop';\n");
    r.deploy(&victim, "main");
    let host = r.host("main");
    assert!(r.get(&host, "/").body.contains("the real shop"));

    // Another project names the victim's host in its route, ending nginx's server_name early.
    let evil_url = another_repository(&r, "evil.git");
    let mut evil = php_app("app", "", "<?php echo 'evil serves this';\n");
    evil[1].1 = format!("\"http://{host};#{{default}}/\":\n    type: upstream\n    upstream: \"app:http\"\n");
    let push = push_files(&r, &evil_url, &evil);
    assert!(!push.ok, "the push is refused:\n{}", push.output);
    assert!(
        push.output.contains(".magento/routes.yaml:1:1")
            && push.output.contains("the host part `localhost;#{default}` is not a DNS label"),
        "{}",
        push.output
    );
    assert!(r.get(&host, "/").body.contains("the real shop"));

    // A repository of the same name elsewhere on the server is refused at install: a
    // project's name is unique (tokens, URLs and the console name projects by it).
    let twin = r.s.dir.join("team2/repo.git");
    let install = crate::support::run_install(&r.s.prefix, &r.s.data, &[&twin]);
    assert!(!install.status.success(), "a second project named repo is installed");
    let said = String::from_utf8_lossy(&install.stderr);
    assert!(said.contains("the project name repo is already") && said.contains("repo.git's on this server"), "{said}");

    // A name that differs but gives the same host names (`Repo`): the environment that has the
    // hosts keeps them, and the newcomer's deployment is refused, naming it.
    let twin_url = another_repository(&r, "Repo.git");
    let twin = php_app("app", "", "<?php echo 'the twin';\n");
    let push = push_files(&r, &twin_url, &twin);
    assert!(push.output.contains(&format!("host {host} is served by environment main of")), "{}", push.output);
    assert!(r.get(&host, "/").body.contains("the real shop"));
}

#[test]
fn a_hooks_terminal_control_sequences_reach_no_terminal() {
    let r = Routed::new("escapes");
    let mut files = php_app("app", "", "<?php echo 'ok';\n");
    files[0].1.push_str(
        "hooks:\n    build: |\n        printf 'start \\033]0;pwned\\007\\033[2J\\033[31mred\\rover end\\n'\n",
    );
    let (commit, output) = r.deploy(&files, "main");
    assert!(
        !output.contains('\u{1b}') && !output.contains('\u{7}'),
        "raw control characters reach the pusher: {output:?}"
    );
    assert!(output.contains("start ^[]0;pwned^G^[[2J^[[31mred^Mover end"), "{output}");
    let id = r.s.jobs().into_iter().find(|j| j["commit"] == commit).unwrap()["id"].as_i64().unwrap();
    let logs = runner(&r.s, &["logs", &id.to_string()]);
    let shown = String::from_utf8_lossy(&logs.stdout);
    assert!(!shown.contains('\u{1b}') && shown.contains("^[[2J"), "{shown:?}");
}

#[test]
fn variables_reach_php_verbatim_and_nothing_of_the_runners_environment_does() {
    let r = Routed::new("verbatim");
    let variables = "variables:\n    env:\n        SECRET_REF: '${PUSHGATE_RUNNER_ONLY}'\n        \
                     CONFIG: '{\"a\": \"b c\", \"quote\": \"it''s\"}'\n        \
                     MIXED: 'a''$b\\c\"d'\n        ENDS: \"x'\"\n        EMPTY: ''\n";
    let index = "<?php foreach (['SECRET_REF', 'CONFIG', 'MIXED', 'ENDS', 'EMPTY', 'PUSHGATE_RUNNER_ONLY'] as $v) { \
                 echo $v, '=', var_export(getenv($v), true), \"\\n\"; }\n";
    let files = php_app("app", variables, index);
    r.deploy(&files, "main");
    let page = r.get(&r.host("main"), "/").body;
    assert!(page.contains("SECRET_REF='${PUSHGATE_RUNNER_ONLY}'"), "{page}");
    assert!(page.contains(r#"CONFIG='{"a": "b c", "quote": "it\'s"}'"#), "{page}");
    assert!(page.contains(r#"MIXED='a\'$b\\c"d'"#), "{page}");
    assert!(page.contains("PUSHGATE_RUNNER_ONLY=false"), "{page}");
    // A value ending in a quote, and an empty one, reach PHP too (PHP-FPM's configuration
    // cannot hold either as such).
    assert!(page.contains(r#"ENDS='x\''"#) && page.contains("EMPTY=''"), "{page}");
    // A changed value reaches the pool at the next deployment (its configuration reloaded in
    // its sandbox).
    let files = php_app("app", &variables.replace("b c", "changed"), index);
    r.deploy(&files, "main");
    let page = r.get(&r.host("main"), "/").body;
    assert!(page.contains(r#"CONFIG='{"a": "changed", "quote": "it\'s"}'"#), "{page}");
}

/// Reads the relationships as a hook does: `DB_HOST`, `DB_PORT`, `DB_USERNAME`, `DB_PASSWORD`,
/// `DB_PATH`.
const READ_DB: &str = r#"eval "$(php -r '$r = json_decode(base64_decode(getenv("MAGENTO_CLOUD_RELATIONSHIPS")), true)["database"][0]; foreach (["host", "port", "username", "password", "path"] as $f) { echo "DB_", strtoupper($f), "=", escapeshellarg((string) $r[$f]), "\n"; }')""#;

#[test]
fn a_table_name_of_the_projects_own_reaches_no_sql_of_the_backends_admin() {
    let s = crate::support::Server::new("sql-names");
    let servers = crate::support::own_servers();
    let out = runner(&s, &["backend", "add", "mariadb", &servers.mariadb()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let proof = format!("proof_{}", std::process::id());
    let root_sql = |sql: &str| {
        let out = servers.mariadb_client().args(["-N", "-e", sql]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    root_sql(&format!("DROP DATABASE IF EXISTS {proof}"));
    // The deploy hook, with the credentials it is given, names a table as an injection.
    let deploy = format!(
        "{READ_DB}\n        MYSQL_PWD=\"$DB_PASSWORD\" mariadb --protocol=tcp -h \"$DB_HOST\" -P \"$DB_PORT\" -u \"$DB_USERNAME\" \
         \"$DB_PATH\" -e 'CREATE TABLE IF NOT EXISTS `x``;CREATE DATABASE {proof};#` (v INT); CREATE TABLE IF NOT EXISTS \
         plain (v INT)'"
    );
    let app = format!(
        "name: app\ntype: php:8.2\ndisk: 512\nrelationships:\n    database: \"mysql:mysql\"\nhooks:\n    deploy: |\n        \
         {deploy}\nweb:\n    locations:\n        \"/\":\n            root: \"\"\n            passthru: \"/index.php\"\n"
    );
    let files = [
        (".magento.app.yaml", app.as_str()),
        (".magento/services.yaml", "mysql:\n    type: mysql:10.11\n    disk: 1024\n"),
        (".magento/routes.yaml", "\"http://{default}/\":\n    type: upstream\n    upstream: \"app:http\"\n"),
        ("index.php", "<?php\n"),
    ];
    s.commit(&files, "tables");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    crate::runner::serve(&s);
    s.push(&["HEAD:refs/heads/feature"]).assert_accepted();
    crate::runner::serve(&s);
    struct Cleanup<'a>(&'a crate::support::Server, String);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            for env in ["feature", "main"] {
                let _ = runner(self.0, &["env", "delete", env, "--yes"]);
            }
            let _ = runner(self.0, &["serve", "--until-idle"]);
            let _ = crate::support::own_servers()
                .mariadb_client()
                .args(["-e", &format!("DROP DATABASE IF EXISTS {}", self.1)])
                .output();
        }
    }
    let _cleanup = Cleanup(&s, proof.clone());
    let failed: Vec<String> = s
        .jobs()
        .iter()
        .filter(|j| j["state"] != "succeeded")
        .map(|j| crate::runner::log_of(&s, j["id"].as_i64().unwrap()))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));

    // `env sync` empties feature's database table by table, as the backend's admin.
    let out = runner(&s, &["env", "sync", "feature"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    crate::runner::serve(&s);
    let sync = s.jobs().into_iter().last().unwrap();
    let log = crate::runner::log_of(&s, sync["id"].as_i64().unwrap());
    assert_eq!(sync["state"], "succeeded", "{log}");
    assert_eq!(root_sql(&format!("SHOW DATABASES LIKE '{proof}'")), "", "the table's name ran as SQL:\n{log}");
    let feature_db =
        root_sql("SELECT table_schema FROM information_schema.tables WHERE table_name = 'plain' ORDER BY table_schema");
    assert_eq!(feature_db.lines().count(), 2, "main's and feature's tables: {feature_db}");
    let odd = root_sql("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'x`;CREATE%'");
    assert_eq!(odd, "2", "the odd table is copied like any other");
}

#[test]
fn idle_connections_of_one_client_leave_the_router_to_the_others() {
    let r = Routed::new("idle-connections");
    r.deploy(&php_app("app", "", "<?php echo 'still here';\n"), "main");
    // More connections than the router's workers held (2 × 1024), each with a request begun
    // and never ended: as an app of another project opens them to take every site down.
    // (nginx takes back connections that sent nothing yet; these it cannot.)
    let host = r.host("main");
    let idle: Vec<std::net::TcpStream> = (0..2100)
        .filter_map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", r.port)).ok()?;
            std::io::Write::write_all(&mut c, format!("GET / HTTP/1.1\r\nHost: {host}\r\n").as_bytes()).ok()?;
            Some(c)
        })
        .collect();
    assert_eq!(idle.len(), 2100);
    let mut conn = crate::router::Conn::open(r.port).unwrap();
    let page = conn.request(&r.host("main"), "/", true);
    assert!(
        page.as_ref().is_ok_and(|p| p.status == 200 && p.body.contains("still here")),
        "the site answers while they are held: {page:?}"
    );
    drop(idle);
}

#[test]
fn giving_a_tree_to_a_project_never_gives_what_a_swapped_link_points_to() {
    use std::os::unix::fs::MetadataExt;
    let dir = crate::support::TempDir::new("chown-race");
    let (tree, secret) = (dir.join("mounts"), dir.join("root-only"));
    std::fs::create_dir_all(tree.join("var")).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    for i in 0..200 {
        std::fs::write(tree.join(format!("var/{i}")), "the project's\n").unwrap();
        std::fs::write(secret.join(format!("{i}")), "root's alone\n").unwrap();
    }
    std::os::unix::fs::symlink(&secret, tree.join("link")).unwrap();
    let user = pushgate::platform::users::lookup("nobody").expect("the nobody user");
    // What the project's running app does meanwhile: swaps its directory for a link to a
    // directory it cannot read, and back, as fast as it can.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let (a, b) = (
                std::ffi::CString::new(tree.join("var").to_str().unwrap()).unwrap(),
                std::ffi::CString::new(tree.join("link").to_str().unwrap()).unwrap(),
            );
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: renameat2 with valid C strings.
                unsafe {
                    libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE)
                };
            }
        });
        for _ in 0..200 {
            let _ = pushgate::platform::users::chown_tree(&tree, &user);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let given: Vec<String> = std::fs::read_dir(&secret)
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().unwrap().uid() != 0)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(given.is_empty(), "{} root-only files were given to the project's user", given.len());
    assert_eq!(std::fs::symlink_metadata(&secret).unwrap().uid(), 0, "nor their directory");
}

#[test]
fn sealing_a_build_never_changes_what_a_swapped_link_points_to() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = crate::support::TempDir::new("seal-race");
    let data = pushgate::store::DataDir::new(dir.join("data"));
    let secret = dir.join("root-only");
    std::fs::create_dir_all(&secret).unwrap();
    for i in 0..100 {
        let f = secret.join(format!("{i}"));
        std::fs::write(&f, "root's alone\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let user = pushgate::platform::users::lookup("nobody").expect("the nobody user");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut refused = 0;
    for round in 0..40 {
        // A build's copy, the project's user's, with a directory its app swaps for a link.
        let built = dir.join(&format!("build-{round}"));
        std::fs::create_dir_all(built.join("var")).unwrap();
        for i in 0..100 {
            std::fs::write(built.join(format!("var/{i}")), "built\n").unwrap();
        }
        std::os::unix::fs::symlink(&secret, built.join("link")).unwrap();
        pushgate::platform::users::chown_tree(&built, &user).unwrap();
        let slug = dir.join(&format!("slug-{round}.tar.zst"));
        stop.store(false, std::sync::atomic::Ordering::Relaxed);
        std::thread::scope(|scope| {
            // It keeps the directory open, as a process working in it would: the runner moving
            // the tree does not take it out of its hands.
            let held = std::fs::File::open(&built).unwrap();
            let stop = &stop;
            scope.spawn(move || {
                use std::os::fd::AsRawFd;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // SAFETY: renameat2 relative to a directory descriptor, with C strings.
                    unsafe {
                        libc::renameat2(
                            held.as_raw_fd(),
                            c"var".as_ptr(),
                            held.as_raw_fd(),
                            c"link".as_ptr(),
                            libc::RENAME_EXCHANGE,
                        )
                    };
                }
            });
            std::thread::sleep(std::time::Duration::from_millis(2));
            if pushgate::runner::unpacked::adopt(&data, &slug, &built).is_err() {
                refused += 1;
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    let changed: Vec<String> = std::fs::read_dir(&secret)
        .unwrap()
        .flatten()
        .filter(|e| {
            let m = e.metadata().unwrap();
            m.permissions().mode() & 0o777 != 0o600 || m.uid() != 0
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        changed.is_empty(),
        "{} root-only files changed mode or owner ({refused} of 40 seals refused)",
        changed.len()
    );
}

#[test]
fn one_projects_builds_cannot_hold_every_worker() {
    one_projects_builds_cannot_hold_every_worker_on(crate::support::Server::new("fair-share"));
}

#[test]
fn one_projects_builds_cannot_hold_every_worker_on_postgresql() {
    one_projects_builds_cannot_hold_every_worker_on(crate::support::Server::with_postgres("fair-share"));
}

fn one_projects_builds_cannot_hold_every_worker_on(s: crate::support::Server) {
    use crate::push::{files_with, APP_FILE};
    let evil = s.other_project("evil");
    if let Some(url) = &s.queue {
        crate::support::git_ok(&evil, &["config", "pushgate.queue", url]);
    }
    let evil_url = format!("file://{}", evil.display());
    let sleeper = crate::runner::app_with_hooks("sleep 120", "true");
    s.commit(&files_with(APP_FILE, &sleeper), "sleeps");
    s.push_to(&evil_url, &["HEAD:refs/heads/main", "HEAD:refs/heads/other"]).assert_accepted();
    let mut serving = std::process::Command::new(crate::support::runner_bin())
        .args(["serve", "--concurrency", "2", "--data"])
        .arg(&s.data)
        .envs(s.queue_env())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let jobs = || s.jobs();
    let of = |repo: &str, state: &str| {
        jobs().iter().filter(|j| j["repo"].as_str().unwrap_or("").ends_with(repo) && j["state"] == state).count()
    };
    assert!(eventually(20, || of("evil.git", "running") >= 1), "{:?}", jobs());
    // Another project's push, while the sleeping builds would hold both workers.
    let commit = s.commit(&files_with("", ""), "shop");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let done = eventually(60, || jobs().iter().any(|j| j["commit"] == commit && j["state"] == "succeeded"));
    let seen = jobs();
    for j in &seen {
        if matches!(j["state"].as_str(), Some("pending" | "running")) {
            let _ = runner(&s, &["cancel", &j["id"].to_string()]);
        }
    }
    let _ = serving.kill();
    let _ = serving.wait();
    assert!(done, "the other project's job waited for the sleeping builds: {seen:?}");
}

#[test]
fn a_php_app_reaches_its_own_release_and_mounts_and_nothing_else_of_the_server() {
    let r = Routed::new("app-sandbox");
    // A neighbour on the same server, and what the admin and the runner keep.
    let shop_url = another_repository(&r, "shop.git");
    let shop = php_app("app", "", "<?php echo 'shop';\n");
    assert!(push_files(&r, &shop_url, &shop).ok);
    std::fs::write(r.s.data.join("variables.json"), r#"{"project": {"env:SECRET": "admin's"}}"#).unwrap();
    let index = r#"<?php
$env = dirname(__DIR__, 3);
$data = dirname($env, 3);
foreach (explode(',', $_GET['read'] ?? '') as $p) {
    echo $p, '=', @file_get_contents($p) === false ? 'unreadable' : 'READ', "\n";
}
echo 'mount=', @file_put_contents(__DIR__ . '/var/x.txt', 'x') === false ? 'unwritable' : 'written', "\n";
echo 'release=', @file_put_contents(__DIR__ . '/x.txt', 'x') === false ? 'unwritable' : 'WRITTEN', "\n";
echo 'tmp=', @file_put_contents('/tmp/x.txt', 'x') === false ? 'unwritable' : 'written', "\n";
echo 'data=', $data, "\n";
$seen = [];
foreach (glob('/proc/[0-9]*') as $d) { $c = @file_get_contents("$d/cmdline"); if ($c) $seen[] = trim(str_replace("\0", ' ', $c)); }
echo 'processes=', implode('|', $seen), "\n";
"#;
    let mut files = php_app("app", "mounts:\n    \"var\": \"shared:files/var\"\n", index);
    files.push(("var/.keep", String::new()));
    r.deploy(&files, "main");
    let data = r.s.data.display().to_string();
    let shop_release = std::fs::read_dir(r.s.data.join("environments"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("shop-"))
        .expect("shop's environments")
        .join("main/current/app/index.php");
    let targets = [
        format!("{data}/queue.sqlite3"),
        format!("{data}/logs/1.log"),
        format!("{data}/variables.json"),
        format!("{data}/router/nginx.conf"),
        shop_release.display().to_string(),
    ];
    let page = r.get(&r.host("main"), &format!("/?read={}", targets.join(","))).body;
    assert!(
        page.contains("mount=written") && page.contains("release=unwritable") && page.contains("tmp=written"),
        "{page}"
    );
    for t in &targets {
        assert!(page.contains(&format!("{t}=unreadable")), "the app reads {t}:\n{page}");
    }
    // Its own master and workers, none of the host's processes: not the neighbour's pool, the
    // router or the runner.
    let processes = page.lines().find_map(|l| l.strip_prefix("processes=")).unwrap_or_default();
    assert!(processes.contains("php-fpm: pool"), "{processes}");
    for other in ["shop", "nginx", "pushgate-runner"] {
        assert!(!processes.contains(other), "the app sees {other}: {processes}");
    }
}

#[test]
fn a_start_command_app_reaches_nothing_of_the_data_directory() {
    let r = Routed::new("node-sandbox");
    std::fs::write(r.s.data.join("variables.json"), r#"{"project": {"env:SECRET": "admin's"}}"#).unwrap();
    let data = r.s.data.display().to_string();
    let server = format!(
        r#"const fs = require('fs');
require('http').createServer((req, res) => {{
  const out = ['{data}/queue.sqlite3', '{data}/variables.json', '{data}/router/nginx.conf'].map(p => {{
    try {{ fs.readFileSync(p); return p + '=READ'; }} catch (e) {{ return p + '=unreadable'; }}
  }});
  let tmp = 'written';
  try {{ fs.writeFileSync('/tmp/x', 'x'); }} catch (e) {{ tmp = 'unwritable'; }}
  const procs = fs.readdirSync('/proc').filter(p => /^[0-9]+$/.test(p)).map(p => {{
    try {{ return fs.readFileSync('/proc/' + p + '/cmdline', 'utf8').split('\0').join(' ').trim(); }} catch (e) {{ return ''; }}
  }});
  res.end(out.join('\n') + '\ntmp=' + tmp + '\nuid=' + process.getuid() + '\nprocesses=' + procs.join('|') + '\n');
}}).listen(process.env.PORT, '127.0.0.1');
"#
    );
    let app = "name: api\ntype: nodejs:20\nweb:\n    commands:\n        start: \"node server.js\"\n    locations:\n        \"/\":\n            passthru: true\ndisk: 512\n";
    let files = vec![
        (".magento.app.yaml", app.to_owned()),
        (".magento/routes.yaml", "\"http://{default}/\":\n    type: upstream\n    upstream: \"api:http\"\n".to_owned()),
        ("server.js", server),
    ];
    r.deploy(&files, "main");
    let mut page = Response::default();
    assert!(
        eventually(20, || {
            page = r.get(&r.host("main"), "/");
            page.body.contains("tmp=")
        }),
        "{page:?}\n{}",
        r.runner_log()
    );
    assert!(page.body.contains("tmp=written") && !page.body.contains("uid=0\n"), "{}", page.body);
    assert!(!page.body.contains("=READ"), "the app reads the data directory:\n{}", page.body);
    // Its own processes, none of the host's (the router, the runner, its own supervisor).
    let processes = page.body.lines().find_map(|l| l.strip_prefix("processes=")).unwrap_or_default();
    assert!(processes.contains("node server.js"), "{processes}");
    for host in ["nginx", "pushgate-runner", "php-fpm"] {
        assert!(!processes.contains(host), "the app sees the host's {host}: {processes}");
    }
}

#[test]
fn an_apps_memory_is_bounded_by_its_projects_policy_and_a_hit_spares_the_site() {
    let r = Routed::new("app-limits");
    std::fs::create_dir_all(r.s.bare.join("pushgate")).unwrap();
    std::fs::write(r.s.bare.join("pushgate/sandbox.json"), r#"{"memory_mb": 64, "processes": 64}"#).unwrap();
    let index = "<?php ini_set('memory_limit', '-1');\nif (isset($_GET['big'])) { $s = str_repeat('x', 200 << 20); echo strlen($s); }\necho \"small\\n\";\n";
    r.deploy(&php_app("app", "", index), "main");
    let host = r.host("main");
    assert!(r.get(&host, "/").body.contains("small"));
    let big = r.get(&host, "/?big=1");
    assert_ne!(big.status, 200, "200 MB in a 64 MB app: {big:?}");
    assert!(eventually(10, || r.get(&host, "/").body.contains("small")), "the site goes on");
    // Its CPU is a share of its own (its cgroup in the `cpu` controller, weighed as each other
    // app's and hook's), not one share per process.
    let master = crate::router::pool_pids(&r)[0];
    let groups = std::fs::read_to_string(format!("/proc/{master}/cgroup")).unwrap();
    let cpu = groups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        (controllers.split(',').any(|c| c == "cpu")).then(|| path.to_owned())
    });
    match cpu {
        Some(path) => assert!(path.contains("/pushgate/app-"), "{groups}"),
        // cgroup v2: the app's cgroup, with the cpu controller enabled for it.
        None => {
            let path = groups.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            assert!(path.contains("/pushgate/app-"), "{groups}");
            assert!(std::path::Path::new(&format!("/sys/fs/cgroup{path}/cpu.weight")).exists(), "{groups}");
        }
    }
}

#[test]
fn a_build_that_turns_its_app_directory_into_a_link_packs_nothing_it_points_at() {
    let s = crate::support::Server::new("app-dir-link");
    let secret = s.dir.join("root-only");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(secret.join("key"), "root's private key\n").unwrap();
    // The build hook runs in `api/`; it replaces that directory with a link to root's files.
    let build = format!("cd .. && mv api api0 && ln -s {} api", secret.display());
    let app = format!(
        "name: api\ntype: php:8.4\ndisk: 256\nweb:\n    locations:\n        \"/\":\n            root: \"\"\n            \
         passthru: \"/index.php\"\nhooks:\n    build: |\n        {build}\n"
    );
    let files = [
        ("api/.platform.app.yaml", app.as_str()),
        (".platform/routes.yaml", "\"https://{default}/\":\n    type: upstream\n    upstream: \"api:http\"\n"),
        ("api/index.php", "<?php\n"),
    ];
    let commit = s.commit(&files, "a link where the app was");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    crate::runner::serve(&s);
    let (id, state) = crate::runner::job_state(&s, &commit);
    let log = crate::runner::log_of(&s, id);
    let slugs: Vec<_> = std::fs::read_dir(s.data.join("slugs")).into_iter().flatten().flatten().collect();
    let packed = slugs.iter().enumerate().any(|(i, e)| {
        let into = s.dir.join(&format!("unpacked-{i}"));
        pushgate::runner::slug::unpack(&e.path(), &into).is_ok() && into.join("key").exists()
    });
    assert!(!packed, "root's file was packed into the project's slug:\n{log}");
    assert_eq!(state, "failed", "{log}");
    assert!(log.contains("as something else than a directory"), "{log}");
    assert_eq!(std::fs::read_to_string(secret.join("key")).unwrap(), "root's private key\n", "left where it was");
}

#[test]
fn what_an_app_leaves_outside_its_process_group_goes_with_its_release() {
    let r = Routed::new("app-leftovers");
    let server = |marker: &str| {
        format!(
            "// {marker}\nconst c = require('child_process').spawn('sleep', ['1000'], {{ detached: true, stdio: 'ignore' }});\n\
             c.unref();\nrequire('http').createServer((req, res) => res.end('daemon=' + c.pid)).listen(process.env.PORT, '127.0.0.1');\n"
        )
    };
    let app = "name: api\ntype: nodejs:20\nweb:\n    commands:\n        start: \"node server.js\"\n    locations:\n        \"/\":\n            passthru: true\ndisk: 512\n";
    let files = |marker: &str| {
        vec![
            (".magento.app.yaml", app.to_owned()),
            (
                ".magento/routes.yaml",
                "\"http://{default}/\":\n    type: upstream\n    upstream: \"api:http\"\n".to_owned(),
            ),
            ("server.js", server(marker)),
        ]
    };
    r.deploy(&files("one"), "main");
    let mut page = Response::default();
    assert!(
        eventually(20, || {
            page = r.get(&r.host("main"), "/");
            page.body.starts_with("daemon=")
        }),
        "{page:?}"
    );
    // The daemon's pid in the app's PID namespace, then as the host knows it.
    let inner: i32 = page.body.trim_start_matches("daemon=").trim().parse().unwrap();
    let daemon = crate::router::host_pid(&r, inner, "sleep").expect("the daemon on the host");
    assert!(crate::router::alive(daemon));
    r.deploy(&files("two"), "main");
    assert!(eventually(10, || !crate::router::alive(daemon)), "the old release's daemon {daemon} outlives it");
}

#[test]
fn an_environments_network_reaches_its_services_and_nothing_else_of_the_host() {
    let r = Routed::new("app-network");
    let out = runner(&r.s, &["backend", "add", "redis", "redis://127.0.0.1:6379"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // What the app and its deploy hook try: its own Redis, then what else listens on the host
    // (the host's PostgreSQL and MariaDB, which trust local users; the host's Redis, without a
    // password; RabbitMQ, whose guest may log in from the host; the router itself).
    let probe = format!(
        r#"<?php
function probe($port) {{
    $s = @fsockopen('127.0.0.1', $port, $errno, $errstr, 2);
    if ($s) {{ fclose($s); return 'OPEN'; }}
    return 'closed';
}}
$r = json_decode(base64_decode(getenv('MAGENTO_CLOUD_RELATIONSHIPS')), true)['redis'][0];
$s = @fsockopen($r['host'], $r['port'], $errno, $errstr, 2);
if ($s) {{
    fwrite($s, "AUTH {{$r['password']}}\r\nPING\r\n"); echo "redis says ", trim(fgets($s)), " ", trim(fgets($s)), "\n";
    // Its own Redis, made to connect elsewhere from the host's network, or to listen elsewhere.
    foreach (["MIGRATE 127.0.0.1 6379 k 0 1000 COPY", "REPLICAOF 127.0.0.1 6379", "CONFIG SET port 1"] as $c) {{
        fwrite($s, "$c\r\n"); echo explode(' ', $c)[0], " answers ", trim(fgets($s)), "\n";
    }}
}} else {{ echo "redis unreachable: $errstr\n"; }}
foreach (['postgresql' => 5432, 'mariadb' => 3306, 'host-redis' => 6379, 'rabbitmq' => 5672, 'router' => {router}] as $n => $p) {{
    echo "$n=", probe($p), "\n";
}}
"#,
        router = r.port
    );
    let index = "<?php\ninclude __DIR__ . '/probe.php';\necho \"--- the deploy hook saw:\\n\", @file_get_contents(__DIR__ . '/var/hook.txt');\n";
    let mut files = php_app(
        "app",
        "relationships:\n    redis: \"cache:redis\"\nmounts:\n    \"var\": \"shared:files/var\"\nhooks:\n    deploy: \"php probe.php > var/hook.txt\"\n",
        index,
    );
    files.push((".magento/services.yaml", "cache:\n    type: redis:7.0\n".to_owned()));
    files.push(("probe.php", probe));
    files.push(("var/.keep", String::new()));
    r.deploy(&files, "main");
    let page = r.get(&r.host("main"), "/").body;
    let (app, hook) = page.split_once("--- the deploy hook saw:").unwrap_or((&page, ""));
    for (who, seen) in [("the app", app), ("the deploy hook", hook)] {
        assert!(seen.contains("redis says +OK +PONG"), "{who} uses its own Redis:\n{page}\n{}", r.runner_log());
        for command in ["MIGRATE", "REPLICAOF", "CONFIG"] {
            assert!(seen.contains(&format!("{command} answers -ERR unknown command")), "{who}: {command}\n{page}");
        }
        for service in ["postgresql", "mariadb", "host-redis", "rabbitmq", "router"] {
            assert!(seen.contains(&format!("{service}=closed")), "{who} reaches the host's {service}:\n{page}");
        }
    }

    // The forwarder killed: its supervisor starts it again, and the app reaches its Redis again.
    let pattern = format!("^[^ ]*pushgate-runner forward --spec {}/router/net/", r.s.data.display());
    let out = std::process::Command::new("pkill").args(["-KILL", "-f", &pattern]).output().unwrap();
    assert!(out.status.success(), "a forwarder ran for the environment");
    assert!(
        eventually(20, || r.get(&r.host("main"), "/").body.contains("redis says +OK +PONG")),
        "the app reaches its Redis again:\n{}",
        r.runner_log()
    );
}

#[test]
fn a_repository_whose_project_key_another_repository_has_is_refused() {
    let s = crate::support::Server::new("key-collision");
    // Another repository of the same name, elsewhere, whose path hashes to the same 32 bits
    // (found by a search; here its claim is written as it would be) ran a job first.
    let path = std::fs::canonicalize(&s.bare).unwrap();
    let repo = pushgate::core::RepoId::new(path.display().to_string());
    let key = pushgate::store::DataDir::project_key(&repo);
    let other = "/srv/git/team2/repo.git";
    std::fs::create_dir_all(s.data.join("keys")).unwrap();
    std::fs::write(s.data.join("keys").join(&key), other).unwrap();
    s.commit(&[(".magento.app.yaml", "name: app\ntype: php:8.2\ndisk: 256\n")], "collides");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    crate::runner::serve(&s);
    let job = s.jobs().into_iter().last().unwrap();
    let log = crate::runner::log_of(&s, job["id"].as_i64().unwrap());
    assert_eq!(job["state"], "failed", "{log}");
    assert!(log.contains(&format!("the project key {key} is the repository {other}'s")), "{log}");
    assert!(!s.data.join("environments").join(&key).exists(), "nothing of the other project's is touched");

    // The repository that has the key runs its jobs.
    std::fs::write(s.data.join("keys").join(&key), repo.as_str()).unwrap();
    s.commit(&[(".magento.app.yaml", "name: app\ntype: php:8.2\ndisk: 256\n"), ("x", "1")], "its own");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    crate::runner::serve(&s);
    let job = s.jobs().into_iter().last().unwrap();
    assert_eq!(job["state"], "succeeded", "{}", crate::runner::log_of(&s, job["id"].as_i64().unwrap()));
}

#[test]
fn an_environment_goes_out_through_its_proxy_where_the_admin_allows_and_nowhere_else() {
    let r = Routed::new("app-egress");
    // Two servers of the host's: one the admin allows (as it would a payment provider), one not.
    let serve = |says: &'static str| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = std::io::Write::write_all(&mut &conn, says.as_bytes());
            }
        });
        port
    };
    let (allowed, other) = (serve("outside-allowed"), serve("outside-other"));
    let policy = |rules: &str| {
        std::fs::write(r.s.data.join("sandbox.json"), format!(r#"{{"egress": {rules}, "disk_reserve": false}}"#))
    };
    policy(&format!(r#"["*:443", "127.0.0.1:{allowed}"]"#)).unwrap();
    let probe = format!(
        r#"<?php
function out($host, $port, $method = 'CONNECT') {{
    $p = parse_url((string) getenv('https_proxy'));
    $s = @fsockopen($p['host'] ?? '127.0.0.1', $p['port'] ?? 3128, $errno, $errstr, 2);
    if (!$s) return "no proxy";
    $target = $method === 'CONNECT' ? "$host:$port" : "http://$host:$port/";
    fwrite($s, "$method $target HTTP/1.1\r\nHost: $host:$port\r\n\r\n");
    $status = trim((string) fgets($s));
    if (strpos($status, ' 200 ') === false) return $status;
    while (trim((string) fgets($s)) !== '') {{}}
    return trim((string) stream_get_contents($s));
}}
echo "proxy=", getenv('https_proxy'), "\n";
echo "allowed=", out('127.0.0.1', {allowed}), "\n";
echo "other=", out('127.0.0.1', {other}), "\n";
echo "byname=", out('localhost', {allowed}), "\n";
echo "metadata=", out('169.254.169.254', 443), "\n";
echo "plain=", out('127.0.0.1', {allowed}, 'GET'), "\n";
echo "direct=", @fsockopen('127.0.0.1', {allowed}, $e, $m, 2) ? 'OPEN' : 'closed', "\n";
"#
    );
    let index = "<?php\ninclude __DIR__ . '/probe.php';\necho \"--- the deploy hook saw:\\n\", @file_get_contents(__DIR__ . '/var/hook.txt');\n";
    let files = |n: &str| {
        let mut files = php_app(
            "app",
            "mounts:\n    \"var\": \"shared:files/var\"\nhooks:\n    deploy: \"php probe.php > var/hook.txt\"\n",
            index,
        );
        files.push(("probe.php", probe.clone()));
        files.push(("var/.keep", String::new()));
        files.push(("n.txt", n.to_owned()));
        files
    };
    r.deploy(&files("one"), "main");
    let page = r.get(&r.host("main"), "/").body;
    let (app, hook) = page.split_once("--- the deploy hook saw:").unwrap_or((&page, ""));
    for (who, seen) in [("the app", app), ("the deploy hook", hook)] {
        assert!(seen.contains("proxy=http://127.0.0.1:3128\n"), "{who}:\n{page}\n{}", r.runner_log());
        assert!(seen.contains("allowed=outside-allowed\n"), "{who} reaches what the admin allows:\n{page}");
        for (what, status) in [("other", "403"), ("byname", "403"), ("metadata", "403"), ("plain", "405")] {
            let line = seen.lines().find(|l| l.starts_with(&format!("{what}="))).unwrap_or_default();
            assert!(line.contains(status), "{who}: {line}\n{page}");
        }
        assert!(!seen.contains("outside-other"), "{who} reached a port the admin did not allow:\n{page}");
        assert!(seen.contains("direct=closed"), "{who} reached the host directly:\n{page}");
    }

    // No egress: no proxy, no way out.
    policy("[]").unwrap();
    r.deploy(&files("two"), "main");
    let page = r.get(&r.host("main"), "/").body;
    assert!(page.contains("proxy=\n") && page.contains("allowed=no proxy"), "{page}");
    assert!(!page.contains("outside-allowed"), "{page}");
}

#[test]
fn a_fifo_where_root_reads_a_pid_file_stalls_no_runner() {
    let r = Routed::new("pid-fifo");
    // The app makes a FIFO where a pool's pid file used to be, in its pool's own directory
    // (the project's user's): root opening it to read would wait for a writer forever.
    let index = "<?php if (isset($_GET['fifo'])) { echo posix_mkfifo($_GET['fifo'], 0600) ? 'made' : 'failed'; }\n";
    let files = |n: &str| {
        let mut files = php_app("app", "", index);
        files.push(("n.txt", n.to_owned()));
        files
    };
    r.deploy(&files("one"), "main");
    let pool = std::fs::read_dir(r.s.data.join("router/pools")).unwrap().flatten().next().unwrap().path();
    let fifo = pool.join("php.pid");
    let _ = std::fs::remove_file(&fifo);
    let made = r.get(&r.host("main"), &format!("/?fifo={}", fifo.display())).body;
    assert_eq!(made, "made", "{}", r.runner_log());
    // The next deployment reads it as root (a master of an earlier layout is looked for there).
    let commit = r.s.commit(&files("two").iter().map(|(p, c)| (*p, c.as_str())).collect::<Vec<_>>(), "two");
    r.s.push_with_options(&["pushgate.nowait"], &["HEAD:refs/heads/main"]).assert_accepted();
    assert!(
        eventually(60, || crate::runner::job_state(&r.s, &commit).1 == "succeeded"),
        "the deployment is stuck on the FIFO:\n{}",
        r.runner_log()
    );
    assert!(eventually(10, || r.get(&r.host("main"), "/").status == 200));
}

#[test]
fn an_apps_mounts_hold_the_disk_it_declares_and_a_full_disk_stops_only_that_app() {
    let r = Routed::new("app-disk");
    let index = "<?php\necho @file_put_contents(__DIR__ . '/var/page.txt', str_repeat('x', 1 << 20)) === false ? \
                 'not written: ' . error_get_last()['message'] : 'written', \"\\n\";\n";
    // The deploy hook writes more than the app's disk holds, then what is left.
    let hooks = "mounts:\n    var:\n        source: local\n        source_path: var\nhooks:\n    deploy: |\n        \
                 head -c 200000000 /dev/zero > var/fill && echo FILLED || echo REFUSED\n";
    let small = php_app("app", hooks, index)
        .into_iter()
        .map(|(p, c)| (p, c.replace("disk: 512", "disk: 128")))
        .collect::<Vec<_>>();
    // The host's space reserved for it (the project's policy over the tests' sparse default).
    std::fs::create_dir_all(r.s.bare.join("pushgate")).unwrap();
    std::fs::write(r.s.bare.join("pushgate/sandbox.json"), r#"{"disk_reserve": true}"#).unwrap();
    r.deploy(&small, "main");
    let logs = || {
        let mut all = String::new();
        for e in std::fs::read_dir(r.s.data.join("logs")).unwrap().flatten() {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        all
    };
    let log = logs();
    assert!(log.contains("REFUSED") && log.contains("No space left on device"), "{log}");
    assert!(log.contains("app `app` has its own disk of 128 MB"), "{log}");
    let env = main_env_dir(&r);
    let fill = std::fs::metadata(env.join("mounts/app/var/fill")).unwrap().len();
    assert!(fill < 128 << 20 && fill > 100 << 20, "{fill}");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let image = std::fs::metadata(env.join("disks/app.ext4")).unwrap();
    assert_eq!((image.uid(), image.permissions().mode() & 0o777), (0, 0o600));
    assert!(image.blocks() * 512 >= 128 << 20, "reserved on the host: {} blocks", image.blocks());
    // The app sees its disk full and says so; the site goes on.
    let page = r.get(&r.host("main"), "/").body;
    assert!(page.contains("not written") && page.contains("No space left on device"), "{page}");
    assert!(!std::fs::read_dir(&env).unwrap().flatten().any(|e| e.file_name() == "mounts.copying"));

    // A larger disk declared: the same disk grows, its files kept.
    let large: Vec<_> = small
        .iter()
        .map(|(p, c)| {
            (
                *p,
                c.replace("disk: 128", "disk: 256")
                    .replace("200000000 /dev/zero > var/fill", "100000000 /dev/zero > var/more")
                    .replace("FILLED", "MORE"),
            )
        })
        .collect();
    r.deploy(&large, "main");
    let log = logs();
    assert!(log.contains("its disk grew from 128 MB to 256 MB") && log.contains("MORE"), "{log}");
    let image = std::fs::metadata(env.join("disks/app.ext4")).unwrap();
    assert!(image.blocks() * 512 >= 256 << 20, "the grown part reserved too: {} blocks", image.blocks());
    assert_eq!(std::fs::metadata(env.join("mounts/app/var/fill")).unwrap().len(), fill);
    assert_eq!(r.get(&r.host("main"), "/").body.trim(), "written");

    // An environment deployed before disks were bounded (its files in a plain directory, the
    // project's user's): its next deploy moves them onto a disk, and the app, started again,
    // writes there.
    let mounts = env.join("mounts");
    let kept = r.s.dir.join("kept");
    assert!(std::process::Command::new("cp").arg("-a").arg(mounts.join("app")).arg(&kept).status().unwrap().success());
    assert!(std::process::Command::new("umount").arg(mounts.join("app")).status().unwrap().success());
    std::fs::remove_dir(mounts.join("app")).unwrap();
    std::fs::rename(&kept, mounts.join("app")).unwrap();
    std::fs::remove_dir_all(env.join("disks")).unwrap();
    let user = std::fs::metadata(mounts.join("app/var/fill")).unwrap().uid();
    std::os::unix::fs::chown(&mounts, Some(user), Some(user)).unwrap();
    r.deploy(&large, "main");
    let log = logs();
    assert!(log.contains("app `app`: the files of its mounts were moved onto its disk"), "{log}");
    assert_eq!(std::fs::metadata(env.join("mounts/app/var/fill")).unwrap().len(), fill);
    assert_eq!(owner_of(&mounts), Some(0), "where root mounts is root's");
    assert!(std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&mounts.join("app").display().to_string()));
    let _ = std::fs::remove_file(mounts.join("app/var/page.txt"));
    assert_eq!(r.get(&r.host("main"), "/").body.trim(), "written");
    assert!(mounts.join("app/var/page.txt").exists(), "the app writes on the disk the host sees");

    // Deleted: nothing stays mounted.
    let out = runner(&r.s, &["env", "delete", "main", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(eventually(60, || !env.exists()), "{}", r.runner_log());
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounted.contains(&env.display().to_string()), "{mounted}");
}

#[test]
fn a_name_planted_where_root_mounts_disks_never_makes_root_unmount_what_it_names() {
    let r = Routed::new("disk-plant");
    // What the attack unmounted: another environment's disk; here a tmpfs of the host.
    let victim = r.s.dir.join("victim");
    let _victim = crate::support::SmallDisk::mount(&victim, "1m");
    std::fs::write(victim.join("important.txt"), "kept").unwrap();
    let mounted = || std::fs::read_to_string(victim.join("important.txt")).is_ok();
    // First without mounts: its deploy hook plants a link where root later mounts, and writes
    // beside it (an app without mounts writes nowhere).
    let plant = format!(
        "hooks:\n    deploy: |\n        ln -s {} ../../../mounts/.app.moving && echo PLANTED || echo NOT-PLANTED\n        \
         mkdir -p ../../../mounts/app/var && head -c 1000 /dev/zero > ../../../mounts/app/var/f && echo WROTE || \
         echo NOT-WRITTEN\n",
        victim.display()
    );
    let index = "<?php echo 'ok';\n";
    r.deploy(&php_app("app", &plant, index), "main");
    let log = |id: usize| std::fs::read_to_string(r.s.data.join(format!("logs/{id}.log"))).unwrap_or_default();
    let said = |id: usize, line: &str| log(id).lines().any(|l| l == line);
    assert!(said(1, "NOT-PLANTED") && said(1, "NOT-WRITTEN"), "{}", log(1));
    // Then with mounts: a disk is made there; the victim stays.
    let mounts = "mounts:\n    var:\n        source: local\n        source_path: var\n";
    r.deploy(&php_app("app", mounts, index), "main");
    assert!(log(2).contains("app `app` has its own disk"), "{}", log(2));
    assert!(mounted(), "root unmounted what a planted name pointed at");

    // An environment from before disks, whose user planted the same names in its own mounts:
    // its next deploy moves its files onto a disk and never follows them.
    let env = main_env_dir(&r);
    let m = env.join("mounts");
    assert!(std::process::Command::new("umount").arg(m.join("app")).status().unwrap().success());
    std::fs::remove_dir_all(env.join("disks")).unwrap();
    std::fs::create_dir_all(m.join("app/var")).unwrap();
    std::fs::write(m.join("app/var/data.txt"), "theirs").unwrap();
    for name in [".app.moving", ".app.moved", "stray"] {
        std::os::unix::fs::symlink(&victim, m.join(name)).unwrap();
    }
    let user = owner_of(&m.join("app/var")).unwrap();
    for p in [m.clone(), m.join("app"), m.join("app/var"), m.join("app/var/data.txt")] {
        std::os::unix::fs::lchown(&p, Some(user), Some(user)).unwrap();
    }
    r.deploy(&php_app("app", mounts, "<?php echo 'again';\n"), "main");
    assert!(log(3).contains("the files of its mounts were moved onto its disk"), "{}", log(3));
    assert!(log(3).contains("mounts/stray is on no app's disk: set aside"), "{}", log(3));
    assert!(mounted(), "root unmounted what a planted name pointed at");
    assert_eq!(std::fs::read_to_string(m.join("app/var/data.txt")).unwrap(), "theirs");
    let names: Vec<String> =
        std::fs::read_dir(&m).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["app"], "nothing but the disk stays where root mounts");
    assert_eq!(std::fs::read_to_string(victim.join("important.txt")).unwrap(), "kept");
}

#[test]
fn a_link_an_app_puts_in_its_mounts_serves_only_what_its_project_owns() {
    let r = Routed::new("mount-links");
    // What another project or the host keeps, readable by the router's workers.
    let secret = r.s.dir.join("secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();
    let hooks = format!(
        "mounts:\n    var:\n        source: local\n        source_path: var\nhooks:\n    deploy: |\n        \
         echo mine > var/ok.txt\n        ln -s ok.txt var/alias.txt\n        ln -s {} var/peek.txt\n",
        secret.display()
    );
    let files: Vec<_> = php_app("app", &hooks, "<?php echo 'app';\n")
        .into_iter()
        .map(|(p, c)| (p, c.replace("allow: false", "allow: true")))
        .collect();
    r.deploy(&files, "main");
    let host = r.host("main");
    // Its own files, and links to them, are served from its mount.
    for path in ["/var/ok.txt", "/var/alias.txt"] {
        let got = r.get(&host, path);
        assert_eq!((got.status, got.body.trim()), (200, "mine"), "{path}");
    }
    // A link to what its project does not own is not followed: as for a missing file, the
    // request goes on to the app.
    let peek = r.get(&host, "/var/peek.txt");
    assert!(!peek.body.contains("secret"), "the router served what a link in the mount points at: {peek:?}");
    assert_eq!(peek.body.trim(), "app", "{peek:?}");
}
