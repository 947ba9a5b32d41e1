//! `serve` and `web`: the runner's loop (jobs, the router, the console) and the console alone.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use pushgate::runner;

use crate::cli::{LogFormat, Role, ServeArgs, WebArgs};
use crate::{location, Result};

/// Runs `serve`: the sandbox checked, the web service and the router started, then jobs until
/// SIGTERM or SIGINT (or, `--until-idle`, until the queue is empty).
pub fn run(data: &Path, args: ServeArgs, out: &mut dyn Write) -> ExitCode {
    init_log(args.log_format);
    let sandbox = if args.no_sandbox {
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
    if let Some(addr) = args.web.http {
        let (data, url) = (data.to_owned(), args.web.public_url.clone());
        std::thread::spawn(move || {
            if let Err(e) = pushgate::web::serve(&data, location(), addr, url.as_deref()) {
                tracing::error!(error = %e, "the web service stopped");
            }
        });
    }
    let mut config = runner::Config::new(data.to_owned());
    config.queue = location().clone();
    config.slugs = match args.slugs.as_deref().map(runner::slugs::SharedSlugs::parse).transpose() {
        Ok(slugs) => slugs,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let environments = args
        .environments
        .map(|list| {
            list.iter().map(|e| pushgate::core::EnvName::parse(e.trim())).collect::<std::result::Result<_, _>>()
        })
        .transpose();
    let environments = match environments {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: --environments: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (role, concurrency) = (args.role, args.concurrency);
    config.scope =
        pushgate::queue::Scope::of_runner(role != Role::Deploy, role != Role::Build, environments, concurrency);
    config.hook_timeout = Duration::from_secs(args.hook_timeout);
    config.sandbox = sandbox;
    config.keep_releases = args.keep.max(1);
    config.lease = Duration::from_secs(args.lease.max(1));
    config.grace = Duration::from_secs(args.grace);
    let served = platform(&mut config, args.router, args.domain)
        .and_then(|()| serve(&config, concurrency, args.until_idle, out));
    crate::exit(served)
}

/// Runs `web`: the console and the API alone.
pub fn web(data: &Path, web: WebArgs, log_format: LogFormat) -> Result<()> {
    init_log(log_format);
    match web.http {
        Some(addr) => pushgate::web::serve(data, location(), addr, web.public_url.as_deref()).map_err(Into::into),
        None => Err("web needs --http ADDR (for example 127.0.0.1:7080)".into()),
    }
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

/// The router, when one is asked for (flags over DATA/platform.json), started before any job.
fn platform(config: &mut runner::Config, router: Option<std::net::SocketAddr>, domain: Option<String>) -> Result<()> {
    let platform = pushgate::platform::Platform::serving(&config.data(), router, domain, config.sandbox.clone())?;
    config.platform = platform.map(Arc::new);
    Ok(())
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
