//! Real pushes to bare repositories set up by install.sh: what the pusher sees and whether the
//! refs moved.

use crate::support::{git_ok, Daemon, Server};

pub const APP: &str = r#"name: mymagento
type: php:8.4
build:
    flavor: none
relationships:
    database: "mysql:mysql"
    redis: "redis:redis"
web:
    locations:
        "/":
            root: "pub"
            passthru: "/index.php"
disk: 5120
mounts:
    "var": "shared:files/var"
    "pub/media": "shared:files/media"
hooks:
    build: |
        set -e
        echo building
crons:
    cronrun:
        spec: "*/5 * * * *"
        cmd: "php bin/magento cron:run"
"#;

pub const SERVICES: &str = "mysql:\n    type: mysql:11.4\n    disk: 5120\n\nredis:\n    type: redis:8.0\n";

pub const ROUTES: &str = r#""https://{default}/":
    type: upstream
    upstream: "mymagento:http"

"http://{default}/":
    type: redirect
    to: "https://{default}/"
"#;

pub const APP_FILE: &str = ".magento.app.yaml";
pub const SERVICES_FILE: &str = ".magento/services.yaml";
pub const ROUTES_FILE: &str = ".magento/routes.yaml";

/// The three files of a valid Magento project, with one of them replaced.
pub fn files_with<'a>(replace: &'a str, content: &'a str) -> Vec<(&'a str, &'a str)> {
    [(APP_FILE, APP), (SERVICES_FILE, SERVICES), (ROUTES_FILE, ROUTES)]
        .into_iter()
        .map(|(f, c)| if f == replace { (f, content) } else { (f, c) })
        .collect()
}

/// `FILE:LINE:COL: ` of the first occurrence of `needle` in `text` (1-based, in characters).
pub fn at(file: &str, text: &str, needle: &str) -> String {
    let offset = text.find(needle).unwrap_or_else(|| panic!("{needle:?} not in the fixture"));
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("{file}:{line}:{col}: ")
}

#[test]
fn good_push_is_accepted_with_a_summary() {
    let s = Server::new("good");
    let commit = s.commit(&files_with("", ""), "good");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    let remote = push.remote();
    assert!(remote.contains(&format!("Validating configuration files of main ({})", &commit[..10])), "{remote}");
    for line in [
        "Environment configuration",
        "    mymagento (type: php:8.4, size: AUTO, disk: 5120)  [added]",
        "    mysql (type: mysql:11.4, size: AUTO, disk: 5120)  [added]",
        "    redis (type: redis:8.0, size: AUTO)  [added]",
        "Environment routes",
        "    https://{default}/ is served by application `mymagento`  [added]",
        "    http://{default}/ redirects to https://{default}/  [added]",
        "Build #1 queued for environment main",
    ] {
        assert!(remote.lines().any(|l| l.starts_with(line)), "missing {line:?} in:\n{remote}");
    }
    assert!(!remote.contains("E:") && !remote.contains("W:"), "{remote}");
    assert_eq!(s.server_ref("refs/heads/main").as_deref(), Some(commit.as_str()));
}

/// One invalid configuration: which file to replace, with what, and where the error must point.
struct Case {
    name: &'static str,
    file: &'static str,
    content: String,
    /// The text the error must point at (its first occurrence in `content`).
    point_at: &'static str,
    message: &'static str,
}

fn case(name: &'static str, file: &'static str, content: &str, point_at: &'static str, message: &'static str) -> Case {
    Case { name, file, content: content.to_owned(), point_at, message }
}

fn app_with(from: &str, to: &str) -> String {
    assert!(APP.contains(from), "{from:?}");
    APP.replacen(from, to, 1)
}

