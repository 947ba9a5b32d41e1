//! The domain's identifiers and times as types: a job id is not a count, a commit id is not any
//! string, an environment name is one that can name a directory, and a time is a time. Each
//! is checked once, where it enters (a hook's input, a queue row, a command line), and carries
//! that check with it.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A job of the queue (its row id): what `logs 12` and `cancel 12` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<JobId, Self::Err> {
        s.parse().map(JobId)
    }
}

/// A git object id in hex (SHA-1's 40 digits, or SHA-256's 64), lowercase. The all-zero id is
/// git's "no commit" (a created or deleted branch).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CommitId(String);

impl CommitId {
    /// Checks that `hex` is an object id.
    pub fn parse(hex: &str) -> Result<CommitId, String> {
        let ok = matches!(hex.len(), 40 | 64) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(CommitId(hex.to_owned()))
        } else {
            Err(format!("`{hex}` is not a git object id"))
        }
    }

    pub fn from_oid(oid: git2::Oid) -> CommitId {
        CommitId(oid.to_string())
    }

    pub fn oid(&self) -> git2::Oid {
        git2::Oid::from_str(&self.0).expect("checked when made")
    }

    /// Git's "no commit": the old side of a created branch, the new side of a deleted one.
    pub fn is_zero(&self) -> bool {
        self.0.bytes().all(|b| b == b'0')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 10 digits, as pushgate prints commits.
    pub fn short(&self) -> &str {
        &self.0[..10]
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl<'de> Deserialize<'de> for CommitId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CommitId, D::Error> {
        CommitId::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A project's bare repository, by its absolute path: what the hook runs in and the runner
/// reads commits from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepoId(String);

impl RepoId {
    pub fn new(path: impl Into<String>) -> RepoId {
        RepoId(path.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn path(&self) -> &std::path::Path {
        std::path::Path::new(&self.0)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// One line of a receive hook's input: git moves `name` from `old` to `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: CommitId,
    pub new: CommitId,
    pub name: String,
}

impl RefUpdate {
    pub fn is_delete(&self) -> bool {
        self.new.is_zero()
    }

    pub fn is_create(&self) -> bool {
        self.old.is_zero()
    }

    /// The branch name for `refs/heads/*` refs; other refs (tags, notes) are not deployed.
    pub fn branch(&self) -> Option<&str> {
        self.name.strip_prefix("refs/heads/")
    }
}

/// Longest environment name: it names directories, and people type it.
pub const MAX_ENVIRONMENT_NAME: usize = 100;

/// An environment's name: `a-z`, `0-9` and inner `-`, at most [`MAX_ENVIRONMENT_NAME`]
/// characters, so it can name a directory and a variable as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(name: &str) -> Result<EnvName, String> {
        if valid_environment(name) {
            Ok(EnvName(name.to_owned()))
        } else {
            Err(format!(
                "`{name}` is not an environment name (a-z, 0-9 and inner `-`, at most {MAX_ENVIRONMENT_NAME} characters)"
            ))
        }
    }

    /// The environment a branch deploys to, if its name gives one (see [`environment_name`]).
    pub fn of_branch(branch: &str) -> Result<EnvName, String> {
        EnvName::parse(&environment_name(branch))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl<'de> Deserialize<'de> for EnvName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EnvName, D::Error> {
        EnvName::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The environment a branch deploys to: its name, lowercased, other characters as `-`.
///
/// The mapping is not injective (`Main`, `MAIN` and `-main-` all give `main`) and may give
/// nothing (`_`, `é`): the hook refuses a branch whose name gives no [valid](valid_environment)
/// environment, or the environment of another branch, so each environment has one branch.
pub fn environment_name(branch: &str) -> String {
    let mut env: String =
        branch.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    while env.contains("--") {
        env = env.replace("--", "-");
    }
    env.trim_matches('-').to_owned()
}

/// Whether `name` can name an environment's directory and variables.
pub fn valid_environment(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ENVIRONMENT_NAME
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An instant, to the millisecond (UTC). Written as RFC 3339 with milliseconds
/// (`2026-11-22T01:02:03.456Z`) in JSON and in the SQLite queue: the text has a fixed width,
/// so SQL compares it the way the times compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(SystemTime);

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::at(SystemTime::now())
    }

    /// Rounded down to the millisecond, as it is written.
    pub fn at(t: SystemTime) -> Timestamp {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64))
    }

    pub fn parse(text: &str) -> Result<Timestamp, String> {
        humantime::parse_rfc3339(text).map(Timestamp::at).map_err(|e| format!("`{text}` is not a time: {e}"))
    }

    pub fn system_time(self) -> SystemTime {
        self.0
    }

    /// How long ago, as of `now` (zero for a time in the future).
    pub fn age(self, now: Timestamp) -> Duration {
        now.0.duration_since(self.0).unwrap_or_default()
    }

    pub fn to_rfc3339(self) -> String {
        humantime::format_rfc3339_millis(self.0).to_string()
    }

    /// The day, as `YYYY-MM-DD` (UTC): what end-of-life dates are compared with.
    pub fn date(self) -> String {
        self.to_rfc3339()[..10].to_owned()
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp::at(self.0 + d)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        Timestamp::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names() {
        assert_eq!(environment_name("main"), "main");
        assert_eq!(environment_name("Feature/New_Checkout"), "feature-new-checkout");
        assert_eq!(environment_name("--x--y--"), "x-y");
        for (branch, valid) in [("main", true), ("_", false), ("é", false), ("-main-", true), ("QA_4", true)] {
            assert_eq!(EnvName::of_branch(branch).is_ok(), valid, "{branch}");
        }
        assert!(EnvName::of_branch(&"x".repeat(MAX_ENVIRONMENT_NAME + 1)).is_err());
        assert!(EnvName::parse("../x").is_err() && EnvName::parse("a/b").is_err() && EnvName::parse("").is_err());
    }

    #[test]
    fn commit_ids() {
        let zero = CommitId::parse(&"0".repeat(40)).unwrap();
        assert!(zero.is_zero());
        let id = CommitId::parse("3b18e512dba79e4c8300dd08aeb37f8e728b8dad").unwrap();
        assert_eq!(CommitId::from_oid(id.oid()), id);
        assert_eq!(id.short(), "3b18e512db");
        assert_eq!(format!("[{:<6}]", EnvName::parse("main").unwrap()), "[main  ]", "widths apply to ids");
        for bad in ["", "3B18E512DBA79E4C8300DD08AEB37F8E728B8DAD", "../../etc/passwd", "3b18e512"] {
            assert!(CommitId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_to_the_millisecond_and_order_as_text() {
        let t = Timestamp::at(UNIX_EPOCH + Duration::from_millis(11_016 * 86_400_000 + 3_723_004));
        assert_eq!(t.to_string(), "2000-02-29T01:02:03.004Z");
        assert_eq!(t.date(), "2000-02-29");
        assert_eq!(Timestamp::parse("2000-02-29T01:02:03.004Z"), Ok(t));
        let later = t + Duration::from_millis(999);
        assert!(later > t && later.to_string() > t.to_string());
        assert_eq!(later.age(t), Duration::ZERO);
        assert_eq!(t.age(later), Duration::from_millis(999));
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"2000-02-29T01:02:03.004Z\"");
    }
}
