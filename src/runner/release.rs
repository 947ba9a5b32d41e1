//! The release phase: the slugs unpacked into a new release (complete before it exists), its
//! mounts linked, made read-only; `hooks.deploy` under maintenance; `current` switched in one
//! step; `hooks.post_deploy`; old releases and unused slugs collected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::build::{AppPlan, Built};
use super::hooks::{self, Hook, JobLog};
use super::{env, slug, Config, Control, Halt, Invalid, RunnerError};
use crate::platform::sandbox::Jail;
use crate::platform::{Deployment, Prepared};
use crate::queue::Job;
use crate::store::deployed::{self, EnvDir, ReleaseInfo};

/// Deploys what the build phase built as a new release of the job's environment; returns the
/// release's id.
pub(super) fn deploy(
    config: &Config,
    job: &Job,
    log: &mut JobLog,
    control: &Control,
    built: &Built,
) -> Result<String, Halt> {
    let Built { plans, topology, format, project, declared, user, .. } = built;
    let (format, project) = (*format, project.as_str());
    let variables = declared.runtime_variables(job.environment.as_str());
    let env_dir = EnvDir::new(&config.data_dir, &job.repo, &job.environment);
    // Each service with a backend is the environment's own (provisioned once); the others keep
    // the endpoints the admin declared.
    std::fs::create_dir_all(&env_dir.root).map_err(|source| RunnerError::Io {
        action: "creating",
        path: env_dir.root.clone(),
        source,
    })?;
    // A new environment starts from its parent's data, unless the push said otherwise.
    let parent = new_environment_parent(config, job, &env_dir, &built.plan.new_environment);
    if let Some(parent) = &parent {
        log.phase("deploy", &format!("New environment: it starts with a copy of the data of environment {}", parent.1));
        env_dir.set_parent(&parent.1)?;
        copy_mounts(&config.data(), &parent.0, &env_dir, user.as_ref(), log)?;
    }
    let disks = match user {
        Some(user) => bound_disks(&config.data(), &env_dir, topology, &declared.sandbox, user, log)?,
        None => false,
    };
    let parent_key = parent.as_ref().map(|(dir, _)| crate::platform::site_key(&dir.root));
    let key = crate::platform::site_key(&env_dir.root);
    let target = crate::platform::services::Target {
        key: &key,
        env_dir: &env_dir.root,
        user: user.as_ref(),
        parent: parent_key.as_deref(),
        sandbox: &config.sandbox,
        limits: declared.sandbox.limits(),
        connections: declared.sandbox.connections(),
    };
    let (provisioned, shared) = crate::platform::services::provision(
        &config.data(),
        &target,
        topology,
        &declared.services,
        built.plan.services.as_ref(),
    )
    .map_err(|why| RunnerError::Platform(format!("provisioning the environment's services: {why}")))?;
    for warning in shared {
        log.phase("deploy", &format!("W: {warning}"));
    }
    let mut services = declared.services.clone();
    services.extend(provisioned);
    let services = &services;
    declared.warn_unresolved(plans, topology, services, log);
    // The environment's network (where the runner confines it): its services, nothing else of
    // the host; the deploy hooks and the apps join it.
    let netns = match crate::platform::network::confines(&config.sandbox) {
        true => {
            let network = crate::platform::network::Network::of(&config.data(), &key);
            // The project's own services only: services.json may declare endpoints for others.
            let own: serde_json::Map<String, serde_json::Value> = services
                .iter()
                .filter(|(name, _)| topology.services.contains_key(*name))
                .map(|(name, endpoint)| (name.clone(), endpoint.clone()))
                .collect();
            let (ns, unreachable, proxy) = network
                .prepare(&own, &declared.sandbox.egress())
                .map_err(|why| RunnerError::Platform(format!("the environment's network: {why}")))?;
            for warning in unreachable {
                log.phase("deploy", &format!("W: {warning}"));
            }
            Some((ns, proxy))
        }
        false => None,
    };
    let proxy = netns.as_ref().is_some_and(|(_, proxy)| *proxy);
    let netns = netns.map(|(ns, _)| ns);
    let id = job.id.to_string();
    let release = match assemble(&config.data(), &env_dir, job, built, log) {
        Ok(release) => release,
        Err(e) => {
            // Half made (a full disk): nothing of it stays, for the space and for rollback.
            let _ = deployed::remove_release(&env_dir.partial_release(&id));
            let _ = deployed::remove_release(&env_dir.release(&id));
            let _ = std::fs::remove_file(env_dir.releases().join(format!("{id}.json")));
            return Err(e.into());
        }
    };
    // The slugs, packed meanwhile, complete before anything of the environment changes.
    if let Err(e) = built.slugs_packed(config, log, control) {
        deployed::remove_release(&release)?;
        let _ = std::fs::remove_file(env_dir.releases().join(format!("{id}.json")));
        log.phase("deploy", &format!("Release {id} discarded: its slug could not be made"));
        return Err(e);
    }
    control.check()?;

    let branch = job.ref_name.strip_prefix("refs/heads/").unwrap_or(&job.ref_name);
    let runtime_env = |plan: &AppPlan, app_dir: &Path| {
        let ctx = env::AppContext {
            format,
            app_name: &plan.name,
            app_dir,
            tree_id: &plan.tree_id,
            project,
            config: &plan.config,
            variables: &variables,
        };
        let mut env = env::runtime(&ctx, job.environment.as_str(), branch, topology, services);
        if proxy {
            // The way out of the environment's network: its proxy.
            env.extend(crate::platform::egress::variables());
        }
        env
    };
    let hook_of = |plan: &AppPlan, name: &str| -> Option<String> {
        plan.config.get("hooks").and_then(|h| h.get(name)).and_then(|s| s.as_str()).map(str::to_owned)
    };

    // The hooks run as the project's user (when the runner can switch): the mounts are its own,
    // the release is not (it stays read-only to the hooks and the apps).
    if let Some(user) = user {
        let mounts = env_dir.mounts_created()?;
        // With disks, `mounts` itself stays root's (root mounts there): each app's disk is given.
        let given = match disks {
            false => vec![mounts],
            true => crate::platform::disk::apps(&env_dir.root).iter().map(|app| mounts.join(app)).collect(),
        };
        for dir in given {
            crate::platform::users::give(config.data().root(), &config.data().environments(), &dir, user).map_err(
                |source| RunnerError::Io { action: "giving to the project's user", path: dir.clone(), source },
            )?;
        }
    }
    // Runs hook `name` of an app in the new release, with the runtime environment.
    let run_hook = |plan: &AppPlan, name: &'static str, log: &mut JobLog| -> Result<(), Halt> {
        let Some(script) = hook_of(plan, name) else { return Ok(()) };
        let app_dir = release.join(&plan.name);
        let env = runtime_env(plan, &app_dir);
        let record = env_dir.hook_record();
        let mounts = env_dir.mounts_created()?;
        let hook = Hook {
            name,
            script: &script,
            cwd: &app_dir,
            env: &env,
            timeout: declared.sandbox.time_limit(config.hook_timeout),
            record: &record,
            user: user.as_ref(),
            sandbox: &config.sandbox,
            // The release read-only, its mounts writable, its services on its network.
            jail: Jail {
                writable: vec![&mounts],
                readable: vec![&release],
                hidden: vec![&config.data_dir, job.repo.path()],
                network: true,
                netns: netns.as_deref(),
                limits: declared.sandbox.limits(),
            },
        };
        hooks::run(&hook, log, control)
    };
    // A release that never served: rollback must not offer it.
    let discard = |log: &mut JobLog| -> Result<(), RunnerError> {
        deployed::remove_release(&release)?;
        let _ = std::fs::remove_file(env_dir.releases().join(format!("{id}.json")));
        log.phase(
            "deploy",
            &format!(
                "Release {id} discarded; `current` still points at release {}",
                env_dir.current_release().unwrap_or_else(|| "none".into())
            ),
        );
        Ok(())
    };
    // The site is checked before anything changes: a runtime the host lacks, or a router
    // configuration nginx refuses, fails the job with the previous release still serving.
    let prepared = match config.platform.as_deref() {
        Some(platform) => {
            let env_of = |name: &str, dir: &Path| {
                plans.iter().find(|p| p.name == name).map(|p| runtime_env(p, dir)).unwrap_or_default()
            };
            // The repository as this machine reads it (a runner elsewhere: its mirror).
            let repository = config.data().repository(&job.repo).display().to_string();
            let deployment = Deployment {
                env_dir: &env_dir.root,
                repo: &repository,
                branch,
                environment: job.environment.as_str(),
                plan: &built.plan,
                topology,
                env_of: &env_of,
            };
            match platform.prepare(&deployment) {
                Ok(prepared) => {
                    for warning in &prepared.warnings {
                        log.phase("deploy", &format!("W: {warning}"));
                    }
                    Some((platform, prepared))
                }
                Err(why) => {
                    discard(log)?;
                    return Err(RunnerError::Platform(why).into());
                }
            }
        }
        None => None,
    };
    // Without a deploy hook there is nothing to wait for: no maintenance window.
    let maintenance = Prepared::needs_maintenance(&built.plan);
    if maintenance {
        env_dir.set_maintenance(true, &format!("deploying job {}", job.id))?;
        log.phase("deploy", &format!("Environment {} in maintenance", job.environment));
    }
    for plan in plans {
        if let Err(e) = run_hook(plan, "deploy", log) {
            env_dir.set_maintenance(false, "")?;
            if maintenance {
                log.phase("deploy", "Maintenance ended");
            }
            discard(log)?;
            return Err(e);
        }
    }
    // What is deployed is `current` and the release's description: one rename records both.
    env_dir.switch(&id)?;
    let activated = match &prepared {
        Some((platform, prepared)) => platform.activate(&env_dir.root, prepared),
        None => Ok(()),
    };
    env_dir.set_maintenance(false, "")?;
    activated.map_err(RunnerError::Platform)?;
    log.phase(
        "deploy",
        &format!("`current` switched to release {id}{}", if maintenance { "; maintenance ended" } else { "" }),
    );
    for plan in plans {
        if let Err(e) = run_hook(plan, "post_deploy", log) {
            log.phase("post_deploy", &format!("Warning: {e}; the release is deployed"));
        }
    }
    if let Some((_, prepared)) = &prepared {
        log.phase("deploy", &format!("Environment {} is live at:", job.environment));
        for url in prepared.urls() {
            let primary = if Some(url.as_str()) == prepared.primary_url() { " (primary)" } else { "" };
            log.phase("deploy", &format!("  {url}{primary}"));
        }
    }
    let removed = env_dir.prune(config.keep_releases)?;
    if !removed.is_empty() {
        log.phase("deploy", &format!("Removed old releases {}", removed.join(", ")));
    }
    collect_slugs(config, log);
    Ok(id)
}

