//! The build phase: the job's plan (stored by the hook), each app's slug key (its tree, its
//! configuration, the admin's project variables), and for an app whose slug is not there yet,
//! the commit exported from the object store, `hooks.build` run in it, and the slug packed.

use std::fs::File;
use std::path::PathBuf;
use std::time::SystemTime;

use git2::Oid;

use super::declared::Declared;
use super::deploy::{self, EnvDir};
use super::hooks::{self, Hook, JobLog};
use super::slugs::SharedSlugs;
use super::{env, export, slug, Config, Control, Halt, Invalid, RunnerError};
use crate::git::CommitTree;
use crate::platform::sandbox::Jail;
use crate::queue::{Job, JobStore};
use crate::source::{EntryId, Source};
use crate::topology::Topology;

/// Bump when the slug format changes: old slugs are then rebuilt, not reused.
const SLUG_FORMAT: &str = "pushgate-slug-1";

/// One app of the commit, ready to build and deploy.
pub(super) struct AppPlan {
    pub name: String,
    pub dir: String,
    pub config: serde_json::Value,
    pub tree_id: String,
    /// Where this runner reads the slug, and the slug's key (in the shared store too).
    pub slug: PathBuf,
    pub key: String,
}

/// What the build phase hands to the release phase.
pub(super) struct Built {
    pub plans: Vec<AppPlan>,
    pub topology: Topology,
    /// How the project names its variables.
    pub format: crate::config::Format,
    pub project: String,
    pub declared: Declared,
    /// What the hook validated: the release keeps it, so the platform can serve any kept
    /// release as it was configured.
    pub plan: crate::core::plan::Plan,
    /// Who the project's hooks run as (None when the runner cannot switch users).
    pub user: Option<crate::platform::users::User>,
}

/// What the job builds and deploys: the plan and topology the hook stored with it when it
/// validated the push. A job queued before plans were stored is validated here, as it was then.
fn job_plan(
    queue: &dyn JobStore,
    job: &Job,
    tree: &CommitTree<'_>,
    log: &mut JobLog,
) -> Result<(crate::core::plan::Plan, Topology), RunnerError> {
    if let (Some(plan), Some((topology, _))) = (queue.job_plan(job.id)?, queue.job_documents(job.id)?) {
        let topology = serde_json::from_str(&topology).map_err(Invalid::StoredTopology)?;
        log.phase("build", "Building the configuration validated when it was pushed");
        return Ok((plan, topology));
    }
    log.phase("build", "Validating the configuration (the job was queued without its plan)");
    let outcome = crate::validate::validate(tree)?;
    if let Some(d) = outcome.diags.errors().next() {
        let (file, line, col, message) = (d.file.to_string(), d.pos.line, d.pos.col, d.message.clone());
        return Err(Invalid::Diagnostic { file, line, col, message }.into());
    }
    Ok((crate::core::plan::Plan::of(&outcome.config), Topology::from_config(&outcome.config)))
}

/// Each app's slug: named by the app's tree, its configuration and the project variables, so
/// an unchanged app is never built twice.
fn plan_apps(
    config: &Config,
    verdict: &crate::core::plan::Plan,
    tree: &CommitTree<'_>,
    root_tree: Oid,
    declared: &Declared,
) -> Result<Vec<AppPlan>, RunnerError> {
    // Project variables reach the build: a build with other ones is another slug.
    let build_variables = if declared.project_variables.is_empty() {
        String::new() // the same slug names as before variables.json existed
    } else {
        format!("\n{}", serde_json::Value::Object(declared.project_variables.clone()))
    };
    let mut plans = Vec::new();
    for app in &verdict.apps {
        let name = app.name.clone();
        let tree_id = if app.dir.is_empty() {
            root_tree.to_string()
        } else {
            match tree.entry_id(&app.dir)? {
                Some(EntryId::Object { id, mode: 0o040000 }) => Oid::from_bytes(&id)?.to_string(),
                _ => return Err(Invalid::AppDir(app.dir.clone()).into()),
            }
        };
        let app_config = app.config.clone();
        let key = Oid::hash_object(
            git2::ObjectType::Blob,
            format!("{SLUG_FORMAT}\n{tree_id}\n{app_config}{build_variables}").as_bytes(),
        )?
        .to_string();
        plans.push(AppPlan {
            name,
            dir: app.dir.clone(),
            config: app_config,
            tree_id,
            slug: config.slug_path(&key),
            key,
        });
    }
    Ok(plans)
}

