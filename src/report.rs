//! What the pusher sees: the `E:`/`W:` block Magento Cloud users know, with `file:line:col`, the
//! offending line and a caret, and a hint for every finding.
//!
//! Everything is written to an `impl Write`: the hook's output reaches the pusher through git,
//! and a client that hangs up must not make us panic, so callers ignore write errors.

use std::io::{self, Write};

use crate::diag::{Diagnostic, Diagnostics, Severity};
use crate::queue::{Job, JobState};
use crate::topology::diff::{Change, Kind, Subject};
use crate::topology::{Route, Topology};

/// Gives the text of line `line` (1-based) of a repository file, for the excerpt under a finding.
pub type LineLookup<'a> = dyn Fn(&str, u32) -> Option<String> + 'a;

/// Writes the findings: errors in one `E:` block, then one `W:` line per warning.
pub fn diagnostics(out: &mut dyn Write, diags: &Diagnostics, lines: &LineLookup<'_>) -> io::Result<()> {
    let mut errors = diags.errors().peekable();
    if errors.peek().is_some() {
        writeln!(out, "E: Error parsing configuration files:")?;
        for d in errors {
            write_one(out, "    - ", d, lines)?;
        }
    }
    for d in diags.warnings() {
        write_one(out, "W: ", d, lines)?;
    }
    Ok(())
}

fn write_one(out: &mut dyn Write, lead: &str, d: &Diagnostic, lines: &LineLookup<'_>) -> io::Result<()> {
    let path = if d.path.is_empty() { String::new() } else { format!("{}: ", d.path) };
    if d.pos.line == 0 {
        // About the set of files, not a place in one (no app file at all).
        writeln!(out, "{lead}{path}{} [{}]", d.message, d.code)?;
    } else {
        writeln!(out, "{lead}{}:{}:{}: {path}{} [{}]", d.file, d.pos.line, d.pos.col, d.message, d.code)?;
    }
    let pad = " ".repeat(lead.len() + 4);
    if d.severity == Severity::Error {
        if let Some(text) = lines(&d.file, d.pos.line) {
            let text: String = text.chars().take(160).collect();
            let number = d.pos.line.to_string();
            // A tab shows as one visible character, so the caret (a column count) lines up.
            writeln!(out, "{pad}{number} | {}", text.replace('\t', "→"))?;
            let caret_at = (d.pos.col as usize).saturating_sub(1).min(text.chars().count());
            writeln!(out, "{pad}{} | {}^", " ".repeat(number.len()), " ".repeat(caret_at))?;
        }
    }
    if !d.hint.is_empty() {
        writeln!(out, "{pad}hint: {}", d.hint)?;
    }
    Ok(())
}

/// An error and its causes as lines (`error: …`, then `caused by: …`), without a cause that
/// only repeats what a line above already says (`cannot be written: disk full`, then `disk
/// full`).
pub fn error_lines(e: &dyn std::error::Error) -> Vec<String> {
    let mut lines = vec![format!("error: {e}")];
    let mut said = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        let core = text.rsplit(": ").next().unwrap_or(&text);
        if !said.contains(core) {
            lines.push(format!("caused by: {text}"));
            said.push_str(&text);
        }
        source = cause.source();
    }
    lines
}

/// The environment as the push will make it, the way Magento Cloud prints it, each line marked
/// with what changed.
pub fn topology(out: &mut dyn Write, topology: &Topology, changes: &[Change]) -> io::Result<()> {
    let marks = |subject: Subject, name: &str| -> String {
        let found: Vec<String> = changes
            .iter()
            .filter(|c| c.subject == subject && c.name == name)
            .map(|c| match c.kind {
                Kind::Added => "added".to_owned(),
                _ => format!("{}: {}", c.kind.word(), c.detail),
            })
            .collect();
        if found.is_empty() {
            String::new()
        } else {
            format!("  [{}]", found.join("; "))
        }
    };
    let disk = |d: Option<i64>| d.map(|d| format!(", disk: {d}")).unwrap_or_default();
    writeln!(out, "Environment configuration")?;
    for (name, app) in &topology.apps {
        writeln!(
            out,
            "    {name} (type: {}, size: {}{}){}",
            app.kind,
            app.size,
            disk(app.disk),
            marks(Subject::App, name)
        )?;
    }
    for (name, s) in &topology.services {
        writeln!(
            out,
            "    {name} (type: {}, size: {}{}){}",
            s.kind,
            s.size,
            disk(s.disk),
            marks(Subject::Service, name)
        )?;
    }
    for c in changes.iter().filter(|c| c.kind == Kind::Removed && c.subject != Subject::Route) {
        writeln!(out, "    {} ({})  [removed]", c.name, c.detail)?;
    }
    writeln!(out, "Environment routes")?;
    for (url, route) in &topology.routes {
        let text = match route {
            Route::Upstream { upstream } => {
                let target = upstream.split(':').next().unwrap_or(upstream);
                let what = if topology.apps.contains_key(target) { "application" } else { "service" };
                format!("{url} is served by {what} `{target}`")
            }
            Route::Redirect { to } => format!("{url} redirects to {to}"),
        };
        writeln!(out, "    {text}{}", marks(Subject::Route, url))?;
    }
    for c in changes.iter().filter(|c| c.kind == Kind::Removed && c.subject == Subject::Route) {
        writeln!(out, "    {} ({})  [removed]", c.name, c.detail)?;
    }
    Ok(())
}

