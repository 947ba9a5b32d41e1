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
