//! Wall-clock time as text: RFC 3339 timestamps (UTC) for the queue, dates for end-of-life checks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, as `2026-11-22T01:02:03.456Z`.
pub fn now_rfc3339() -> String {
    rfc3339_at(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// A time since the Unix epoch, as `2026-11-22T01:02:03.456Z`: fixed width, so that two of
/// them compare as text the way they compare as times.
pub fn rfc3339_at(since: Duration) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + since).to_string()
}

/// Today's date as `YYYY-MM-DD` (UTC).
pub fn today() -> String {
    now_rfc3339()[..10].to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        use std::time::Duration;
        assert_eq!(super::rfc3339_at(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339_at(Duration::from_secs(20_595 * 86_400)), "2026-05-22T00:00:00.000Z");
        assert_eq!(
            super::rfc3339_at(Duration::from_millis(11_016 * 86_400_000 + 3_723_004)),
            "2000-02-29T01:02:03.004Z"
        );
    }

    #[test]
    fn timestamps_have_a_fixed_shape() {
        let now = super::now_rfc3339();
        assert_eq!(now.len(), 24, "{now}");
        assert!(now.ends_with('Z') && &now[10..11] == "T");
    }
}
