//! `pushgate-runner`: builds and deploys the jobs pushgate queued, and shows them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pushgate::core::JobId;
use pushgate::git::GitRefLog;
use pushgate::queue::JobState;
use pushgate::runner::{self, deploy};
use pushgate::settings::Env;

#[derive(Parser)]
#[command(name = "pushgate-runner", version, about = "Builds and deploys the pushes pushgate queued")]
struct Cli {
    /// The data directory (queue, logs, slugs, environments).
    #[arg(long, global = true, value_name = "DIR", env = "PUSHGATE_DATA")]
    data: Option<PathBuf>,
    /// The queue, when it is not the data directory's SQLite: a PostgreSQL URL
    /// (postgres://USER@HOST/DB), which runners on several machines share. The hooks find it in
    /// `git config pushgate.queue` (install.sh --queue).
    #[arg(long, global = true, value_name = "URL", env = "PUSHGATE_QUEUE")]
    queue: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Claim and run jobs until SIGTERM or SIGINT (then nothing new is claimed; running jobs get a
    /// grace period, after which they are stopped and returned to the queue).
    Serve {
        /// Jobs run at once (never two of one environment).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Process what is queued, then exit.
        #[arg(long)]
        until_idle: bool,
        /// Time limit of each hook, in seconds.
        #[arg(long, default_value_t = 3600)]
        hook_timeout: u64,
        /// Releases kept per environment, for rollback.
        #[arg(long, default_value_t = 5)]
        keep: usize,
        /// Seconds a claim holds without a heartbeat; a runner that dies loses its job after it.
        #[arg(long, default_value_t = 30)]
        lease: u64,
        /// Seconds running jobs may go on after SIGTERM before they are stopped and returned to
        /// the queue.
        #[arg(long, default_value_t = 60)]
        grace: u64,
        /// Run the router on this address (for example 127.0.0.1:8080): every deployed
        /// environment is then a site at its URLs. Also set by `router` in DATA/platform.json.
        #[arg(long, value_name = "ADDR")]
        router: Option<std::net::SocketAddr>,
        /// The base domain of the environments' URLs (ENV.PROJECT.DOMAIN; default localhost, or
        /// `domain` in DATA/platform.json).
        #[arg(long, value_name = "DOMAIN")]
        domain: Option<String>,
        /// Serve even though this user does not own the data directory (what it creates would
        /// then belong to another user than the one the hooks run as).
        #[arg(long)]
        allow_user_mismatch: bool,
        /// The runner's own log on standard error (claims, phases, outcomes, errors, with the
        /// job, environment and runner as fields): `human` lines, or `json`, one object a line,
        /// for log collectors. Developers' job logs are separate (`pushgate-runner logs`).
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
        #[command(flatten)]
        web: WebArgs,
        /// Share slugs with the runners of other machines, so that a tree built on one is reused
        /// by all: a directory every runner mounts (NFS, a cluster file system), or
        /// s3://BUCKET/PREFIX in any S3-compatible store (its address and keys from AWS_ENDPOINT,
        /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ALLOW_HTTP).
        #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
        slugs: Option<String>,
        /// What this runner does: `build` (builds and stores slugs, needs no services, hands each
        /// job on), `deploy` (deploys built slugs and runs the actions on environments, builds
        /// nothing), or `all`.
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
        /// Only the jobs of these environments (comma-separated): the machine that serves them.
        #[arg(long, value_delimiter = ',', value_name = "LIST")]
        environments: Option<Vec<String>>,
        /// Run hooks without their sandbox (bubblewrap namespaces, a cgroup with limits): only
        /// where the host cannot build one and every developer is trusted. Every job's log says so.
        #[arg(long)]
        no_sandbox: bool,
    },
    /// Serve the web console and API alone (no jobs run here): the console on the git server
    /// while runners work elsewhere.
    Web {
        #[command(flatten)]
        web: WebArgs,
        #[arg(long, value_enum, default_value_t = LogFormat::Human)]
        log_format: LogFormat,
    },
    /// The web API's tokens: `create` prints a new token on its last line (shown once, kept
    /// only as a digest).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Webhooks: each activity's end posted to a URL (Slack's incoming webhooks take it).
    #[command(subcommand)]
    Webhook(WebhookCommand),
    /// List the jobs: id, repository, ref, commit, environment, state, times.
    Jobs {
        /// One JSON array of job objects, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show a job's log (each phase, with timestamps, and the hooks' output).
    Logs {
        job: JobId,
        /// Keep printing until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// List the environments: current release, commit, path, state.
    Envs {
        /// One JSON array of environment objects, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Switch an environment back to an earlier release, without a rebuild: at once, or after
    /// the job of the environment that runs now (an activity, its log follows).
    Rollback {
        environment: String,
        /// The release to go back to (default: the one before the current one).
        #[arg(long, value_name = "RELEASE")]
        to: Option<String>,
        /// The repository, when several have an environment of that name.
        #[arg(long, value_name = "PATH")]
        repo: Option<String>,
    },
    /// Deploy what environment FROM runs to staging or production: its slug, not rebuilt, with
    /// TO's own variables, services and routes (an activity; its log follows, as in a push).
    Promote {
        /// The project: its bare repository's name (`shop` for shop.git).
        project: String,
        from: String,
        to: String,
        /// Refuse unless FROM runs this commit (an id or a prefix): promote what was tested.
        #[arg(long, value_name = "COMMIT")]
        commit: Option<String>,
        /// Promote to production from another environment than staging, or another commit.
        #[arg(long)]
        force: bool,
        /// Queue it and return at once.
        #[arg(long)]
        no_follow: bool,
    },
    /// The variables an environment's deploy hooks see: each with the level it comes from
    /// (project, type, environment) and those it overrides. Values are hidden unless asked.
    Variables {
        project: String,
        environment: String,
        /// Show the values (they are often credentials).
        #[arg(long)]
        values: bool,
        #[arg(long)]
        json: bool,
    },
    /// Act on an environment.
    #[command(subcommand)]
    Env(EnvCommand),
    /// The servers that provision each environment's services (its own database, user, Redis).
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Keep a command running (what the router runs a start command under; not for people).
    #[command(hide = true)]
    Supervise {
        #[arg(long)]
        pid_file: PathBuf,
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        uid: Option<u32>,
        #[arg(long)]
        gid: Option<u32>,
        /// A cgroup directory to join before starting the program (repeated under cgroup v1).
        #[arg(long)]
        cgroup: Vec<PathBuf>,
        /// The network namespace to start the program in (its environment's).
        #[arg(long)]
        netns: Option<PathBuf>,
        #[arg(last = true, required = true)]
        program: Vec<String>,
    },
    /// Carry an environment's connections between its network and the host's (what the
    /// runner keeps running for each environment; not for people).
    #[command(hide = true)]
    Forward {
        #[arg(long)]
        spec: PathBuf,
    },
    /// Cancel a pending or running job.
    Cancel { job: JobId },
    /// What a developer runs over ssh through git-shell (`ssh git@server pushgate activities`):
    /// the activities, environments and logs of the projects they can push to.
    Shell {
        #[command(subcommand)]
        command: Option<ShellCommand>,
    },
    /// Pack a directory into a slug, as the build does (to inspect or time packing).
    Pack { dir: PathBuf, out: PathBuf },
}

#[derive(Subcommand)]
enum EnvCommand {
    /// Copy the parent environment's data into an environment again (a job with its log):
    /// its databases emptied and copied, its mounts' files replaced. The default branch's
    /// environment is never overwritten this way.
    Sync {
        environment: String,
        /// Only the services' data (the databases). `--data` names the data directory, as for
        /// every command.
        #[arg(long)]
        services: bool,
        /// Only the mounts' files.
        #[arg(long)]
        mounts: bool,
        /// The environment to copy from (default: the default branch's).
        #[arg(long, value_name = "ENV")]
        from: Option<String>,
        /// The repository, when several have an environment of that name.
        #[arg(long, value_name = "PATH")]
        repo: Option<String>,
    },
    /// Declare an environment's type: `staging` or `production` (deployed by promotion only,
    /// never by a push), or `integration` again.
    Create {
        project: String,
        environment: String,
        #[arg(long = "type", value_name = "TYPE", default_value = "integration")]
        kind: String,
    },
    /// Deploy the slug an environment runs again (new variables take effect), as an activity.
    Redeploy { project: String, environment: String },
    /// Make an inactive environment active: its branch's last commit is deployed (an activity).
    Activate { project: String, environment: String },
    /// Make an environment inactive: off the router, its services freed (a final backup of
    /// their data and of its mounts is kept in DATA/backups/); pushes to its branch then keep
    /// the code without deploying it.
    Deactivate {
        project: String,
        environment: String,
        /// Really do it.
        #[arg(long)]
        yes: bool,
    },
    /// The most active integration environments a project may have (`none` lifts the limit):
    /// a push that would make one more is refused.
    Limit { project: String, limit: String },
    /// Each deployed environment: type, parent, release, commit, state, URL.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete an environment: off the router, its processes stopped, its releases and mounts
    /// removed.
    Delete {
        environment: String,
        /// The repository, when several have an environment of that name.
        #[arg(long, value_name = "PATH")]
        repo: Option<String>,
        /// Really delete it (its mounts' files are lost).
        #[arg(long)]
        yes: bool,
    },
}

/// The web console and API.
#[derive(clap::Args)]
struct WebArgs {
    /// Serve the web console and JSON API on this address (for example 127.0.0.1:7080).
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// The console's address as people reach it (behind a proxy, say), named in push output
    /// (default: http://ADDR).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token for a person or a script.
    Create {
        name: String,
        /// The project it is for (its bare repository's name: shop for shop.git). Without it,
        /// an admin token for every project.
        #[arg(long)]
        project: Option<String>,
        /// viewer (reads), developer (also redeploys and cancels), admin (everything).
        #[arg(long, default_value = "viewer")]
        role: String,
    },
    /// The tokens: name, project, role (never the token).
    List,
    /// Revoke a token: its sessions end at once.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum ShellCommand {
    /// The latest activities, newest first.
    Activities {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The environments: release, commit, state, URL.
    Envs,
    /// An activity's log.
    Logs {
        id: JobId,
        /// Keep printing until it ends.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Post the ends of a project's activities to URL.
    Add {
        project: String,
        url: String,
        /// The outcomes posted, among success, failure, cancelled, superseded.
        #[arg(long, value_delimiter = ',', default_value = "success,failure,cancelled")]
        events: Vec<String>,
    },
    /// The webhooks (their URLs' paths hidden).
    List,
    /// Forget a webhook (by the id `list` shows).
    Remove { id: i64 },
    /// The latest deliveries and how each went.
    Deliveries,
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Declare (or replace) the backend of a service type: mysql (also mariadb, oracle-mysql),
    /// postgresql, redis (also valkey), with an admin URL such as mysql://root@127.0.0.1:3306.
    Add {
        #[arg(value_name = "TYPE")]
        kind: String,
        url: String,
    },
    /// The declared backends, passwords hidden.
    List,
    /// Forget a backend (what it provisioned stays).
    Remove {
        #[arg(value_name = "TYPE")]
        kind: String,
    },
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Where the queue is, from --queue (set once, first thing in main).
static QUEUE: std::sync::OnceLock<pushgate::queue::Location> = std::sync::OnceLock::new();

fn location() -> &'static pushgate::queue::Location {
    QUEUE.get().expect("the queue's location is set first thing")
}

/// Opens the queue (--queue, else the data directory's SQLite).
fn store() -> std::result::Result<Box<dyn pushgate::queue::Store>, pushgate::queue::QueueError> {
    location().open(pushgate::store::QUEUE_TIMEOUT)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    Build,
    Deploy,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// The runner's own log, on standard error (systemd's journal takes it from there).
fn init_log(format: LogFormat) {
    // A log that cannot be written (the journal restarted, a closed pipe) is skipped: reporting
    // that on the same standard error would panic the worker that logged.
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .log_internal_errors(false);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
}

/// The owner of `data` and this process's user, when they differ (not when `data` does not
/// exist yet: serve creates it).
fn owner_mismatch(data: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(data).ok()?.uid();
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    // Root drops privileges for what it runs (hooks and apps as the project's user), and what
    // the hooks write stays theirs (SQLite gives its files the database's owner under root).
    (owner != me && me != 0).then_some((owner, me))
}

/// A user's name from /etc/passwd, else its number.
fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_owned())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

fn main() -> ExitCode {
    // Objects are read from the git server's repository or a mirror fetched with git: git
    // verified each one when it received it; hashing them again is a quarter of an export.
    git2::opts::strict_hash_verification(false);
    // Pack files are read through a bounded window, not mapped whole: a Magento tree's pack
    // would otherwise be most of the runner's memory.
    // SAFETY: set once, before any repository is opened (libgit2's global options).
    unsafe {
        let _ = git2::opts::set_mwindow_size(8 << 20);
        let _ = git2::opts::set_mwindow_mapped_limit(32 << 20);
    }
    // What developers run over ssh (`pushgate-runner --data DIR shell ARGS`, install.sh's
    // git-shell command): the admin chose the data directory and the queue; ARGS may not.
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    if let Some(at) = args.iter().position(|a| a == "shell") {
        let admin = |a: &String| ["--data", "--queue"].iter().any(|o| a == o || a.starts_with(&format!("{o}=")));
        if let Some(option) = args[at + 1..].iter().find(|a| admin(a)) {
            let option = option.split('=').next().unwrap_or_default();
            eprintln!("error: {option} is the server's to choose, not an option of `pushgate` over ssh");
            return ExitCode::from(2);
        }
    }
    let cli = Cli::parse();
    let data = cli.data.unwrap_or_else(|| Env::from_process().default_data_dir());
    let mut out = std::io::stdout().lock();
    match pushgate::queue::Location::new(cli.queue.as_deref(), &data) {
        Ok(l) => {
            let _ = QUEUE.set(l);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    // Only `serve` (and the hooks) may create a queue: any other command on a data directory
    // without one would show an empty queue that is not the one the hooks write to.
    let needs_queue = !matches!(
        cli.command,
        Command::Serve { .. }
            | Command::Pack { .. }
            | Command::Supervise { .. }
            | Command::Forward { .. }
            | Command::Backend(_)
            | Command::Token(_)
            | Command::Webhook(_)
            | Command::Web { .. }
    );
    let queue_file = pushgate::store::DataDir::new(&data).queue_file();
    if needs_queue && location().is_embedded() && !queue_file.exists() {
        eprintln!(
            "error: there is no pushgate queue in {} ({} is missing): nothing was pushed with this data \
             directory. Check --data or PUSHGATE_DATA; a repository's hooks use the directory in its \
             `git config pushgate.data`.",
            data.display(),
            pushgate::store::DataDir::QUEUE_FILE
        );
        return ExitCode::FAILURE;
    }
    if let (Command::Serve { allow_user_mismatch: false, .. }, Some((owner, me))) =
        (&cli.command, owner_mismatch(&data))
    {
        let (owner_name, my_name) = (user_name(owner), user_name(me));
        eprintln!(
            "error: {} belongs to user {owner_name} ({owner}), and this runner runs as {my_name} ({me}): what it \
             writes there (builds, logs, releases) would belong to the wrong user and block the hooks and later \
             runners. Run it as {owner_name} (User= in its systemd unit), or pass --allow-user-mismatch if you know \
             why not.",
            data.display()
        );
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Serve {
            concurrency,
            until_idle,
            hook_timeout,
            keep,
            lease,
            grace,
            log_format,
            router,
            domain,
            web,
            slugs,
            role,
            environments,
            no_sandbox,
            ..
        } => {
            init_log(log_format);
            let sandbox = if no_sandbox {
                tracing::warn!("hooks run without a sandbox (--no-sandbox)");
                pushgate::platform::sandbox::Sandbox::Off
            } else {
                match pushgate::platform::sandbox::Sandbox::detect() {
                    Ok(sandbox) => sandbox,
                    Err(e) => {
                        eprintln!("error: this runner cannot run hooks safely: {e}");
                        return ExitCode::from(2);
                    }
                }
            };
            if let Some(addr) = web.http {
                let (data, url) = (data.clone(), web.public_url.clone());
                std::thread::spawn(move || {
                    if let Err(e) = pushgate::web::serve(&data, location(), addr, url.as_deref()) {
                        tracing::error!(error = %e, "the web service stopped");
                    }
                });
            }
            let mut config = runner::Config::new(data.clone());
            config.queue = location().clone();
            config.slugs = match slugs.as_deref().map(runner::slugs::SharedSlugs::parse).transpose() {
                Ok(slugs) => slugs,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let environments = match environments
                .map(|list| {
                    list.iter()
                        .map(|e| pushgate::core::EnvName::parse(e.trim()))
                        .collect::<std::result::Result<Vec<_>, _>>()
                })
                .transpose()
            {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: --environments: {e}");
                    return ExitCode::FAILURE;
                }
            };
            config.scope =
                pushgate::queue::Scope::of_runner(role != Role::Deploy, role != Role::Build, environments, concurrency);
            config.hook_timeout = Duration::from_secs(hook_timeout);
            config.sandbox = sandbox;
            config.keep_releases = keep.max(1);
            config.lease = Duration::from_secs(lease.max(1));
            config.grace = Duration::from_secs(grace);
            platform(&mut config, router, domain).and_then(|()| serve(&config, concurrency, until_idle, &mut out))
        }
        Command::Env(EnvCommand::Sync { environment, services, mounts, from, repo }) => {
            env_sync(&data, &environment, (services || !mounts, mounts || !services), from, repo.as_deref(), &mut out)
        }
        Command::Env(EnvCommand::Delete { environment, repo, yes }) => {
            env_delete(&data, &environment, repo.as_deref(), yes, &mut out)
        }
        Command::Env(EnvCommand::Create { project, environment, kind }) => {
            env_create(&project, &environment, &kind, &mut out)
        }
        Command::Env(EnvCommand::Redeploy { project, environment }) => {
            env_redeploy(&data, &project, &environment, &mut out)
        }
        Command::Env(EnvCommand::List { json }) => envs(&data, json, &mut out),
        Command::Env(EnvCommand::Activate { project, environment }) => {
            env_activate(&data, &project, &environment, &mut out)
        }
        Command::Env(EnvCommand::Deactivate { project, environment, yes }) => {
            env_deactivate(&data, &project, &environment, yes, &mut out)
        }
        Command::Env(EnvCommand::Limit { project, limit }) => env_limit(&project, &limit, &mut out),
        Command::Promote { project, from, to, commit, force, no_follow } => {
            let promotion = runner::promote::Promotion {
                project: &project,
                from: &from,
                to: &to,
                commit: commit.as_deref(),
                force,
                by: pushgate::queue::pusher(&|k| std::env::var(k).ok()),
            };
            promote(&data, &promotion, !no_follow, &mut out)
        }
        Command::Variables { project, environment, values, json } => {
            variables(&data, &project, &environment, values, json, &mut out)
        }
        Command::Backend(command) => backend(&data, command, &mut out),
        Command::Web { web, log_format } => {
            init_log(log_format);
            match web.http {
                Some(addr) => {
                    pushgate::web::serve(&data, location(), addr, web.public_url.as_deref()).map_err(Into::into)
                }
                None => Err("web needs --http ADDR (for example 127.0.0.1:7080)".into()),
            }
        }
        Command::Token(command) => token(command, &mut out),
        Command::Webhook(command) => webhook(command, &mut out),
        Command::Supervise { pid_file, log, dir, uid, gid, cgroup, netns, program } => {
            let user = uid.zip(gid.or(uid));
            let s =
                pushgate::platform::process::Supervised { pid_file, log, dir, user, program, cgroups: cgroup, netns };
            pushgate::platform::process::supervise(&s).map_err(Into::into)
        }
        Command::Forward { spec } => pushgate::platform::network::forward(&spec).map_err(Into::into),
        Command::Jobs { json } => jobs(json, &mut out),
        Command::Logs { job, follow } => logs(&data, job, follow, &mut out),
        Command::Envs { json } => envs(&data, json, &mut out),
        Command::Rollback { environment, to, repo } => {
            rollback(&data, &environment, to.as_deref(), repo.as_deref(), &mut out)
        }
        Command::Cancel { job } => cancel(&data, job, &mut out),
        Command::Shell { command } => shell(&data, command, &mut out),
        Command::Pack { dir, out: slug } => runner::slug::pack(&dir, &slug)
            .map_err(Into::into)
            .and_then(|size| writeln!(out, "{} bytes", size).map_err(Into::into)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in pushgate::report::error_lines(e.as_ref()) {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// The router, when one is asked for (flags over DATA/platform.json), started before any job.
fn platform(config: &mut runner::Config, router: Option<std::net::SocketAddr>, domain: Option<String>) -> Result<()> {
    let platform = pushgate::platform::Platform::serving(&config.data(), router, domain, config.sandbox.clone())?;
    config.platform = platform.map(Arc::new);
    Ok(())
}

fn backend(data: &Path, command: BackendCommand, out: &mut dyn Write) -> Result<()> {
    use pushgate::platform::services::Backends;
    let data = pushgate::store::DataDir::new(data);
    match command {
        BackendCommand::Add { kind, url } => {
            let (kind, version) = Backends::declare(&data, &kind, &url)?;
            writeln!(
                out,
                "Backend {kind} declared (it runs {version}): new environments get their own {kind} services from it."
            )?;
        }
        BackendCommand::List => {
            for (kind, url) in Backends::load(&data)?.masked() {
                writeln!(out, "{kind:12} {url}")?;
            }
        }
        BackendCommand::Remove { kind } => {
            let kind = Backends::withdraw(&data, &kind)?;
            writeln!(out, "Backend {kind} removed (what it provisioned stays).")?;
        }
    }
    Ok(())
}

/// Whether this user may push to the repository (git-shell users see only those projects).
fn can_push(repo: &pushgate::core::RepoId) -> bool {
    let Ok(path) = std::ffi::CString::new(repo.as_str()) else { return false };
    // SAFETY: access reads a NUL-terminated path.
    unsafe { libc::access(path.as_ptr(), libc::W_OK) == 0 }
}

fn shell(data: &Path, command: Option<ShellCommand>, out: &mut dyn Write) -> Result<()> {
    let queue = store()?;
    let project = |repo: &pushgate::core::RepoId| pushgate::activity::project_name(repo);
    match command {
        None => {
            writeln!(
                out,
                "pushgate over ssh: pushgate activities [--limit N] | pushgate envs | pushgate logs ID [--follow]"
            )?;
        }
        Some(ShellCommand::Activities { limit }) => {
            let jobs: Vec<_> = queue
                .activities(None, None, limit.saturating_mul(20).max(200))?
                .into_iter()
                .filter(|j| can_push(&j.repo))
                .take(limit)
                .collect();
            if jobs.is_empty() {
                writeln!(out, "No activity in the projects you can push to.")?;
            }
            for j in jobs {
                writeln!(
                    out,
                    "#{:<6} {:<12} {:<16} {:<9} {:<11} {} {:<10} {}",
                    j.id.to_string(),
                    project(&j.repo),
                    j.environment.to_string(),
                    j.kind.as_str(),
                    j.state.result().unwrap_or(if j.state == JobState::Running { "running" } else { "pending" }),
                    j.commit.short(),
                    j.pusher.as_deref().unwrap_or("-"),
                    j.created_at
                )?;
            }
        }
        Some(ShellCommand::Envs) => {
            let envs: Vec<_> =
                deploy::environments(data).into_iter().filter(|e| e.repo.as_ref().is_some_and(can_push)).collect();
            if envs.is_empty() {
                writeln!(out, "No environment deployed in the projects you can push to.")?;
            }
            for e in envs {
                writeln!(
                    out,
                    "{:<12} {:<16} release {:<4} {} {:<11} {}",
                    e.repo.as_ref().map(project).unwrap_or_default(),
                    e.environment,
                    e.release,
                    e.commit.as_ref().map_or("?", |c| c.short()),
                    e.state,
                    e.primary_url.as_deref().unwrap_or("-")
                )?;
            }
        }
        Some(ShellCommand::Logs { id, follow }) => {
            match queue.job(id)? {
                Some(j) if can_push(&j.repo) => {}
                _ => return Err(format!("there is no activity #{id} in the projects you can push to").into()),
            }
            drop(queue);
            return logs(data, id, follow, out);
        }
    }
    Ok(())
}

fn token(command: TokenCommand, out: &mut dyn Write) -> Result<()> {
    let mut store = store()?;
    match command {
        TokenCommand::Create { name, project, role } => {
            let (token, secret) = pushgate::ops::admin::create_token(&mut *store, name, project, &role)?;
            writeln!(
                out,
                "Token `{}` created: {} of {}. It is shown once; send it as Authorization: Bearer TOKEN, or log in \
                 to the console with it.",
                token.name,
                token.role.as_str(),
                token.project.as_deref().map_or("every project".to_owned(), |p| format!("project {p}"))
            )?;
            writeln!(out, "{secret}")?;
        }
        TokenCommand::List => {
            for t in store.tokens()? {
                writeln!(
                    out,
                    "{:20} {:10} {:20} {}",
                    t.name,
                    t.role.as_str(),
                    t.project.as_deref().unwrap_or("*"),
                    t.created_at
                )?;
            }
        }
        TokenCommand::Revoke { name } => {
            pushgate::ops::admin::revoke_token(&mut *store, &name)?;
            writeln!(out, "Token `{name}` revoked.")?;
        }
    }
    Ok(())
}

fn webhook(command: WebhookCommand, out: &mut dyn Write) -> Result<()> {
    let mut store = store()?;
    match command {
        WebhookCommand::Add { project, url, events } => {
            let hook = pushgate::ops::admin::add_webhook(&mut *store, &project, &url, &events)?;
            writeln!(
                out,
                "Webhook #{} added: the {} of project {project}'s activities are posted to {}.",
                hook.id,
                events.join(", "),
                pushgate::notify::masked(&url)
            )?;
        }
        WebhookCommand::List => {
            for h in store.webhooks()? {
                writeln!(
                    out,
                    "#{:<4} {:20} {:30} {}",
                    h.id,
                    h.project,
                    h.events.join(","),
                    pushgate::notify::masked(&h.url)
                )?;
            }
        }
        WebhookCommand::Remove { id } => {
            pushgate::ops::admin::remove_webhook(&mut *store, id)?;
            writeln!(out, "Webhook #{id} removed.")?;
        }
        WebhookCommand::Deliveries => {
            for d in store.deliveries(50)? {
                let status = match (&d.delivered_at, &d.next_at) {
                    (Some(at), _) => format!("delivered {at}"),
                    (None, Some(at)) => format!("next attempt {at}"),
                    (None, None) => "given up".to_owned(),
                };
                writeln!(
                    out,
                    "activity #{:<6} webhook #{:<4} {} attempt(s), last {:12} {status}",
                    d.job,
                    d.webhook.id,
                    d.attempts,
                    d.last_result.as_deref().unwrap_or("-")
                )?;
            }
        }
    }
    Ok(())
}

/// Queues the sync of an environment from its parent.
fn env_sync(
    data: &Path,
    name: &str,
    parts: (bool, bool),
    from: Option<String>,
    repo: Option<&str>,
    out: &mut dyn Write,
) -> Result<()> {
    let env = deploy::find(data, name, repo)?;
    let (job, parent) = pushgate::ops::environment::sync(data, store()?.as_mut(), &env, name, parts, from)?;
    writeln!(
        out,
        "Job #{} queued: sync of environment {name} from {parent}. Follow it with: pushgate-runner logs {} --follow",
        job.id, job.id
    )?;
    Ok(())
}

fn env_delete(data: &Path, name: &str, repo: Option<&str>, yes: bool, out: &mut dyn Write) -> Result<()> {
    let env = deploy::find(data, name, repo)?;
    if !yes {
        return Err(format!(
            "this deletes environment `{name}` ({}): its services' data, its releases and its mounts' files; pass \
             --yes to do it",
            env.root.display()
        )
        .into());
    }
    let job = pushgate::ops::environment::delete(data, store()?.as_mut(), &env, name)?;
    writeln!(
        out,
        "Job #{} queued: deletion of environment {name} (off the router, its services dropped, its files removed). \
         Follow it with: pushgate-runner logs {} --follow",
        job.id, job.id
    )?;
    Ok(())
}

fn env_create(project: &str, environment: &str, kind: &str, out: &mut dyn Write) -> Result<()> {
    use pushgate::store::environments::{EnvType, Environments};
    let kind = EnvType::parse(kind).ok_or_else(|| format!("--type {kind}: staging, production or integration"))?;
    pushgate::core::EnvName::parse(environment)?;
    let repo = pushgate::activity::project_named(store()?.as_ref(), project)?;
    Environments::declare(repo.path(), environment, kind)?;
    let how = if kind.pushed() {
        "deployed by pushing its branch".to_owned()
    } else {
        format!("deployed by promotion only (pushgate-runner promote {project} FROM {environment}); pushes to its branch are refused")
    };
    writeln!(out, "Environment {environment} of {project} is a {} environment: {how}.", kind.as_str())?;
    Ok(())
}

fn variables(
    data: &Path,
    project: &str,
    environment: &str,
    values: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<()> {
    let repo = pushgate::activity::project_named(store()?.as_ref(), project)?;
    let declared = runner::declared::Declared::load(data, repo.path())?;
    let mut rows = declared.layered(environment);
    if !values {
        for row in &mut rows {
            row.value = serde_json::Value::String("****".into());
        }
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    let kind = declared.environments.of(environment);
    writeln!(out, "Variables of {project}'s {} environment {environment}:", kind.as_str())?;
    if rows.is_empty() {
        writeln!(out, "  none (variables.json in the data directory or {}/pushgate/)", repo.as_str())?;
    }
    for row in rows {
        let value = match &row.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let how = if row.overrides.is_empty() {
            format!("from {}", row.from)
        } else {
            format!("from {}, overriding {}", row.from, row.overrides.join(" and "))
        };
        writeln!(out, "  {} = {value}  ({how})", row.name)?;
    }
    Ok(())
}

fn env_activate(data: &Path, project: &str, environment: &str, out: &mut dyn Write) -> Result<()> {
    let mut queue = store()?;
    let repo = pushgate::activity::project_named(queue.as_ref(), project)?;
    let job = pushgate::ops::environment::activate(data, queue.as_mut(), &repo, environment)?;
    drop(queue);
    writeln!(
        out,
        "Environment {} is active. Job #{}: deploying its branch ({}).",
        job.environment,
        job.id,
        job.commit.short()
    )?;
    follow_to_its_end(data, job.id, out)
}

fn env_deactivate(data: &Path, project: &str, environment: &str, yes: bool, out: &mut dyn Write) -> Result<()> {
    let mut queue = store()?;
    let repo = pushgate::activity::project_named(queue.as_ref(), project)?;
    let name = pushgate::store::environments::resolve(repo.path(), environment)?.0;
    if !yes {
        return Err(format!(
            "this deactivates environment `{name}` of {project}: off the router, its services' databases \
             dropped and its files removed, after a final backup into {}/backups/; pushes to its branch then keep \
             the code without deploying it. Pass --yes to do it",
            data.display()
        )
        .into());
    }
    let Some(job) = pushgate::ops::environment::deactivate(data, queue.as_mut(), &repo, &name)? else {
        writeln!(out, "Environment {name} is inactive (nothing of it was deployed).")?;
        return Ok(());
    };
    drop(queue);
    writeln!(out, "Environment {name} is inactive. Job #{}: stopping it, after a final backup.", job.id)?;
    follow_to_its_end(data, job.id, out)
}

fn env_limit(project: &str, limit: &str, out: &mut dyn Write) -> Result<()> {
    let repo = pushgate::activity::project_named(store()?.as_ref(), project)?;
    let limit = match limit {
        "none" => None,
        n => Some(n.parse::<u32>().map_err(|_| format!("the limit is a number, or none: {n}"))?),
    };
    pushgate::store::environments::Environments::set_limit(repo.path(), limit)?;
    match limit {
        Some(n) => writeln!(out, "{project} may have {n} active integration environments.")?,
        None => writeln!(out, "{project} may have any number of active integration environments.")?,
    }
    Ok(())
}

fn env_redeploy(data: &Path, project: &str, environment: &str, out: &mut dyn Write) -> Result<()> {
    let mut queue = store()?;
    let repo = pushgate::activity::project_named(queue.as_ref(), project)?;
    let name = pushgate::store::environments::resolve(repo.path(), environment)?.0;
    let done = pushgate::ops::environment::redeploy(data, queue.as_mut(), &repo, &name)?;
    drop(queue);
    match &done.retried {
        Some((failed, commit)) => writeln!(
            out,
            "Job #{}: environment {name} was never deployed; its last push (job #{failed}, commit {}) is tried again.",
            done.job,
            commit.short()
        )?,
        None => writeln!(out, "Job #{}: redeploy of environment {name} (its slug, its hooks run again).", done.job)?,
    }
    follow_to_its_end(data, done.job, out)
}

fn promote(data: &Path, promotion: &runner::promote::Promotion<'_>, follow: bool, out: &mut dyn Write) -> Result<()> {
    let request = runner::promote::request(data, store()?.as_ref(), promotion)?;
    let job = enqueue(data, &request)?;
    writeln!(
        out,
        "Job #{}: promotion of {} (commit {}) to {}.",
        job.id,
        promotion.from,
        request.commit.short(),
        promotion.to
    )?;
    if !follow {
        return Ok(());
    }
    follow_to_its_end(data, job.id, out)
}

/// Prints a job's log as it grows, as a push does; Ok when the job succeeded, else how it ended.
fn follow_to_its_end(data: &Path, id: JobId, out: &mut dyn Write) -> Result<()> {
    logs(data, id, true, out)?;
    match store()?.job(id)? {
        Some(job) if job.state == JobState::Succeeded => Ok(()),
        Some(job) => Err(format!("job #{id} ended {}", job.state.as_str()).into()),
        None => Err(format!("job #{id} is gone").into()),
    }
}

/// Queues a job and wakes the runners waiting on this data directory.
fn enqueue(data: &Path, request: &pushgate::queue::Request) -> Result<pushgate::queue::Job> {
    let job = store()?.enqueue(request)?;
    pushgate::store::wake::wake(data);
    Ok(job)
}

fn serve(config: &runner::Config, concurrency: usize, until_idle: bool, out: &mut dyn Write) -> Result<()> {
    let shutdown = Arc::new(runner::shutdown::Shutdown::default());
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
    let signals_handle = signals.handle();
    let (stopping, data) = (shutdown.clone(), config.data_dir.clone());
    std::thread::spawn(move || {
        for _ in signals.forever() {
            stopping.stop();
            // Idle workers wait on the wake-up FIFO: a byte there lets them see the stop now.
            pushgate::store::wake::wake(&data);
        }
    });
    let done = runner::serve(config, concurrency, &shutdown, until_idle);
    signals_handle.close();
    writeln!(out, "Processed {} job(s).", done?)?;
    Ok(())
}

fn jobs(json: bool, out: &mut dyn Write) -> Result<()> {
    let mut queue = store()?;
    // Settle pushes whose post-receive did not run, so the list is the truth.
    if let Err(e) = queue.reconcile(&GitRefLog::default()) {
        eprintln!("warning: {e}");
    }
    let jobs = queue.jobs()?;
    if !json {
        return Ok(pushgate::report::jobs_table(out, &jobs)?);
    }
    let views: Vec<_> = jobs.iter().map(|job| pushgate::queue::JobView { job, runner: job.runners() }).collect();
    serde_json::to_writer_pretty(&mut *out, &views)?;
    Ok(writeln!(out)?)
}

/// Prints `rows` as one JSON array (for scripts), or as people read them.
fn json_or<T: serde::Serialize>(
    json: bool,
    rows: &[T],
    out: &mut dyn Write,
    table: fn(&mut dyn Write, &[T]) -> std::io::Result<()>,
) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, rows)?;
        writeln!(out)?;
    } else {
        table(out, rows)?;
    }
    Ok(())
}

fn logs(data: &Path, job: JobId, follow: bool, out: &mut dyn Write) -> Result<()> {
    let path = runner::Config::new(data.to_owned()).log_path(job);
    let queue = store()?;
    let found = queue.job(job)?.ok_or_else(|| format!("there is no job #{job} (pushgate-runner jobs lists them)"))?;
    let at = pushgate::follow::LogAt::beside(location().is_embedded(), &path);
    if follow {
        pushgate::follow::follow(queue.as_ref(), at, &found, Duration::MAX, None, out)?;
        return Ok(());
    }
    let text = at.read_from(queue.as_ref(), job, 0).map_err(|e| format!("reading the log of job #{job}: {e}"))?;
    if text.is_empty() {
        // Never started: nothing to show yet, and that is not an error.
        writeln!(
            out,
            "Job #{job} is {} and has no log yet{}",
            found.state.as_str(),
            if found.state == JobState::Pending { "; --follow waits for a runner to start it" } else { "" }
        )?;
    } else {
        out.write_all(&pushgate::follow::printable(&text))?;
    }
    Ok(())
}

fn envs(data: &Path, json: bool, out: &mut dyn Write) -> Result<()> {
    json_or(json, &deploy::environments(data), out, pushgate::report::environments)
}

fn rollback(data: &Path, environment: &str, to: Option<&str>, repo: Option<&str>, out: &mut dyn Write) -> Result<()> {
    let env = deploy::find(data, environment, repo)?;
    let mut config = runner::Config::new(data.to_owned());
    config.queue = location().clone();
    let mut queue = store()?;
    let done = pushgate::ops::environment::rollback(&config, queue.as_mut(), &env, to)?;
    drop(queue);
    if !done.at_once {
        writeln!(
            out,
            "Job #{}: rollback of environment {environment} to release {}, once the job of {environment} that runs \
             now has ended.",
            done.job, done.target
        )?;
    }
    follow_to_its_end(data, done.job, out)
}

fn cancel(data: &Path, job: JobId, out: &mut dyn Write) -> Result<()> {
    let mut queue = store()?;
    match queue.cancel(job)? {
        Some(state) => {
            writeln!(out, "Job #{job} cancelled (it was {}).", state.as_str())?;
            if let Some(j) = queue.job(job)? {
                let text = format!(
                    "Activity #{job} ({} of environment {}) cancelled; it was {}",
                    j.kind.as_str(),
                    j.environment,
                    state.as_str()
                );
                let request = pushgate::queue::Request {
                    kind: pushgate::queue::JobKind::Cancel,
                    repo: j.repo,
                    ref_name: j.ref_name,
                    environment: j.environment,
                    commit: j.commit,
                    options: serde_json::json!({ "activity": job, "was": state.as_str() }).to_string(),
                    pusher: pushgate::queue::pusher(&|k| std::env::var(k).ok()),
                };
                pushgate::activity::record_done(queue.as_mut(), &pushgate::store::DataDir::new(data), &request, &text)?;
            }
        }
        None => {
            return Err(match queue.job(job)? {
                Some(j) => format!("job #{job} has already ended: {}", j.state.as_str()),
                None => format!("there is no job #{job} (pushgate-runner jobs lists them)"),
            }
            .into())
        }
    }
    Ok(())
}
