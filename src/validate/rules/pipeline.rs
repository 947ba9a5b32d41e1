//! Magento's pipeline deployment: configuration is shared through `app/etc/config.php`, while
//! "sensitive and system-specific settings stay on the system" (`app/etc/env.php`, written per
//! environment, and environment variables). For an app whose `composer.json` requires Magento:
//! - no `app/etc/config.php`: a warning, since static content is then deployed in the deploy
//!   phase, with the site in maintenance longer;
//! - `app/etc/env.php` committed: an error (it holds the environment's secrets);
//! - a `config.php` that holds a sensitive or system-specific value: an error naming its path.

use crate::config::yaml::Pos;
use crate::config::ConfigSet;
use crate::diag::{Code, Diagnostics, Location};
use crate::source::{Entry, Source, SourceError};

/// Top-level sections of env.php that never belong in config.php.
const SYSTEM_SECTIONS: &[&str] =
    &["db", "crypt", "session", "cache", "queue", "resource", "lock", "MAGE_MODE", "downloadable_domains", "backend"];

/// Words that make a configuration path sensitive wherever it stands (`payment/braintree/private_key`).
const SENSITIVE_WORDS: &[&str] = &["password", "passwd", "private_key", "secret", "api_key", "access_token", "token"];

pub fn check_in_tree(source: &dyn Source, config: &ConfigSet, diags: &mut Diagnostics) -> Result<(), SourceError> {
    for app in &config.apps {
        let dir = if app.dir.is_empty() { String::new() } else { format!("{}/", app.dir) };
        let Entry::File(composer) = source.entry(&format!("{dir}composer.json"))? else { continue };
        if !String::from_utf8_lossy(&composer).contains("\"magento/") {
            continue;
        }
        let env_php = format!("{dir}app/etc/env.php");
        if matches!(source.entry(&env_php)?, Entry::File(_) | Entry::TooLarge(_)) {
            diags.error(
                Code::PipelineSecrets,
                Location::new(&env_php, Pos { line: 1, col: 1 }, ""),
                "app/etc/env.php is committed: it holds an environment's secrets and system-specific settings \
                 (database credentials, the crypt key), which stay on the system",
                "git rm --cached app/etc/env.php and add it to .gitignore; each environment's env.php is written at \
                 deploy, its values come from its variables (pushgate-runner variables)",
            );
        }
        let config_php = format!("{dir}app/etc/config.php");
        match source.entry(&config_php)? {
            Entry::File(text) => {
                for (path, pos) in sensitive_paths(&String::from_utf8_lossy(&text)) {
                    diags.error(
                        Code::PipelineSecrets,
                        Location::new(&config_php, pos, ""),
                        format!(
                            "app/etc/config.php holds `{path}`, a sensitive or system-specific setting: config.php \
                             is shared by every environment"
                        ),
                        "keep it on the system: bin/magento app:config:dump writes such values to env.php, not \
                         config.php; set it per environment as a variable (env:...)",
                    );
                }
            }
            Entry::Missing => diags.warn(
                Code::PipelineConfig,
                Location::new(&app.file, app.name_pos, &app.path),
                format!(
                    "`{}` is a Magento application without app/etc/config.php: static content will be deployed in \
                     the deploy phase, with the site in maintenance longer",
                    app.name.as_deref().unwrap_or("the app")
                ),
                "run bin/magento app:config:dump scopes themes i18n and commit app/etc/config.php: static content \
                 is then built in the build phase",
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Keys of a PHP array literal that are sensitive: a system section at the top, or a path with
/// a sensitive word anywhere. Each with the key's position. A tolerant scan (strings, `=>`,
/// brackets), not a PHP parser: config.php is an array literal.
fn sensitive_paths(text: &str) -> Vec<(String, Pos)> {
    let mut found = Vec::new();
    let mut stack: Vec<Option<String>> = Vec::new(); // one entry per open array: its key
    let mut pending: Option<(String, Pos)> = None; // the last key seen, until its value opens
    let (mut line, mut col) = (1u32, 1u32);
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let advance = |c: char, line: &mut u32, col: &mut u32| {
        if c == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let pos = Pos { line, col };
            let mut value = String::new();
            advance(c, &mut line, &mut col);
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    advance(chars[i], &mut line, &mut col);
                    i += 1;
                }
                value.push(chars[i]);
                advance(chars[i], &mut line, &mut col);
                i += 1;
            }
            if i < chars.len() {
                advance(chars[i], &mut line, &mut col);
                i += 1;
            }
            // A key when `=>` follows.
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if chars.get(j) == Some(&'=') && chars.get(j + 1) == Some(&'>') {
                let keys: Vec<&str> = stack.iter().flatten().map(String::as_str).chain([value.as_str()]).collect();
                let path = keys.join("/");
                let top_level = stack.len() == 1;
                let lower = value.to_ascii_lowercase();
                let sensitive = (top_level && SYSTEM_SECTIONS.contains(&value.as_str()))
                    || SENSITIVE_WORDS.iter().any(|w| lower == *w || lower.ends_with(&format!("_{w}")));
                if sensitive {
                    found.push((path, pos));
                }
                pending = Some((value, pos));
            }
            continue;
        }
        if c == '[' || (c == '(' && i >= 5 && chars[i - 5..i].iter().collect::<String>().eq_ignore_ascii_case("array"))
        {
            stack.push(pending.take().map(|(k, _)| k));
        } else if c == ']' || c == ')' {
            stack.pop();
        } else if c == ',' {
            pending = None;
        }
        advance(c, &mut line, &mut col);
        i += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_sections_and_sensitive_paths_are_found_where_they_stand() {
        let php = "<?php\nreturn [\n    'modules' => ['Magento_Store' => 1],\n    'db' => ['connection' => []],\n    \
                   'system' => ['default' => ['payment' => ['braintree' => ['private_key' => 'x', 'title' => 'y']]]],\n];\n";
        let found = sensitive_paths(php);
        let paths: Vec<(&str, u32, u32)> = found.iter().map(|(p, pos)| (p.as_str(), pos.line, pos.col)).collect();
        assert_eq!(paths, vec![("db", 4, 5), ("system/default/payment/braintree/private_key", 5, 62)]);
        assert!(sensitive_paths("<?php return array('modules' => array('A' => 1), 'scopes' => []);").is_empty());
    }
}
