//! Releases made of hard links to a slug unpacked once per machine: read-only whoever asks,
//! each environment with its own mounts, and never left without its files by collection.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::push::{files_with, APP_FILE};
use crate::runner::{app_with_hooks, envs, job_state, log_of, runner, serve, slug_of};
use crate::support::Server;

fn app_of(s: &Server, environment: &str) -> PathBuf {
    let env = envs(s).into_iter().find(|e| e["environment"] == environment).expect("deployed");
    PathBuf::from(env["path"].as_str().unwrap()).join("mymagento")
}

/// The shared tree a slug was unpacked into.
fn tree_of(s: &Server, slug: &Path) -> PathBuf {
    let name = slug.file_name().unwrap().to_str().unwrap().trim_end_matches(".tar.zst");
    s.data.join("unpacked").join(name)
}

#[test]
fn a_release_is_links_to_its_slugs_tree_that_nothing_writes_through() {
    let s = Server::new("linked");
    let build = "mkdir -p pub && echo built > pub/built.txt";
    let deploy = "if echo evil >> pub/built.txt 2>/dev/null; then echo 'WROTE''-THROUGH'; fi\n\
                  if chmod u+w pub/built.txt 2>/dev/null; then echo 'CHMOD''ED'; fi\n\
                  if rm -f pub/built.txt 2>/dev/null && [ ! -e pub/built.txt ]; then echo 'REM''OVED'; fi";
    let first = s.commit(&files_with(APP_FILE, &app_with_hooks(build, deploy)), "one");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &first);
    let log = log_of(&s, id);
    assert_eq!(state, "succeeded", "{log}");
    assert!(log.contains("linked from the unpacked slugs"), "{log}");
    for word in ["WROTE-THROUGH", "CHMODED", "REMOVED"] {
        assert!(!log.contains(word), "{word}: {log}");
    }
    let tree = tree_of(&s, &slug_of(&s, id));
    let (shared, released) = (tree.join("pub/built.txt"), app_of(&s, "main").join("pub/built.txt"));
    let (a, b) = (std::fs::metadata(&shared).unwrap(), std::fs::metadata(&released).unwrap());
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "the release links the shared tree's file");
    assert_eq!(b.uid(), 0, "the runner's, not the project user's: it cannot give itself write rights");
    assert_eq!(b.mode() & 0o022, 0, "writable by its owner alone, root: hooks and apps never run as root");
    assert_eq!(std::fs::read_to_string(&shared).unwrap(), "built\n");
    // A redeploy of the same tree links it again: nothing is unpacked.
    let second = s.commit(&files_with(APP_FILE, &app_with_hooks(build, deploy)), "same tree");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, _) = job_state(&s, &second);
    let log = log_of(&s, id);
    assert!(log.contains("Reusing existing build") && log.contains("linked from the unpacked slugs"), "{log}");
    let c = std::fs::metadata(app_of(&s, "main").join("pub/built.txt")).unwrap();
    assert_eq!(c.ino(), a.ino());
    assert_eq!(std::fs::read_to_string(&shared).unwrap(), "built\n");
}

#[test]
fn two_environments_on_one_slug_keep_their_own_mounts() {
    let s = Server::new("linked-mounts");
    let deploy = "echo $MAGENTO_CLOUD_ENVIRONMENT >> var/env.txt";
    s.commit(&files_with(APP_FILE, &app_with_hooks("mkdir -p pub && echo built > pub/built.txt", deploy)), "one");
    s.push(&["HEAD:refs/heads/main", "HEAD:refs/heads/feature"]).assert_accepted();
    serve(&s);
    let (main, feature) = (app_of(&s, "main"), app_of(&s, "feature"));
    assert_eq!(std::fs::read_to_string(main.join("var/env.txt")).unwrap(), "main\n");
    // feature started with a copy of main's data, then wrote its own.
    assert_eq!(std::fs::read_to_string(feature.join("var/env.txt")).unwrap(), "main\nfeature\n");
    assert_ne!(std::fs::read_link(main.join("var")).unwrap(), std::fs::read_link(feature.join("var")).unwrap());
    let ino = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(main.join("pub/built.txt")), ino(feature.join("pub/built.txt")), "one slug, one set of files");
}

