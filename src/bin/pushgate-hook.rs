//! `pushgate-hook`: git hook entry points and `check` for developers and CI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pushgate-hook", version, about = "Validates Magento Cloud configuration on git push")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run as git's pre-receive hook: ref updates on stdin; refuses a push whose configuration is invalid.
    PreReceive {
        /// A hook installed before pushgate, run next with the same input when pushgate accepts.
        #[arg(long, value_name = "HOOK")]
        chain: Option<PathBuf>,
    },
    /// Validate the configuration files of a checkout, with the same output as the hook (exit 1 on errors).
    Check {
        /// The directory to check (default: the current directory).
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::PreReceive { chain } => {
            pushgate::hook::pre_receive_main(&mut std::io::stdin().lock(), &mut out, chain.as_deref())
        }
        Command::Check { dir } => pushgate::hook::check_dir(&dir.unwrap_or_else(|| PathBuf::from(".")), &mut out),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            use std::io::Write;
            let _ = writeln!(out, "error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                let _ = writeln!(out, "caused by: {cause}");
                source = cause.source();
            }
            let _ = writeln!(out, "pushgate could not check this push, so it is refused; nothing was changed.");
            ExitCode::FAILURE
        }
    }
}
