//! install.sh as an admin runs it: idempotent, keeps foreign hooks, records its settings.

use crate::push::files_with;
use crate::support::{git_ok, run_install, Server};

#[test]
fn running_install_again_changes_nothing() {
    let s = Server::new("idem");
    let hook = s.bare.join("hooks/pre-receive");
    let before = std::fs::read_link(&hook).expect("the hook is a symlink to the installed binary");
    let mtime = std::fs::symlink_metadata(&hook).unwrap().modified().unwrap();
    let again = run_install(&s.prefix, &s.data, &[&s.bare]);
    assert!(again.status.success());
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(!out.contains("installed") && !out.contains("created") && !out.contains("git config"), "{out}");
    assert_eq!(std::fs::read_link(&hook).unwrap(), before);
    assert_eq!(std::fs::symlink_metadata(&hook).unwrap().modified().unwrap(), mtime);
    let installed = std::fs::canonicalize(s.prefix.join("bin/pushgate-hook")).unwrap();
    assert_eq!(before, installed);
    assert_eq!(std::fs::read_link(s.bare.join("hooks/post-receive")).unwrap(), installed);
    assert_eq!(git_ok(&s.bare, &["config", "pushgate.data"]), s.data.display().to_string());
    assert_eq!(git_ok(&s.bare, &["config", "receive.advertisePushOptions"]), "true");
    assert!(s.prefix.join("bin/pushgate-hook").is_file());
}

