//! `pushgate-hook`: git hook entry points, and `check` for developers and CI.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushgate::hook::HookError;
use pushgate::settings::Env;

#[derive(Parser)]
#[command(name = "pushgate-hook", version, about = "Validates Magento Cloud configuration on git push")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run as git's pre-receive hook: refuses a push whose configuration is invalid or would
    /// destroy data, and reserves its builds.
    PreReceive {
        /// A hook installed before pushgate, run next with the same input when pushgate accepts.
        #[arg(long, value_name = "HOOK")]
        chain: Option<PathBuf>,
    },
    /// Run as git's post-receive hook: queues a build for every branch git updated.
    PostReceive {
        /// A hook installed before pushgate, run next with the same input.
        #[arg(long, value_name = "HOOK")]
        chain: Option<PathBuf>,
    },
    /// Validate the configuration files of a checkout, with the same output as the hook (exit 1 on errors).
    Check {
        /// The directory to check (default: the current directory).
        dir: Option<PathBuf>,
    },
}

/// Installed hooks are symlinks to this binary (no shell to start on every push): called as
/// `…/hooks/pre-receive` it runs `pre-receive`, with the hook that was there before pushgate
/// at `…/hooks/pre-receive.chained`. Called as `…/pre-receive.d/NAME` (the layout of Gitea,
/// Forgejo and GitLab, which run every program there), it runs `pre-receive` with nothing to
/// chain: the server runs the others itself.
fn command_from_hook_name() -> Option<Command> {
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    let chain = Some(PathBuf::from(format!("{}.chained", argv0.display())));
    let dir = argv0.parent().and_then(|d| d.file_name()).and_then(|d| d.to_str());
    match (argv0.file_name()?.to_str()?, dir) {
        ("pre-receive", _) => Some(Command::PreReceive { chain }),
        ("post-receive", _) => Some(Command::PostReceive { chain }),
        (_, Some("pre-receive.d")) => Some(Command::PreReceive { chain: None }),
        (_, Some("post-receive.d")) => Some(Command::PostReceive { chain: None }),
        _ => None,
    }
}

fn main() -> ExitCode {
    // git verified every object when it received it; checking each one's hash again on every
    // read is a fifth of a hook's work.
    git2::opts::strict_hash_verification(false);
    let cli = match command_from_hook_name() {
        Some(command) => Cli { command },
        None => Cli::parse(),
    };
    let env = Env::from_process();
    let mut out = std::io::stdout().lock();
    let mut stdin = std::io::stdin().lock();
    let (result, what) = match cli.command {
        Command::PreReceive { chain } => {
            (pushgate::hook::pre_receive_main(&mut stdin, &mut out, &env, chain.as_deref()), Some("refused"))
        }
        Command::PostReceive { chain } => {
            (pushgate::hook::post_receive_main(&mut stdin, &mut out, &env, chain.as_deref()), None)
        }
        Command::Check { dir } => {
            (pushgate::hook::check_dir(&dir.unwrap_or_else(|| PathBuf::from(".")), &mut out), None)
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            report_error(&mut out, &e, what);
            ExitCode::FAILURE
        }
    }
}

/// `error: …` with `caused by:` lines; for pre-receive, says that the push is refused.
fn report_error(out: &mut dyn Write, e: &HookError, push_verdict: Option<&str>) {
    for line in pushgate::report::error_lines(e) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(verdict) = push_verdict {
        let _ =
            writeln!(out, "pushgate could not check and record this push, so it is {verdict}; nothing was changed.");
    } else if matches!(e, HookError::Queue(_)) {
        let _ = writeln!(out, "The refs were updated; the build will be queued when the queue can be written again.");
    }
}
