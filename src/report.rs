//! What the pusher sees: the `E:`/`W:` block Magento Cloud users know, with `file:line:col`, the
//! offending line and a caret, and a hint for every finding.
//!
//! Everything is written to an `impl Write`: the hook's output reaches the pusher through git,
//! and a client that hangs up must not make us panic, so callers ignore write errors.

use std::io::{self, Write};

use crate::config::yaml::Node;
use crate::config::ConfigSet;
use crate::diag::{Diagnostic, Diagnostics, Severity};

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
    writeln!(out, "{lead}{}:{}:{}: {path}{} [{}]", d.file, d.pos.line, d.pos.col, d.message, d.code)?;
    let pad = " ".repeat(lead.len() + 4);
    if d.severity == Severity::Error {
        if let Some(text) = lines(&d.file, d.pos.line) {
            let text: String = text.chars().take(160).collect();
            let number = d.pos.line.to_string();
            writeln!(out, "{pad}{number} | {}", text.replace('\t', " "))?;
            let caret_at = (d.pos.col as usize).saturating_sub(1).min(text.chars().count());
            writeln!(out, "{pad}{} | {}^", " ".repeat(number.len()), " ".repeat(caret_at))?;
        }
    }
    if !d.hint.is_empty() {
        writeln!(out, "{pad}hint: {}", d.hint)?;
    }
    Ok(())
}

/// One line per app and service, and the number of routes, for a push that passes.
pub fn summary(out: &mut dyn Write, config: &ConfigSet) -> io::Result<()> {
    let text = |n: Option<&Node>| n.and_then(Node::scalar_text).unwrap_or_default();
    for app in &config.apps {
        let name = app.name.as_deref().unwrap_or("?");
        let disk = app.node.get("disk").and_then(Node::as_i64).map(|d| format!(", disk {d} MB")).unwrap_or_default();
        writeln!(out, "    app {name}: {}{disk}", text(app.node.get("type")))?;
    }
    if let Some(doc) = &config.services {
        for (key, s) in doc.root.entries() {
            let disk = s.get("disk").and_then(Node::as_i64).map(|d| format!(", disk {d} MB")).unwrap_or_default();
            writeln!(out, "    service {}: {}{disk}", key.name, text(s.get("type")))?;
        }
    }
    let routes = config.routes.as_ref().map_or(0, |r| r.root.entries().len());
    if routes == 0 {
        writeln!(out, "    routes: none declared (the default route serves the app)")?;
    } else {
        writeln!(out, "    routes: {routes}")?;
    }
    Ok(())
}

/// Today's date as `YYYY-MM-DD` (UTC), for end-of-life comparisons.
pub fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_595), (2026, 5, 22));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
