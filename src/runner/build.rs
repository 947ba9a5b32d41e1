//! The build phase: the job's plan (stored by the hook), each app's slug key (its tree, its
//! configuration, the admin's project variables), and for an app whose slug is not there yet,
//! the commit exported from the object store, `hooks.build` run in it, and the slug packed.

use std::fs::File;
use std::path::PathBuf;
use std::time::SystemTime;

use git2::Oid;

use super::declared::Declared;
use super::hooks::{self, Hook, JobLog};
use super::slugs::SharedSlugs;
use super::{env, export, exported, slug, Config, Control, Halt, Invalid, RunnerError};
use crate::git::CommitTree;
use crate::platform::layers::Layered;
use crate::platform::sandbox::Jail;
use crate::queue::{Job, JobStore};
use crate::source::{EntryId, Source};
use crate::store::deployed::{self, EnvDir};
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
    /// Slugs still being packed, through the build's layers, while the release is made.
    pub packs: std::cell::RefCell<Packs>,
}

/// A slug packed on a thread of its own from the built tree, in layers.
pub(super) struct Packing {
    app: String,
    slug: PathBuf,
    key: String,
    /// The slug's shared tree, made meanwhile: it goes if the slug cannot be made.
    tree: PathBuf,
    thread: std::thread::JoinHandle<Result<u64, slug::SlugError>>,
}

/// What a build in layers holds until its slugs, packed through the layers, are complete: the
/// project's exported tree (the lower layer must not change under a pack reading through it)
/// and the layers, removed once nothing reads them.
pub(super) struct Held {
    _exported: exported::Exported,
    build_dir: PathBuf,
    layers: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = deployed::remove_release(&self.build_dir);
        let _ = deployed::remove_release(&self.layers);
    }
}

/// Slugs being packed through a build's layers, and what holds the layers: dropped, it waits
/// for the packs, then the layers go.
#[derive(Default)]
pub(super) struct Packs {
    packing: Vec<Packing>,
    _held: Option<Held>,
}

impl Drop for Packs {
    fn drop(&mut self) {
        // A deploy that ended before its slugs were awaited (a full disk, a service that could
        // not be provisioned): each pack ends (before `_held`, and with it the layers, goes),
        // and the shared tree it made goes too, packed or not: no release of this job links
        // it, and on a full disk it is what must be freed (the slug stays, and a deploy of the
        // same code unpacks it again).
        for p in self.packing.drain(..) {
            let _ = p.thread.join();
            let _ = super::unpacked::remove(&p.tree);
        }
    }
}

impl Built {
    /// Waits for the slugs still being packed and stores them in the shared store: before
    /// anything of the environment changes, a job's slugs are complete.
    pub(super) fn slugs_packed(&self, config: &Config, log: &mut JobLog, control: &Control) -> Result<(), Halt> {
        let mut packs = std::mem::take(&mut *self.packs.borrow_mut());
        let joined: Vec<_> = packs
            .packing
            .drain(..)
            .map(|Packing { app, slug, key, tree, thread }| {
                (thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)), app, slug, key, tree)
            })
            .collect();
        drop(packs); // the layers, once nothing reads through them
        for (size, app, slug, key, tree) in joined {
            let size = size.map_err(|e| {
                let _ = super::unpacked::remove(&tree); // no slug, no shared tree of it
                Halt::from(RunnerError::from(e))
            })?;
            log.phase(
                "deploy",
                &format!(
                    "Slug {} ({} bytes), application `{}`, packed while the release was made",
                    slug.display(),
                    size,
                    app
                ),
            );
            stored(config, &key, &slug, log, control)?;
        }
        Ok(())
    }
}

