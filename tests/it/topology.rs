//! Topology changes on real pushes: what the developer sees, what is refused to protect data,
//! and the override. Most cases are real pairs from magento/magento-cloud's history.

use crate::push::{files_with, APP, APP_FILE, ROUTES, ROUTES_FILE, SERVICES, SERVICES_FILE};
use crate::support::{Push, Server};

const ALLOW: &str = "pushgate.allow-data-loss";

fn push_corpus(s: &Server, set: &str) -> Push {
    s.commit_corpus(set);
    s.push(&["HEAD:refs/heads/main"])
}

fn assert_lines(push: &Push, lines: &[&str]) {
    let remote = push.remote();
    for line in lines {
        assert!(remote.lines().any(|l| l.contains(line)), "missing {line:?} in:\n{remote}");
    }
}

#[test]
fn a_service_added_then_upgrades_are_accepted_with_the_right_summary() {
    let s = Server::new("upgrade");
    push_corpus(&s, "magento__magento-cloud__master-20190115-7277467e").assert_accepted();
    let push = push_corpus(&s, "magento__magento-cloud__master-20190327-804067a1");
    push.assert_accepted();
    assert_lines(
        &push,
        &[
            "    elasticsearch (type: elasticsearch:6.5, size: AUTO, disk: 1024)  [added]",
            "    mysql (type: mysql:10.0, size: AUTO, disk: 2048)",
        ],
    );
    assert!(!push.remote().contains("mysql (type: mysql:10.0, size: AUTO, disk: 2048)  ["), "{}", push.remote());
    let push = push_corpus(&s, "magento__magento-cloud__master-20190621-1b1e911a");
    push.assert_accepted();
    assert_lines(
        &push,
        &[
            "    mysql (type: mysql:10.2, size: AUTO, disk: 2048)  [upgraded: mysql:10.0 -> mysql:10.2]",
            "    redis (type: redis:5.0, size: AUTO)  [upgraded: redis:3.0 -> redis:5.0]",
        ],
    );
    let jobs = s.jobs();
    assert_eq!(jobs.len(), 3);
    assert_eq!(jobs.iter().filter(|j| j["state"] == "pending").count(), 1, "the newest push supersedes the others");
}

#[test]
fn a_database_downgrade_is_refused_until_the_loss_is_accepted() {
    // magento-cloud went from MariaDB 10.4 back to 10.3 in August 2020.
    let s = Server::new("downgrade");
    let before = s.commit_corpus("magento__magento-cloud__master-20200728-9e42a67c");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    s.commit_corpus("magento__magento-cloud__master-20200811-580be0a4");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_refused_with(&[
        "    mysql (type: mysql:10.3, size: AUTO, disk: 2048)  [downgraded: mysql:10.4 -> mysql:10.3]",
        "E: This push would destroy data:",
        "downgrading service `mysql` from 10.4 to 10.3: data files are not downgraded in place",
        "instead: keep mysql:10.4",
        "push again with: git push -o pushgate.allow-data-loss",
    ]);
    assert_eq!(s.server_ref("refs/heads/main").as_deref(), Some(before.as_str()));
    assert_eq!(s.jobs().len(), 1, "a refused push leaves no job");

    let push = s.push_with_options(&[ALLOW], &["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert_lines(
        &push,
        &[
            "W: Data will be destroyed (accepted with -o pushgate.allow-data-loss):",
            "    - downgrading service `mysql` from 10.4 to 10.3",
        ],
    );
    assert_eq!(s.jobs().len(), 2);
}

#[test]
fn mariadb_11_4_to_10_6_is_refused() {
    let s = Server::new("downgrade2");
    push_corpus(&s, "magento__magento-cloud__master-20241008-146a7332").assert_accepted();
    push_corpus(&s, "magento__magento-cloud__master-20250211-bc79c9f8")
        .assert_refused_with(&["downgrading service `mysql` from 11.4 to 10.6"]);
}

#[test]
fn redis_replaced_by_valkey_is_accepted_a_cache_keeps_nothing() {
    let s = Server::new("valkey");
    push_corpus(&s, "magento__magento-cloud__master-20250227-0f40c208").assert_accepted();
    let push = push_corpus(&s, "magento__magento-cloud__master-20250408-183c0e46");
    push.assert_accepted();
    assert_lines(
        &push,
        &[
            "    cache (type: valkey:8.0, size: AUTO)  [added]",
            "    redis (redis:7.2)  [removed]",
            "    mysql (type: mysql:11.4, size: AUTO, disk: 5120)  [upgraded: mysql:10.6 -> mysql:11.4]",
        ],
    );
    assert!(!push.remote().contains("destroy"), "{}", push.remote());
}

#[test]
fn an_app_disk_shrink_only_warns() {
    let s = Server::new("shrink");
    push_corpus(&s, "magento__magento-cloud__master-20170530-88fde220").assert_accepted();
    let push = push_corpus(&s, "magento__magento-cloud__master-20170809-f9ffc19a");
    push.assert_accepted();
    assert_lines(&push, &["    mymagento (type: php:7.0, size: AUTO, disk: 2048)  [resized: disk 10240 -> 2048 MB]"]);
}

#[test]
fn removing_solr_needs_the_override() {
    // magento-cloud dropped its Solr service in September 2017.
    let s = Server::new("solr");
    push_corpus(&s, "magento__magento-cloud__master-20170912-32d7c4e3").assert_accepted();
    s.commit_corpus("magento__magento-cloud__master-20170922-81a696e6");
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&[
        "    solr (solr:4.10)  [removed]",
        "removing service `solr` (solr:4.10) deletes its data",
    ]);
    s.push_with_options(&[ALLOW], &["HEAD:refs/heads/main"]).assert_accepted();
}

