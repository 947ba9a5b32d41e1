//! Staging and production: declared by the admin, never pushed to, reached by promotion of the
//! very slug an integration environment runs, each with its own variables.

use std::path::PathBuf;
use std::process::{Child, Command, Output};

use crate::push::{files_with, APP_FILE};
use crate::runner::{app_with_hooks, envs, log_of};
use crate::support::{runner_bin, Server};

fn cli(s: &Server, args: &[&str]) -> Output {
    Command::new(runner_bin()).args(args).arg("--data").arg(&s.data).output().unwrap()
}

fn ok(out: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

fn refused(out: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "accepted: {text}");
    text
}

/// A runner serving in the background until the test ends.
struct Background(Child);

impl Background {
    fn serve(s: &Server) -> Background {
        let child = Command::new(runner_bin())
            .args(["serve", "--data"])
            .arg(&s.data)
            .envs(s.queue_env())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Background(child)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A project whose deploy hook is `deploy`, pushed to `main` and deployed by a runner serving
/// in the background until the test ends.
fn shop_served(label: &str, deploy: &str) -> (Server, Background) {
    let s = Server::new(label);
    s.commit(&files_with(APP_FILE, &app_with_hooks("true", deploy)), "shop");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let runner = Background::serve(&s);
    assert!(crate::runner::eventually(60, || deployed(&s, "main")));
    (s, runner)
}

/// Whether environment `env` runs a release.
fn deployed(s: &Server, env: &str) -> bool {
    envs(s).iter().any(|e| e["environment"] == env)
}

fn app_of(s: &Server, environment: &str) -> PathBuf {
    let env = envs(s)
        .into_iter()
        .find(|e| e["environment"] == environment)
        .unwrap_or_else(|| panic!("{environment} deployed"));
    PathBuf::from(env["path"].as_str().unwrap()).join("mymagento")
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_owned()
}

#[test]
fn master_is_promoted_to_staging_then_production_without_a_rebuild() {
    let s = Server::new("pipeline");
    std::fs::create_dir_all(s.bare.join("pushgate")).unwrap();
    let variables = |production: &str| {
        format!(
            r#"{{"project": {{"env:STAGE": "project-default", "env:TIER": "small"}},
                "types": {{"production": {{"env:TIER": "large"}}}},
                "environments": {{"staging": {{"env:STAGE": "staging-value"}}, "production": {{"env:STAGE": "{production}"}}}}}}"#
        )
    };
    std::fs::write(s.bare.join("pushgate/variables.json"), variables("production-value")).unwrap();
    let build = "mkdir -p pub && date +%s%N > pub/built-at.txt";
    let deploy = "echo \"$STAGE\" > var/stage.txt\necho \"$TIER\" > var/tier.txt";
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks(build, deploy)), "shop");
    s.push(&["HEAD:refs/heads/master"]).assert_accepted();
    let _runner = Background::serve(&s);
    assert!(crate::runner::eventually(60, || envs(&s).iter().any(|e| e["environment"] == "master")));

    // The admin declares staging and production.
    let said = ok(cli(&s, &["env", "create", "repo", "staging", "--type", "staging"]));
    assert!(said.contains("staging environment: deployed by promotion only"), "{said}");
    ok(cli(&s, &["env", "create", "repo", "production", "--type", "production"]));
    // A developer cannot push to them.
    let push = s.push(&["HEAD:refs/heads/production"]);
    assert!(!push.ok, "{}", push.output);
    assert!(
        push.remote().contains("cannot be pushed: `production` is the project's production environment"),
        "{}",
        push.remote()
    );
    assert!(push.remote().contains("pushgate-runner promote repo staging production"), "{}", push.remote());
    assert!(s.server_ref("refs/heads/production").is_none());
    // The push deployed the integration environment only.
    let listed: Vec<(String, String)> = envs(&s)
        .iter()
        .map(|e| (e["environment"].as_str().unwrap().to_owned(), e["type"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(listed, vec![("master".to_owned(), "integration".to_owned())]);
    // The declared ones are listed too, with how they get deployed.
    let all = ok(cli(&s, &["envs"]));
    assert!(
        all.contains(
            "staging  staging  not deployed  (deployed by promotion: pushgate-runner promote repo FROM staging)"
        ),
        "{all}"
    );
    let built_at = read(app_of(&s, "master").join("pub/built-at.txt"));

    // The pipeline's order and what was tested are enforced.
    let out = refused(cli(&s, &["promote", "repo", "master", "production"]));
    assert!(out.contains("production is reached from staging only") && out.contains("--force"), "{out}");
    let out = refused(cli(&s, &["promote", "repo", "master", "staging", "--commit", "0000000"]));
    assert!(out.contains(&format!("`master` runs commit {commit}, not 0000000")), "{out}");

    // master to staging, staging to production: the same build, each with its own variables.
    let out = ok(cli(&s, &["promote", "repo", "master", "staging", "--commit", &commit[..10]]));
    assert!(out.contains("promotion of master") && out.contains("Promoted master to environment staging"), "{out}");
    assert!(out.contains("Reusing existing build for this tree ID"), "{out}");
    assert!(!out.contains("Running hook `build`"), "{out}");
    let out = ok(cli(&s, &["promote", "repo", "staging", "production"]));
    assert!(!out.contains("Running hook `build`"), "{out}");
    for env in ["staging", "production"] {
        assert_eq!(read(app_of(&s, env).join("pub/built-at.txt")), built_at, "{env} runs master's build");
    }
    assert_eq!(read(app_of(&s, "master").join("var/stage.txt")), "project-default");
    assert_eq!(read(app_of(&s, "staging").join("var/stage.txt")), "staging-value");
    assert_eq!(read(app_of(&s, "production").join("var/stage.txt")), "production-value");
    // Per-type variables: production differs from staging, which keeps the project's.
    assert_eq!(read(app_of(&s, "staging").join("var/tier.txt")), "small");
    assert_eq!(read(app_of(&s, "production").join("var/tier.txt")), "large");
    let listed = ok(cli(&s, &["variables", "repo", "production"]));
    assert!(listed.contains("Variables of repo's production environment production:"), "{listed}");
    assert!(listed.contains("env:STAGE = ****  (from environment production, overriding project)"), "{listed}");
    assert!(listed.contains("env:TIER = ****  (from type production, overriding project)"), "{listed}");
    assert!(!listed.contains("production-value"), "values are hidden unless asked: {listed}");
    let shown = ok(cli(&s, &["variables", "repo", "staging", "--values"]));
    assert!(shown.contains("env:STAGE = staging-value  (from environment staging, overriding project)"), "{shown}");
    assert!(shown.contains("env:TIER = small  (from project)"), "{shown}");
    let types: Vec<String> = envs(&s)
        .iter()
        .map(|e| format!("{}={}", e["environment"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(types.len(), 3);
    for t in ["master=integration", "staging=staging", "production=production"] {
        assert!(types.contains(&t.to_owned()), "{types:?}");
    }
    // `env list` says what each is, where it came from, and where it answers.
    let listed = ok(cli(&s, &["env", "list"]));
    assert!(listed.lines().any(|l| l.starts_with("staging  staging  parent master  release")), "{listed}");
    assert!(listed.lines().any(|l| l.starts_with("master  integration  release")), "{listed}");
    let activities = s.jobs();
    assert_eq!(activities.iter().filter(|j| j["type"] == "promote").count(), 2, "each promotion is an activity");

    // Redeploy without a push: new variables take effect, the slug is the same.
    std::fs::write(s.bare.join("pushgate/variables.json"), variables("rotated")).unwrap();
    let out = ok(cli(&s, &["env", "redeploy", "repo", "production"]));
    assert!(!out.contains("Running hook `build`"), "{out}");
    assert_eq!(read(app_of(&s, "production").join("var/stage.txt")), "rotated");
    assert_eq!(read(app_of(&s, "production").join("pub/built-at.txt")), built_at);
    let id = activities.iter().rfind(|j| j["type"] == "promote").unwrap()["id"].as_i64().unwrap();
    assert!(log_of(&s, id).contains("Promoting what environment staging runs"), "{}", log_of(&s, id));
}

#[test]
fn the_pipeline_lints_warn_of_a_missing_config_php_and_refuse_committed_secrets() {
    let s = Server::new("pipeline-lints");
    let composer = r#"{"name": "shop/site", "require": {"magento/product-community-edition": "2.4.8"}}"#;
    let mut files = files_with("", "");
    files.push(("composer.json", composer));
    // No app/etc/config.php: accepted, with a warning on the app's name.
    s.commit(&files, "no config.php");
    let push = s.push(&["HEAD:refs/heads/main"]);
    push.assert_accepted();
    let remote = push.remote();
    assert!(remote.contains(&crate::push::at(APP_FILE, crate::push::APP, "mymagento")), "{remote}");
    assert!(remote.contains("is a Magento application without app/etc/config.php"), "{remote}");
    assert!(remote.contains("app:config:dump"), "{remote}");
    // env.php committed: refused at its first line.
    let mut with_env = files.clone();
    with_env.push(("app/etc/config.php", "<?php\nreturn ['modules' => ['Magento_Store' => 1]];\n"));
    with_env.push(("app/etc/env.php", "<?php\nreturn ['db' => []];\n"));
    s.commit(&with_env, "env.php");
    let push = s.push(&["HEAD:refs/heads/main"]);
    let remote = push.remote();
    assert!(!push.ok, "{remote}");
    assert!(remote.contains("app/etc/env.php:1:1") && remote.contains("app/etc/env.php is committed"), "{remote}");
    assert!(remote.contains("hint: git rm --cached app/etc/env.php"), "{remote}");
    // config.php with the database connection and a payment key: each refused where it stands.
    let config = "<?php\nreturn [\n    'modules' => ['Magento_Store' => 1],\n    'db' => ['connection' => ['default' => []]],\n    \
                  'system' => ['default' => ['payment' => ['braintree' => ['private_key' => 'pk']]]],\n];\n";
    let mut leaky = files.clone();
    leaky.push(("app/etc/config.php", config));
    s.commit(&leaky, "leaky config.php");
    let push = s.push(&["HEAD:refs/heads/main"]);
    let remote = push.remote();
    assert!(!push.ok, "{remote}");
    assert!(remote.contains("app/etc/config.php:4:5") && remote.contains("holds `db`"), "{remote}");
    assert!(
        remote.contains("app/etc/config.php:5:62")
            && remote.contains("holds `system/default/payment/braintree/private_key`"),
        "{remote}"
    );
    assert!(!remote.contains("without app/etc/config.php"), "{remote}");
}

#[test]
fn inactive_environments_keep_their_code_and_the_limit_bounds_the_active_ones() {
    let app = app_with_hooks("true", "echo kept > var/data.txt");
    let (s, _runner) = shop_served("pipeline-lifecycle", "echo kept > var/data.txt");
    let deployed = |env: &str| deployed(&s, env);
    ok(cli(&s, &["env", "limit", "repo", "2"]));
    s.push(&["HEAD:refs/heads/feature-a"]).assert_accepted();
    assert!(crate::runner::eventually(60, || deployed("feature-a")));

    // A third active integration environment is refused at push time, with the ways out.
    let push = s.push(&["HEAD:refs/heads/feature-b"]);
    let remote = push.remote();
    assert!(!push.ok, "{remote}");
    assert!(remote.contains("repo may have 2 active integration environments and has 2 (feature-a, main)"), "{remote}");
    assert!(remote.contains("-o environment.status=inactive"), "{remote}");
    assert!(s.server_ref("refs/heads/feature-b").is_none());
    // Pushed inactive, the code is kept and nothing is deployed.
    let push = s.push_with_options(&["environment.status=inactive"], &["HEAD:refs/heads/feature-b"]);
    push.assert_accepted();
    assert!(
        push.remote().contains("pushed without deploying it (-o environment.status=inactive)"),
        "{}",
        push.remote()
    );
    assert!(s.server_ref("refs/heads/feature-b").is_some());
    assert!(!s.jobs().iter().any(|j| j["environment"] == "feature-b"), "no job for an inactive push: {:?}", s.jobs());

    // Deactivating feature-a asks first, then keeps a final backup and frees it.
    let out = refused(cli(&s, &["env", "deactivate", "repo", "feature-a"]));
    assert!(out.contains("Pass --yes"), "{out}");
    let out = ok(cli(&s, &["env", "deactivate", "repo", "feature-a", "--yes"]));
    assert!(out.contains("Final backup in") && out.contains("mounts.tar.zst"), "{out}");
    assert!(!deployed("feature-a"));
    let backup = std::fs::read_dir(s.data.join("backups")).unwrap().flatten().next().unwrap().path();
    let mounts = std::fs::read_dir(&backup).unwrap().flatten().next().unwrap().path().join("mounts.tar.zst");
    let listing = Command::new("sh").arg("-c").arg(format!("zstd -dc {} | tar -t", mounts.display())).output().unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("mymagento/var/data.txt"), "{}", mounts.display());
    // The environments that run nothing are listed with what to do; the job's log names the
    // environment's paths, not the server's.
    let envs = ok(cli(&s, &["envs"]));
    let inactive = "feature-a  integration  inactive  (activate it: pushgate-runner env activate repo feature-a)";
    let never =
        "feature-b  integration  not deployed  (deploy its branch: pushgate-runner env activate repo feature-b)";
    assert!(envs.contains(inactive) && envs.contains(never), "{envs}");
    assert!(!out.contains(&s.data.display().to_string()), "{out}");
    // Pushes to an inactive environment keep the code without deploying it.
    let next = s.commit(&files_with(APP_FILE, &format!("{app}\n")), "more");
    let push = s.push(&["HEAD:refs/heads/feature-a"]);
    push.assert_accepted();
    assert!(push.remote().contains("pushed without deploying it (the environment is inactive)"), "{}", push.remote());
    assert_eq!(s.server_ref("refs/heads/feature-a").as_deref(), Some(next.as_str()));
    // Activating feature-b (one slot is free again) deploys its branch.
    let out = ok(cli(&s, &["env", "activate", "repo", "feature-b"]));
    assert!(out.contains("Environment feature-b is active") && out.contains("Deployed release"), "{out}");
    assert!(deployed("feature-b") && !deployed("feature-a"));
}

#[test]
fn what_the_data_directory_keeps_is_out_of_other_users_reach() {
    let (s, _runner) = shop_served("private-data", "echo kept > var/data.txt");
    std::fs::write(s.data.join("variables.json"), r#"{"project": {"env:SECRET": "the admin's"}}"#).unwrap();
    let deployed = |env: &str| deployed(&s, env);
    s.push(&["HEAD:refs/heads/feature"]).assert_accepted();
    assert!(crate::runner::eventually(60, || deployed("feature")));
    let out = ok(cli(&s, &["env", "deactivate", "repo", "feature", "--yes"]));
    assert!(out.contains("Final backup in"), "{out}");
    // Another user of the host: the test's directories let it through to the data directory.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("runuser").args(["-u", "nobody", "--"]).args(args).output().unwrap().status.success()
    };
    let backup = std::fs::read_dir(s.data.join("backups")).unwrap().flatten().next().unwrap().path();
    let mounts = std::fs::read_dir(&backup).unwrap().flatten().next().unwrap().path().join("mounts.tar.zst");
    let slug = std::fs::read_dir(s.data.join("slugs")).unwrap().flatten().next().unwrap().path();
    let log = s.data.join("logs/1.log"); // a job's log: paths, build output, a hook's mistakes
    for secret in [s.data.join("queue.sqlite3"), s.data.join("variables.json"), mounts, slug, log] {
        assert!(secret.exists(), "{}", secret.display());
        let path = secret.to_str().unwrap();
        assert!(!as_nobody(&["cat", path]), "another user reads {path}");
    }
    assert!(!as_nobody(&["ls", s.data.to_str().unwrap()]), "another user lists the data directory");
    // What must stay reachable does: the router's workers and the project's user reach a
    // release by its path.
    let release = std::fs::read_dir(s.data.join("environments")).unwrap().flatten().next().unwrap().path();
    let app_yaml = release.join("main/current/mymagento/.magento.app.yaml");
    assert!(as_nobody(&["cat", app_yaml.to_str().unwrap()]), "{} is reachable", app_yaml.display());
}

/// The file `name` somewhere under `dir` (a mount of an environment, found by what a hook wrote).
fn find_file(dir: &std::path::Path, name: &str) -> Option<PathBuf> {
    let out = Command::new("find").arg(dir).args(["-name", name, "-print", "-quit"]).output().unwrap();
    let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!found.is_empty()).then(|| PathBuf::from(found))
}

#[test]
fn a_rollback_typed_while_a_deploy_runs_comes_after_it_and_stays() {
    a_rollback_typed_while_a_deploy_runs_comes_after_it_and_stays_on(Server::new("rollback-race"));
}

#[test]
fn a_rollback_typed_while_a_deploy_runs_comes_after_it_and_stays_on_postgresql() {
    a_rollback_typed_while_a_deploy_runs_comes_after_it_and_stays_on(Server::with_postgres("rollback-race"));
}

fn a_rollback_typed_while_a_deploy_runs_comes_after_it_and_stays_on(s: Server) {
    let _runner = Background::serve(&s);
    let release_of = |env: &str| {
        envs(&s).into_iter().find(|e| e["environment"] == env).map(|e| e["release"].as_str().unwrap().to_owned())
    };
    let mut releases = Vec::new();
    for i in 1..=2 {
        let commit = s.commit(&files_with(APP_FILE, &app_with_hooks(&format!("echo {i}"), "true")), "release");
        s.push(&["HEAD:refs/heads/main"]).assert_accepted();
        assert!(crate::runner::eventually(60, || crate::runner::job_state(&s, &commit).1 == "succeeded"));
        releases.push(release_of("main").unwrap());
    }
    // A third deploy whose hook waits for the test's word, under way.
    let waits = "touch var/waiting\nuntil [ -e var/go ]; do sleep 0.05; done\nrm var/go var/waiting";
    let third = s.commit(&files_with(APP_FILE, &app_with_hooks("echo 3", waits)), "slow deploy");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let envs_dir = s.data.join("environments");
    assert!(crate::runner::eventually(60, || find_file(&envs_dir, "waiting").is_some()), "the deploy hook runs");
    // The rollback is typed now: release 2 runs, so it goes back to release 1.
    let rollback = Command::new(runner_bin())
        .args(["rollback", "main", "--data"])
        .arg(&s.data)
        .envs(s.queue_env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let queued = || s.jobs().iter().any(|j| j["type"] == "rollback" && j["state"] == "pending");
    assert!(crate::runner::eventually(30, queued), "the rollback waits for the deploy: {:?}", s.jobs());
    assert_eq!(release_of("main").as_deref(), Some(releases[1].as_str()), "nothing switched yet");
    let waiting = find_file(&envs_dir, "waiting").unwrap();
    std::fs::write(waiting.with_file_name("go"), "").unwrap();
    let out = rollback.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert_eq!(crate::runner::job_state(&s, &third).1, "succeeded");
    let third_release = crate::runner::job_state(&s, &third).0.to_string();
    assert!(said.contains("once the job of main that runs now has ended"), "{said}");
    assert!(said.contains(&format!("switched from release {third_release} to release {}", releases[0])), "{said}");
    // The deploy's switch came first; the rollback's stays.
    assert_eq!(release_of("main").as_deref(), Some(releases[0].as_str()), "{said}");
}

#[test]
fn an_environment_is_named_by_its_name_or_its_branch() {
    let (s, _runner) = shop_served("env-names", "true");
    let deployed = |env: &str| deployed(&s, env);
    s.push(&["HEAD:refs/heads/feature/Checkout"]).assert_accepted();
    assert!(crate::runner::eventually(60, || deployed("feature-checkout")));
    // What the push printed (the environment's name), and what git shows (the branch).
    ok(cli(&s, &["env", "deactivate", "repo", "feature-checkout", "--yes"]));
    assert!(!deployed("feature-checkout"));
    let out = ok(cli(&s, &["env", "activate", "repo", "feature-checkout"]));
    assert!(out.contains("Environment feature-checkout is active"), "{out}");
    assert!(deployed("feature-checkout"));
    ok(cli(&s, &["env", "deactivate", "repo", "feature/Checkout", "--yes"]));
    assert!(!deployed("feature-checkout"));
    let out = ok(cli(&s, &["env", "activate", "repo", "feature/Checkout"]));
    assert!(out.contains("Environment feature-checkout is active"), "{out}");
    let out = ok(cli(&s, &["env", "redeploy", "repo", "feature/Checkout"]));
    assert!(out.contains("redeploy of environment feature-checkout"), "{out}");
    let out = refused(cli(&s, &["env", "activate", "repo", "no/such-branch"]));
    assert!(out.contains("repo has no branch of environment no-such-branch to deploy"), "{out}");
}

#[test]
fn a_failed_first_deploy_is_tried_again_by_redeploy_without_a_commit() {
    let s = Server::new("retry-first");
    // The deploy hook fails until the admin fixes what it needs (here: a file in its mount).
    let hook = "touch var/attempted\ntest -e var/ready || { echo 'the database is not ready'; exit 3; }";
    let commit = s.commit(&files_with(APP_FILE, &app_with_hooks("true", hook)), "first");
    s.push(&["HEAD:refs/heads/main"]).assert_accepted();
    let _runner = Background::serve(&s);
    assert!(crate::runner::eventually(60, || crate::runner::job_state(&s, &commit).1 == "failed"));
    assert!(envs(&s).is_empty(), "nothing deployed");
    let attempted = find_file(&s.data.join("environments"), "attempted").expect("the hook ran");
    std::fs::write(attempted.with_file_name("ready"), "").unwrap();
    // A retried push obeys what a push obeys: the branch declared production since is
    // deployed by promotion only.
    ok(cli(&s, &["env", "create", "repo", "main", "--type", "production"]));
    let out = refused(cli(&s, &["env", "redeploy", "repo", "main"]));
    assert!(
        out.contains("environment main is the project's production environment: it is deployed by promotion only"),
        "{out}"
    );
    ok(cli(&s, &["env", "create", "repo", "main", "--type", "integration"]));
    let out = ok(cli(&s, &["env", "redeploy", "repo", "main"]));
    assert!(out.contains("environment main was never deployed; its last push"), "{out}");
    assert!(envs(&s).iter().any(|e| e["environment"] == "main"), "{out}");
    let jobs = s.jobs();
    let retried: Vec<_> = jobs.iter().filter(|j| j["commit"] == commit.as_str()).map(|j| &j["state"]).collect();
    assert_eq!(retried, ["failed", "succeeded"], "the same commit, once more");
}