/// The changes that destroy data: refused (an `E:` block) or, with the push option, listed.
pub fn destruction(out: &mut dyn Write, destroying: &[&Change], allowed: bool) -> io::Result<()> {
    if destroying.is_empty() {
        return Ok(());
    }
    if allowed {
        writeln!(out, "W: Data will be destroyed (accepted with -o {}):", crate::settings::ALLOW_DATA_LOSS)?;
        for c in destroying {
            writeln!(out, "    - {}", c.destroys.as_deref().unwrap_or_default())?;
        }
        return Ok(());
    }
    writeln!(out, "E: This push would destroy data:")?;
    for c in destroying {
        writeln!(out, "    - {}", c.destroys.as_deref().unwrap_or_default())?;
        if let Some(advice) = &c.advice {
            writeln!(out, "          instead: {advice}")?;
        }
    }
    writeln!(out, "    To accept the loss, push again with: git push -o {} ...", crate::settings::ALLOW_DATA_LOSS)?;
    Ok(())
}

/// The builds a push queued: one line each, or a summary for many.
pub fn queued(out: &mut dyn Write, jobs: &[Job]) -> io::Result<()> {
    const EACH: usize = 5;
    let line = |j: &Job| -> String {
        let short = j.commit.short();
        match j.state {
            JobState::Pending => format!("Build #{} queued for environment {} ({short})", j.id, j.environment),
            _ => format!("Build #{} of {short} superseded: {} has moved on", j.id, j.ref_name),
        }
    };
    if jobs.len() <= EACH {
        for j in jobs {
            writeln!(out, "{}", line(j))?;
        }
        return Ok(());
    }
    let pending = jobs.iter().filter(|j| j.state == JobState::Pending).count();
    let (first, last) = (jobs[0].id, jobs[jobs.len() - 1].id);
    writeln!(
        out,
        "Builds #{first} to #{last} queued: {pending} for their environments, {} superseded",
        jobs.len() - pending
    )?;
    writeln!(out, "    pushgate-runner jobs lists them")
}

/// The jobs as `pushgate-runner jobs` lists them: one line each, newest last.
pub fn jobs_table(out: &mut dyn Write, jobs: &[Job]) -> io::Result<()> {
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
            j.commit.short(),
            j.ref_name,
            j.created_at,
            j.updated_at,
            j.repo
        )?;
    }
    Ok(())
}

/// The environments as `pushgate-runner envs` lists them.
pub fn environments(out: &mut dyn Write, rows: &[crate::store::deployed::Environment]) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "No environment deployed yet.");
    }
    for r in rows {
        if let Some(hint) = r.hint.as_deref().filter(|_| r.release.is_empty()) {
            writeln!(out, "{}  {}  {}  ({hint})", r.environment, r.kind.as_str(), r.state)?;
            continue;
        }
        let commit = r.commit.as_ref().map_or("?", |c| c.short());
        let url = r.primary_url.as_deref().unwrap_or("-");
        let parent = r.parent.as_deref().map(|p| format!("parent {p}  ")).unwrap_or_default();
        writeln!(
            out,
            "{}  {}  {parent}release {}  {commit}  {}  {url}  {}",
            r.environment,
            r.kind.as_str(),
            r.release,
            r.state,
            r.path
        )?;
    }
    Ok(())
}
