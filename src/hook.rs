//! The hook commands: `pre-receive` (the protective block), `post-receive` (queue the builds)
//! and `check DIR`.
//!
//! `pre-receive` validates the configuration at the new commit of every branch in the push,
//! compares its topology with the environment's current one, refuses changes that destroy data
//! (unless `-o pushgate.allow-data-loss`), and reserves one build per branch in the queue; if
//! the queue cannot be written the push is refused. git applies pre-receive's verdict to all
//! refs. Deletions pass; tags and other refs are not deployed and pass. `post-receive` runs only
//! for refs git really moved, and turns their reservations into pending jobs.
//!
//! Within one process, a branch whose configuration files have the same object ids as one
//! already checked reuses that result, and is reported in one line.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use git2::Repository;

use crate::core::ids::{environment_name, MAX_ENVIRONMENT_NAME};
use crate::core::{EnvName, RepoId};
use crate::git::{self, CommitTree, GitError, GitRefLog, RefUpdate};
use crate::queue::{JobStore, QueueError, Receiver, Reservation};
use crate::report;
use crate::settings::{self, Env};
use crate::source::{DirSource, Entry, ReadLog, Recording, Source, SourceError};
use crate::store::environments::{EnvType, Environments};
use crate::topology::diff::{destructive, diff, Kind, Subject};
use crate::topology::Topology;
use crate::validate::{self, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("reading the ref updates from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("running the chained hook {}: {source}", hook.display())]
    Chained { hook: std::path::PathBuf, source: std::io::Error },
}

/// What one push may validate in all, across its branches: each commit has its own budget
/// ([`crate::config::yaml::Budget::per_commit`]), and a push of many branches with different
/// configurations stops here, so that no push keeps the hook busy for long or holds much
/// memory (branches with the same configuration are validated once and cost nothing more).
pub const PUSH_MAX_NODES: usize = 200_000;
pub const PUSH_MAX_BYTES: usize = 16 << 20;

/// Validation results of this process, keyed by what they read.
#[derive(Default)]
pub struct Cache {
    entries: Vec<(ReadLog, Outcome)>,
    /// What the validations of this process have cost so far.
    spent: crate::config::yaml::Cost,
}

impl Cache {
    /// Validates `source`, or reuses a result whose reads give the same ids in `source`.
    /// Returns the result's index in this cache and whether it was computed now.
    pub fn validate(&mut self, source: &dyn Source) -> Result<(usize, bool), SourceError> {
        for (i, (log, _)) in self.entries.iter().enumerate() {
            if log.matches(source)? {
                return Ok((i, false));
            }
        }
        let recording = Recording::new(source);
        let outcome = validate::validate(&recording)?;
        self.spent.nodes += outcome.cost.nodes;
        self.spent.bytes += outcome.cost.bytes;
        self.entries.push((recording.into_log(), outcome));
        Ok((self.entries.len() - 1, true))
    }

    /// True once this process has validated as much as one push may.
    pub fn exhausted(&self) -> bool {
        self.spent.nodes > PUSH_MAX_NODES || self.spent.bytes > PUSH_MAX_BYTES
    }

    pub fn outcome(&self, index: usize) -> &Outcome {
        &self.entries[index].1
    }
}

/// The absolute path that identifies a repository in the queue.
pub fn repo_id(repo: &Repository) -> RepoId {
    let path = std::fs::canonicalize(repo.path()).unwrap_or_else(|_| repo.path().to_owned());
    RepoId::new(path.display().to_string().trim_end_matches('/'))
}

/// One branch's verdict, reported in full once per distinct (configuration, baseline).
struct Printed {
    outcome: usize,
    baseline: Topology,
    branch: String,
    /// Later branches with the same verdict, reported in one line at the end.
    same: Vec<String>,
    blocked: bool,
    /// The new topology, the changes and the plan, as the queue stores them (JSON).
    topology: String,
    changes: String,
    plan: String,
}

/// Why a branch of a push is refused before its configuration is judged, and what to do.
struct Refusal {
    /// What follows `Branch NAME (COMMIT)`: `cannot be deployed: …`.
    what: String,
    hint: String,
}

impl Refusal {
    fn write(&self, out: &mut dyn Write, branch: &str, short: &str) {
        let _ = writeln!(out, "E: Branch {branch} ({short}) {}\n    hint: {}", self.what, self.hint);
    }
}

/// The checks of a branch that come before its configuration: its environment's name, the
/// names in the trees it brings, and what is left of the push's validation budget. Its
/// environment when they pass.
fn refusal_before_validation(
    repo: &Repository,
    update: &RefUpdate,
    owners: &HashMap<String, Vec<String>>,
    environments: &Result<Environments, String>,
    new_trees: &mut git::NewTrees,
    cache: &Cache,
) -> Result<Result<EnvName, Refusal>, HookError> {
    let branch = update.branch().unwrap_or_default();
    let environment = match environment_of(branch, owners) {
        Ok(env) => env,
        Err((problem, hint)) => return Ok(Err(Refusal { what: format!("cannot be deployed: {problem}"), hint })),
    };
    let declared = match environments {
        Ok(declared) => declared,
        Err(why) => {
            return Ok(Err(Refusal {
                what: format!(
                    "cannot be deployed: the project's declarations of its environments cannot be read: {why}"
                ),
                hint: "the admin fixes it (pushgate-runner env create|activate|deactivate|limit write it)".into(),
            }))
        }
    };
    let kind = declared.of(environment.as_str());
    if !kind.pushed() {
        let project = crate::activity::project_name(&repo_id(repo));
        // Production comes from staging, staging from the default branch's environment.
        let from = match kind {
            EnvType::Production => declared.named(EnvType::Staging),
            _ => crate::platform::default_branch(&repo.path().display().to_string()),
        };
        let from = from.unwrap_or_else(|| "FROM".into());
        return Ok(Err(Refusal {
            what: format!(
                "cannot be pushed: `{environment}` is the project's {} environment, which is deployed by promotion, \
                 never by a push",
                kind.as_str()
            ),
            hint: format!(
                "push to an integration branch, then promote what it runs: pushgate-runner promote {project} {from} \
                 {environment} (or the console's Promote)"
            ),
        }));
    }
    let bad_entry = new_trees.check(repo, update.new.oid()).map_err(|source| GitError::Commit {
        commit: update.new.to_string(),
        refname: update.name.clone(),
        source,
    })?;
    if let Some(bad) = bad_entry {
        let dir = if bad.dir.is_empty() { "the root directory".to_owned() } else { format!("directory `{}`", bad.dir) };
        return Ok(Err(Refusal {
            what: format!("cannot be deployed: {dir} has an entry named {:?}, {}", bad.name, bad.why),
            hint: "such a tree can only be made by hand (git hash-object --literally); no checkout can hold it. \
                   Rewrite the commit with a tree git itself writes"
                .into(),
        }));
    }
    if cache.exhausted() {
        return Ok(Err(Refusal {
            what: format!(
                "was not validated: this push brings more configuration than pushgate checks in one push \
                 ({PUSH_MAX_NODES} nodes, {} MiB of text, branches with the same files counted once)",
                PUSH_MAX_BYTES >> 20
            ),
            hint: "push the branches in smaller groups".into(),
        }));
    }
    Ok(Ok(environment))
}

/// Judges a valid configuration against its baseline: the new topology, the changes, what
/// they destroy. Reports it, and returns the verdict as the queue stores it.
fn judge(
    outcome: &Outcome,
    index: usize,
    baseline: Topology,
    branch: &str,
    lines: &report::LineLookup<'_>,
    settings: &settings::Hook,
    out: &mut dyn Write,
) -> Printed {
    let new_topology = Topology::from_config(&outcome.config);
    let changes = diff(&baseline, &new_topology);
    let destroying = destructive(&changes);
    let _ = report::diagnostics(out, &outcome.diags, lines);
    let _ = report::topology(out, &new_topology, &changes);
    let _ = report::destruction(out, &destroying, settings.allow_data_loss);
    // A version the service's backend cannot give, on any branch: refused now, not deployed on
    // the version the backend runs without a word (a new environment) or failed at deploy (an
    // upgrade in place).
    let versions = backend_versions(settings);
    let mut impossible = false;
    for (name, service) in &new_topology.services {
        let Some(why) = versions.cannot_give(&service.kind) else { continue };
        impossible = true;
        let upgraded =
            changes.iter().any(|c| c.subject == Subject::Service && c.kind == Kind::Upgraded && c.name == *name);
        let what = match upgraded {
            true => format!("cannot be upgraded in place to {}", service.kind),
            false => format!("asks for {}, which this server cannot give", service.kind),
        };
        let _ = writeln!(
            out,
            "E: service `{name}` {what}: {why}\n    hint: ask for the version the backend runs (or an older one), \
             or ask the admin to upgrade the backend first"
        );
    }
    Printed {
        outcome: index,
        baseline,
        branch: branch.to_owned(),
        same: Vec::new(),
        blocked: (!destroying.is_empty() && !settings.allow_data_loss) || impossible,
        topology: serde_json::to_string(&new_topology).unwrap_or_default(),
        changes: serde_json::to_string(&changes).unwrap_or_default(),
        plan: serde_json::to_string(&crate::core::plan::Plan {
            new_environment: settings.new_environment.clone(),
            source_url: settings.source_url.clone(),
            ..crate::core::plan::Plan::of(&outcome.config)
        })
        .unwrap_or_default(),
    }
}

/// Runs the protective block over `updates` and reserves their builds. Returns true when the
/// push may proceed.
/// The versions this server's backends run (what `backend add` recorded), read once a push.
fn backend_versions(settings: &settings::Hook) -> &'static crate::platform::services::Versions {
    static VERSIONS: std::sync::OnceLock<crate::platform::services::Versions> = std::sync::OnceLock::new();
    VERSIONS.get_or_init(|| crate::platform::services::Versions::load(&crate::store::DataDir::new(&settings.data_dir)))
}