/// Stores a slug in the shared store, if the runners share one.
fn stored(config: &Config, key: &str, slug: &std::path::Path, log: &mut JobLog, control: &Control) -> Result<(), Halt> {
    if let Some(SharedSlugs::S3(s3)) = &config.slugs {
        control.check()?;
        s3.store(key, slug)?;
        log.phase("slug", &format!("Stored as {}", s3.url_of(key)));
    }
    Ok(())
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
    let project =
        job.repo.path().file_name().and_then(|n| n.to_str()).unwrap_or("").trim_end_matches(".git").to_owned();
    let mut missing = Vec::new();
    let mut packs = Packs::default();
    for plan in &plans {
        control.check()?;
        if !found(config, job, plan, log)? {
            missing.push(plan);
        }
    }
    if !missing.is_empty() {
        let network = build_network(config, job, &declared, log)?;
        let build = Build {
            network,
            config,
            job,
            log,
            control,
            plans: &plans,
            declared: &declared,
            verdict: &verdict,
            project: &project,
            user: user.as_ref(),
            deferred: Vec::new(),
        };
        packs = build.run(&repo, root_tree, &missing)?;
    }
    let packs = std::cell::RefCell::new(packs);
    Ok(Built { plans, topology, format: verdict.format, project, declared, plan: verdict, user, packs })
}

/// Whether the slug of `plan` is here (reused) or fetched from the shared store; Err when it is
/// not and this job may not build it.
fn found(config: &Config, job: &Job, plan: &AppPlan, log: &mut JobLog) -> Result<bool, Halt> {
    // Reusing a slug renews it: collection spares slugs used in the last hour.
    if File::options().append(true).open(&plan.slug).and_then(|f| f.set_modified(SystemTime::now())).is_ok() {
        log.phase("build", &format!("Reusing existing build for this tree ID ({}, app {})", plan.tree_id, plan.name));
        return Ok(true);
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
            return Ok(true);
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
    Ok(false)
}

/// The network of a project's builds where the runner confines networks (and the policy leaves
/// builds one): a namespace of the project's builds (not an environment's: no services) whose
/// only way out is its proxy, bounded by the project's `egress` rules as its apps' is: the
/// package registries, not the host's loopback (its databases, the runner's API) or its private
/// networks. Made before the build's private mounts, which would hide it from the host.
fn build_network(
    config: &Config,
    job: &Job,
    declared: &Declared,
    log: &mut JobLog,
) -> Result<Option<(std::path::PathBuf, bool)>, Halt> {
    if !declared.sandbox.network.unwrap_or(true) || !crate::platform::network::confines(&config.sandbox) {
        return Ok(None);
    }
    let key = format!("{}+build", crate::store::DataDir::project_key(&job.repo));
    let network = crate::platform::network::Network::of(&config.data(), &key);
    let (ns, warnings, proxy) = network
        .prepare(&serde_json::Map::new(), &declared.sandbox.egress())
        .map_err(|why| RunnerError::Platform(format!("the builds' network: {why}")))?;
    for warning in warnings {
        log.phase("build", &format!("W: {warning}"));
    }
    Ok(Some((ns, proxy)))
}

/// What building a job's missing slugs needs.
struct Build<'a> {
    /// The builds' network namespace and whether it has a proxy (`None`: the host's network,
    /// or none by policy).
    network: Option<(std::path::PathBuf, bool)>,
    config: &'a Config,
    job: &'a Job,
    log: &'a mut JobLog,
    control: &'a Control,
    plans: &'a [AppPlan],
    declared: &'a Declared,
    verdict: &'a crate::core::plan::Plan,
    project: &'a str,
    user: Option<&'a crate::platform::users::User>,
    /// Slugs being packed through the layers.
    deferred: Vec<Packing>,
}

