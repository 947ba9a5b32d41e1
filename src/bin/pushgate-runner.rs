//! `pushgate-runner`: the build queue's consumer. For now: `jobs`, to see the queue.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pushgate::git::GitRefLog;
use pushgate::queue::{Job, SqliteQueue};
use pushgate::settings::Env;

#[derive(Parser)]
#[command(name = "pushgate-runner", version, about = "Builds and deploys the pushes pushgate queued")]
struct Cli {
    /// The data directory (queue, logs, slugs, environments).
    #[arg(long, global = true, value_name = "DIR", env = "PUSHGATE_DATA")]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the jobs: id, repository, ref, commit, environment, state, times.
    Jobs {
        /// One JSON array of job objects, for scripts.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let data = cli.data.unwrap_or_else(|| Env::from_process().default_data_dir());
    let mut out = std::io::stdout().lock();
    let result = match cli.command {
        Command::Jobs { json } => jobs(&data, json, &mut out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&*e);
            while let Some(cause) = source {
                eprintln!("caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn jobs(data: &std::path::Path, json: bool, out: &mut dyn Write) -> Result<(), Box<dyn std::error::Error>> {
    let mut queue = SqliteQueue::open(data, Duration::from_secs(10))?;
    // Settle pushes whose post-receive did not run, so the list is the truth.
    if let Err(e) = queue.reconcile(&GitRefLog::default()) {
        eprintln!("warning: {e}");
    }
    let jobs = queue.jobs()?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &jobs)?;
        writeln!(out)?;
        return Ok(());
    }
    write_table(out, &jobs)?;
    Ok(())
}

fn write_table(out: &mut dyn Write, jobs: &[Job]) -> std::io::Result<()> {
    if jobs.is_empty() {
        return writeln!(out, "No jobs.");
    }
    writeln!(
        out,
        "{:>5}  {:<10}  {:<20}  {:<10}  {:<24}  {:<24}  {:<24}  REPOSITORY",
        "ID", "STATE", "ENVIRONMENT", "COMMIT", "REF", "CREATED", "UPDATED"
    )?;
    for j in jobs {
        writeln!(
            out,
            "{:>5}  {:<10}  {:<20}  {:<10}  {:<24}  {:<24}  {:<24}  {}",
            j.id,
            j.state.as_str(),
            j.environment,
            &j.commit[..10.min(j.commit.len())],
            j.ref_name,
            j.created_at,
            j.updated_at,
            j.repo
        )?;
    }
    Ok(())
}
