//! The runner: turns queued jobs into running releases, the way Magento Cloud's phases do.
//!
//! For each claimed job: build (the commit's tree exported into a fresh directory, `hooks.build`
//! with the build environment and no services), slug (a deterministic archive per app,
//! content-addressed by the app's tree and configuration, reused when they did not change),
//! deploy (the slugs unpacked into a new read-only release with its writable mounts; the
//! environment in maintenance while `hooks.deploy` runs; `current` switched in one step;
//! `hooks.post_deploy`). A failed build or deploy hook leaves the running release as it was.
//! The claim is a lease kept alive by a heartbeat thread: a runner that dies loses its jobs to
//! the next runner once the lease runs out.
//!
//! This module claims, supervises and records jobs (workers, heartbeat, take-over of what a
//! dead runner left, rollback); the phases are their own modules: `build` (plan, export, build
//! hook, slug) and `release` (unpack, mounts, deploy hook, switch, post_deploy, collection).

mod build;
pub mod declared;

pub mod env;
mod error;
pub mod export;
mod exported;
pub mod hooks;
pub mod promote;
mod release;
mod ship;
pub mod shutdown;
pub mod slug;
pub mod slugs;
mod source;
pub mod sync;
pub mod unpacked;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::core::JobId;
use crate::queue::{Job, JobState, JobStore};
use crate::store::deployed::EnvDir;
use crate::store::{DataDir, QUEUE_TIMEOUT};
use hooks::JobLog;
use shutdown::Shutdown;

pub use error::{Halt, HookFailure, Interrupt, Invalid, Rollback, RunnerError};

/// How a runner works.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Identifies this runner in the queue (host and pid).
    pub runner_id: String,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// Time limit of each hook.
    pub hook_timeout: Duration,
    /// Releases kept per environment (for rollback).
    pub keep_releases: usize,
    /// After SIGTERM, how long running jobs may go on before they are stopped and returned.
    pub grace: Duration,
    /// The router and apps that make deployed environments running sites (none without a
    /// router address).
    pub platform: Option<Arc<crate::platform::Platform>>,
    /// Where the queue is (the data directory's SQLite, or a PostgreSQL shared by runners).
    pub queue: crate::queue::Location,
    /// Where slugs are kept when not only in the data directory: a directory or an S3-compatible
    /// store every runner shares, so that a tree built on one machine is deployed by all.
    pub slugs: Option<slugs::SharedSlugs>,
    /// Which jobs this runner takes (`--role`, `--environments`).
    pub scope: crate::queue::Scope,
    /// How hooks are isolated (`serve` detects it; `--no-sandbox` turns it off).
    pub sandbox: crate::platform::sandbox::Sandbox,
}

impl Config {
    pub fn new(data_dir: PathBuf) -> Config {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let data_dir = DataDir::new(data_dir).root().to_owned();
        Config {
            queue: crate::queue::Location::Sqlite(data_dir.clone()),
            slugs: None,
            scope: crate::queue::Scope::default(),
            data_dir,
            runner_id: format!("{}:{}", host.trim(), std::process::id()),
            lease: Duration::from_secs(30),
            hook_timeout: Duration::from_secs(3600),
            keep_releases: 5,
            grace: Duration::from_secs(60),
            platform: None,
            sandbox: crate::platform::sandbox::Sandbox::Off,
        }
    }

    /// The data directory and its paths.
    pub fn data(&self) -> DataDir {
        DataDir::new(&self.data_dir)
    }

    pub fn log_path(&self, job: JobId) -> PathBuf {
        self.data().log(job)
    }

    fn build_dir(&self, job: JobId) -> PathBuf {
        self.data().build(job)
    }

    /// Where this runner reads and writes slug `key`: in the shared directory, or in its data
    /// directory (a cache of the S3 store's, if there is one).
    fn slug_path(&self, key: &str) -> PathBuf {
        match &self.slugs {
            Some(slugs::SharedSlugs::Dir(dir)) => dir.join(format!("{key}.tar.zst")),
            _ => self.data().slug(key),
        }
    }
}

/// Processes jobs until none is claimable. Returns how many were processed.
pub fn run_until_idle(config: &Config) -> Result<usize, RunnerError> {
    serve(config, 1, &Shutdown::default(), true)
}

/// How often the sites are checked against the branches and their processes.
const PLATFORM_EVERY: Duration = Duration::from_secs(3);

/// How often the router's master is looked for (a pid and its command line: nothing more).
const ROUTER_EVERY: Duration = Duration::from_secs(1);

