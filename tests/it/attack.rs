//! The holes found when pushgate was attacked by a developer with push access to one project on
//! a server that hosts two, and crashed under load. Each test reproduces the attack or the crash
//! first, then checks that nothing outside the project changed, that the push is refused with a
//! clear message where it should be, and that the legitimate version still works.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::push::{files_with, APP, APP_FILE, ROUTES, ROUTES_FILE, SERVICES, SERVICES_FILE};
use crate::runner::{app_with_hooks, envs, eventually, job_state, log_of, runner, serve, spawn_dying_runner};
use crate::support::{git, git_ok, hook_bin, Server};

/// Everything under `dir`, without following links: path → what stands there.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link to {}", std::fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                todo.push(path.clone());
                "dir".to_owned()
            } else {
                format!("file of {} bytes", meta.len())
            };
            out.insert(path.strip_prefix(dir).unwrap().to_owned(), what);
        }
    }
    out
}

/// The app with one more mount.
fn with_mount(app: &str, path: &str) -> String {
    app.replace("mounts:\n", &format!("mounts:\n    \"{path}\": \"shared:files/takeover\"\n"))
}

/// `pushgate-hook check DIR`: exit status and output.
fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(hook_bin()).arg("check").arg(dir).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_mount_through_a_link_cannot_reach_another_project() {
    let s = Server::new("mount-escape");
    let shop = s.other_project("shop");
    let shop_url = format!("file://{}", shop.display());
    // The other project's staging site is deployed.
    s.commit(&files_with("", ""), "shop");
    s.push_to(&shop_url, &["HEAD:refs/heads/staging"]).assert_accepted();
    serve(&s);
    let staging = envs(&s).into_iter().find(|e| e["environment"] == "staging").expect("staging deployed");
    let staging_release = PathBuf::from(staging["path"].as_str().unwrap());
    let shop_dir = staging_release.ancestors().nth(3).unwrap().to_owned(); // environments/shop-KEY
    let shop_key = shop_dir.file_name().unwrap().to_str().unwrap().to_owned();
    let before = snapshot(&shop_dir);
    // From a release's app directory (environments/KEY/ENV/releases/ID/APP), five levels up is
    // `environments`. Lexically the path stays inside the app; through `d/l1 -> ..` it does not.
    let climb = format!("{}{}{shop_key}/staging/current", "d/l1/".repeat(5), "../".repeat(5));

    // The link committed: refused at push time, and by `check` on the checkout alike.
    s.commit(&files_with(APP_FILE, &with_mount(APP, &climb)), "attack");
    std::fs::create_dir_all(s.work.join("d")).unwrap();
    std::os::unix::fs::symlink("..", s.work.join("d/l1")).unwrap();
    s.commit_all("attack with a link");
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&[
        ".magento.app.yaml:",
        "leads outside the app through this commit's links",
        "[mount-path]",
    ]);
    let (ok, out) = check(&s.work);
    assert!(!ok && out.contains("leads outside the app through this commit's links"), "{out}");

    // The link made by the build, where no push-time check can see it: the deploy refuses it.
    let app = with_mount(&app_with_hooks("mkdir -p d && ln -s .. d/l1", "true"), &climb);
    let commit = s.commit(&files_with(APP_FILE, &app), "attack from the build");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &commit);
    let log = log_of(&s, id);
    assert_eq!(state, "failed", "{log}");
    assert!(log.contains("cannot be made: it leads outside the app"), "{log}");
    assert_eq!(snapshot(&shop_dir), before, "nothing of the other project changed");

    // A link that stays inside the app is fine: `d/l1/extra` is the app's `extra`.
    let commit = s.commit(&files_with(APP_FILE, &with_mount(APP, "d/l1/extra")), "a link inside");
    std::fs::create_dir_all(s.work.join("d")).unwrap();
    std::os::unix::fs::symlink("..", s.work.join("d/l1")).unwrap();
    let commit = if s.commit_all("a link inside") == commit { commit } else { git_ok(&s.work, &["rev-parse", "HEAD"]) };
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &commit);
    assert_eq!(state, "succeeded", "{}", log_of(&s, id));
    let main = envs(&s).into_iter().find(|e| e["environment"] == "main").unwrap();
    let extra = PathBuf::from(main["path"].as_str().unwrap()).join("mymagento/extra");
    assert!(std::fs::read_link(&extra).unwrap().ends_with("mymagento/takeover"), "{}", extra.display());
    assert_eq!(snapshot(&shop_dir), before);
}

