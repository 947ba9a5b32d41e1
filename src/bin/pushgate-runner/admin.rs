//! The admin's commands: backends, tokens, webhooks.

use std::io::Write;
use std::path::Path;

use crate::cli::{BackendCommand, TokenCommand, WebhookCommand};
use crate::{store, Result};

pub fn backend(data: &Path, command: BackendCommand, out: &mut dyn Write) -> Result<()> {
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

pub fn token(command: TokenCommand, out: &mut dyn Write) -> Result<()> {
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

pub fn webhook(command: WebhookCommand, out: &mut dyn Write) -> Result<()> {
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