pub fn pre_receive(
    repo: &Repository,
    updates: &[RefUpdate],
    settings: &settings::Hook,
    out: &mut dyn Write,
) -> Result<bool, HookError> {
    let started = Instant::now();
    // Hints to upgrade a service name only the versions this server's backends can give.
    let versions = backend_versions(settings);
    validate::set_offered(move |service_type| versions.cannot_give(service_type).is_none());
    let mut push = Push::new(repo, updates, settings);
    for update in updates {
        let Some(branch) = update.branch() else { continue };
        if update.is_delete() {
            let _ = writeln!(out, "Deleting branch {branch}: nothing to validate or build");
            continue;
        }
        push.branch(update, branch, out)?;
    }
    push.finish(started, out)
}

/// One push going through the protective block: what it has decided so far, branch by branch.
struct Push<'a> {
    repo: &'a Repository,
    settings: &'a settings::Hook,
    repo_path: RepoId,
    receiver: Receiver,
    /// Each environment's branches once the push is applied.
    owners: HashMap<String, Vec<String>>,
    /// What the admin declared of the project's environments: types, inactive ones, the
    /// limit (or why it cannot be read).
    environments: Result<Environments, String>,
    new_trees: git::NewTrees,
    cache: Cache,
    /// Opened at the first branch that may be queued, so that a push it cannot record is refused.
    queue: Option<Box<dyn JobStore>>,
    printed: Vec<Printed>,
    refused: Vec<String>,
    reservations: Vec<Reservation>,
    in_queue: Duration,
    in_names: Duration,
}