/// The environment a new one starts from: the one the push named, else the default branch's;
/// None when this one exists already, the push said not to, or the parent is not deployed.
fn new_environment_parent(
    config: &Config,
    job: &Job,
    env_dir: &EnvDir,
    new: &crate::core::plan::NewEnvironment,
) -> Option<(EnvDir, String)> {
    if !new.clone_parent || env_dir.current_release().is_some() {
        return None;
    }
    let name = match &new.parent {
        Some(p) => p.clone(),
        None => crate::core::ids::environment_name(&crate::platform::default_branch(
            &config.data().repository(&job.repo).display().to_string(),
        )?),
    };
    let name = crate::core::EnvName::parse(&name).ok()?;
    if name == job.environment {
        return None;
    }
    let parent = EnvDir::new(&config.data_dir, &job.repo, &name);
    parent.current_release().is_some().then(|| (parent, name.to_string()))
}

/// Puts each app's mounts on a disk of the size it declares, where the runner can make disks
/// (see [`crate::platform::disk`]), and nothing else in `mounts` (an app without mounts
/// writes nowhere); the deploy log says what changed, or why there are no disks. Whether
/// there are.
fn bound_disks(
    data: &crate::store::DataDir,
    env_dir: &EnvDir,
    topology: &crate::topology::Topology,
    policy: &crate::platform::sandbox::Policy,
    user: &crate::platform::users::User,
    log: &mut JobLog,
) -> Result<bool, RunnerError> {
    let apps: Vec<_> = topology.apps.iter().filter(|(_, app)| !app.mounts.is_empty()).collect();
    if let Err(why) = crate::platform::disk::usable() {
        if !apps.is_empty() {
            log.phase("deploy", &format!("W: the apps' disks are not bounded on this server: {why}"));
        }
        return Ok(false);
    }
    for (name, app) in apps {
        let mb = policy.disk(app.disk).map_err(|why| RunnerError::Platform(format!("app `{name}` {why}")))?;
        let mut stop = || crate::platform::pause(data, &env_dir.root);
        let size = crate::platform::disk::Size { mb, reserve: policy.disk_reserve() };
        let said = crate::platform::disk::bound(&env_dir.root, name, Some(size), user, &mut stop)
            .map_err(|why| RunnerError::Platform(format!("the disk of app `{name}`: {why}")))?;
        for line in said {
            log.phase("deploy", &line);
        }
    }
    let said = crate::platform::disk::confine(&env_dir.root).map_err(RunnerError::Platform)?;
    for line in said {
        log.phase("deploy", &line);
    }
    Ok(true)
}