/// Builds a job's apps into slugs (or finds them built): what the release phase deploys.
pub(super) fn build(
    config: &Config,
    queue: &dyn JobStore,
    job: &Job,
    log: &mut JobLog,
    control: &Control,
) -> Result<Built, Halt> {
    let source_url = queue.job_plan(job.id)?.and_then(|p| p.source_url);
    let repo = super::source::repository(config, job, source_url.as_deref(), log)?;
    let commit = job.commit.oid();
    let tree = CommitTree::new(&repo, commit, &job.ref_name)?;
    let (verdict, topology) = job_plan(queue, job, &tree, log)?;
    let declared = Declared::load(&config.data_dir, job.repo.path())?;
    let root_tree = repo.find_commit(commit)?.tree_id();
    let plans = plan_apps(config, &verdict, &tree, root_tree, &declared)?;

    // Build and slug. A runner started as root runs the hooks as the project's user.
    let user = crate::platform::users::app_user(&crate::store::DataDir::project_key(&job.repo))
        .map_err(RunnerError::Platform)?;
    let build_dir = config.build_dir(job.id);
    let mut exported = false;
    let project =
        job.repo.path().file_name().and_then(|n| n.to_str()).unwrap_or("").trim_end_matches(".git").to_owned();
    for plan in &plans {
        control.check()?;
        // Reusing a slug renews it: collection spares slugs used in the last hour.
        if File::options().append(true).open(&plan.slug).and_then(|f| f.set_modified(SystemTime::now())).is_ok() {
            log.phase(
                "build",
                &format!("Reusing existing build for this tree ID ({}, app {})", plan.tree_id, plan.name),
            );
            continue;
        }
        if let Some(SharedSlugs::S3(s3)) = &config.slugs {
            if s3.fetch(&plan.key, &plan.slug)? {
                log.phase(
                    "build",
                    &format!(
                        "Reusing existing build for this tree ID ({}, app {}), fetched from {}",
                        plan.tree_id,
                        plan.name,
                        s3.url_of(&plan.key)
                    ),
                );
                continue;
            }
        }
        if job.kind == crate::queue::JobKind::Promote {
            return Err(RunnerError::Platform(format!(
                "the slug of application `{}` (tree {}) is gone from this runner and its shared store: a promotion \
                 deploys what was built, never builds; push the commit again (or redeploy {}) to build it",
                plan.name,
                plan.tree_id,
                super::promoted_from(job)
            ))
            .into());
        }
        if !config.scope.build {
            let at = match &config.slugs {
                Some(SharedSlugs::S3(s3)) => s3.url_of(&plan.key),
                _ => plan.slug.display().to_string(),
            };
            return Err(RunnerError::Platform(format!(
                "the slug of application `{}` (tree {}) is not at {at}: this runner only deploys, and no build \
                 runner has stored it (do the runners share --slugs?)",
                plan.name, plan.tree_id,
            ))
            .into());
        }
        if !exported {
            deploy::remove_release(&build_dir)?;
            log.phase("build", &format!("Exporting commit {} into {}", job.commit, build_dir.display()));
            export::export_tree(&repo, root_tree, &build_dir)?;
            if let Some(user) = &user {
                // The build hook runs as the project's user: the copy is its own.
                crate::platform::users::give(config.data().root(), &config.data().builds(), &build_dir, user).map_err(
                    |source| RunnerError::Io {
                        action: "giving to the project's user",
                        path: build_dir.clone(),
                        source,
                    },
                )?;
            }
            exported = true;
        }
        let app_dir = build_dir.join(&plan.dir);
        log.phase("build", &format!("Building application `{}` (tree {})", plan.name, plan.tree_id));
        if let Some(script) = plan.config.get("hooks").and_then(|h| h.get("build")).and_then(|b| b.as_str()) {
            let ctx = env::AppContext {
                format: verdict.format,
                app_name: &plan.name,
                app_dir: &app_dir,
                tree_id: &plan.tree_id,
                project: &project,
                config: &plan.config,
                variables: &declared.project_variables,
            };
            let env = env::build(&ctx);
            hooks::run(
                &Hook {
                    name: "build",
                    script,
                    cwd: &app_dir,
                    env: &env,
                    timeout: declared.sandbox.time_limit(config.hook_timeout),
                    record: &EnvDir::new(&config.data_dir, &job.repo, &job.environment).hook_record(),
                    user: user.as_ref(),
                    sandbox: &config.sandbox,
                    // The build sees its own directory: no data, no repository, no services.
                    jail: Jail {
                        writable: vec![&build_dir],
                        readable: vec![],
                        hidden: vec![&config.data_dir, job.repo.path()],
                        network: declared.sandbox.network.unwrap_or(true),
                        limits: declared.sandbox.limits(),
                    },
                },
                log,
                control,
            )?;
        }
        control.check()?;
        log.phase("slug", &format!("Preparing slug for application `{}`", plan.name));
        if let Some(dir) = plan.slug.parent() {
            std::fs::create_dir_all(dir).map_err(|source| RunnerError::Io {
                action: "creating",
                path: dir.to_owned(),
                source,
            })?;
        }
        let size = slug::pack(&app_dir, &plan.slug)?;
        log.phase("slug", &format!("Slug {} ({} bytes)", plan.slug.display(), size));
        // The built tree is what the slug holds: it becomes the slug's shared tree on this
        // machine, so that the release links it instead of unpacking the slug again.
        // (Not an app whose directory holds another app's, or lies in one: that one needs it.)
        let entangled =
            plans.iter().any(|p| p.name != plan.name && (p.dir.starts_with(&plan.dir) || plan.dir.starts_with(&p.dir)));
        if config.scope.deploy && !entangled {
            super::unpacked::adopt(&config.data(), &plan.slug, &app_dir)?;
        }
        if let Some(SharedSlugs::S3(s3)) = &config.slugs {
            control.check()?;
            s3.store(&plan.key, &plan.slug)?;
            log.phase("slug", &format!("Stored as {}", s3.url_of(&plan.key)));
        }
    }
    if exported {
        deploy::remove_release(&build_dir)?; // before the release takes its space
    }
    Ok(Built { plans, topology, format: verdict.format, project, declared, plan: verdict, user })
}