impl<'a> Push<'a> {
    fn new(repo: &'a Repository, updates: &[RefUpdate], settings: &'a settings::Hook) -> Push<'a> {
        let t = Instant::now();
        let owners = environment_owners(repo, updates);
        let new_trees = git::NewTrees::for_hook(repo);
        let environments = Environments::load(repo.path());
        Push {
            environments,
            repo,
            settings,
            repo_path: repo_id(repo),
            receiver: Receiver::parent(),
            owners,
            new_trees,
            cache: Cache::default(),
            queue: None,
            printed: Vec::new(),
            refused: Vec::new(),
            reservations: Vec::new(),
            in_queue: Duration::ZERO,
            in_names: t.elapsed(),
        }
    }

    /// Judges one branch update: refused (and said why), or reserved with its verdict.
    fn branch(&mut self, update: &RefUpdate, branch: &str, out: &mut dyn Write) -> Result<(), HookError> {
        let short = update.new.short();
        let t = Instant::now();
        let early = refusal_before_validation(
            self.repo,
            update,
            &self.owners,
            &self.environments,
            &mut self.new_trees,
            &self.cache,
        )?;
        self.in_names += t.elapsed();
        let environment = match early {
            Ok(environment) => environment,
            Err(refusal) => {
                self.refuse(&refusal, branch, short, out);
                return Ok(());
            }
        };
        let tree = CommitTree::new(self.repo, update.new.oid(), &update.name)?;
        let lines = |file: &str, line: u32| line_of(&tree, file, line);
        let (index, fresh) = self.cache.validate(&tree)?;
        if self.cache.outcome(index).diags.has_errors() {
            self.refused.push(branch.to_owned());
            if fresh {
                let _ = writeln!(out, "Validating configuration files of {branch} ({short})");
                let _ = report::diagnostics(out, &self.cache.outcome(index).diags, &lines);
            } else {
                let _ = writeln!(out, "Validating configuration files of {branch} ({short}): same as above, invalid");
            }
            return Ok(());
        }
        let declared = self.environments.as_ref().ok();
        let project = || crate::activity::project_name(&self.repo_path);
        if self.settings.inactive || declared.is_some_and(|d| d.is_inactive(environment.as_str())) {
            let why =
                if self.settings.inactive { "-o environment.status=inactive" } else { "the environment is inactive" };
            let _ = writeln!(
                out,
                "Branch {branch} ({short}) is valid and pushed without deploying it ({why}). Deploy it with: \
                 pushgate-runner env activate {} {environment}",
                project()
            );
            return Ok(());
        }
        if let Some(refusal) = self.over_limit(declared, &environment) {
            self.refuse(&refusal, branch, short, out);
            return Ok(());
        }
        if self.queue.is_none() {
            let t = Instant::now();
            self.queue = Some(crate::queue::open_at(
                self.settings.queue.as_deref(),
                &self.settings.data_dir,
                self.settings.queue_timeout,
            )?);
            self.in_queue += t.elapsed();
        }
        let deployed = crate::store::DataDir::new(&self.settings.data_dir).deployed(&self.repo_path, &environment);
        let baseline = match baseline(self.repo, deployed, update, &mut self.cache)? {
            Ok(known) => known,
            // The guard against data loss does not fail open: what it cannot compare with, it
            // refuses, unless the pusher accepts the loss.
            Err(why) if self.settings.allow_data_loss => {
                let _ = writeln!(
                    out,
                    "W: Branch {branch} ({short}): {why}; deploying without the data-loss check \
                     (-o pushgate.allow-data-loss)"
                );
                Topology::default()
            }
            Err(why) => {
                let refusal = Refusal {
                    what: format!("cannot be checked for data loss: {why}"),
                    hint: "pushgate cannot tell what this push would destroy. An admin can look at the queue; to \
                           deploy anyway, push again with -o pushgate.allow-data-loss"
                        .into(),
                };
                self.refuse(&refusal, branch, short, out);
                return Ok(());
            }
        };
        // Branches with the same configuration and baseline share one verdict (and one report).
        let verdict = match self.printed.iter().position(|p| p.outcome == index && p.baseline == baseline) {
            Some(i) => {
                self.printed[i].same.push(format!("{branch} ({short})"));
                &self.printed[i]
            }
            None => {
                let _ = writeln!(out, "Validating configuration files of {branch} ({short})");
                let outcome = self.cache.outcome(index);
                self.printed.push(judge(outcome, index, baseline, branch, &lines, self.settings, out));
                &self.printed[self.printed.len() - 1]
            }
        };
        if verdict.blocked {
            self.refused.push(branch.to_owned());
            return Ok(());
        }
        self.reservations.push(Reservation {
            repo: self.repo_path.clone(),
            ref_name: update.name.clone(),
            environment,
            old_commit: update.old.clone(),
            new_commit: update.new.clone(),
            topology: verdict.topology.clone(),
            changes: verdict.changes.clone(),
            plan: verdict.plan.clone(),
            receiver: self.receiver.clone(),
            pusher: self.settings.pusher.clone(),
        });
        Ok(())
    }

    /// Why a branch may not become one more active integration environment (the project's
    /// `limit`), if it may not.
    fn over_limit(&self, declared: Option<&Environments>, environment: &EnvName) -> Option<Refusal> {
        let declared = declared?;
        let limit = declared.limit()? as usize;
        let data = crate::store::DataDir::new(&self.settings.data_dir);
        let counted = |name: &str| declared.of(name).pushed() && !declared.is_inactive(name);
        let mut active: Vec<String> =
            data.deployed_environments(&self.repo_path).into_iter().filter(|n| counted(n)).collect();
        if active.iter().any(|n| n == environment.as_str()) {
            return None; // already one of them
        }
        // Branches of this push that will be new environments count too.
        for reserved in &self.reservations {
            let name = reserved.environment.to_string();
            if counted(&name) && !active.contains(&name) {
                active.push(name);
            }
        }
        if active.len() < limit {
            return None;
        }
        let project = crate::activity::project_name(&self.repo_path);
        Some(Refusal {
            what: format!(
                "cannot be deployed: {project} may have {limit} active integration environments and has {} ({})",
                active.len(),
                list(&active, 5)
            ),
            hint: format!(
                "push it with -o environment.status=inactive to keep the code without deploying it; or an admin \
                 deactivates one (pushgate-runner env deactivate {project} ENV) or raises the limit \
                 (pushgate-runner env limit {project} N)"
            ),
        })
    }

    fn refuse(&mut self, refusal: &Refusal, branch: &str, short: &str, out: &mut dyn Write) {
        refusal.write(out, branch, short);
        self.refused.push(branch.to_owned());
    }

    /// Says what the push's branches share, and either refuses the push or reserves its jobs.
    fn finish(mut self, started: Instant, out: &mut dyn Write) -> Result<bool, HookError> {
        for p in self.printed.iter().filter(|p| !p.same.is_empty()) {
            let verdict = if p.blocked { "refused, see above" } else { "valid" };
            let _ = writeln!(out, "Same configuration and changes as {}, {verdict}: {}", p.branch, list(&p.same, 5));
        }
        if !self.refused.is_empty() {
            let _ = writeln!(
                out,
                "Push refused: {} cannot be deployed (see above). No ref was updated; fix the files, commit and push \
                 again.",
                self.refused.join(", ")
            );
            return Ok(false);
        }
        if let Some(queue) = &mut self.queue {
            let t = Instant::now();
            queue.reserve(&self.reservations)?;
            self.in_queue += t.elapsed();
        }
        if self.settings.timings {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let _ = writeln!(
                out,
                "pushgate timings: pre-receive {:.3} ms, of which queue {:.3} ms, names and trees {:.3} ms",
                ms(started.elapsed()),
                ms(self.in_queue),
                ms(self.in_names)
            );
        }
        Ok(true)
    }
}