/// How idle workers learn of new jobs: the data directory's FIFO beside SQLite, NOTIFY beside
/// PostgreSQL (from whatever machine queued the job).
enum Bell {
    Fifo(crate::store::wake::Waker),
    Notify(Box<crate::queue::postgres::Listener>),
}

impl Bell {
    fn wait(&self, timeout: Duration) {
        match self {
            Bell::Fifo(w) => w.wait(timeout),
            Bell::Notify(l) => l.wait(timeout),
        }
    }
}

/// How often ended jobs are looked for and due webhook deliveries posted.
const WEBHOOKS_EVERY: Duration = Duration::from_secs(1);

/// How long a serving worker waits after a queue error before it tries again: doubling from
/// the first to the second while the queue keeps failing (a server restarting is used again
/// as soon as it is back; one that stays down costs a connection every few seconds).
const RETRY_AFTER: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

/// Claims one job and processes it (opening the queue first if needed). False when there was
/// nothing to claim.
fn claim_and_process(
    config: &Config,
    queue: &mut Option<Box<dyn JobStore>>,
    shutdown: &Shutdown,
) -> Result<bool, RunnerError> {
    let queue = match queue {
        Some(q) => q,
        None => queue.insert(config.queue.open(QUEUE_TIMEOUT)?),
    };
    let _ = queue.reconcile(&crate::git::GitRefLog::default());
    if let Err(e) = sweep_builds(config, queue.as_ref()) {
        tracing::warn!(error = %e, "removing the build directories of ended jobs");
    }
    let Some(job) = queue.claim(&config.runner_id, config.lease, &config.scope)? else { return Ok(false) };
    process(config, queue.as_mut(), &job, shutdown)?;
    Ok(true)
}

/// Runs `concurrency` workers that claim and process jobs until `shutdown` stops (or, with
/// `until_idle`, until nothing is claimable). A stop lets running jobs go on for the grace
/// period; nothing new is claimed; then they are stopped and returned to the queue. Returns how
/// many jobs were processed.
pub fn serve(config: &Config, concurrency: usize, shutdown: &Shutdown, until_idle: bool) -> Result<usize, RunnerError> {
    let done = std::sync::atomic::AtomicUsize::new(0);
    // Pushes wake idle workers through a FIFO; without it they check every few seconds.
    let waker = match (&config.queue, until_idle) {
        (_, true) => None,
        (crate::queue::Location::Sqlite(_), false) => {
            crate::store::wake::Waker::listen(&config.data_dir).ok().map(Bell::Fifo)
        }
        // Listens once the server answers, and again after every reconnection.
        (crate::queue::Location::Postgres(url), false) => {
            Some(Bell::Notify(Box::new(crate::queue::postgres::Listener::new(url))))
        }
    };
    tracing::info!(
        runner = %config.runner_id,
        data = %config.data_dir.display(),
        concurrency,
        woken_by_pushes = waker.is_some(),
        "serving"
    );
    if let Err(e) = config.data().keep_private() {
        tracing::warn!(error = %e, "the data directory's modes");
    }
    let worker = |n: usize| -> Result<(), RunnerError> {
        let config = Config { runner_id: format!("{}/{n}", config.runner_id), ..config.clone() };
        let mut queue = None;
        let mut retry = RETRY_AFTER.0;
        while !shutdown.is_stopping() {
            let claimed = claim_and_process(&config, &mut queue, shutdown);
            if claimed.is_ok() {
                retry = RETRY_AFTER.0;
            }
            match claimed {
                Ok(true) => {
                    done.fetch_add(1, Ordering::SeqCst);
                }
                Ok(false) if until_idle => return Ok(()),
                Ok(false) => match &waker {
                    Some(w) => w.wait(Duration::from_secs(2)),
                    None => {
                        shutdown.sleep(Duration::from_millis(500));
                    }
                },
                Err(e) if until_idle => return Err(e),
                // A daemon outlives a locked or full queue: it says so and tries again. A job
                // it held comes back when its lease runs out.
                Err(e) => {
                    tracing::error!(error = %e, runner = %config.runner_id, "the queue cannot be used; trying again in {} ms", retry.as_millis());
                    queue = None;
                    shutdown.sleep(retry);
                    retry = (retry * 2).min(RETRY_AFTER.1);
                }
            }
        }
        Ok(())
    };
    let workers = concurrency.max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|n| {
                let worker = &worker;
                scope.spawn(move || {
                    // Counted when the worker ends however it ends: a worker that panicked
                    // must not keep the runner waiting for it.
                    struct Finished<'a>(&'a Shutdown);
                    impl Drop for Finished<'_> {
                        fn drop(&mut self) {
                            self.0.worker_finished();
                        }
                    }
                    let _finished = Finished(shutdown);
                    worker(n)
                })
            })
            .collect();
        // The sites follow the branches (a deleted branch's environment goes off the router,
        // a process that died comes back) and nginx is supervised like the rest.
        if let (Some(platform), false) = (config.platform.as_deref(), until_idle) {
            scope.spawn(move || keep_sites(platform, shutdown));
        }
        // Each activity's end is posted to its project's webhooks, off the workers.
        if !until_idle {
            scope.spawn(|| deliver_webhooks(config, shutdown));
        }
        // After a stop, running jobs get the grace period; then they are stopped and returned.
        scope.spawn(|| {
            if shutdown.wait_stop_or_end(workers) {
                tracing::info!(
                    grace_s = config.grace.as_secs(),
                    "stopping: nothing new is claimed, running jobs get the grace period"
                );
                if !shutdown.wait_end(workers, config.grace) {
                    shutdown.abort();
                }
            }
        });
        handles.into_iter().map(|h| h.join().unwrap_or(Ok(()))).collect::<Result<Vec<()>, _>>()
    })?;
    Ok(done.load(Ordering::SeqCst))
}

