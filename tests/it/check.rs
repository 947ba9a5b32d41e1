//! `pushgate-hook check DIR`: the hook's validation on a checkout, for developers and CI.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::push::{at, files_with, APP, APP_FILE, SERVICES, SERVICES_FILE};
use crate::support::{hook_bin, TempDir};

fn write_files(dir: &TempDir, files: &[(&str, &str)]) {
    for (path, content) in files {
        let full = dir.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }
}

#[test]
fn check_reports_like_the_hook() {
    let dir = TempDir::new("check");
    write_files(&dir, &files_with("", ""));
    let out = Command::new(hook_bin()).arg("check").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("Configuration is valid.")
            && stdout.contains("mymagento (type: php:8.4, size: AUTO, disk: 5120)"),
        "{stdout}"
    );

    let bad = SERVICES.replace("redis:8.0", "redis:8.0\n    disk: 512");
    write_files(&dir, &files_with(SERVICES_FILE, &bad));
    let out = Command::new(hook_bin()).arg("check").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("E: Error parsing configuration files:"), "{stdout}");
    assert!(
        stdout
            .contains(&format!("{}redis.disk: `redis:8.0` keeps its data in memory", at(SERVICES_FILE, &bad, "512\n"))),
        "{stdout}"
    );
    assert!(stdout.contains("hint: remove `disk`, or use `redis-persistent`"), "{stdout}");
}

#[test]
fn a_closed_output_pipe_does_not_panic() {
    let dir = TempDir::new("pipe");
    let bad = SERVICES.replace("mysql:11.4", "mysqll:11.4");
    write_files(&dir, &files_with(SERVICES_FILE, &bad));
    let mut child = Command::new(hook_bin())
        .arg("check")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader goes away before anything is written
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "exit 1 (refused), not a panic: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn check(dir: &TempDir) -> String {
    let out = Command::new(hook_bin()).arg("check").arg(dir.path()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn hints_offer_real_releases_only() {
    // The registry holds `2.99` and `1.99` as internal aliases of OpenSearch; a developer must
    // be offered releases.
    let dir = TempDir::new("versions");
    let services = format!("{SERVICES}search:\n    type: opensearch:2.4\n    disk: 512\n");
    write_files(&dir, &files_with(SERVICES_FILE, &services));
    let out = check(&dir);
    let hint = out.lines().find(|l| l.contains("hint: supported versions:")).unwrap_or_else(|| panic!("{out}"));
    assert!(hint.contains("2.19") && !hint.contains(".99"), "{hint}");
}

#[test]
fn a_misspelt_relationships_key_is_one_error_not_a_warning_per_service() {
    let dir = TempDir::new("relationship");
    write_files(&dir, &files_with(APP_FILE, &APP.replace("relationships:", "relationship:")));
    let out = check(&dir);
    assert!(out.contains("unknown key `relationship`") && out.contains("did you mean `relationships`?"), "{out}");
    assert!(!out.contains("is not used by any relationship"), "{out}");
}

#[test]
fn a_tab_is_shown_so_that_the_caret_lines_up() {
    let dir = TempDir::new("tab");
    write_files(&dir, &files_with(SERVICES_FILE, "mysql:\n    type: mysql:11.4\n\tdisk: 5120\n"));
    let out = check(&dir);
    assert!(out.contains(".magento/services.yaml:3:1: a tab where YAML allows only spaces"), "{out}");
    assert!(out.contains("3 | →disk: 5120\n") && out.contains("  | ^\n"), "{out}");
}

#[test]
fn check_finds_the_project_from_a_subdirectory_and_says_when_there_is_none() {
    let dir = TempDir::new("subdir");
    write_files(&dir, &files_with("", ""));
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::create_dir_all(dir.join("app/code/Vendor")).unwrap();
    let out = Command::new(hook_bin()).arg("check").current_dir(dir.join("app/code/Vendor")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(&format!("Validating configuration files in {}\n", dir.path().display())), "{stdout}");

    // A project in a larger repository (a monorepo): the directory given, not the checkout's
    // top, which holds no configuration.
    let mono = TempDir::new("monorepo");
    std::fs::create_dir_all(mono.join(".git")).unwrap();
    std::fs::create_dir_all(mono.join("services/shop/app/code")).unwrap();
    let shop = mono.join("services/shop");
    for (path, text) in files_with("", "") {
        let at = shop.join(path);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, text).unwrap();
    }
    for from in [shop.clone(), shop.join("app/code")] {
        let out = Command::new(hook_bin()).arg("check").arg(&from).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains(&format!("Validating configuration files in {}\n", shop.display())), "{stdout}");
    }

    let empty = TempDir::new("no-app");
    let out = check(&empty);
    assert!(out.contains("    - no application configuration: `.magento.app.yaml` is missing [no-app]"), "{out}");
    assert!(!out.contains(":1:1"), "no position in a file that does not exist: {out}");
}

#[test]
fn an_error_does_not_repeat_itself_in_its_causes() {
    // A runner command on a queue that is not a database: one line says it all.
    let dir = TempDir::new("not-a-queue");
    std::fs::write(dir.join("queue.sqlite3"), vec![b'x'; 8192]).unwrap();
    let out = Command::new(crate::support::runner_bin()).args(["jobs", "--data"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.starts_with("error: the build queue"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    for (i, line) in lines.iter().enumerate().skip(1) {
        let cause = line.trim_start_matches("caused by: ");
        let core = cause.rsplit(": ").next().unwrap();
        assert!(!lines[..i].iter().any(|l| l.contains(core)), "line {i} repeats: {stderr}");
    }
}

#[test]
fn runner_commands_on_a_data_directory_without_a_queue_say_so() {
    let dir = TempDir::new("no-queue");
    for args in [&["jobs"][..], &["envs"], &["logs", "1"], &["cancel", "1"], &["rollback", "main"]] {
        let out = Command::new(crate::support::runner_bin()).args(args).arg("--data").arg(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(
            stderr.contains("there is no pushgate queue in") && stderr.contains("Check --data"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!dir.join("queue.sqlite3").exists(), "no empty queue was created");
}