/// The branches each environment of the repository will have once this push is applied: the
/// branches that exist and are not deleted by it, and those it creates.
fn environment_owners(repo: &Repository, updates: &[RefUpdate]) -> HashMap<String, Vec<String>> {
    let deleted: Vec<&str> = updates.iter().filter(|u| u.is_delete()).filter_map(RefUpdate::branch).collect();
    let mut branches: Vec<String> = repo
        .references_glob("refs/heads/*")
        .into_iter()
        .flat_map(|refs| refs.flatten())
        .filter_map(|r| r.name().and_then(|n| n.strip_prefix("refs/heads/")).map(str::to_owned))
        .filter(|b| !deleted.contains(&b.as_str()))
        .collect();
    branches.extend(updates.iter().filter(|u| !u.is_delete()).filter_map(|u| u.branch().map(str::to_owned)));
    branches.sort();
    branches.dedup();
    let mut owners: HashMap<String, Vec<String>> = HashMap::new();
    for branch in branches {
        owners.entry(environment_name(&branch)).or_default().push(branch);
    }
    owners
}

/// The environment of `branch`; else why it cannot have one of its own, and what to do.
fn environment_of(branch: &str, owners: &HashMap<String, Vec<String>>) -> Result<EnvName, (String, String)> {
    let rule = "environments are named after their branch: lowercase letters, digits and `-` (other characters \
                become `-`)";
    let Ok(env) = EnvName::of_branch(branch) else {
        let problem = if environment_name(branch).is_empty() {
            "its name gives no environment name".to_owned()
        } else {
            format!(
                "its environment name `{}` is longer than {MAX_ENVIRONMENT_NAME} characters",
                environment_name(branch)
            )
        };
        return Err((problem, format!("{rule}; push it under a name such as `feature-1` instead")));
    };
    let others: Vec<&str> =
        owners.get(env.as_str()).into_iter().flatten().map(String::as_str).filter(|b| *b != branch).collect();
    if others.is_empty() {
        return Ok(env);
    }
    let names = others.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ");
    Err((
        format!("its environment `{env}` is also the environment of branch {names}; one environment has one branch"),
        format!("{rule}; push it under a name that gives another environment, such as `{env}-2`"),
    ))
}

