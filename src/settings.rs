//! Where state lives and how the hooks behave, resolved once at the edge of the program.
//!
//! The data directory is, in order: the repository's `git config pushgate.data` (written by
//! install.sh), `PUSHGATE_DATA`, then `/var/lib/pushgate` for root or
//! `${XDG_DATA_HOME:-~/.local/share}/pushgate` for others. Nothing else reads the environment.

use std::path::PathBuf;
use std::time::Duration;

/// The push option that accepts a change destroying data.
pub const ALLOW_DATA_LOSS: &str = "pushgate.allow-data-loss";

/// The push option that returns at once instead of following the deployment.
pub const NOWAIT: &str = "pushgate.nowait";

/// How long a push waits for a runner to pick its build up before saying so.
pub const DEFAULT_PICKUP_WAIT: Duration = Duration::from_secs(5);

/// What the process environment says, read once by the binary.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub data: Option<PathBuf>,
    pub home: Option<PathBuf>,
    pub xdg_data_home: Option<PathBuf>,
    /// `git push -o` values (`GIT_PUSH_OPTION_0..COUNT`).
    pub push_options: Vec<String>,
    /// `PUSHGATE_TIMINGS=1`: the hooks print how long validation and the queue took.
    pub timings: bool,
    /// Who pushes, as the git server says (`crate::queue::pusher`).
    pub pusher: Option<String>,
}

impl Env {
    pub fn from_process() -> Env {
        let path = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT").ok().and_then(|c| c.parse().ok()).unwrap_or(0);
        let push_options = (0..count).filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok()).collect();
        Env {
            data: path("PUSHGATE_DATA"),
            home: path("HOME"),
            xdg_data_home: path("XDG_DATA_HOME"),
            push_options,
            timings: std::env::var_os("PUSHGATE_TIMINGS").is_some_and(|v| v == "1"),
            pusher: crate::queue::pusher(&|k| std::env::var(k).ok()),
        }
    }

    pub fn has_push_option(&self, option: &str) -> bool {
        self.push_options.iter().any(|o| o == option)
    }

    /// The data directory when no repository says otherwise.
    pub fn default_data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data {
            return d.clone();
        }
        if is_root() {
            return PathBuf::from("/var/lib/pushgate");
        }
        match (&self.xdg_data_home, &self.home) {
            (Some(x), _) => x.join("pushgate"),
            (None, Some(h)) => h.join(".local/share/pushgate"),
            (None, None) => PathBuf::from("/var/lib/pushgate"),
        }
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// Settings of a hook run in one repository.
#[derive(Debug, Clone)]
pub struct Hook {
    pub data_dir: PathBuf,
    pub queue_timeout: Duration,
    pub allow_data_loss: bool,
    pub timings: bool,
    /// Follow the deployment in the push's output (unless `-o pushgate.nowait`).
    pub follow: bool,
    pub pickup_wait: Duration,
    /// How a new environment starts (`-o environment.clone_parent_on_create=false`,
    /// `-o environment.parent=NAME`, Platform.sh's push options).
    pub new_environment: crate::core::plan::NewEnvironment,
    /// `-o environment.status=inactive`: the branch is pushed (and validated), not deployed.
    pub inactive: bool,
    /// False for a repository that is not a project (`git config pushgate.enabled false`;
    /// install.sh sets it on gitolite's admin repository, since gitolite's common hooks run on
    /// every repository).
    pub enabled: bool,
    pub pusher: Option<String>,
    /// The queue's URL (`git config pushgate.queue`, a postgres:// URL) when it is not the data
    /// directory's SQLite.
    pub queue: Option<String>,
    /// Where runners on other machines fetch this repository from (`git config pushgate.url`).
    pub source_url: Option<String>,
}

impl Hook {
    /// From the repository's git config, then the environment.
    pub fn resolve(repo: &git2::Repository, env: &Env) -> Hook {
        let config = repo.config().ok();
        let get = |key: &str| config.as_ref().and_then(|c| c.get_string(key).ok()).filter(|v| !v.is_empty());
        let data_dir = get("pushgate.data").map(PathBuf::from).unwrap_or_else(|| env.default_data_dir());
        let queue_timeout = get("pushgate.queueTimeoutMs")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(crate::store::QUEUE_TIMEOUT);
        let pickup_wait = get("pushgate.pickupWaitMs")
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_PICKUP_WAIT);
        let enabled = config.as_ref().and_then(|c| c.get_bool("pushgate.enabled").ok()).unwrap_or(true);
        let option = |name: &str| {
            env.push_options
                .iter()
                .find_map(|o| o.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .map(str::to_owned)
        };
        let new_environment = crate::core::plan::NewEnvironment {
            clone_parent: option("environment.clone_parent_on_create").is_none_or(|v| v != "false" && v != "0"),
            parent: option("environment.parent"),
        };
        Hook {
            inactive: option("environment.status").is_some_and(|v| v == "inactive"),
            new_environment,
            enabled,
            data_dir,
            queue_timeout,
            allow_data_loss: env.has_push_option(ALLOW_DATA_LOSS),
            timings: env.timings,
            follow: !env.has_push_option(NOWAIT),
            pickup_wait,
            pusher: env.pusher.clone(),
            queue: get("pushgate.queue"),
            source_url: get("pushgate.url"),
        }
    }
}