/// Copies the parent's mounts into an environment: into a directory of its own first, then
/// swapped in, so that a copy cut short is never taken for the environment's files (the
/// releases' links go through the `mounts` path, which stays). An environment running on
/// disks gets the copy on each disk, beside its files, then swapped for them.
pub(super) fn copy_mounts(
    data: &crate::store::DataDir,
    parent: &EnvDir,
    env_dir: &EnvDir,
    user: Option<&crate::platform::users::User>,
    log: &mut JobLog,
) -> Result<(), RunnerError> {
    let from = parent.mounts();
    if !from.is_dir() {
        return Ok(());
    }
    let disks = crate::platform::disk::apps(&env_dir.root);
    if let (Some(user), false) = (user, disks.is_empty()) {
        if env_dir.current_release().is_some() {
            return copy_onto_disks(data, parent, env_dir, &disks, user, log);
        }
        // A new environment's disks (made by a first deploy cut short) go with what they hold.
        crate::platform::disk::release(&env_dir.root).map_err(RunnerError::Platform)?;
        let images = crate::platform::disk::images(&env_dir.root);
        std::fs::remove_dir_all(&images).map_err(io_error("removing", &images))?;
    }
    let partial = env_dir.root.join("mounts.copying");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&env_dir.root).map_err(io_error("creating", &env_dir.root))?;
    std::fs::create_dir(&partial).map_err(io_error("creating", &partial))?;
    let mut cp = std::process::Command::new("cp");
    cp.arg("-a").arg("--no-target-directory").arg(&from).arg(&partial);
    if let Some(user) = user {
        // The parent's mounts are the project's to change while they are read: the copy is
        // made as the project's user, who can read nothing there that is not its own already.
        std::os::unix::fs::lchown(&partial, Some(user.uid), Some(user.gid)).map_err(io_error("giving", &partial))?;
        use std::os::unix::process::CommandExt;
        cp.uid(user.uid).gid(user.gid);
    }
    let out = cp.output().map_err(io_error("copying", &from))?;
    if !out.status.success() {
        return Err(RunnerError::Platform(format!(
            "copying the parent's mounts: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let old = env_dir.root.join("mounts.replaced");
    let _ = std::fs::remove_dir_all(&old);
    if env_dir.mounts().exists() {
        std::fs::rename(env_dir.mounts(), &old).map_err(io_error("replacing", &env_dir.mounts()))?;
    }
    std::fs::rename(&partial, env_dir.mounts()).map_err(io_error("completing", &env_dir.mounts()))?;
    let _ = std::fs::remove_dir_all(&old);
    log.phase("deploy", &format!("Copied the mounts' files of the parent environment ({})", from.display()));
    Ok(())
}

/// The parent's files of each app with a disk, copied onto that disk and swapped for its own,
/// as the project's user (the files are its own, and it reads nothing there that is not).
fn copy_onto_disks(
    data: &crate::store::DataDir,
    parent: &EnvDir,
    env_dir: &EnvDir,
    apps: &[String],
    user: &crate::platform::users::User,
    log: &mut JobLog,
) -> Result<(), RunnerError> {
    use std::os::unix::process::CommandExt;
    const SWAP: &str = r#"set -e
cd "$1"
rm -rf .pushgate-copying .pushgate-replaced
cp -a "$2" .pushgate-copying
mkdir .pushgate-replaced
find . -mindepth 1 -maxdepth 1 ! -name .pushgate-copying ! -name .pushgate-replaced -exec mv -t .pushgate-replaced -- {} +
find .pushgate-copying -mindepth 1 -maxdepth 1 -exec mv -t . -- {} +
rmdir .pushgate-copying
rm -rf .pushgate-replaced"#;
    for app in apps {
        let from = parent.mounts().join(app);
        if !from.is_dir() {
            continue;
        }
        let mut stop = || crate::platform::pause(data, &env_dir.root);
        crate::platform::disk::bound(&env_dir.root, app, None, user, &mut stop).map_err(RunnerError::Platform)?;
        let out = std::process::Command::new("sh")
            .args(["-c", SWAP, "sh"])
            .arg(env_dir.mounts().join(app))
            .arg(&from)
            .uid(user.uid)
            .gid(user.gid)
            .output()
            .map_err(|source| RunnerError::Io { action: "copying", path: from.clone(), source })?;
        if !out.status.success() {
            return Err(RunnerError::Platform(format!(
                "copying the parent's mounts of app `{app}` onto its disk (which needs room for both copies \
                 until the swap): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        log.phase(
            "deploy",
            &format!("Copied the mounts' files of app `{app}` of the parent environment ({})", from.display()),
        );
    }
    Ok(())
}

/// Deletes slugs no kept release needs (older than an hour, so a build in progress keeps its own).
/// A shared directory is left alone: other machines' releases need its slugs, and this one
/// cannot see them. Slugs fetched from an S3 store are this machine's copies: they are collected.
fn collect_slugs(config: &Config, log: &mut JobLog) {
    if matches!(config.slugs, Some(super::slugs::SharedSlugs::Dir(_))) {
        return;
    }
    let needed: std::collections::HashSet<String> = deployed::all(&config.data_dir)
        .iter()
        .flat_map(|env| env.list().into_iter().filter_map(|r| env.info(&r)).collect::<Vec<_>>())
        .flat_map(|info| info.slugs)
        .collect();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let data = config.data();
    for entry in std::fs::read_dir(data.slugs()).into_iter().flatten().flatten() {
        let path = entry.path().display().to_string();
        let old = entry.metadata().and_then(|m| m.modified()).map(|t| t < hour_ago).unwrap_or(false);
        if old && !needed.contains(&path) && std::fs::remove_file(entry.path()).is_ok() {
            log.phase("slug", &format!("Collected unused slug {path}"));
        }
    }
    // A shared tree goes with its slug (kept releases keep their links to its files either
    // way); so does a tree a runner died making. Only once it is an hour old: after a build in
    // layers, a tree is made, and linked by its release, before its slug is packed.
    let needed_keys: std::collections::HashSet<String> =
        needed.iter().map(|s| super::unpacked::key_of(Path::new(s))).collect();
    for entry in std::fs::read_dir(data.unpacked()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry.metadata().and_then(|m| m.modified()).map(|t| t < hour_ago).unwrap_or(false);
        let orphan = old && (name.contains(".partial-") || !needed_keys.contains(&name) && !data.slug(&name).exists());
        if orphan && super::unpacked::remove(&entry.path()).is_ok() {
            log.phase("slug", &format!("Collected the unpacked slug {}", entry.path().display()));
        }
    }
}

/// Makes release `JOB` of the environment from the built slugs: under another name, each app
/// linked from its slug's shared tree (`unpacked`), each mount linked to its writable
/// directory, its directories made read-only, renamed into place, described. It exists only
/// once complete. Returns its path.
fn assemble(
    data: &crate::store::DataDir,
    env_dir: &EnvDir,
    job: &Job,
    built: &Built,
    log: &mut JobLog,
) -> Result<std::path::PathBuf, RunnerError> {
    let Built { plans, topology, .. } = built;
    let id = job.id.to_string();
    let release = env_dir.release(&id);
    // A release exists only once complete: it is unpacked under another name, then renamed.
    let partial = env_dir.partial_release(&id);
    deployed::remove_release(&release)?; // a retry after a crash starts clean
    deployed::remove_release(&partial)?;
    // Each app is linked from its slug's shared tree (unpacked once on this machine); where a
    // link cannot be made (another file system), it is unpacked.
    let mut linked = true;
    for plan in plans {
        let app_root = partial.join(&plan.name);
        let tree = super::unpacked::ensure(data, &plan.slug)?;
        if super::unpacked::link_into(&tree, &app_root).is_err() {
            deployed::remove_release(&app_root)?;
            slug::unpack(&plan.slug, &app_root)?;
            linked = false;
        }
    }
    log.phase(
        "deploy",
        &if linked {
            format!("Release {id} linked from the unpacked slugs into {}", release.display())
        } else {
            format!("Unpacking release {id} into {}", release.display())
        },
    );
    for plan in plans {
        let app_root = partial.join(&plan.name);
        let mounts = topology.apps.get(&plan.name).map(|a| a.mounts.clone()).unwrap_or_default();
        for (path, mount) in &mounts {
            let source = crate::paths::normalize(&mount.source_path)
                .filter(|p| !p.is_empty())
                .ok_or_else(|| Invalid::MountSource { path: path.clone(), source_path: mount.source_path.clone() })?;
            let keep_rel = format!("{}/{source}", plan.name);
            let keep = crate::paths::mkdirs_beneath(&env_dir.mounts_created()?, &keep_rel).map_err(|source| {
                RunnerError::Io { action: "creating", path: env_dir.mounts().join(&keep_rel), source }
            })?;
            let link = link_mount(&app_root, path, &keep)?;
            if let Some(user) = &built.user {
                // The link is the project's, as what it leads to is: the router follows a link
                // only to what the link's owner owns (`disable_symlinks if_not_owner`).
                std::os::unix::fs::lchown(&link, Some(user.uid), Some(user.gid)).map_err(|source| RunnerError::Io {
                    action: "giving to the project's user",
                    path: link,
                    source,
                })?;
            }
            log.phase("deploy", &format!("Mount {path} of `{}` -> {}", plan.name, keep.display()));
        }
    }
    if linked {
        super::unpacked::seal_directories(&partial)?; // its files are the shared, read-only ones
    } else {
        deployed::make_read_only(&partial)?;
    }
    std::fs::rename(&partial, &release).map_err(|source| RunnerError::Io {
        action: "completing",
        path: release.clone(),
        source,
    })?;
    env_dir.write_info(&ReleaseInfo {
        release: id.clone(),
        job: job.id,
        repo: job.repo.clone(),
        environment: job.environment.clone(),
        commit: job.commit.clone(),
        slugs: plans.iter().map(|p| p.slug.display().to_string()).collect(),
        topology: serde_json::to_value(topology).unwrap_or_default(),
        created_at: crate::core::Timestamp::now(),
        branch: job.ref_name.strip_prefix("refs/heads/").map(str::to_owned),
        plan: Some(built.plan.clone()),
    })?;
    Ok(release)
}

/// Links mount `path` of the app unpacked at `app_root` to the writable directory `keep`.
///
/// The path is resolved through the release as unpacked, links included, and must stay inside
/// the app ([`crate::paths::resolve_beneath`]); directories are created without following a
/// link; only what stands at the resolved place inside the app is replaced. Nothing outside
/// the release is ever removed or replaced, whatever links the commit or its build made.
fn link_mount(app_root: &Path, path: &str, keep: &Path) -> Result<PathBuf, RunnerError> {
    let rel = crate::paths::resolve_beneath(path, &mut crate::paths::Disk(app_root))
        .map_err(|escape| Invalid::MountOutside { path: path.to_owned(), escape })?;
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", &rel));
    if name.is_empty() {
        return Err(Invalid::MountIsRoot(path.to_owned()).into());
    }
    let dir = crate::paths::mkdirs_beneath(app_root, parent).map_err(io_error("creating", &app_root.join(parent)))?;
    let at = dir.join(name);
    if let Ok(meta) = std::fs::symlink_metadata(&at) {
        // remove_dir_all does not follow links: only the app's own files go.
        let removed = if meta.is_dir() { std::fs::remove_dir_all(&at) } else { std::fs::remove_file(&at) };
        removed.map_err(io_error("replacing", &at))?;
    }
    std::os::unix::fs::symlink(keep, &at).map_err(io_error("mounting", &at))?;
    Ok(at)
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RunnerError {
    let path = path.to_owned();
    move |source| RunnerError::Io { action, path, source }
}
