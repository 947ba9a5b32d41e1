//! The language runtimes this host has, by app type (`php:8.2`, `python:3.11`, `nodejs:20`).
//!
//! Found on the host: PHP-FPM as Debian installs it (`/usr/sbin/php-fpmX.Y`), Python as
//! `pythonX.Y` on the PATH, Node.js as `node` on the PATH (its major version). The admin
//! declares others, or overrides these, in `DATA/runtimes.json`:
//! `{"php:8.4": {"php_fpm": "/opt/php8.4/sbin/php-fpm"}, "nodejs:22": {"bin": "/opt/node22/bin"}}`
//! (`php_fpm`: the PHP-FPM binary; `bin`: a directory put first on the app's PATH).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How one runtime is run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Runtime {
    /// PHP-FPM's binary, for PHP apps served without a start command.
    #[serde(default)]
    pub php_fpm: Option<PathBuf>,
    /// A directory put first on the app's PATH (where its interpreter is).
    #[serde(default)]
    pub bin: Option<PathBuf>,
}

/// The runtimes of the host, by app type.
#[derive(Debug, Clone, Default)]
pub struct Runtimes(BTreeMap<String, Runtime>);

impl Runtimes {
    /// What the host has, then what `DATA/runtimes.json` declares (it wins).
    pub fn load(declared: &Path) -> Result<Runtimes, String> {
        let mut found = Runtimes::detect();
        match std::fs::read_to_string(declared) {
            Ok(text) => {
                let extra: BTreeMap<String, Runtime> =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", declared.display()))?;
                found.0.extend(extra);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", declared.display())),
        }
        Ok(found)
    }

    fn detect() -> Runtimes {
        let mut found = BTreeMap::new();
        for entry in std::fs::read_dir("/usr/sbin").into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_prefix("php-fpm").filter(|v| v.contains('.')) {
                found.insert(format!("php:{version}"), Runtime { php_fpm: Some(entry.path()), bin: None });
            }
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(version) = name.strip_prefix("python").filter(|v| v.matches('.').count() == 1) {
                    if version.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
                        found
                            .entry(format!("python:{version}"))
                            .or_insert(Runtime { php_fpm: None, bin: Some(dir.clone()) });
                    }
                }
            }
            if dir.join("node").is_file() {
                if let Some(major) = node_major(&dir.join("node")) {
                    found.entry(format!("nodejs:{major}")).or_insert(Runtime { php_fpm: None, bin: Some(dir.clone()) });
                }
            }
        }
        Runtimes(found)
    }

    /// The runtime of an app type; else what the host has, for the message.
    pub fn get(&self, kind: &str) -> Result<&Runtime, String> {
        self.0.get(kind).ok_or_else(|| {
            let image = kind.split(':').next().unwrap_or(kind);
            let same: Vec<&str> =
                self.0.keys().filter(|k| k.starts_with(&format!("{image}:"))).map(String::as_str).collect();
            let all: Vec<&str> = self.0.keys().map(String::as_str).collect();
            format!(
                "runtime `{kind}` is not installed on this host (it has {}); install it, declare it in \
                 runtimes.json in the data directory, or change the app's `type`",
                if same.is_empty() { all.join(", ") } else { same.join(", ") }
            )
        })
    }
}

fn node_major(node: &Path) -> Option<String> {
    let out = std::process::Command::new(node).arg("--version").output().ok()?;
    let version = String::from_utf8(out.stdout).ok()?;
    version.trim().strip_prefix('v')?.split('.').next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn declared_runtimes_win_and_a_missing_one_names_what_there_is() {
        let dir = std::env::temp_dir().join(format!("pushgate-runtimes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("runtimes.json");
        std::fs::write(&file, r#"{"php:9.9": {"php_fpm": "/opt/php/sbin/php-fpm"}}"#).unwrap();
        let r = super::Runtimes::load(&file).unwrap();
        assert_eq!(r.get("php:9.9").unwrap().php_fpm.as_deref(), Some(std::path::Path::new("/opt/php/sbin/php-fpm")));
        let missing = r.get("php:1.0").unwrap_err();
        assert!(missing.contains("`php:1.0` is not installed") && missing.contains("php:9.9"), "{missing}");
        std::fs::write(&file, "nonsense").unwrap();
        assert!(super::Runtimes::load(&file).unwrap_err().contains("runtimes.json"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