/// The topology a push is compared with: what is deployed in the environment (the release
/// `current` points at), else the one at the push's old commit, else nothing (a new branch).
/// The inner error says why neither could be read: the data-loss guard must then refuse, not
/// compare with nothing.
fn baseline(
    repo: &Repository,
    deployed: Result<Option<crate::store::ReleaseInfo>, crate::store::Unreadable>,
    update: &RefUpdate,
    cache: &mut Cache,
) -> Result<Result<Topology, String>, HookError> {
    match deployed {
        Err(why) => return Ok(Err(format!("what is deployed cannot be read ({why})"))),
        Ok(Some(info)) => {
            return Ok(serde_json::from_value(info.topology)
                .map_err(|e| format!("the topology of the deployed release {} cannot be read ({e})", info.release)))
        }
        Ok(None) => {}
    }
    if update.is_create() {
        return Ok(Ok(Topology::default()));
    }
    let old = match CommitTree::new(repo, update.old.oid(), &update.name) {
        Ok(old) => old,
        Err(e) => return Ok(Err(format!("the branch's current commit cannot be read ({e})"))),
    };
    let (index, _) = cache.validate(&old)?;
    Ok(Ok(Topology::from_config(&cache.outcome(index).config)))
}

/// Runs `pre-receive` as git calls it: ref updates on stdin, the repository from the environment.
/// When pushgate accepts and `chain` names a hook that was installed before pushgate, that hook
/// runs next with the same input, and its verdict is the push's.
pub fn pre_receive_main(
    stdin: &mut dyn std::io::Read,
    out: &mut dyn Write,
    env: &Env,
    chain: Option<&Path>,
) -> Result<bool, HookError> {
    let input = read_input(stdin)?;
    let updates = git::parse_updates(&input)?;
    if updates.iter().any(|u| u.branch().is_some() && !u.is_delete()) {
        let repo = git::open_from_env()?;
        let settings = settings::Hook::resolve(&repo, env);
        if settings.enabled && !pre_receive(&repo, &updates, &settings, out)? {
            return Ok(false);
        }
    }
    run_chained(chain, &input, out)
}