/// Until `shutdown`: the router's master looked for every second and started again if it is
/// gone (said once per cause while it cannot be), the sites reconciled every 3 s.
fn keep_sites(platform: &crate::platform::Platform, shutdown: &Shutdown) {
    let mut refused: Option<String> = None;
    let mut since_reconcile = PLATFORM_EVERY;
    loop {
        match platform.supervise_router() {
            Ok(()) => refused = None,
            Err(e) if refused.as_ref() != Some(&e) => {
                tracing::error!(error = %e, "the router is down and cannot be started; trying again every second");
                refused = Some(e);
            }
            Err(_) => {}
        }
        if since_reconcile >= PLATFORM_EVERY {
            since_reconcile = Duration::ZERO;
            for env in platform.reconcile() {
                tracing::info!(environment = %env, "branch deleted: its environment is off the router");
            }
        }
        if shutdown.sleep(ROUTER_EVERY) {
            return;
        }
        since_reconcile += ROUTER_EVERY;
    }
}

/// Until `shutdown`: each second, the ended jobs' webhook deliveries planned and the due ones
/// posted, on one connection kept (an idle runner opens none each second).
fn deliver_webhooks(config: &Config, shutdown: &Shutdown) {
    let mut store: Option<Box<dyn crate::queue::Store>> = None;
    let mut failed: Option<String> = None;
    loop {
        let opened = match store.take() {
            Some(s) => Ok(s),
            None => config.queue.open(QUEUE_TIMEOUT).map_err(|e| e.to_string()),
        };
        let delivered = opened.and_then(|mut s| {
            let n = crate::notify::deliver_due(&config.data_dir, s.as_mut());
            store = Some(s);
            n
        });
        match delivered {
            Ok(_) => failed = None,
            Err(e) => {
                if failed.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "webhook deliveries");
                }
                failed = Some(e);
                store = None; // opened again next time
            }
        }
        if shutdown.sleep(WEBHOOKS_EVERY) {
            return;
        }
    }
}