/// A commit whose tree is the valid project's plus an entry named `name`, made the way only
/// `git hash-object --literally` can. Returns the commit and the crafted tree.
fn crafted_commit(s: &Server, name: &str) -> (String, String) {
    s.commit(&files_with("", ""), "valid");
    std::fs::write(s.dir.join("payload"), "pwned\n").unwrap();
    let blob = git_ok(&s.work, &["hash-object", "-w", s.dir.join("payload").to_str().unwrap()]);
    let tree = git_ok(&s.work, &["rev-parse", "HEAD^{tree}"]);
    let mut raw = git(&s.work, &["cat-file", "tree", &tree]).stdout;
    raw.extend_from_slice(format!("100644 {name}\0").as_bytes());
    raw.extend((0..20).map(|i| u8::from_str_radix(&blob[2 * i..2 * i + 2], 16).unwrap()));
    std::fs::write(s.dir.join("tree"), raw).unwrap();
    let crafted =
        git_ok(&s.work, &["hash-object", "-t", "tree", "--literally", "-w", s.dir.join("tree").to_str().unwrap()]);
    let commit = git_ok(&s.work, &["commit-tree", &crafted, "-p", "HEAD", "-m", "crafted"]);
    (commit, crafted)
}

#[test]
fn a_crafted_tree_is_refused_at_push_time_and_never_exported() {
    let s = Server::new("crafted-tree");
    // install.sh turns on git's own check of pushed objects: git refuses the tree itself.
    assert_eq!(git_ok(&s.bare, &["config", "receive.fsckObjects"]), "true");
    let (commit, _) = crafted_commit(&s, "x/../../../pwned.txt");
    let push = s.push(&[&format!("{commit}:refs/heads/main")]);
    assert!(!push.ok && push.output.contains("fsck"), "{}", push.output);
    // With git's check off (its default), pushgate refuses it, for every unsafe name.
    git_ok(&s.bare, &["config", "receive.fsckObjects", "false"]);
    for name in ["x/../../../pwned.txt", "..", ".git", ".GIT"] {
        let (commit, _) = crafted_commit(&s, name);
        s.push(&[&format!("{commit}:refs/heads/main")]).assert_refused_with(&[
            &format!("the root directory has an entry named {name:?}"),
            "git hash-object --literally",
        ]);
        assert_eq!(s.server_ref("refs/heads/main"), None, "{name}");
    }
    // The runner's export refuses it too (a tree that entered the repository before pushgate).
    let (_, tree) = crafted_commit(&s, "x/../../../pwned.txt");
    let repo = git2::Repository::open(&s.work).unwrap();
    let dest = s.data.join("builds/1");
    let exported = pushgate::runner::export::export_tree(&repo, git2::Oid::from_str(&tree).unwrap(), &dest);
    let err = exported.expect_err("export refuses the tree").to_string();
    assert!(err.contains("x/../../../pwned.txt") && err.contains("cannot be written to disk"), "{err}");
    assert!(!s.dir.join("pwned.txt").exists() && !s.data.join("pwned.txt").exists());
    // The valid project itself still goes through.
    s.commit(&files_with("", ""), "valid");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
}