/// The other refusals, on the example project: each refused, then accepted with the option.
#[test]
fn each_destructive_change_is_refused_and_can_be_overridden() {
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "service type change",
            vec![
                (SERVICES_FILE, SERVICES.replace("mysql:11.4", "postgresql:16")),
                (APP_FILE, APP.replace("\"mysql:mysql\"", "\"mysql:postgresql\"")),
            ],
            "changing service `mysql` from mysql:11.4 to postgresql:16 replaces it with an empty one",
        ),
        (
            "service removed",
            vec![
                (SERVICES_FILE, "redis:\n    type: redis:8.0\n".to_owned()),
                (APP_FILE, APP.replace("    database: \"mysql:mysql\"\n", "")),
            ],
            "removing service `mysql` (mysql:11.4) deletes its data",
        ),
        (
            "service renamed",
            vec![
                (SERVICES_FILE, SERVICES.replace("mysql:\n", "database:\n")),
                (APP_FILE, APP.replace("\"mysql:mysql\"", "\"database:mysql\"")),
            ],
            "renaming service `mysql` to `database` deletes `mysql` and its data",
        ),
        (
            "app renamed",
            vec![
                (APP_FILE, APP.replace("name: mymagento", "name: shop")),
                (ROUTES_FILE, ROUTES.replace("mymagento:http", "shop:http")),
            ],
            "renaming app `mymagento` to `shop` deletes `mymagento` with its disk and mounts",
        ),
        (
            "mount source changed",
            vec![(APP_FILE, APP.replace("\"shared:files/var\"", "\"shared:files/var2\""))],
            "mount `var` of app `mymagento` would start empty: its files stay in local:var",
        ),
    ];
    for (name, files, message) in cases {
        let s = Server::new("destroy");
        s.commit(&files_with("", ""), "base");
        s.push(&["HEAD:refs/heads/main"]).assert_accepted();
        let mut all = files_with("", "");
        for (f, c) in &files {
            all.retain(|(g, _)| g != f);
            all.push((f, c.as_str()));
        }
        let commit = s.commit(&all, name);
        let push = s.push(&["HEAD:refs/heads/main"]);
        assert!(!push.ok, "{name}: accepted:\n{}", push.output);
        assert!(push.remote().contains(message), "{name}: {message:?} missing:\n{}", push.remote());
        assert!(push.remote().contains("instead: "), "{name}: no advice:\n{}", push.remote());
        let push = s.push_with_options(&[ALLOW], &["HEAD:refs/heads/main"]);
        assert!(push.ok, "{name}: the override was refused:\n{}", push.output);
        assert!(push.remote().contains(message), "{name}: the override does not list the loss:\n{}", push.remote());
        assert_eq!(s.server_ref("refs/heads/main").as_deref(), Some(commit.as_str()), "{name}");
    }
}