/// Runs one claimed job to its end and records it. Errors of the job itself (a failing hook, an
/// invalid configuration) fail the job; only queue errors are returned.
pub fn process(
    config: &Config,
    queue: &mut dyn JobStore,
    job: &Job,
    shutdown: &Shutdown,
) -> Result<JobState, RunnerError> {
    let span = tracing::info_span!("job", job = job.id.0, environment = %job.environment, runner = %config.runner_id);
    let _in_job = span.enter();
    tracing::info!(commit = %job.commit, r#ref = %job.ref_name, repo = %job.repo, "claimed");
    // Beside a shared queue, the log as it stood (built elsewhere, or a runner that died)
    // comes first; then what this runner writes is shipped to the store.
    let shipper = ship::Shipper::start(config, &*queue, job.id);
    let finish_shipping = |shipper: Option<ship::Shipper>| {
        if let Some(s) = shipper {
            s.finish();
        }
    };
    // A previous attempt that failed and could not record it (the queue could not be written:
    // a full disk) is recorded now, not run again: run again, it would fail the same way, and a
    // build that filled the disk would fill it again.
    if let Some(why) = hooks::unrecorded_failure(&config.log_path(job.id)) {
        tracing::warn!(error = %why, "failed in an earlier attempt that could not record it: recorded now, not run again");
        if let Ok(mut log) = JobLog::open(config.log_path(job.id)) {
            log.phase("job", "Not run again: its previous attempt failed (above) and could not record it then");
        }
        finish_shipping(shipper);
        record(config, queue, job, JobState::Failed, None)?;
        return Ok(JobState::Failed);
    }
    let mut log = match JobLog::open(config.log_path(job.id)) {
        Ok(log) => log,
        Err(e) => {
            // Without a log nobody could see why it failed: fail it at once, saying why on the
            // runner's own output, rather than leave it `running` until its lease runs out.
            tracing::error!(error = %e, "job #{} failed: its log cannot be written", job.id);
            queue.finish(job.id, &config.runner_id, JobState::Failed, None)?;
            return Ok(JobState::Failed);
        }
    };
    log.phase(
        "job",
        &format!(
            "Job #{} claimed by {}: {} of {} for environment {}",
            job.id, config.runner_id, job.commit, job.ref_name, job.environment
        ),
    );
    let claimed = config.data().claim_key(&job.repo).map_err(|why| Halt::from(RunnerError::Platform(why)));
    if claimed.is_ok() {
        take_over(&EnvDir::new(&config.data_dir, &job.repo, &job.environment), &mut log);
    }
    let lost = Arc::new(AtomicBool::new(false));
    let bell = shutdown.child();
    let heartbeat = start_heartbeat(config, job.id, lost.clone(), bell.clone());
    let control = Control { lost, bell };
    let result = match job.kind {
        _ if claimed.is_err() => claimed.map(|()| (String::new(), None)),
        crate::queue::JobKind::Push | crate::queue::JobKind::Redeploy if !config.scope.deploy => {
            match build_only(config, queue, job, &mut log, &control) {
                Ok(()) => {
                    drop(heartbeat);
                    log.phase(
                        "job",
                        &format!(
                            "Built by {}; a runner that deploys environment {} takes it on",
                            config.runner_id, job.environment
                        ),
                    );
                    finish_shipping(shipper);
                    let handed = queue.handoff(job.id, &config.runner_id)?;
                    if !handed {
                        log.phase("job", "W: the job was no longer this runner's when it was built");
                    }
                    tracing::info!(handed, "built; handed on for deployment");
                    let _ = crate::store::deployed::remove_release(&config.build_dir(job.id));
                    return Ok(JobState::Pending);
                }
                Err(e) => Err(e),
            }
        }
        crate::queue::JobKind::Push => build_and_deploy(config, queue, job, &mut log, &control)
            .map(|r| (format!("Deployed release {r} of environment {}", job.environment), Some(r))),
        crate::queue::JobKind::Sync => sync::sync(config, job, &mut log, &control)
            .map(|r| (format!("Environment {} synced; it runs release {r}", job.environment), Some(r))),
        crate::queue::JobKind::Delete => {
            sync::delete(config, job, &mut log).map(|()| (format!("Environment {} deleted", job.environment), None))
        }
        crate::queue::JobKind::Redeploy => build_and_deploy(config, queue, job, &mut log, &control)
            .map(|r| (format!("Redeployed environment {} as release {r}", job.environment), Some(r))),
        crate::queue::JobKind::Rollback => sync::roll_back(config, job, &mut log)
            .map(|r| (format!("Environment {} runs release {r} again", job.environment), Some(r))),
        crate::queue::JobKind::Promote => {
            let from = promoted_from(job);
            log.phase(
                "job",
                &format!(
                    "Promoting what environment {from} runs (commit {}) to environment {}: its slug, not rebuilt, \
                     with {}'s own variables, services and routes",
                    job.commit, job.environment, job.environment
                ),
            );
            build_and_deploy(config, queue, job, &mut log, &control)
                .map(|r| (format!("Promoted {from} to environment {} as release {r}", job.environment), Some(r)))
        }
        // Recorded as ended when it is done; nothing to run.
        crate::queue::JobKind::Cancel => Ok(("Nothing to do".to_owned(), None)),
    };
    // What the job made (a backup, a slug, credentials) is out of other users' reach; what it
    // made that the hooks use (the logs' directory) is the data directory's owner's.
    let _ = config.data().keep_private();
    let _ = config.data().give_to_owner();
    // A failed or stopped build must not keep its tree or its layers: on a full disk, they are
    // what the queue needs to record the job, and what every other job needs.
    for dir in [config.build_dir(job.id), config.data().build_layers(job.id)] {
        if let Err(e) = crate::store::deployed::remove_release(&dir) {
            log.phase("job", &format!("W: {e}"));
        }
    }
    let (state, release) = match result {
        Ok((summary, release)) => {
            log.phase("job", &summary);
            tracing::info!(release = release.as_deref().unwrap_or("-"), "succeeded");
            (JobState::Succeeded, release)
        }
        Err(Halt::Interrupted(Interrupt::Lost)) => {
            drop(heartbeat);
            log.phase("job", "Stopped: the job was cancelled or taken over by another runner");
            finish_shipping(shipper);
            tracing::warn!("stopped: cancelled or taken over by another runner");
            return Ok(JobState::Cancelled);
        }
        Err(Halt::Interrupted(Interrupt::Stopped)) => {
            drop(heartbeat);
            log.phase("job", "Stopped: the runner is shutting down; the job goes back to the queue");
            finish_shipping(shipper);
            tracing::info!("stopped by the shutdown; returned to the queue");
            queue.release_claim(job.id, &config.runner_id)?;
            return Ok(JobState::Pending);
        }
        Err(Halt::Failed(e @ RunnerError::Queue(_))) => {
            tracing::error!(error = %e, "the queue failed under the job");
            return Err(e);
        }
        Err(Halt::Failed(e)) => {
            log.phase("job", &format!("Failed: {e}"));
            tracing::warn!(error = %e, "failed");
            (JobState::Failed, None)
        }
    };
    finish_shipping(shipper);
    // The heartbeat keeps the job this runner's while its end is being recorded.
    let recorded = record(config, queue, job, state, release.as_deref());
    drop(heartbeat);
    recorded?;
    Ok(state)
}

/// Records a job's end. A queue that cannot be written (a disk just freed of a build's files
/// gives its space back once the build's last process is gone; a database restarting) is tried
/// again, with backoff, for as long as a lease lasts; then the error is returned and the job,
/// whose verdict is in its log, is recorded by whichever runner takes it next.
fn record(
    config: &Config,
    queue: &mut dyn JobStore,
    job: &Job,
    state: JobState,
    release: Option<&str>,
) -> Result<(), RunnerError> {
    let since = std::time::Instant::now();
    let mut pause = Duration::from_millis(50);
    // After a failure, on a connection of its own (the job's may be the one that broke).
    let mut fresh: Option<Box<dyn crate::queue::Store>> = None;
    loop {
        let store: &mut dyn JobStore = match fresh.as_mut() {
            Some(f) => f.as_mut(),
            None => &mut *queue,
        };
        match store.finish(job.id, &config.runner_id, state, release) {
            Ok(_) => return Ok(()),
            Err(e) if since.elapsed() + pause > config.lease => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "the job's end cannot be recorded yet; trying again");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
                fresh = config.queue.open(QUEUE_TIMEOUT).ok();
            }
        }
    }
}