#[test]
fn an_existing_hook_is_kept_and_still_runs() {
    let s = Server::new("chain");
    // An admin's own policy hook, installed before pushgate.
    let hooks = s.dir.join("other.git/hooks");
    let bare = s.dir.join("other.git");
    git_ok(s.dir.path(), &["init", "-q", "--bare", "other.git"]);
    let policy = "#!/bin/sh\nwhile read old new ref; do\n  echo \"policy saw $ref\"\n  case \"$ref\" in refs/heads/frozen) echo 'frozen is frozen'; exit 1;; esac\ndone\n";
    std::fs::write(hooks.join("pre-receive"), policy).unwrap();
    std::process::Command::new("chmod").args(["755"]).arg(hooks.join("pre-receive")).status().unwrap();
    let out = run_install(&s.prefix, &s.data, &[&bare]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept the existing pre-receive hook"));
    assert_eq!(std::fs::read_to_string(hooks.join("pre-receive.chained")).unwrap(), policy);
    // Idempotent with the chained hook too.
    let again = run_install(&s.prefix, &s.data, &[&bare]);
    assert!(
        !String::from_utf8_lossy(&again.stdout).contains("installed"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    let url = format!("file://{}", bare.display());
    s.commit(&files_with("", ""), "good");
    let push = s.push_to(&url, &["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert!(push.remote().contains("policy saw refs/heads/main"), "{}", push.output);
    // The old hook's refusal still refuses.
    let push = s.push_to(&url, &["HEAD:refs/heads/frozen"]);
    push.assert_refused_with(&["frozen is frozen"]);
    // pushgate refuses first; the chained hook does not run on a refused push.
    s.commit(&files_with(".magento/services.yaml", "mysql:\n    type: mysql\n"), "bad");
    let push = s.push_to(&url, &["HEAD:refs/heads/main"]);
    push.assert_refused_with(&["`mysql` has no version"]);
    assert!(!push.remote().contains("policy saw"), "{}", push.output);
}

#[test]
fn install_refuses_a_non_bare_repository() {
    let s = Server::new("nonbare");
    let out = run_install(&s.prefix, &s.data, &[&s.work]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a bare git repository"));
}

/// Paths under `dir` (itself included) not owned by `user`.
fn not_owned_by(dir: &std::path::Path, user: &str) -> Vec<String> {
    let out = std::process::Command::new("find").arg(dir).args(["!", "-user", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// install.sh with this test's binaries, the server's prefix and the data directory `data`,
/// plus `args`.
fn install_with(s: &Server, data: &std::path::Path, args: &[&str], repos: &[&std::path::Path]) -> std::process::Output {
    let bin_dir = crate::support::hook_bin().parent().unwrap().display().to_string();
    let common = ["--prefix", s.prefix.to_str().unwrap(), "--data", data.to_str().unwrap(), "--bin-dir", &bin_dir];
    install(&[args, &common[..]].concat(), repos)
}

fn install(args: &[&str], repos: &[&std::path::Path]) -> std::process::Output {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(crate::support::project_dir().join("install.sh")).args(args).args(repos).env("GIT_CONFIG_NOSYSTEM", "1");
    cmd.output().unwrap()
}

#[test]
fn as_root_for_another_user_everything_is_theirs() {
    // The tests run as root, as an admin installing on a server would; `nobody` stands for `git`.
    let s = Server::new("user");
    let (repo, data) = (s.dir.join("shop.git"), s.dir.join("shared-data"));
    let out = install_with(&s, &data, &["--user", "nobody"], &[&repo]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("owned by nobody (run pushgate-runner as nobody)"), "{stdout}");
    assert_eq!(not_owned_by(&repo, "nobody"), Vec::<String>::new(), "root-owned files in the repository");
    assert_eq!(not_owned_by(&data, "nobody"), Vec::<String>::new(), "root-owned files in the data directory");
    // Run again without --user: the repository's owner is the default, and nothing changes.
    let again = install_with(&s, &data, &[], &[&repo]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(
        !String::from_utf8_lossy(&again.stdout).contains("installed"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    assert_eq!(not_owned_by(&repo, "nobody"), Vec::<String>::new());
    // A repository of one user and a data directory of another cannot work: refused, clearly.
    let out = install_with(&s, &data, &["--user", "root"], &[&repo]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is owned by nobody, not root"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn uninstall_removes_the_hooks_and_puts_chained_ones_back() {
    let s = Server::new("uninstall");
    let hooks = s.bare.join("hooks");
    // An admin's hook that was there before pushgate.
    let out = run_install(&s.prefix, &s.data, &[&s.bare]);
    assert!(out.status.success());
    std::fs::remove_file(hooks.join("post-receive")).unwrap();
    std::fs::write(hooks.join("post-receive"), "#!/bin/sh\necho mail the team\n").unwrap();
    let out = run_install(&s.prefix, &s.data, &[&s.bare]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept the existing post-receive hook"));
    let out = install(&["--uninstall"], &[&s.bare]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!hooks.join("pre-receive").exists() && !hooks.join("pre-receive").is_symlink());
    assert_eq!(std::fs::read_to_string(hooks.join("post-receive")).unwrap(), "#!/bin/sh\necho mail the team\n");
    assert!(!hooks.join("post-receive.chained").exists());
    assert!(
        stdout.contains(&format!("data directory {} (queue, logs, releases) is left in place", s.data.display())),
        "{stdout}"
    );
    assert!(s.data.is_dir(), "the data directory stays");
    assert!(crate::support::git(&s.bare, &["config", "pushgate.data"]).stdout.is_empty());
    // A push goes through without pushgate.
    s.commit(&[("README", "no configuration at all\n")], "plain");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
}

#[test]
fn a_hook_that_reaches_pushgate_through_links_is_ours() {
    // gitolite's way: the repository's hook links to a common hook, which links to the binary.
    let s = Server::new("link-chain");
    let common = s.dir.join("common-hooks");
    std::fs::create_dir_all(&common).unwrap();
    std::os::unix::fs::symlink(s.prefix.join("bin/pushgate-hook"), common.join("pre-receive")).unwrap();
    let hook = s.bare.join("hooks/pre-receive");
    std::fs::remove_file(&hook).unwrap();
    std::os::unix::fs::symlink(common.join("pre-receive"), &hook).unwrap();
    let out = run_install(&s.prefix, &s.data, &[&s.bare]);
    assert!(out.status.success());
    assert!(!s.bare.join("hooks/pre-receive.chained").exists(), "pushgate chained to itself");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("kept the existing"));
}

#[test]
fn install_builds_into_cargo_target_dir() {
    // Binaries already built in CARGO_TARGET_DIR and newer than the sources are used, not rebuilt.
    let s = Server::new("target-dir");
    let target = s.dir.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    for b in ["pushgate-hook", "pushgate-runner"] {
        std::fs::copy(crate::support::hook_bin().parent().unwrap().join(b), target.join("release").join(b)).unwrap();
    }
    let prefix = s.dir.join("elsewhere");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(crate::support::project_dir().join("install.sh"))
        .args(["--prefix", prefix.to_str().unwrap(), "--data", s.data.to_str().unwrap()])
        .arg(&s.bare)
        .env("CARGO_TARGET_DIR", &target)
        .env("GIT_CONFIG_NOSYSTEM", "1");
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("building"), "{stdout}");
    assert!(stdout.contains(&format!("installed {}/bin/pushgate-hook", prefix.display())), "{stdout}");
}

/// A command as `nobody` (who stands for `git`), with a home of its own.
fn as_git(s: &Server, program: &str, args: &[&str]) -> std::process::Output {
    let home = s.dir.join("git-home");
    std::fs::create_dir_all(&home).unwrap();
    std::process::Command::new("chown").arg("nobody").arg(&home).output().unwrap();
    std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", program])
        .args(args)
        .env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap()
}

#[test]
fn in_the_readmes_order_a_root_runner_started_first_leaves_the_data_directory_to_git() {
    let s = Server::new("day-one");
    let (repo, data) = (s.dir.join("shop.git"), s.dir.join("day-one-data"));
    let out = install_with(&s, &data, &["--user", "nobody"], &[&repo]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let data_s = data.to_str().unwrap();
    // The README's order: the root runner starts, the admin declares a backend, then a push.
    let runner = |args: &[&str]| {
        let out = std::process::Command::new(crate::support::runner_bin())
            .args(args)
            .args(["--data", data_s])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    runner(&["serve", "--until-idle"]);
    runner(&["backend", "add", "redis", "redis://127.0.0.1:6379"]);
    // Redis as the host runs it (Debian 12's 7.0): a version the backend cannot give is refused.
    let app = crate::runner::app_with_hooks("true", "true");
    let services = crate::push::SERVICES.replace("redis:8.0", "redis:7.0");
    let mut files = files_with(crate::push::APP_FILE, &app);
    files.retain(|(p, _)| *p != crate::push::SERVICES_FILE);
    files.push((crate::push::SERVICES_FILE, &services));
    s.commit(&files, "first");
    let url = format!("file://{}", repo.display());
    let work = s.work.to_str().unwrap();
    let push = as_git(&s, "git", &["-c", "safe.directory=*", "-C", work, "push", &url, "HEAD:refs/heads/main"]);
    let said = String::from_utf8_lossy(&push.stderr).into_owned();
    assert!(push.status.success(), "the git user's push is refused:\n{said}");
    assert_eq!(not_owned_by(&data, "nobody"), Vec::<String>::new(), "what root made in the data directory");
    runner(&["serve", "--until-idle"]);
    let jobs = crate::support::jobs_in(&data);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:?}");
    // A runner of the data directory's owner reads what root declared.
    let list = as_git(&s, crate::support::runner_bin().to_str().unwrap(), &["backend", "list", "--data", data_s]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("redis"), "{}", String::from_utf8_lossy(&list.stderr));
    // Its Redis and network go (the data directory is not the server's own, which it cleans).
    runner(&["env", "delete", "main", "--yes"]);
    runner(&["serve", "--until-idle"]);
}