fn error_cases() -> Vec<Case> {
    vec![
        // YAML syntax: each error at the character that causes it, whatever the parser says.
        case(
            "tab indentation",
            SERVICES_FILE,
            "mysql:\n\ttype: mysql:11.4\n",
            "\t",
            "a tab where YAML allows only spaces",
        ),
        case(
            "tab starting the line after a key: value line",
            SERVICES_FILE,
            "mysql:\n    type: mysql:11.4\n\tdisk: 5120\n",
            "\t",
            "a tab where YAML allows only spaces",
        ),
        case(
            "tab after a key",
            SERVICES_FILE,
            "mysql:\n    type:\tmysql:11.4\n",
            "\t",
            "a tab where YAML allows only spaces",
        ),
        case(
            "bad indentation",
            SERVICES_FILE,
            "mysql:\n    type: mysql:11.4\n   disk: 5120\n",
            "disk",
            "the indentation of this line matches no key above it",
        ),
        case(
            "unclosed quote",
            ROUTES_FILE,
            "\"https://{default}/:\n    type: upstream\n",
            "\"",
            "opens a quoted string that is never closed",
        ),
        case(
            "unclosed bracket",
            SERVICES_FILE,
            "mysql:\n    type: mysql:11.4\n    configuration:\n        schemas: [main, other\n    disk: 5120\n",
            "[main",
            "this `[` is never closed",
        ),
        case(
            "unclosed brace",
            SERVICES_FILE,
            "mysql: {type: mysql:11.4, disk: 5120\n",
            "{type",
            "this `{` is never closed",
        ),
        case(
            "duplicate key",
            SERVICES_FILE,
            "mysql:\n    type: mysql:11.4\n    disk: 5120\n    type: mysql:10.6\n",
            "type: mysql:10.6",
            "duplicate key `type` (first defined at line 2)",
        ),
        case(
            "duplicate key",
            SERVICES_FILE,
            "mysql:\n    type: mysql:11.4\n    disk: 5120\nredis:\n    type: redis:8.0\nmysql:\n    type: mysql:10.6\n",
            "mysql:\n    type: mysql:10.6",
            "duplicate key `mysql` (first defined at line 1)",
        ),
        case(
            "unknown key",
            APP_FILE,
            &app_with("relationships:", "relationship:"),
            "relationship:",
            "unknown key `relationship`",
        ),
        case(
            "missing type",
            SERVICES_FILE,
            "mysql:\n    disk: 5120\nredis:\n    type: redis:8.0\n",
            "disk: 5120",
            "missing required key `type`",
        ),
        case(
            "wrong value type",
            APP_FILE,
            &app_with("disk: 5120", "disk: big"),
            "big",
            "expected an integer, found `big`",
        ),
        case(
            "unknown image",
            SERVICES_FILE,
            &SERVICES.replace("mysql:11.4", "mysqll:11.4"),
            "mysqll:11.4",
            "unknown service image `mysqll`",
        ),
        case("no version", SERVICES_FILE, &SERVICES.replace("redis:8.0", "redis"), "redis\n", "`redis` has no version"),
        case(
            "unknown version",
            SERVICES_FILE,
            &SERVICES.replace("mysql:11.4", "mysql:99.1"),
            "mysql:99.1",
            "unknown version `99.1` of `mysql`",
        ),
        case(
            "runtime as service",
            SERVICES_FILE,
            &SERVICES.replace("redis:8.0", "php:8.4"),
            "php:8.4",
            "is an application runtime",
        ),
        case(
            "disk on memory-only service",
            SERVICES_FILE,
            &format!("{SERVICES}    disk: 1024\n"),
            "1024",
            "`redis:8.0` keeps its data in memory",
        ),
        case(
            "disk below the image minimum",
            SERVICES_FILE,
            &SERVICES.replace("disk: 5120", "disk: 100"),
            "100",
            "below the 256 MB minimum of `mysql`",
        ),
        case(
            "relationship to a missing service",
            APP_FILE,
            &app_with("\"mysql:mysql\"", "\"mysqll:mysql\""),
            "\"mysqll:mysql\"",
            "points at `mysqll`, which is no service or app",
        ),
        case(
            "relationship to a missing endpoint",
            APP_FILE,
            &app_with("\"mysql:mysql\"", "\"mysql:postgresql\""),
            "\"mysql:postgresql\"",
            "service `mysql` has no endpoint `postgresql`",
        ),
        case(
            "invalid route URL",
            ROUTES_FILE,
            &ROUTES.replace("\"https://{default}/\"", "\"ftp://{default}/\""),
            "\"ftp",
            "not a valid route URL template",
        ),
        case(
            "unknown placeholder",
            ROUTES_FILE,
            &ROUTES.replace("\"https://{default}/\"", "\"https://{defualt}/\""),
            "\"https",
            "unknown placeholder `{defualt}`",
        ),
        case(
            "upstream to a missing app",
            ROUTES_FILE,
            &ROUTES.replace("mymagento:http", "magento:http"),
            "\"magento:http\"",
            "upstream `magento:http` names no app or service",
        ),
        case(
            "two primary routes",
            ROUTES_FILE,
            &ROUTES
                .replace("type: upstream\n", "type: upstream\n    primary: true\n")
                .replace("type: redirect\n", "type: redirect\n    primary: true\n"),
            "true\n    to:",
            "a second primary route",
        ),
        case(
            "redirect to a relative target",
            ROUTES_FILE,
            &ROUTES.replace("to: \"https://{default}/\"", "to: \"/shop\""),
            "\"/shop\"",
            "redirect target `/shop` is not an absolute URL",
        ),
        case(
            "web location without a slash",
            APP_FILE,
            &app_with("\"/\":", "\"shop\":"),
            "\"shop\"",
            "location `shop` does not start with `/`",
        ),
        case(
            "web root escaping the app",
            APP_FILE,
            &app_with("root: \"pub\"", "root: \"../pub\""),
            "\"../pub\"",
            "leaves the app directory",
        ),
        case(
            "mount escaping the app",
            APP_FILE,
            &app_with("\"var\": \"shared:files/var\"", "\"../var\": \"shared:files/var\""),
            "\"../var\"",
            "mount `../var` leaves the app directory",
        ),
        case(
            "legacy mount without shared:files",
            APP_FILE,
            &app_with("\"shared:files/var\"", "\"var\""),
            "\"var\"\n",
            "the short form must read `shared:files/PATH`",
        ),
        case(
            "json extension on PHP 8.1+",
            APP_FILE,
            &app_with("build:\n", "runtime:\n    extensions:\n        - xsl\n        - json\nbuild:\n"),
            "json",
            "the `json` extension is not supported for php:8.4",
        ),
        case(
            "cron spec",
            APP_FILE,
            &app_with("\"*/5 * * * *\"", "\"*/5 * * *\""),
            "\"*/5 * * *\"",
            "invalid cron spec `*/5 * * *`: 4 fields",
        ),
        case(
            "cron without a command",
            APP_FILE,
            &app_with("        cmd: \"php bin/magento cron:run\"\n", ""),
            "spec:",
            "missing required key: one of `cmd`, `commands`",
        ),
        case(
            "PHP extension the image does not have",
            APP_FILE,
            &app_with("build:\n", "runtime:\n    extensions:\n        - xsl\n        - sodiumm\n    disabled_extensions:\n        - sockets\nbuild:\n"),
            "sodiumm",
            "no PHP extension `sodiumm` for php:8.4",
        ),
        case(
            "app disk below 128 MB",
            APP_FILE,
            &app_with("disk: 5120", "disk: 64"),
            "64",
            "disk 64 MB is below the 128 MB",
        ),
        case(
            "app name",
            APP_FILE,
            &app_with("name: mymagento", "name: My Magento"),
            "My Magento",
            "may contain only lowercase letters",
        ),
        case(
            "missing include",
            APP_FILE,
            &app_with(
                "build: |\n        set -e\n        echo building\n",
                "build: !include\n        type: string\n        path: build.sh\n",
            ),
            "build.sh",
            "included file `build.sh` does not exist in this commit",
        ),
        case(
            "include escaping the repository",
            SERVICES_FILE,
            &format!("{SERVICES}    configuration:\n        x: !include {{type: string, path: ../../../etc/passwd}}\n"),
            "../../../etc/passwd",
            "points outside the repository",
        ),
        case(
            "unknown tag",
            SERVICES_FILE,
            &SERVICES.replace("redis:8.0", "!python/object redis:8.0"),
            "!python",
            "unknown tag `!python/object`",
        ),
    ]
}