/// One job of an environment runs at a time, so whatever an earlier job left in its directory
/// belongs to a runner that died: its hooks must not run beside ours, and its maintenance must
/// not outlast it (the switch had not happened, or it had and only the end was missing).
fn take_over(env_dir: &EnvDir, log: &mut JobLog) {
    if let Some(done) = hooks::stop_leftover(&env_dir.hook_record()) {
        log.phase("job", &format!("W: {done}"));
    }
    if env_dir.in_maintenance() && env_dir.set_maintenance(false, "").is_ok() {
        log.phase("job", "W: ended the maintenance an earlier deploy left (its runner stopped mid-deploy)");
    }
    match env_dir.remove_partial() {
        Ok(removed) if !removed.is_empty() => {
            log.phase("job", &format!("W: removed releases an earlier deploy left unfinished: {}", removed.join(", ")))
        }
        Ok(_) => {}
        Err(e) => log.phase("job", &format!("W: {e}")),
    }
}

/// Removes the build directories of jobs that are not running: a runner killed mid-build
/// leaves its copy of the tree behind, and if the job is then superseded or cancelled, no
/// retry would ever remove it. Returns the job ids whose directory was removed.
pub fn sweep_builds(config: &Config, queue: &dyn JobStore) -> Result<Vec<JobId>, RunnerError> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(config.data().builds()).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_str().unwrap_or_default();
        let Some(id) = name.strip_suffix(".layers").unwrap_or(name).parse::<JobId>().ok() else { continue };
        let running = queue.job(id)?.is_some_and(|j| j.state == JobState::Running);
        if !running {
            crate::store::deployed::remove_release(&entry.path())?;
            if !removed.contains(&id) {
                removed.push(id); // (its directory and its layers)
            }
        }
    }
    Ok(removed)
}