#[test]
fn collection_never_removes_a_tree_a_kept_release_uses() {
    let s = Server::new("linked-gc");
    let mut ids = Vec::new();
    for i in 0..3 {
        let build = format!("mkdir -p pub && echo {i} > pub/n.txt");
        let commit = s.commit(&files_with(APP_FILE, &app_with_hooks(&build, "true")), "v");
        s.push(&["HEAD:refs/heads/main"]).assert_accepted();
        // Everything built so far is old: only what kept releases use must stay.
        for id in &ids {
            let slug = slug_of(&s, *id);
            Command::new("touch").args(["-d", "2 hours ago"]).arg(&slug).arg(tree_of(&s, &slug)).status().unwrap();
        }
        assert!(runner(&s, &["serve", "--until-idle", "--keep", "2"]).status.success());
        ids.push(job_state(&s, &commit).0);
    }
    let kept: Vec<String> =
        envs(&s)[0]["releases"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    assert_eq!(kept, vec![ids[1].to_string(), ids[2].to_string()], "--keep 2");
    assert!(!tree_of(&s, &slug_of(&s, ids[0])).exists(), "the tree no kept release uses was collected");
    for id in &ids[1..] {
        assert!(tree_of(&s, &slug_of(&s, *id)).exists(), "the tree of kept release {id} stays");
    }
    // The releases read as they did.
    let release = app_of(&s, "main").parent().unwrap().parent().unwrap().join(ids[1].to_string()).join("mymagento");
    assert_eq!(std::fs::read_to_string(release.join("pub/n.txt")).unwrap(), "1\n");
}

/// The project's exported tree (`DATA/exported/KEY/`): one project per test.
fn exported_of(s: &Server) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(s.data.join("exported"))
        .expect("an exported tree")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn commit_with(s: &Server, app: &str, extra: &[(&str, &str)], symlink: Option<(&str, &str)>, message: &str) -> String {
    let mut files = files_with(APP_FILE, app);
    files.extend_from_slice(extra);
    s.commit(&files, message);
    if let Some((link, target)) = symlink {
        std::os::unix::fs::symlink(target, s.work.join(link)).unwrap();
    }
    s.commit_all(message)
}

#[test]
fn a_build_over_the_exported_tree_writes_only_what_changed_and_never_the_tree() {
    let s = Server::new("layered");
    // The build changes committed files in place (append, chmod, edit, delete) and adds its own.
    let build = "set -e\necho appended >> kept.txt\nchmod +x kept.txt\nsed -i s/one/uno/ replaced.txt\nrm gone.txt\n\
                 mkdir -p pub && echo built > pub/built.txt";
    let app = app_with_hooks(build, "true");
    let same = ("same/a.txt", "same\n");
    let files = [("kept.txt", "kept\n"), ("replaced.txt", "one\n"), ("gone.txt", "gone\n"), same, ("kind", "a file\n")];
    let first = commit_with(&s, &app, &files, None, "one");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &first);
    let log = log_of(&s, id);
    assert_eq!(state, "succeeded", "{log}");
    assert!(log.contains("in layers over it (exported whole)"), "{log}");
    let first_app = app_of(&s, "main");
    assert_eq!(read(first_app.join("kept.txt")), "kept\nappended\n");
    assert_ne!(std::fs::metadata(first_app.join("kept.txt")).unwrap().mode() & 0o111, 0, "chmod +x by the build");
    assert_eq!(read(first_app.join("replaced.txt")), "uno\n");
    assert!(!first_app.join("gone.txt").exists());
    assert_eq!(read(first_app.join("pub/built.txt")), "built\n");
    // None of the build's writes reached the exported tree: it is the commit, as git has it.
    let tree = exported_of(&s).join("tree");
    assert_eq!(read(tree.join("kept.txt")), "kept\n");
    assert_eq!(std::fs::metadata(tree.join("kept.txt")).unwrap().mode() & 0o111, 0);
    assert_eq!(read(tree.join("replaced.txt")), "one\n");
    assert_eq!(read(tree.join("gone.txt")), "gone\n");
    assert!(!tree.join("pub").exists());

    // The next commit changes a file, turns a file into a directory and adds a symbolic link.
    let files = [
        ("kept.txt", "kept\n"),
        ("replaced.txt", "two one\n"),
        ("gone.txt", "gone\n"),
        same,
        ("kind/inner.txt", "in\n"),
    ];
    let second = commit_with(&s, &app, &files, Some(("link", "same/a.txt")), "two");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &second);
    let log = log_of(&s, id);
    assert_eq!(state, "succeeded", "{log}");
    assert!(log.contains("in layers over it (4 paths changed)"), "only what the commit changed: {log}");
    let second_app = app_of(&s, "main");
    assert_ne!(first_app, second_app);
    assert_eq!(read(second_app.join("replaced.txt")), "two uno\n");
    assert_eq!(read(second_app.join("kind/inner.txt")), "in\n");
    assert_eq!(std::fs::read_link(second_app.join("link")).unwrap(), PathBuf::from("same/a.txt"));
    assert_eq!(read(second_app.join("kept.txt")), "kept\nappended\n");
    assert!(!second_app.join("gone.txt").exists());
    // The kept release is as it was: the tree changed by new files, never in place.
    assert_eq!(read(first_app.join("replaced.txt")), "uno\n");
    assert_eq!(read(first_app.join("kind")), "a file\n");
    assert_eq!(read(tree.join("replaced.txt")), "two one\n");
    // A file neither the commit nor the build changed was never copied: both releases and the
    // exported tree hold one file.
    let ino = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
    assert_eq!(ino(first_app.join("same/a.txt")), ino(tree.join("same/a.txt")));
    assert_eq!(ino(second_app.join("same/a.txt")), ino(tree.join("same/a.txt")));
    let shared = std::fs::metadata(second_app.join("same/a.txt")).unwrap();
    assert_eq!((shared.uid(), shared.mode() & 0o022), (0, 0), "the runner's, writable by root alone");
}

