//! Wall-clock time as text: RFC 3339 timestamps (UTC) for the queue, dates for end-of-life checks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, as `2026-11-22T01:02:03.456Z`.
pub fn now_rfc3339() -> String {
    rfc3339_at(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// A time since the Unix epoch, as `2026-11-22T01:02:03.456Z`.
pub fn rfc3339_at(since: Duration) -> String {
    let secs = since.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Today's date as `YYYY-MM-DD` (UTC).
pub fn today() -> String {
    now_rfc3339()[..10].to_owned()
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

    #[test]
    fn timestamps_have_a_fixed_shape() {
        let now = super::now_rfc3339();
        assert_eq!(now.len(), 24, "{now}");
        assert!(now.ends_with('Z') && &now[10..11] == "T");
    }
}
