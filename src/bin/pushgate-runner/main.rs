//! `pushgate-runner`: builds and deploys the jobs pushgate queued, and shows them.
//!
//! A front end: each command is parsed (`cli`), asks `pushgate::ops` (or the runner, for
//! `serve`) and prints what people read (`environments`, `jobs`, `admin`, `serve`).

mod admin;
mod cli;
mod environments;
mod jobs;
mod serve;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command};
use pushgate::ops;
use pushgate::settings::Env;

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

/// Who acts from this command line (over ssh: the git server's user).
fn actor(via: ops::Via) -> ops::Actor {
    ops::Actor::from_process(via)
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
        Command::Serve(_)
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
    if let (Command::Serve(cli::ServeArgs { allow_user_mismatch: false, .. }), Some((owner, me))) =
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
        Command::Serve(args) => return serve::run(&data, args, &mut out),
        Command::Web { web, log_format } => serve::web(&data, web, log_format),
        Command::Env(command) => environments::env(&data, command, &mut out),
        Command::Promote { project, from, to, commit, force, no_follow } => {
            let promotion = ops::promote::Promotion {
                project: &project,
                from: &from,
                to: &to,
                commit: commit.as_deref(),
                force,
                by: None,
            };
            environments::promote(&data, promotion, !no_follow, &mut out)
        }
        Command::Variables { project, environment, values, json } => {
            environments::variables(&data, &project, &environment, values, json, &mut out)
        }
        Command::Rollback { environment, to, repo } => {
            environments::rollback(&data, &environment, to.as_deref(), repo.as_deref(), &mut out)
        }
        Command::Envs { json } => environments::list(&data, json, &mut out),
        Command::Backend(command) => admin::backend(&data, command, &mut out),
        Command::Token(command) => admin::token(command, &mut out),
        Command::Webhook(command) => admin::webhook(command, &mut out),
        Command::Jobs { json } => jobs::list(json, &mut out),
        Command::Logs { job, follow } => jobs::logs(&data, job, follow, &mut out),
        Command::Cancel { job } => jobs::cancel(&data, job, &mut out),
        Command::Shell { command } => jobs::shell(&data, command, &mut out),
        Command::Supervise { pid_file, log, dir, uid, gid, cgroup, netns, program } => {
            let user = uid.zip(gid.or(uid));
            let s =
                pushgate::platform::process::Supervised { pid_file, log, dir, user, program, cgroups: cgroup, netns };
            pushgate::platform::process::supervise(&s).map_err(Into::into)
        }
        Command::Forward { spec } => pushgate::platform::network::forward(&spec).map_err(Into::into),
        Command::Pack { dir, out: slug } => pushgate::runner::slug::pack(&dir, &slug)
            .map_err(Into::into)
            .and_then(|size| writeln!(out, "{} bytes", size).map_err(Into::into)),
    };
    exit(result)
}

/// The exit code of a command's result, its error printed with its causes.
fn exit(result: Result<()>) -> ExitCode {
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
