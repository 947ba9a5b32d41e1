//! The command line's grammar: every command and option of `pushgate-runner`, with the help
//! people read (`--help`). What each does is in the modules beside it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pushgate::core::JobId;

#[derive(Parser)]
#[command(name = "pushgate-runner", version, about = "Builds and deploys the pushes pushgate queued")]
pub struct Cli {
    /// The data directory (queue, logs, slugs, environments).
    #[arg(long, global = true, value_name = "DIR", env = "PUSHGATE_DATA")]
    pub data: Option<PathBuf>,
    /// The queue, when it is not the data directory's SQLite: a PostgreSQL URL
    /// (postgres://USER@HOST/DB), which runners on several machines share. The hooks find it in
    /// `git config pushgate.queue` (install.sh --queue).
    #[arg(long, global = true, value_name = "URL", env = "PUSHGATE_QUEUE")]
    pub queue: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Claim and run jobs until SIGTERM or SIGINT (then nothing new is claimed; running jobs get a
    /// grace period, after which they are stopped and returned to the queue).
    Serve(ServeArgs),
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
pub enum EnvCommand {
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
pub struct WebArgs {
    /// Serve the web console and JSON API on this address (for example 127.0.0.1:7080).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<std::net::SocketAddr>,
    /// The console's address as people reach it (behind a proxy, say), named in push output
    /// (default: http://ADDR).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

#[derive(Subcommand)]
pub enum TokenCommand {
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
pub enum ShellCommand {
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
pub enum WebhookCommand {
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
pub enum BackendCommand {
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

/// What `serve` is asked.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Jobs run at once (never two of one environment).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Process what is queued, then exit.
    #[arg(long)]
    pub until_idle: bool,
    /// Time limit of each hook, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub hook_timeout: u64,
    /// Releases kept per environment, for rollback.
    #[arg(long, default_value_t = 5)]
    pub keep: usize,
    /// Seconds a claim holds without a heartbeat; a runner that dies loses its job after it.
    #[arg(long, default_value_t = 30)]
    pub lease: u64,
    /// Seconds running jobs may go on after SIGTERM before they are stopped and returned to
    /// the queue.
    #[arg(long, default_value_t = 60)]
    pub grace: u64,
    /// Run the router on this address (for example 127.0.0.1:8080): every deployed
    /// environment is then a site at its URLs. Also set by `router` in DATA/platform.json.
    #[arg(long, value_name = "ADDR")]
    pub router: Option<std::net::SocketAddr>,
    /// The base domain of the environments' URLs (ENV.PROJECT.DOMAIN; default localhost, or
    /// `domain` in DATA/platform.json).
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Serve even though this user does not own the data directory (what it creates would
    /// then belong to another user than the one the hooks run as).
    #[arg(long)]
    pub allow_user_mismatch: bool,
    /// The runner's own log on standard error (claims, phases, outcomes, errors, with the
    /// job, environment and runner as fields): `human` lines, or `json`, one object a line,
    /// for log collectors. Developers' job logs are separate (`pushgate-runner logs`).
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub web: WebArgs,
    /// Share slugs with the runners of other machines, so that a tree built on one is reused
    /// by all: a directory every runner mounts (NFS, a cluster file system), or
    /// s3://BUCKET/PREFIX in any S3-compatible store (its address and keys from AWS_ENDPOINT,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ALLOW_HTTP).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub slugs: Option<String>,
    /// What this runner does: `build` (builds and stores slugs, needs no services, hands each
    /// job on), `deploy` (deploys built slugs and runs the actions on environments, builds
    /// nothing), or `all`.
    #[arg(long, value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Only the jobs of these environments (comma-separated): the machine that serves them.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub environments: Option<Vec<String>>,
    /// Run hooks without their sandbox (bubblewrap namespaces, a cgroup with limits): only
    /// where the host cannot build one and every developer is trusted. Every job's log says so.
    #[arg(long)]
    pub no_sandbox: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Build,
    Deploy,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}