/// Runs `post-receive`: the refs in `stdin` have moved; their reservations become jobs.
pub fn post_receive_main(
    stdin: &mut dyn std::io::Read,
    out: &mut dyn Write,
    env: &Env,
    chain: Option<&Path>,
) -> Result<bool, HookError> {
    let started = std::time::Instant::now();
    let input = read_input(stdin)?;
    let branches: Vec<RefUpdate> = git::parse_updates(&input)?.into_iter().filter(|u| u.branch().is_some()).collect();
    if branches.is_empty() {
        return run_chained(chain, &input, out);
    }
    let repo = git::open_from_env()?;
    let settings = settings::Hook::resolve(&repo, env);
    if !settings.enabled {
        return run_chained(chain, &input, out);
    }
    let repo_path = repo_id(&repo);
    let (deleted, mut updates): (Vec<_>, Vec<_>) = branches.into_iter().partition(|u| u.is_delete());
    // Branches pushed inactive, or of an inactive environment, were accepted without a job
    // (pre-receive said so): no job is made for them here either.
    let declared = Environments::load(repo.path()).unwrap_or_default();
    updates.retain(|u| {
        let environment = u.branch().and_then(|b| EnvName::of_branch(b).ok());
        !(settings.inactive || environment.is_some_and(|e| declared.is_inactive(e.as_str())))
    });
    if !deleted.is_empty() {
        // The refs are gone whatever happens here; a queue that cannot be written only warns
        // (the runner would then build the deleted branch's pending job).
        if let Err(e) = cancel_deleted(&deleted, &repo_path, &settings, out) {
            let _ = writeln!(out, "warning: the pending builds of deleted branches stay queued: {e}");
        }
    }
    if !updates.is_empty() {
        let refs = GitRefLog::with(repo_path.as_str(), repo);
        let mut queue = crate::queue::open_at(settings.queue.as_deref(), &settings.data_dir, settings.queue_timeout)?;
        let jobs = queue.promote(&repo_path, &updates, &Receiver::parent(), &refs)?;
        let _ = report::queued(out, &jobs);
        // Settle what earlier pushes left behind (a post-receive that was killed).
        let _ = queue.reconcile(&refs);
        crate::store::wake::wake(&settings.data_dir);
        if settings.timings {
            let _ = writeln!(out, "pushgate timings: post-receive {:.3} ms", started.elapsed().as_secs_f64() * 1e3);
        }
        if settings.follow {
            follow_jobs(queue.as_ref(), &settings, &jobs, out)?;
        }
    }
    run_chained(chain, &input, out)
}

