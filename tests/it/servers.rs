//! pushgate on the git servers admins run, through install.sh's layouts: gitolite3 (the real
//! Debian package, with a git user of its own) and the `pre-receive.d` layout of Gitea,
//! Forgejo and GitLab.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::push::files_with;
use crate::support::{git, git_ok, hook_bin, jobs_in, project_dir, Server, TempDir};

fn install(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(project_dir().join("install.sh"))
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap()
}

#[test]
fn the_d_layout_runs_pushgate_among_the_servers_other_hooks() {
    // Gitea and Forgejo write hooks/pre-receive as a dispatcher that runs every program of
    // hooks/pre-receive.d with the same input (GitLab does the same in custom_hooks); this is
    // such a dispatcher. Gitea itself is not a Debian package.
    let s = Server::new("d-layout");
    let repo = s.dir.join("gitea.git");
    git_ok(s.dir.path(), &["init", "-q", "--bare", "gitea.git"]);
    let dispatcher = "#!/bin/sh\ndata=$(cat)\nfor hook in \"$(dirname \"$0\")/$(basename \"$0\").d\"/*; do\n  [ -x \"$hook\" ] || continue\n  printf '%s\\n' \"$data\" | \"$hook\" || exit $?\ndone\n";
    for name in ["pre-receive", "post-receive"] {
        std::fs::write(repo.join("hooks").join(name), dispatcher).unwrap();
        Command::new("chmod").arg("755").arg(repo.join("hooks").join(name)).status().unwrap();
        std::fs::create_dir_all(repo.join(format!("hooks/{name}.d"))).unwrap();
    }
    // The server's own hook beside pushgate's.
    std::fs::write(repo.join("hooks/pre-receive.d/gitea"), "#!/bin/sh\necho gitea checked the push\n").unwrap();
    Command::new("chmod").arg("755").arg(repo.join("hooks/pre-receive.d/gitea")).status().unwrap();
    let bin_dir = hook_bin().parent().unwrap().display().to_string();
    let out = install(&[
        "--layout",
        "d",
        "--prefix",
        s.prefix.to_str().unwrap(),
        "--data",
        s.data.to_str().unwrap(),
        "--bin-dir",
        &bin_dir,
        repo.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(repo.join("hooks/pre-receive.d/pushgate").is_symlink());
    assert_eq!(
        std::fs::read_to_string(repo.join("hooks/pre-receive")).unwrap(),
        dispatcher,
        "the server's hook is its own"
    );
    git_ok(&repo, &["config", "pushgate.pickupWaitMs", "0"]);
    let url = format!("file://{}", repo.display());
    s.commit(&files_with("", ""), "good");
    let push = s.push_to(&url, &["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert!(
        push.remote().contains("gitea checked the push") && push.remote().contains("Build #1 queued"),
        "{}",
        push.output
    );
    s.commit(&files_with(".magento/services.yaml", "mysql:\n    type: mysql\n"), "bad");
    s.push_to(&url, &["HEAD:refs/heads/main"]).assert_refused_with(&["`mysql` has no version"]);
    // Uninstalling removes pushgate's links only.
    let out = install(&["--uninstall", "--layout", "d", repo.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!repo.join("hooks/pre-receive.d/pushgate").is_symlink());
    assert!(repo.join("hooks/pre-receive.d/gitea").exists());
}

/// A system user for gitolite, removed with its home when dropped.
struct GitUser {
    name: String,
    home: PathBuf,
    /// Where gitolite's code is: its `update` hook needs it (gitolite-shell sets it on an ssh
    /// push; a push on the server passes it itself).
    libdir: String,
}

impl GitUser {
    fn create(dir: &TempDir) -> GitUser {
        let name = format!("pgt{}", std::process::id());
        let home = dir.join("home");
        let out = Command::new("useradd").args(["-m", "-s", "/bin/sh", "-d"]).arg(&home).arg(&name).output().unwrap();
        assert!(out.status.success(), "useradd: {}", String::from_utf8_lossy(&out.stderr));
        let out = Command::new("gitolite").args(["query-rc", "GL_LIBDIR"]).output().unwrap();
        let libdir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        GitUser { name, home, libdir }
    }

    /// A command as this user, in `dir`, with its home; direct pushes skip gitolite's access
    /// checks (they do not come through gitolite-shell and its user).
    fn run(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new("runuser")
            .args(["-u", &self.name, "--", "env"])
            .arg(format!("HOME={}", self.home.display()))
            .args(["GL_BYPASS_ACCESS_CHECKS=1", "GIT_CONFIG_NOSYSTEM=1"])
            .arg(format!("GL_LIBDIR={}", self.libdir))
            .args(["GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@t", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@t"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap()
    }

    fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.run(dir, args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for GitUser {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-KILL", "-u", &self.name]).status();
        let _ = Command::new("userdel").args(["-r", &self.name]).output();
    }
}

#[test]
fn gitolite_repositories_run_pushgate_with_its_data_directory() {
    if Command::new("gitolite").arg("help").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI installs gitolite3 (.ci/run)");
        eprintln!("gitolite3 is not installed here: skipping (apt-get install gitolite3)");
        return;
    }
    let dir = TempDir::new("gitolite");
    let user = GitUser::create(&dir);
    let home = user.home.clone();
    user.ok(&home, &["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "admin"]);
    user.ok(&home, &["gitolite", "setup", "-pk", "admin.pub"]);
    let (prefix, data) = (dir.join("prefix"), dir.join("data"));
    let bin_dir = hook_bin().parent().unwrap().display().to_string();
    let out = install(&[
        "--layout",
        "gitolite",
        "--user",
        &user.name,
        "--prefix",
        prefix.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--bin-dir",
        &bin_dir,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let testing = home.join("repositories/testing.git");
    let hook = std::fs::canonicalize(testing.join("hooks/pre-receive")).unwrap();
    assert_eq!(hook, std::fs::canonicalize(prefix.join("bin/pushgate-hook")).unwrap());

    // A push to a repository gitolite made: validated, and queued in the data directory (the
    // repository's own configuration knows nothing of pushgate).
    let work = home.join("work");
    std::fs::create_dir_all(&work).unwrap();
    for (path, content) in files_with("", "") {
        std::fs::create_dir_all(work.join(path).parent().unwrap()).unwrap();
        std::fs::write(work.join(path), content).unwrap();
    }
    Command::new("chown").args(["-R", &user.name]).arg(&work).status().unwrap();
    user.ok(&work, &["git", "init", "-q", "-b", "main"]);
    user.ok(&work, &["git", "add", "-A"]);
    user.ok(&work, &["git", "commit", "-q", "-m", "shop"]);
    let pushed =
        user.ok(&work, &["git", "push", "-o", "pushgate.nowait", &format!("file://{}", testing.display()), "main"]);
    assert!(pushed.contains("Build #1 queued for environment main"), "{pushed}");
    assert!(git(&testing, &["config", "--local", "pushgate.data"]).stdout.is_empty());
    assert_eq!(jobs_in(&data)[0]["repo"], testing.display().to_string());

    // A repository gitolite creates later (from its admin repository) runs pushgate too.
    let admin = home.join("gitolite-admin");
    user.ok(
        &home,
        &[
            "git",
            "clone",
            "-q",
            &format!("file://{}", home.join("repositories/gitolite-admin.git").display()),
            "gitolite-admin",
        ],
    );
    let conf = admin.join("conf/gitolite.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\nrepo shop\n    RW+ = admin\n");
    user.ok(&admin, &["sh", "-c", &format!("printf '%s' '{text}' > conf/gitolite.conf")]);
    user.ok(&admin, &["git", "commit", "-q", "-am", "shop"]);
    user.ok(&admin, &["git", "push", "-q", "origin", "HEAD"]);
    let shop = home.join("repositories/shop.git");
    assert!(shop.is_dir(), "gitolite created the repository");
    let pushed =
        user.ok(&work, &["git", "push", "-o", "pushgate.nowait", &format!("file://{}", shop.display()), "main"]);
    assert!(pushed.contains("Build #2 queued for environment main"), "{pushed}");
    // A broken configuration is refused there too.
    std::fs::write(work.join(".magento/services.yaml"), "mysql:\n    type: mysql\n").unwrap();
    user.ok(&work, &["git", "commit", "-q", "-am", "bad"]);
    let out = user.run(&work, &["git", "push", &format!("file://{}", shop.display()), "main"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("`mysql` has no version"));
    // Every file in the data directory belongs to the git user.
    let out = Command::new("find").arg(&data).args(["!", "-user", &user.name]).output().unwrap();
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
    // Uninstalling takes pushgate out of gitolite's repositories.
    let out = install(&["--uninstall", "--layout", "gitolite", "--user", &user.name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!shop.join("hooks/pre-receive").exists());
    let _ = git_ok;
}

#[test]
fn the_entry_point_scripts_run_the_hooks_from_any_place() {
    // hooks/pre-receive and hooks/post-receive copied as files (no link to the binary), the
    // binary found on the hook's PATH.
    let s = Server::new("scripts");
    let repo = s.dir.join("copied.git");
    git_ok(s.dir.path(), &["init", "-q", "--bare", "copied.git"]);
    for name in ["pre-receive", "post-receive"] {
        std::fs::copy(project_dir().join("hooks").join(name), repo.join("hooks").join(name)).unwrap();
    }
    git_ok(&repo, &["config", "pushgate.data", s.data.to_str().unwrap()]);
    git_ok(&repo, &["config", "pushgate.pickupWaitMs", "0"]);
    let path = format!("{}:{}", s.prefix.join("bin").display(), std::env::var("PATH").unwrap());
    let push = |args: &[&str]| {
        let mut all = vec!["push".to_owned(), "--porcelain".to_owned(), format!("file://{}", repo.display())];
        all.extend(args.iter().map(|a| a.to_string()));
        Command::new("git")
            .args(&all)
            .current_dir(&s.work)
            .env("PATH", &path)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap()
    };
    s.commit(&files_with("", ""), "good");
    let out = push(&["HEAD:refs/heads/main"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("Build #1 queued for environment main"), "{text}");
    s.commit(&files_with(".magento/services.yaml", "mysql:\n    type: mysql\n"), "bad");
    let out = push(&["HEAD:refs/heads/main"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("`mysql` has no version"));
}