#[test]
fn check_and_push_agree_on_a_magento_directory_that_is_a_link_or_a_submodule() {
    let s = Server::new("magento-link");
    // `.magento` links to a directory outside the repository that holds valid files.
    let elsewhere = s.dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("routes.yaml"), ROUTES).unwrap();
    std::fs::write(elsewhere.join("services.yaml"), SERVICES).unwrap();
    s.commit(&[(APP_FILE, APP)], "app");
    std::os::unix::fs::symlink(&elsewhere, s.work.join(".magento")).unwrap();
    s.commit_all(".magento is a link");
    let message = "`.magento` is a symbolic link, not a directory";
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&[message, "[not-a-dir]"]);
    let (ok, out) = check(&s.work);
    assert!(!ok && out.contains(message), "{out}");

    // A submodule: a gitlink in the commit, a directory with a `.git` file in a checkout.
    s.commit(&[(APP_FILE, APP)], "app only");
    let head = git_ok(&s.work, &["rev-parse", "HEAD"]);
    git_ok(&s.work, &["update-index", "--add", "--cacheinfo", &format!("160000,{head},.magento")]);
    git_ok(&s.work, &["commit", "-q", "-m", ".magento is a submodule"]);
    let message = "`.magento` is a submodule, not a directory";
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&[message]);
    let checkout = s.dir.join("checkout");
    std::fs::create_dir_all(checkout.join(".magento")).unwrap();
    std::fs::write(checkout.join(APP_FILE), APP).unwrap();
    std::fs::write(checkout.join(".magento/.git"), "gitdir: ../.git/modules/magento\n").unwrap();
    let (ok, out) = check(&checkout);
    assert!(!ok && out.contains(message), "{out}");

    // A plain directory, as always.
    git_ok(&s.work, &["rm", "-q", "--cached", ".magento"]);
    s.commit(&files_with("", ""), "plain");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    assert!(check(&s.work).0);
    let _ = (ROUTES_FILE, SERVICES_FILE);
}

#[test]
fn each_environment_has_one_branch_and_a_usable_name() {
    let s = Server::new("env-names");
    s.commit(&files_with("", ""), "shop");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    for branch in ["Main", "MAIN", "-main-"] {
        s.push(&[&format!("HEAD:refs/heads/{branch}")]).assert_refused_with(&[
            &format!("Branch {branch} ("),
            "its environment `main` is also the environment of branch `main`",
            "such as `main-2`",
        ]);
        assert_eq!(s.server_ref(&format!("refs/heads/{branch}")), None);
    }
    for branch in ["_", "é", "__"] {
        s.push(&[&format!("HEAD:refs/heads/{branch}")])
            .assert_refused_with(&["its name gives no environment name", "such as `feature-1`"]);
    }
    s.push(&["HEAD:refs/heads/qa-4"]).assert_accepted();
    s.push(&["HEAD:refs/heads/QA_4"]).assert_refused_with(&["environment of branch `qa-4`"]);
    // Two new branches of one environment in one push: neither gets it.
    s.push(&["HEAD:refs/heads/Feature", "HEAD:refs/heads/feature"])
        .assert_refused_with(&["Branch Feature", "environment of branch `feature`"]);
    // The legitimate cases: a branch with other characters, and a name freed in the same push.
    s.push(&["HEAD:refs/heads/feature/New_Checkout"]).assert_accepted();
    s.push(&[":refs/heads/qa-4", "HEAD:refs/heads/QA_4"]).assert_accepted();
    let environments: Vec<String> = s.jobs().iter().map(|j| j["environment"].as_str().unwrap().to_owned()).collect();
    assert_eq!(environments, ["main", "qa-4", "feature-new-checkout", "qa-4"]);
}

