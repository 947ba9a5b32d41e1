//! Developers behind git-shell: `ssh git@server pushgate …` over a real sshd started here,
//! through the command install.sh --git-shell-commands puts in the git user's home.

use std::path::Path;
use std::process::{Child, Command, Output};

use crate::push::{files_with, APP_FILE};
use crate::runner::{app_with_hooks, eventually, serve};
use crate::support::{hook_bin, project_dir, Server};

/// A system user whose login shell is git-shell, and an sshd that lets it in with a key.
struct GitShell {
    user: String,
    key: std::path::PathBuf,
    port: u16,
    sshd: Child,
}

impl Drop for GitShell {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
        let _ = Command::new("userdel").arg(&self.user).output();
    }
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn which(program: &str) -> String {
    ok(Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().unwrap()).trim().to_owned()
}

impl GitShell {
    fn start(dir: &Path) -> GitShell {
        let user = format!("pgsh{}", std::process::id());
        let home = dir.join("home");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        ok(Command::new("useradd")
            .args(["-M", "-d"])
            .arg(&home)
            .args(["-s", &which("git-shell"), &user])
            .output()
            .unwrap());
        // No password, but not locked: sshd refuses a locked account even with a key.
        ok(Command::new("usermod").args(["-p", "*", &user]).output().unwrap());
        let key = dir.join("client");
        ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().unwrap());
        ok(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join("host"))
            .output()
            .unwrap());
        std::fs::copy(key.with_extension("pub"), home.join(".ssh/authorized_keys")).unwrap();
        ok(Command::new("chown").arg("-R").arg(format!("{user}:{user}")).arg(&home).output().unwrap());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nPidFile {}\nAuthorizedKeysFile .ssh/authorized_keys\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nAllowUsers {user}\n",
                dir.join("host").display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap(); // sshd's privilege separation directory
        let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
        let sshd =
            Command::new("/usr/sbin/sshd").arg("-D").arg("-e").arg("-f").arg(&config).stderr(log).spawn().unwrap();
        assert!(eventually(30, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()), "sshd listens");
        GitShell { user, key, port, sshd }
    }

    /// `ssh USER@127.0.0.1 COMMAND`.
    fn ssh(&self, command: &str) -> Output {
        Command::new("ssh")
            .arg("-i")
            .arg(&self.key)
            .args([
                "-p",
                &self.port.to_string(),
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"])
            .arg(format!("{}@127.0.0.1", self.user))
            .arg(command)
            .output()
            .unwrap()
    }
}

#[test]
fn a_git_shell_user_follows_the_projects_they_can_push_to_over_ssh() {
    let s = Server::new("ssh");
    s.commit(&files_with(APP_FILE, &app_with_hooks("echo building-over-ssh", "true")), "first");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let other = s.other_project("other");
    s.push_to(&format!("file://{}", other.display()), &["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let jobs = s.jobs();
    let theirs = jobs.iter().find(|j| j["repo"].as_str().unwrap().ends_with("/other.git")).unwrap()["id"].clone();
    let shell = GitShell::start(s.dir.path());
    // The git user owns this project's repository (and the data directory its hooks write);
    // the other project is root's.
    for path in [&s.bare, &s.data] {
        ok(Command::new("chown").arg("-R").arg(format!("{0}:{0}", shell.user)).arg(path).output().unwrap());
    }
    let install = Command::new("bash")
        .arg(project_dir().join("install.sh"))
        .args(["--git-shell-commands", "--user", &shell.user, "--prefix"])
        .arg(&s.prefix)
        .arg("--data")
        .arg(&s.data)
        .arg("--bin-dir")
        .arg(hook_bin().parent().unwrap())
        .arg(&s.bare)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    let said = ok(install);
    assert!(said.contains("git-shell-commands/pushgate"), "{said}");
    // The prefix must be reachable by the git user.
    ok(Command::new("chmod").args(["-R", "o+rX"]).arg(&s.prefix).output().unwrap());

    let activities = ok(shell.ssh("pushgate activities"));
    assert!(
        activities.contains("repo") && activities.contains("push") && activities.contains("success"),
        "{activities}"
    );
    assert!(!activities.contains("other"), "only the projects the user can push to: {activities}");
    let envs = ok(shell.ssh("pushgate envs"));
    assert!(envs.contains("repo") && envs.contains("main") && envs.contains("release 1"), "{envs}");
    let mine = jobs.iter().find(|j| j["repo"].as_str().unwrap().ends_with("/repo.git")).unwrap()["id"].clone();
    let log = ok(shell.ssh(&format!("pushgate logs {mine} --follow")));
    assert!(log.contains("building-over-ssh") && log.contains("Deployed release"), "{log}");
    let refused = shell.ssh(&format!("pushgate logs {theirs}"));
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("no activity"),
        "{refused:?}"
    );
    // The data directory and the queue are the admin's: no developer points them elsewhere.
    for option in ["--data /", "--data=/", "--queue postgres://x@127.0.0.1/y"] {
        let out = shell.ssh(&format!("pushgate envs {option}"));
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && said.contains("is the server's to choose"), "{option}: {said}");
    }
    // git-shell allows nothing else.
    assert!(!shell.ssh("cat /etc/passwd").status.success());
}