struct Heartbeat {
    stop: Arc<Shutdown>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Heartbeat {
    /// Also when the job's code panicked: the heartbeat must not keep a dead job's lease.
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Renews the lease every third of it on its own connection; flags `lost` if the job is gone,
/// and rings the job's bell so that its hook stops at once.
fn start_heartbeat(config: &Config, job: JobId, lost: Arc<AtomicBool>, bell: Arc<Shutdown>) -> Heartbeat {
    let stop = Arc::new(Shutdown::default());
    let (config, stopped) = (config.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        let Ok(mut queue) = config.queue.open(QUEUE_TIMEOUT) else { return };
        while !stopped.sleep(config.lease / 3) {
            if let Ok(false) = queue.heartbeat(job, &config.runner_id, config.lease) {
                lost.store(true, Ordering::SeqCst);
                bell.ring();
                return;
            }
        }
    });
    Heartbeat { stop, thread: Some(thread) }
}

/// What may interrupt a job: losing it (cancelled, or its lease taken over) or the runner
/// stopping after its grace period. Checked between phases; a running hook waits on the
/// job's bell, which both ring.
pub struct Control {
    lost: Arc<AtomicBool>,
    /// The job's shutdown: aborted with the runner's, rung when the lease is lost.
    bell: Arc<Shutdown>,
}

impl Control {
    pub fn check(&self) -> Result<(), Interrupt> {
        if self.lost.load(Ordering::SeqCst) {
            Err(Interrupt::Lost)
        } else if self.bell.is_aborted() {
            Err(Interrupt::Stopped)
        } else {
            Ok(())
        }
    }

    pub fn bell(&self) -> &Shutdown {
        &self.bell
    }
}

/// The job's phases, each a function of its own: build (and slug), then release.
fn build_and_deploy(
    config: &Config,
    queue: &mut dyn JobStore,
    job: &Job,
    log: &mut JobLog,
    control: &Control,
) -> Result<String, Halt> {
    let built = build::build(config, &*queue, job, log, control)?;
    let deployed =
        control.check().map_err(Halt::from).and_then(|()| release::deploy(config, job, log, control, &built));
    // A release that failed before its slugs were waited for still leaves them complete.
    let packed = built.slugs_packed(config, log, control);
    let id = deployed?;
    packed.map(|()| id)
}

/// The build phase alone (a build-only runner): the slugs stored, for a deploying runner.
fn build_only(
    config: &Config,
    queue: &mut dyn JobStore,
    job: &Job,
    log: &mut JobLog,
    control: &Control,
) -> Result<(), Halt> {
    let built = build::build(config, &*queue, job, log, control)?;
    built.slugs_packed(config, log, control)
}

/// Switches an environment back to an earlier release at once, without a rebuild.
pub fn rollback(env_dir: &EnvDir, to: Option<&str>) -> Result<String, RunnerError> {
    let target = rollback_target(env_dir, to)?;
    // `current` is the record of what is deployed: the switch is all there is to record.
    env_dir.switch(&target)?;
    Ok(target)
}

/// The release a rollback goes to: `to` if it is kept, else the one before the current one.
pub fn rollback_target(env_dir: &EnvDir, to: Option<&str>) -> Result<String, RunnerError> {
    let current = env_dir.current_release();
    let releases = env_dir.list();
    let target = match to {
        Some(t) => releases.iter().find(|r| r.as_str() == t).cloned(),
        None => {
            let here = current.as_ref().and_then(|c| releases.iter().position(|r| r == c)).unwrap_or(releases.len());
            here.checked_sub(1).and_then(|i| releases.get(i)).cloned()
        }
    };
    let Some(target) = target else {
        return Err(match to {
            Some(t) => Rollback::NotKept { release: t.to_owned(), kept: releases },
            None => Rollback::NoEarlier,
        }
        .into());
    };
    Ok(target)
}

/// The environment a promotion deploys the slug of (its options' `from`).
pub fn promoted_from(job: &Job) -> String {
    job.options
        .as_deref()
        .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok())
        .and_then(|o| o.get("from").and_then(|f| f.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