/// Runs `pushgate-hook check DIR` with its address space bounded: an allocation past the bound
/// fails (and aborts the process), so the exit status says whether it stayed within.
fn check_within(dir: &Path, megabytes: u64) -> (Option<i32>, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -v {}; exec \"$0\" check \"$1\"", megabytes * 1024))
        .arg(hook_bin())
        .arg(dir)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn validation_work_is_bounded_whatever_the_push() {
    let s = Server::new("bounded");
    // "Did you mean": a 100,000-character target against 100 service names of 1,000 characters.
    let mut services = String::new();
    for i in 0..100 {
        services.push_str(&format!("s{i:03}{}:\n    type: mysql:11.4\n    disk: 512\n", "a".repeat(996)));
    }
    let app = APP.replace("database: \"mysql:mysql\"", &format!("database: \"{}:mysql\"", "x".repeat(100_000)));
    s.commit(&[(APP_FILE, app.as_str()), (SERVICES_FILE, services.as_str()), (ROUTES_FILE, ROUTES)], "long names");
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&["which is no service or app of this project"]);
    let (code, out) = check_within(&s.work, 100);
    assert_eq!(code, Some(1), "{out}");

    // `!include` fan-out: 64 string includes of one 1 MiB file, in each of 24 apps.
    let big = "x".repeat((1 << 20) - 1) + "\n";
    let includes: String =
        (0..64).map(|i| format!("        V{i}: !include {{type: string, path: ../big.txt}}\n")).collect();
    let mut files: Vec<(String, String)> =
        vec![("big.txt".into(), big), (SERVICES_FILE.into(), SERVICES.into()), (ROUTES_FILE.into(), ROUTES.into())];
    for a in 0..24 {
        let app =
            APP.replace("name: mymagento", &format!("name: app{a}")) + &format!("variables:\n    env:\n{includes}");
        files.push((format!("app{a}/{APP_FILE}"), app));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    s.commit(&files, "fan-out");
    s.push(&["HEAD:refs/heads/main"])
        .assert_refused_with(&["all files and includes together, is larger than pushgate checks"]);
    let (code, out) = check_within(&s.work, 100);
    assert_eq!(code, Some(1), "refused within 100 MB: {out}");
    assert!(out.contains("is larger than pushgate checks"), "{out}");

    // A project with includes of a reasonable size still passes.
    let app = APP.to_owned() + "variables:\n    env:\n        SCRIPT: !include {type: string, path: big.txt}\n";
    s.commit(
        &[(APP_FILE, app.as_str()), (SERVICES_FILE, SERVICES), (ROUTES_FILE, ROUTES), ("big.txt", "echo hi\n")],
        "ok",
    );
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
}

#[test]
fn a_release_killed_while_unpacking_is_never_offered_and_is_removed() {
    let s = Server::new("partial-release");
    let first = s.commit(&files_with(APP_FILE, &app_with_hooks("true", "true")), "small");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (first_id, _) = job_state(&s, &first);
    // A build with many files, so unpacking takes a while; the runner is killed meanwhile.
    let build = "mkdir -p many && cd many && seq 1 40000 | xargs touch";
    let second = s.commit(&files_with(APP_FILE, &app_with_hooks(build, "true")), "many files");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let (second_id, _) = job_state(&s, &second);
    let releases = PathBuf::from(envs(&s)[0]["path"].as_str().unwrap()).parent().unwrap().to_owned();
    let partial = releases.join(format!(".partial-{second_id}"));
    let mut dying = spawn_dying_runner(&s);
    assert!(eventually(60, || partial.join("mymagento/many").exists()), "unpacking started");
    dying.kill().unwrap(); // SIGKILL while unpacking
    dying.wait().unwrap();
    // What it left is not a release: not listed, not offered to rollback.
    assert!(partial.exists(), "the crash left the half-unpacked release");
    assert!(!releases.join(second_id.to_string()).exists());
    let rollback = runner(&s, &["rollback", "main", "--to", &second_id.to_string()]);
    assert!(!rollback.status.success(), "rollback to a partial release");
    assert!(String::from_utf8_lossy(&rollback.stderr).contains("is not kept"));
    assert_eq!(envs(&s)[0]["release"], first_id.to_string(), "still serving the first release");
    // The next runner removes it and completes the job.
    std::thread::sleep(std::time::Duration::from_millis(2500)); // the lease runs out
    let out = runner(&s, &["serve", "--until-idle", "--lease", "1"]);
    assert!(out.status.success());
    let log = log_of(&s, second_id);
    assert_eq!(job_state(&s, &second).1, "succeeded", "{log}");
    assert!(
        log.contains(&format!("W: removed releases an earlier deploy left unfinished: .partial-{second_id}")),
        "{log}"
    );
    let left: Vec<_> = std::fs::read_dir(&releases).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().starts_with(".partial")), "{left:?}");
    assert_eq!(envs(&s)[0]["release"], second_id.to_string());
}

