//! `pushgate-hook check DIR`: the hook's validation on a checkout, for developers and CI.

use std::io::Read;
use std::process::{Command, Stdio};

use crate::push::{at, files_with, SERVICES, SERVICES_FILE};
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