#[test]
fn a_new_branch_is_compared_with_nothing() {
    let s = Server::new("newbranch");
    s.commit(&files_with("", ""), "base");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    // A new branch with the database downgraded: nothing is deployed there, nothing to destroy.
    s.commit(&files_with(SERVICES_FILE, &SERVICES.replace("mysql:11.4", "mysql:10.6")), "older db");
    let push = s.push(&["HEAD:refs/heads/feature/old-db"]);
    push.assert_accepted();
    assert!(
        push.remote().contains("    mysql (type: mysql:10.6, size: AUTO, disk: 5120)  [added]"),
        "{}",
        push.remote()
    );
    assert!(push.remote().contains("Build #2 queued for environment feature-old-db"), "{}", push.remote());
}

/// `pushgate-runner ARGS --data DATA`, which must succeed.
fn runner(s: &Server, args: &[&str]) {
    let out = std::process::Command::new(crate::support::runner_bin()).args(args).arg("--data").arg(&s.data).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs the runner until the queue is empty (deploys what was pushed).
fn deploy(s: &Server) {
    runner(s, &["serve", "--until-idle"]);
}

/// Pushes a change of code only: the push must show MariaDB 10.6, what runs, upgraded to the
/// branch's 11.4.
fn a_code_change_shows_the_upgrade_from_what_runs(s: &Server) {
    s.write("app/code/A.php", b"<?php\n");
    s.commit_all("code change");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert_lines(
        &push,
        &["    mysql (type: mysql:11.4, size: AUTO, disk: 5120)  [upgraded: mysql:10.6 -> mysql:11.4]"],
    );
}

#[test]
fn the_deployed_topology_is_the_baseline_when_there_is_one() {
    let s = Server::new("deployed");
    // What runs: an older MariaDB than the branch's head will have.
    let older = SERVICES.replace("mysql:11.4", "mysql:10.6");
    s.commit(&files_with(SERVICES_FILE, &older), "base");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    deploy(&s);
    // An upgrade is pushed, and not deployed yet.
    s.commit(&files_with("", ""), "upgrade");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    // The next push is compared with what runs (the release `current` points at), not with the
    // previous commit: the upgrade is still to come.
    a_code_change_shows_the_upgrade_from_what_runs(&s);
}

#[test]
fn a_retargeted_route_is_marked() {
    let s = Server::new("retarget");
    s.commit(&files_with("", ""), "base");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let routes = ROUTES.replace("to: \"https://{default}/\"", "to: \"https://www.{default}/\"");
    s.commit(&files_with(ROUTES_FILE, &routes), "retarget");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert_lines(&push, &[
        "    http://{default}/ redirects to https://www.{default}/  [retargeted: redirect to https://{default}/ -> redirect to https://www.{default}/]",
    ]);
}

#[test]
fn an_unreadable_deployed_topology_refuses_instead_of_comparing_with_less() {
    // The data-loss guard used to fall back to the push's old commit when the deployed topology
    // could not be read: it now refuses, and the pusher may accept the risk explicitly.
    let s = Server::new("unreadable-deployed");
    s.commit(&files_with("", ""), "base");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    deploy(&s);
    // The description of the release `current` points at is damaged.
    let env = s.data.join("environments");
    let project = std::fs::read_dir(&env).unwrap().next().unwrap().unwrap().path();
    let current = std::fs::read_link(project.join("main/current")).unwrap();
    let info = project.join("main").join(format!("{}.json", current.display()));
    std::fs::write(&info, "{not json").unwrap();
    s.write("app/code/A.php", b"<?php\n");
    let head = s.commit_all("code change");
    s.push(&["HEAD:refs/heads/main"]).assert_refused_with(&[
        "E: Branch main (",
        "cannot be checked for data loss: what is deployed cannot be read",
        "-o pushgate.allow-data-loss",
    ]);
    let push = s.push_with_options(&["pushgate.allow-data-loss"], &["HEAD:refs/heads/main"]);
    push.assert_accepted();
    assert!(push.remote().contains("deploying without the data-loss check"), "{}", push.output);
    assert_eq!(s.server_ref("refs/heads/main").as_deref(), Some(head.as_str()));
}

#[test]
fn after_a_rollback_pushes_are_compared_with_what_runs_again() {
    // One record of what is deployed: switching `current` back is all a rollback does, and the
    // next push sees the release it points at.
    let s = Server::new("rolled-back");
    s.commit(&files_with(SERVICES_FILE, &SERVICES.replace("mysql:11.4", "mysql:10.6")), "10.6");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    deploy(&s);
    s.commit(&files_with("", ""), "11.4");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    deploy(&s);
    runner(&s, &["rollback", "main"]);
    a_code_change_shows_the_upgrade_from_what_runs(&s);
}