#[test]
fn a_build_builds_in_a_copy_while_another_holds_the_exported_tree_and_exports_it_again_after_a_crash() {
    let s = Server::new("layered-busy");
    let app = app_with_hooks("sed -i s/one/uno/ replaced.txt", "true");
    commit_with(&s, &app, &[("replaced.txt", "one\n"), ("other.txt", "other\n")], None, "one");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let exported = exported_of(&s);
    // Another build (a second worker) holds the project's tree: this one exports a copy.
    let lock = exported.with_extension("lock");
    let holder = std::fs::File::options().write(true).open(&lock).unwrap();
    holder.lock().unwrap();
    let second = commit_with(&s, &app, &[("replaced.txt", "two one\n"), ("other.txt", "other\n")], None, "two");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    drop(holder);
    let (id, state) = job_state(&s, &second);
    let log = log_of(&s, id);
    assert_eq!(state, "succeeded", "{log}");
    assert!(log.contains("Another build holds the project's exported tree: exporting a copy"), "{log}");
    assert_eq!(read(app_of(&s, "main").join("replaced.txt")), "two uno\n");
    // A runner killed while it changed the tree leaves no state: the next build exports it whole.
    std::fs::remove_file(exported.join("state")).unwrap();
    std::fs::remove_file(exported.join("tree/other.txt")).unwrap();
    let third = commit_with(&s, &app, &[("replaced.txt", "three one\n"), ("other.txt", "other\n")], None, "three");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    serve(&s);
    let (id, state) = job_state(&s, &third);
    let log = log_of(&s, id);
    assert_eq!(state, "succeeded", "{log}");
    assert!(log.contains("in layers over it (exported whole)"), "{log}");
    assert_eq!(read(app_of(&s, "main").join("other.txt")), "other\n");
    assert_eq!(read(app_of(&s, "main").join("replaced.txt")), "three uno\n");
}