#[test]
fn a_build_left_by_a_killed_runner_is_removed_once_its_job_is_superseded() {
    let s = Server::new("build-debris");
    let marker = s.markers().join("building");
    let build = format!("touch {m}; sleep 60", m = marker.display());
    let slow = s.commit(&files_with(APP_FILE, &app_with_hooks(&build, "true")), "slow build");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let (slow_id, _) = job_state(&s, &slow);
    let mut dying = spawn_dying_runner(&s);
    assert!(eventually(10, || marker.exists()), "the build started");
    dying.kill().unwrap();
    dying.wait().unwrap();
    let left = s.data.join(format!("builds/{slow_id}"));
    assert!(left.exists(), "the killed runner left its build directory");
    // A newer push supersedes the job; no runner will ever retry it.
    let fixed = s.commit(&files_with(APP_FILE, &app_with_hooks("true", "true")), "fast build");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    std::thread::sleep(std::time::Duration::from_millis(2500)); // the dead runner's lease runs out
    let out = runner(&s, &["serve", "--until-idle", "--lease", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(job_state(&s, &slow).1, "superseded");
    assert_eq!(job_state(&s, &fixed).1, "succeeded");
    assert!(!left.exists(), "the superseded job's build directory is removed");
    let builds: Vec<_> = std::fs::read_dir(s.data.join("builds")).unwrap().flatten().collect();
    assert!(builds.is_empty(), "{builds:?}");
}

/// Overwrites most of page `page` (1-based, 4 KiB pages) of a SQLite file with noise.
fn damage_page(file: &Path, page: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start((page - 1) * 4096 + 8)).unwrap();
    let noise: Vec<u8> =
        (0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(page as u32) >> 11) as u8).collect();
    f.write_all(&noise).unwrap();
}

#[test]
fn a_damaged_queue_refuses_the_push_instead_of_losing_its_job() {
    let s = Server::new("damaged-queue");
    s.commit(&files_with("", ""), "shop");
    for i in 0..8 {
        s.push(&[&format!("HEAD:refs/heads/b{i}")]).assert_accepted();
    }
    let queue = s.data.join("queue.sqlite3");
    let pages: u64 = {
        let conn = rusqlite::Connection::open(&queue).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0)).unwrap() as u64
    };
    let clean = s.dir.join("clean.sqlite3");
    std::fs::copy(&queue, &clean).unwrap();
    let mut refused = 0;
    for page in 2..=pages {
        for suffix in ["-wal", "-shm", ".checked"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", queue.display()));
        }
        std::fs::copy(&clean, &queue).unwrap();
        damage_page(&queue, page);
        let branch = format!("damaged-{page}");
        let push = s.push(&[&format!("HEAD:refs/heads/{branch}")]);
        if push.ok {
            // Accepted: then its job is there.
            let conn = rusqlite::Connection::open(&queue).unwrap();
            let jobs: i64 = conn
                .query_row("SELECT count(*) FROM jobs WHERE ref = ?1", [format!("refs/heads/{branch}")], |r| r.get(0))
                .unwrap_or_else(|e| panic!("page {page}: accepted, and its job cannot be read: {e}"));
            assert_eq!(jobs, 1, "page {page}: accepted without a job:\n{}", push.output);
        } else {
            refused += 1;
            assert_eq!(s.server_ref(&format!("refs/heads/{branch}")), None, "page {page}");
            assert!(push.remote().contains("is damaged") || push.remote().contains("cannot"), "{}", push.output);
            assert!(push.remote().contains("so it is refused; nothing was changed"), "{}", push.output);
        }
    }
    assert!(refused >= 3, "the damage reached the job table or its indexes in {refused} of {} pages", pages - 1);
    // An intact queue takes pushes again.
    for suffix in ["-wal", "-shm", ".checked"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", queue.display()));
    }
    std::fs::copy(&clean, &queue).unwrap();
    s.push(&["HEAD:refs/heads/after"]).assert_accepted();
}