/// Cancels the pending jobs of deleted branches, saying which.
fn cancel_deleted(
    deleted: &[RefUpdate],
    repo_path: &RepoId,
    settings: &settings::Hook,
    out: &mut dyn Write,
) -> Result<(), HookError> {
    let mut queue = crate::queue::open_at(settings.queue.as_deref(), &settings.data_dir, settings.queue_timeout)?;
    for update in deleted {
        let branch = update.branch().unwrap_or_default();
        for id in queue.cancel_pending_of(repo_path, &update.name)? {
            let _ = writeln!(out, "Branch {branch} deleted: its pending build #{id} is cancelled");
        }
    }
    Ok(())
}

/// Streams the deployment of the push's builds into its output (a few at most).
fn follow_jobs(
    queue: &dyn JobStore,
    settings: &settings::Hook,
    jobs: &[crate::queue::Job],
    out: &mut dyn Write,
) -> Result<(), HookError> {
    let pending: Vec<_> = jobs.iter().filter(|j| j.state == crate::queue::JobState::Pending).collect();
    let console = crate::web::console_url(&settings.data_dir);
    if pending.len() > crate::follow::MAX_FOLLOWED {
        let _ = match &console {
            Some(url) => writeln!(out, "Follow the builds at {url}"),
            None => writeln!(out, "Follow the builds with: pushgate-runner jobs, and pushgate-runner logs ID --follow"),
        };
        return Ok(());
    }
    for job in pending {
        let log = crate::store::DataDir::new(&settings.data_dir).log(job.id);
        let at = crate::follow::LogAt::beside(settings.queue.is_none(), &log);
        if crate::follow::follow(queue, at, job, settings.pickup_wait, console.as_deref(), out)?.is_none() {
            break;
        }
    }
    Ok(())
}