impl<'a> Build<'a> {
    /// Builds `missing` in the commit's tree: in layers over the project's exported tree where
    /// this runner can (root, a kernel with id-mapped overlay layers, no other build of the
    /// project holding the tree), else in an exported copy.
    fn run(mut self, repo: &git2::Repository, root_tree: Oid, missing: &[&'a AppPlan]) -> Result<Packs, Halt> {
        let build_dir = self.config.build_dir(self.job.id);
        let layers = self.config.data().build_layers(self.job.id);
        deployed::remove_release(&build_dir)?; // a retry after a crash starts clean
        deployed::remove_release(&layers)?;
        let user = self.user.filter(|_| crate::platform::layers::supported(&self.config.data().builds()).is_ok());
        if let Some(user) = user {
            let key = crate::store::DataDir::project_key(&self.job.repo);
            self.log.phase("build", &format!("Exporting commit {} into the project's exported tree", self.job.commit));
            match exported::Exported::take(&self.config.data(), &key, repo, root_tree) {
                Ok(Some((tree, brought))) => {
                    let result = self.in_layers(&tree, brought, &layers, user, missing);
                    // The slugs are packed through the layers while the release is made: the
                    // layers and the exported tree stay until they are done. Dropped (any
                    // other outcome), `packs` waits for them and removes the layers.
                    let held = Held { _exported: tree, build_dir: build_dir.clone(), layers: layers.clone() };
                    let packs = Packs { packing: std::mem::take(&mut self.deferred), _held: Some(held) };
                    match result {
                        Ok(()) => return Ok(packs),
                        Err(Layers::Unavailable(why)) => self.log.phase(
                            "build",
                            &format!(
                                "Cannot build in layers over the project's exported tree ({why}): exporting a copy"
                            ),
                        ),
                        Err(Layers::Halt(halt)) => return Err(halt),
                    }
                }
                Ok(None) => self
                    .log
                    .phase("build", "Another build holds the project's exported tree: exporting a copy of the commit"),
                Err(e) => self.log.phase(
                    "build",
                    &format!(
                        "W: the project's exported tree could not be brought to this commit ({e}): exporting a copy"
                    ),
                ),
            }
        }
        self.log.phase("build", &format!("Exporting commit {} into {}", self.job.commit, build_dir.display()));
        export::export_tree(repo, root_tree, &build_dir)?;
        if let Some(user) = self.user {
            // The build hook runs as the project's user: the copy is its own.
            let data = self.config.data();
            crate::platform::users::give(data.root(), &data.builds(), &build_dir, user).map_err(|source| {
                RunnerError::Io { action: "giving to the project's user", path: build_dir.clone(), source }
            })?;
        }
        let result = missing.iter().try_for_each(|plan| self.app(plan, &build_dir, None));
        deployed::remove_release(&build_dir)?; // before the release takes its space
        result.map(|()| Packs::default())
    }

    /// The build in layers: mounted in a mount namespace of its own thread, which the hooks
    /// inherit and which goes away with it.
    fn in_layers(
        &mut self,
        tree: &exported::Exported,
        brought: exported::Brought,
        layers: &std::path::Path,
        user: &crate::platform::users::User,
        missing: &[&'a AppPlan],
    ) -> Result<(), Layers> {
        let build_dir = self.config.build_dir(self.job.id);
        let layered = Layered::new(&tree.tree(), layers, &build_dir);
        let exported = match brought {
            exported::Brought::Same => "as it was".to_owned(),
            exported::Brought::Updated(1) => "1 path changed".to_owned(),
            exported::Brought::Updated(n) => format!("{n} paths changed"),
            exported::Brought::Exported => "exported whole".to_owned(),
        };
        // The build's user reaches its directory as it would reach a copy given to it.
        let data = self.config.data();
        crate::platform::users::reachable(data.root(), &data.builds(), user).map_err(|source| {
            Layers::Halt(
                RunnerError::Io { action: "giving to the project's user", path: build_dir.clone(), source }.into(),
            )
        })?;
        let outcome = crate::platform::layers::in_private_mounts(|| {
            layered.mount(user.uid, user.gid).map_err(|e| Layers::Unavailable(e.to_string()))?;
            self.log.phase(
                "build",
                &format!(
                    "Building in {} in layers over it ({exported}): the build's writes are its own",
                    build_dir.display()
                ),
            );
            missing.iter().try_for_each(|plan| self.app(plan, &build_dir, Some(&layered))).map_err(Layers::Halt)
        });
        outcome.map_err(|e| Layers::Unavailable(e.to_string()))?
    }

    /// Runs the build hook of one app in `build_dir` and packs its slug; the built tree becomes
    /// the slug's shared tree on this machine.
    fn app(&mut self, plan: &'a AppPlan, build_dir: &std::path::Path, layered: Option<&Layered>) -> Result<(), Halt> {
        let (config, job, control) = (self.config, self.job, self.control);
        control.check()?;
        let app_dir = build_dir.join(&plan.dir);
        self.log.phase("build", &format!("Building application `{}` (tree {})", plan.name, plan.tree_id));
        if let Some(script) = plan.config.get("hooks").and_then(|h| h.get("build")).and_then(|b| b.as_str()) {
            let ctx = env::AppContext {
                format: self.verdict.format,
                app_name: &plan.name,
                app_dir: &app_dir,
                tree_id: &plan.tree_id,
                project: self.project,
                config: &plan.config,
                variables: &self.declared.project_variables,
            };
            let mut env = env::build(&ctx);
            if self.network.as_ref().is_some_and(|(_, proxy)| *proxy) {
                env.extend(crate::platform::egress::variables());
            }
            hooks::run(
                &Hook {
                    name: "build",
                    script,
                    cwd: &app_dir,
                    env: &env,
                    timeout: self.declared.sandbox.time_limit(config.hook_timeout),
                    record: &EnvDir::new(&config.data_dir, &job.repo, &job.environment).hook_record(),
                    user: self.user,
                    sandbox: &config.sandbox,
                    // The build sees its own directory: no data, no repository, no services.
                    jail: Jail {
                        writable: vec![build_dir],
                        readable: vec![],
                        hidden: vec![&config.data_dir, job.repo.path()],
                        network: self.declared.sandbox.network.unwrap_or(true),
                        netns: self.network.as_ref().map(|(ns, _)| ns.as_path()),
                        limits: self.declared.sandbox.limits(),
                    },
                },
                self.log,
                control,
            )?;
        }
        control.check()?;
        // The hook could change the build directory: the app's directory must still be one,
        // reached from the build's top through directories alone (a directory on the way
        // replaced by a link to /etc would have root pack, move and seal what it points at).
        // Nothing of the project runs here any more (the hook's sandbox is gone; apps never see
        // the build directories), so what is checked now stays so.
        // (In layers, the merged tree shows what the build wrote over the export.)
        crate::platform::beneath::open_top(build_dir)
            .and_then(|top| {
                crate::platform::beneath::open(&top, std::path::Path::new(&plan.dir), libc::O_PATH | libc::O_DIRECTORY)
            })
            .map_err(|e| {
                RunnerError::Platform(format!(
                    "the build left the app's directory `{}` as something else than a directory reached through \
                     directories (a link on the way?): {e}",
                    plan.dir
                ))
            })?;
        self.log.phase("slug", &format!("Preparing slug for application `{}`", plan.name));
        if let Some(dir) = plan.slug.parent() {
            std::fs::create_dir_all(dir).map_err(|source| RunnerError::Io {
                action: "creating",
                path: dir.to_owned(),
                source,
            })?;
        }
        // The built tree is what the slug holds: it becomes the slug's shared tree on this
        // machine, so that the release links it instead of unpacking the slug again.
        // (Not an app whose directory holds another app's, or lies in one: that one needs it.)
        let entangled = self
            .plans
            .iter()
            .any(|p| p.name != plan.name && (p.dir.starts_with(&plan.dir) || plan.dir.starts_with(&p.dir)));
        let adopt = config.scope.deploy && !entangled;
        let size = match layered {
            // In layers, the slug is packed through them (on a thread of this mount namespace)
            // while the shared tree is linked and the release made; the release waits for it.
            Some(l) if adopt => {
                let thread = std::thread::spawn({
                    let (built, slug) = (app_dir.clone(), plan.slug.clone());
                    move || slug::pack(&built, &slug)
                });
                let (upper, lower) = (l.upper.join(&plan.dir), l.lower.join(&plan.dir));
                let tree = match super::unpacked::adopt_layers(&config.data(), &plan.slug, &app_dir, &upper, &lower) {
                    Ok(tree) => tree,
                    Err(e) => {
                        let _ = thread.join(); // it reads the layers, which go with the error
                        return Err(e.into());
                    }
                };
                let (app, slug, key) = (plan.name.clone(), plan.slug.clone(), plan.key.clone());
                self.deferred.push(Packing { app, slug, key, tree, thread });
                return Ok(());
            }
            _ => {
                let size = slug::pack(&app_dir, &plan.slug)?;
                if adopt && layered.is_none() {
                    super::unpacked::adopt(&config.data(), &plan.slug, &app_dir)?;
                }
                size
            }
        };
        self.log.phase("slug", &format!("Slug {} ({} bytes)", plan.slug.display(), size));
        stored(config, &plan.key, &plan.slug, self.log, control)
    }
}

/// Why a build in layers did not happen.
enum Layers {
    /// The layers could not be mounted here: the build exports a copy instead.
    Unavailable(String),
    Halt(Halt),
}