#[test]
fn each_class_of_error_is_refused_at_its_position() {
    let s = Server::new("errors");
    let good = s.commit(&files_with("", ""), "good");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let mut failures = Vec::new();
    for c in error_cases() {
        s.commit(&files_with(c.file, &c.content), c.name);
        let push = s.push(&["HEAD:refs/heads/main"]);
        let location = crate::push::at(c.file, &c.content, c.point_at);
        let remote = push.remote();
        let line = remote.lines().find(|l| l.contains(c.message)).unwrap_or("");
        if push.ok || !line.contains(&location) || !remote.contains("E: Error parsing configuration files:") {
            failures.push(format!("{}: expected {location}…{:?}, got:\n{remote}\n", c.name, c.message));
        }
        if !remote.contains("hint: ") {
            failures.push(format!("{}: no hint:\n{remote}", c.name));
        }
        assert_eq!(s.server_ref("refs/heads/main").as_deref(), Some(good.as_str()), "{}: the ref moved", c.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn files_of_the_wrong_kind_are_refused() {
    let s = Server::new("kinds");
    // Non-UTF-8, with the position of the bad byte.
    s.commit(&files_with("", ""), "base");
    s.write(SERVICES_FILE, b"mysql:\n    type: mysql:11.4\n# caf\xe9\n");
    s.commit_all("latin1");
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&[".magento/services.yaml:3:6: the file is not valid UTF-8"]);
    // Binary content.
    s.write(SERVICES_FILE, b"mysql:\n  type: mysql:11.4\n\x00\x01\x02");
    s.commit_all("binary");
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&[".magento/services.yaml:3:1: binary content"]);
    // A directory where a file is expected.
    s.commit(&files_with("", ""), "base");
    std::fs::remove_file(s.work.join(SERVICES_FILE)).unwrap();
    s.write(".magento/services.yaml/README", b"oops\n");
    s.commit_all("dir");
    s.push(&["HEAD:refs/heads/main"])
        .assert_refused_with(&[".magento/services.yaml:1:1: `.magento/services.yaml` is a directory, not a file"]);
    // A symbolic link (it could point anywhere, even outside the repository).
    s.commit(&files_with("", ""), "base");
    std::fs::remove_file(s.work.join(ROUTES_FILE)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.work.join(ROUTES_FILE)).unwrap();
    s.commit_all("symlink");
    s.push(&["HEAD:refs/heads/main"])
        .assert_refused_with(&[".magento/routes.yaml:1:1: `.magento/routes.yaml` is a symbolic link, not a file"]);
    // A submodule (a gitlink entry).
    s.commit(&files_with("", ""), "base");
    git_ok(&s.work, &["rm", "-q", "--cached", SERVICES_FILE]);
    std::fs::remove_file(s.work.join(SERVICES_FILE)).unwrap();
    let head = git_ok(&s.work, &["rev-parse", "HEAD"]);
    git_ok(&s.work, &["update-index", "--add", "--cacheinfo", &format!("160000,{head},{SERVICES_FILE}")]);
    git_ok(&s.work, &["commit", "-q", "-m", "submodule"]);
    s.push(&["HEAD:refs/heads/main"])
        .assert_refused_with(&[".magento/services.yaml:1:1: `.magento/services.yaml` is a submodule, not a file"]);
    // No app file at all.
    s.commit(&[(SERVICES_FILE, SERVICES)], "no app");
    s.push(&["HEAD:refs/heads/main"])
        .assert_refused_with(&["    - no application configuration: `.magento.app.yaml` is missing [no-app]"]);
    assert_eq!(s.server_ref("refs/heads/main"), None);
}

#[test]
fn warnings_do_not_refuse() {
    let s = Server::new("warn");
    let routes = ROUTES.replace("mymagento:http", "mymagento:php");
    let commit = s.commit(&files_with(ROUTES_FILE, &routes), "legacy php upstream");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    let expected = format!("W: {}", at(ROUTES_FILE, &routes, "\"mymagento:php\""));
    assert!(push.remote().contains(&expected), "{}", push.remote());
    assert!(push.remote().contains("uses the deprecated `:php` endpoint"));
    assert_eq!(s.server_ref("refs/heads/main").as_deref(), Some(commit.as_str()));
}

#[test]
fn one_bad_branch_refuses_the_whole_push() {
    let s = Server::new("multi");
    let good = s.commit(&files_with("", ""), "good");
    git_ok(&s.work, &["branch", "good"]);
    s.commit(&files_with(SERVICES_FILE, "mysql:\n    type: mysql\n"), "bad");
    git_ok(&s.work, &["branch", "bad"]);
    let push = s.push(&["good:refs/heads/good", "bad:refs/heads/bad"]);
    push.assert_refused_with(&[
        &format!("Validating configuration files of good ({})", &good[..10]),
        "Validating configuration files of bad",
        "`mysql` has no version",
        "Push refused: bad cannot be deployed",
    ]);
    assert_eq!(s.server_ref("refs/heads/good"), None, "pre-receive refuses all refs of the push");
    assert_eq!(s.server_ref("refs/heads/bad"), None);
}

#[test]
fn new_branches_deletions_and_tags() {
    let s = Server::new("refs");
    let good = s.commit(&files_with("", ""), "good");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    // A new branch is validated like any other.
    let push = s.push(&["HEAD:refs/heads/feature"]);
    push.assert_accepted();
    assert!(push.remote().contains("Validating configuration files of feature"), "{}", push.remote());
    // Deleting a branch passes without validation.
    let push = s.push(&[":refs/heads/feature"]);
    push.assert_accepted();
    assert_eq!(s.server_ref("refs/heads/feature"), None);
    // A tag is not deployed: even a broken configuration passes.
    s.commit(&files_with(SERVICES_FILE, "mysql: [\n"), "broken");
    git_ok(&s.work, &["tag", "v1"]);
    let push = s.push(&["refs/tags/v1"]);
    push.assert_accepted();
    assert!(!push.remote().contains("Validating"), "{}", push.remote());
    assert_eq!(s.server_ref("refs/heads/main").as_deref(), Some(good.as_str()));
}

#[test]
fn pushes_through_git_daemon() {
    let s = Server::new("daemon");
    let daemon = Daemon::start(s.dir.path());
    let url = daemon.url("repo.git");
    let good = s.commit(&files_with("", ""), "good");
    let push = s.push_to(&url, &["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert!(push.remote().contains("mymagento (type: php:8.4"), "{}", push.output);
    let bad_services = SERVICES.replace("mysql:11.4", "mysqll:11.4");
    s.commit(&files_with(SERVICES_FILE, &bad_services), "bad");
    let push = s.push_to(&url, &["HEAD:refs/heads/main"]);
    push.assert_refused_with(&[
        &format!("{}mysql.type: unknown service image `mysqll`", at(SERVICES_FILE, &bad_services, "mysqll")),
        "did you mean `mysql`?",
    ]);
    assert_eq!(s.server_ref("refs/heads/main").as_deref(), Some(good.as_str()));
    // Nothing of the daemon outlives it (the test used to kill `git daemon`, a wrapper, and
    // leave the `git-daemon` it had started running after every test run).
    let group = daemon.group();
    assert!(!crate::support::processes_in_group(group).is_empty(), "git-daemon runs in its group");
    drop(daemon);
    let left = crate::support::processes_in_group(group);
    assert!(left.is_empty(), "processes left in the daemon's group: {left:?}");
}

#[test]
fn platform_sh_names_subdirectory_apps_and_includes() {
    let s = Server::new("platform");
    // applications.yaml with `!include` of another YAML file.
    s.commit_corpus("platformsh-templates__django4__head");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert!(push.remote().contains("    app (type: python:"), "{}", push.remote());
    // Two apps (root and spa/), a service whose VCL comes from `!include`: refused until the
    // included file is committed.
    s.commit_corpus("the-fast-track__book-6.2-1__tag-step-27");
    s.push(&["HEAD:refs/heads/symfony"]).assert_refused_with(&[
        ".platform/services.yaml:14:19: varnish.configuration.vcl: included file `.platform/config.vcl` does not exist",
    ]);
    s.write(".platform/config.vcl", b"sub vcl_recv { }\n");
    s.commit_all("add the VCL");
    let push = s.push(&["HEAD:refs/heads/symfony"]);
    push.assert_accepted();
    let remote = push.remote();
    assert!(remote.contains("    app (type: php:8.3") && remote.contains("    spa (type: nodejs:18"), "{remote}");
}

#[test]
fn branches_with_the_same_configuration_are_reported_once() {
    let s = Server::new("same");
    let mut files = files_with("", "");
    files.push(("app/code/Other.php", "<?php // one\n"));
    s.commit(&files, "one");
    git_ok(&s.work, &["branch", "a"]);
    s.write("app/code/Other.php", b"<?php // two\n");
    s.commit_all("code only");
    git_ok(&s.work, &["branch", "b"]);
    let push = s.push(&["a:refs/heads/a", "b:refs/heads/b"]);
    push.assert_accepted();
    let remote = push.remote();
    assert_eq!(remote.matches("mymagento (type: php:8.4").count(), 1, "{remote}");
    assert!(remote.lines().any(|l| l.starts_with("Same configuration and changes as a, valid: b (")), "{remote}");
}

/// The whole of what a refused push shows, pinned. Re-record with `PUSHGATE_BLESS=1 cargo test`.
#[test]
fn refused_push_output_snapshot() {
    let s = Server::new("snapshot");
    let routes = ROUTES
        .replace("mymagento:http", "magento:http")
        .replace("type: redirect\n", "type: redirect\n    primary: true\n");
    let services = SERVICES.replace("mysql:11.4", "mysqll:11.4").replace("redis:8.0", "redis:6.2");
    s.commit(&[(APP_FILE, APP), (SERVICES_FILE, &services), (ROUTES_FILE, &routes)], "broken");
    let push = s.push(&["HEAD:refs/heads/main"]);
    assert!(!push.ok);
    let commit = git_ok(&s.work, &["rev-parse", "HEAD"]);
    let actual = push.remote().replace(&commit[..10], "<commit>") + "\n";
    let path = crate::support::project_dir().join("tests/it/snapshots/refused_push.txt");
    if std::env::var_os("PUSHGATE_BLESS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(actual, expected, "the output changed; re-record with PUSHGATE_BLESS=1 if intended");
}

#[test]
fn a_syntax_error_in_one_file_does_not_hide_the_others() {
    let s = Server::new("every-file");
    let app = APP.replace("disk: 5120", "disk: 5120\nfoo: 1");
    let services = "mysql:\n\ttype: mysql:11.4\n";
    // And an upstream naming an app that does not exist: a rule across files, still run.
    let routes =
        ROUTES.replace("type: redirect", "type: redirect\n    bogus: 1").replace("mymagento:http", "shop:http");
    s.commit(&[(APP_FILE, app.as_str()), (SERVICES_FILE, services), (ROUTES_FILE, routes.as_str())], "three");
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&[
        &format!("{}foo: unknown key `foo`", at(APP_FILE, &app, "foo")),
        &format!("{}a tab where YAML allows only spaces", at(SERVICES_FILE, services, "\t")),
        &format!("{}\"http://{{default}}/\".bogus: unknown key `bogus`", at(ROUTES_FILE, &routes, "bogus")),
        &format!(
            "{}\"https://{{default}}/\".upstream: upstream `shop:http` names no app",
            at(ROUTES_FILE, &routes, "\"shop:http\"")
        ),
        "relationships and upstreams were not fully checked against `.magento/services.yaml`: it could not be read",
    ]);
}

#[test]
fn branches_that_change_code_under_a_mount_reuse_one_validation() {
    // Mount `pub/media` is resolved through `pub`: a branch that changes `pub/index.php` has
    // another `pub` tree, and must still reuse the first branch's result (it did not, once,
    // and a push of 1,000 such branches took 10 times as long).
    let s = Server::new("reuse");
    s.commit(&files_with("", ""), "base");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let mut refspecs = Vec::new();
    for i in 0..3 {
        s.write("pub/index.php", format!("<?php // {i}\n").as_bytes());
        let commit = s.commit_all(&format!("change {i}"));
        refspecs.push(format!("{commit}:refs/heads/b{i}"));
    }
    let refspecs: Vec<&str> = refspecs.iter().map(String::as_str).collect();
    let push = s.push(&refspecs);
    push.assert_accepted();
    let remote = push.remote();
    assert_eq!(remote.matches("Validating configuration files of").count(), 1, "{remote}");
    assert!(remote.contains("Same configuration and changes as b0, valid: b1 ("), "{remote}");
}