/// `a, b, c and 12 more`.
fn list(items: &[String], at_most: usize) -> String {
    let shown = items.iter().take(at_most).cloned().collect::<Vec<_>>().join(", ");
    match items.len().saturating_sub(at_most) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

fn read_input(stdin: &mut dyn std::io::Read) -> Result<String, HookError> {
    let mut input = String::new();
    stdin.read_to_string(&mut input).map_err(HookError::Stdin)?;
    Ok(input)
}

/// Runs a hook that was there before pushgate, feeding it the same ref updates.
fn run_chained(chain: Option<&Path>, input: &str, out: &mut dyn Write) -> Result<bool, HookError> {
    let Some(hook) = chain.filter(|c| c.exists()) else { return Ok(true) };
    let _ = out.flush();
    let chained = |source| HookError::Chained { hook: hook.to_owned(), source };
    let mut child = std::process::Command::new(hook).stdin(std::process::Stdio::piped()).spawn().map_err(chained)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that exits without reading its input is not an error.
        let _ = stdin.write_all(input.as_bytes());
    }
    Ok(child.wait().map_err(chained)?.success())
}

/// The project a directory belongs to: between `dir` and its checkout's top (the nearest
/// directory at or above it that holds `.git`, as git finds its work tree), the nearest that
/// holds the project's directory (`.magento/`, `.platform/`: routes and services), else the
/// nearest that holds an app's file (`.magento.app.yaml`; a project in a larger repository, a
/// monorepo), else the checkout's top; outside a checkout, the same search to the root, else
/// `dir` itself. From an app's directory of a project with several apps, the project's.
pub fn project_root(dir: &Path) -> std::path::PathBuf {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let has = |d: &Path, names: &[&str]| names.iter().any(|n| std::fs::symlink_metadata(d.join(n)).is_ok());
    let top = dir.ancestors().find(|d| has(d, &[".git"]));
    let mut within: Vec<&Path> = Vec::new();
    for d in dir.ancestors() {
        within.push(d);
        if Some(d) == top {
            break;
        }
    }
    let nearest = |names: &[&str]| within.iter().find(|d| has(d, names)).map(|d| d.to_path_buf());
    nearest(&[".magento", ".platform"])
        .or_else(|| nearest(&[".magento.app.yaml", ".platform.app.yaml"]))
        .or_else(|| top.map(Path::to_path_buf))
        .unwrap_or(dir)
}

/// `pushgate-hook check DIR`: the same validation on a checkout (the project DIR is in, found
/// like git finds its work tree). Returns true when valid.
pub fn check_dir(dir: &Path, out: &mut dyn Write) -> Result<bool, HookError> {
    let dir = &project_root(dir);
    let source = DirSource::new(dir);
    let outcome = validate::validate(&source)?;
    let _ = writeln!(out, "Validating configuration files in {}", dir.display());
    let lines = |file: &str, line: u32| line_of(&source, file, line);
    let _ = report::diagnostics(out, &outcome.diags, &lines);
    if outcome.diags.has_errors() {
        return Ok(false);
    }
    let _ = report::topology(out, &Topology::from_config(&outcome.config), &[]);
    let _ = writeln!(out, "Configuration is valid.");
    Ok(true)
}

/// The text of one line of a file, for the excerpt under an error.
fn line_of(source: &dyn Source, file: &str, line: u32) -> Option<String> {
    let Ok(Entry::File(bytes)) = source.entry(file) else { return None };
    let text = String::from_utf8(bytes).ok()?;
    text.lines().nth(line.checked_sub(1)? as usize).map(str::to_owned)
}
