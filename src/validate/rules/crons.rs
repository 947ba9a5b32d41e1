//! Cron specs: five fields with values in range (`*/5 * * * *`).
//!
//! Why: a malformed spec makes the whole deployment fail when the cron table is installed; the
//! push can name the field that is wrong.

use crate::config::yaml::Node;
use crate::config::ConfigSet;
use crate::diag::{join, Code, Diagnostics};

const FIELDS: [(&str, u32, u32); 5] =
    [("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7)];
const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

pub fn check(config: &ConfigSet, diags: &mut Diagnostics) {
    for app in &config.apps {
        for (key, cron) in app.node.get("crons").map(Node::entries).unwrap_or_default() {
            let Some(spec) = cron.get("spec").filter(|s| s.as_str().is_some()) else {
                continue;
            };
            if let Err(why) = check_spec(spec.as_str().unwrap_or_default()) {
                diags.error(
                    Code::CronSpec,
                    app.loc(spec, &join(&format!("crons.{}", join("", &key.name)), "spec")),
                    format!("invalid cron spec `{}`: {why}", spec.as_str().unwrap_or_default()),
                    "write five fields: minute hour day-of-month month day-of-week, for example `*/5 * * * *`",
                );
            }
        }
    }
}

pub fn check_spec(spec: &str) -> Result<(), String> {
    if matches!(spec.trim(), "@hourly" | "@daily" | "@midnight" | "@weekly" | "@monthly" | "@yearly" | "@annually") {
        return Ok(());
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("{} fields instead of 5", fields.len()));
    }
    for (field, (name, min, max)) in fields.iter().zip(FIELDS) {
        for item in field.split(',') {
            check_item(item, name, min, max).map_err(|e| format!("{name} field `{field}`: {e}"))?;
        }
    }
    Ok(())
}

fn check_item(item: &str, name: &str, min: u32, max: u32) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(s) if s >= 1 && s <= max.max(1) => {}
            _ => return Err(format!("step `{step}` is not a number from 1 to {max}")),
        }
    }
    if range == "*" || range == "H" {
        return Ok(());
    }
    let value = |v: &str| -> Result<u32, String> {
        let lower = v.to_ascii_lowercase();
        let named = match name {
            "month" => MONTHS.iter().position(|m| *m == lower).map(|i| i as u32 + 1),
            "day of week" => DAYS.iter().position(|d| *d == lower).map(|i| i as u32),
            _ => None,
        };
        let n = named.or_else(|| v.parse().ok()).ok_or_else(|| format!("`{v}` is not a number"))?;
        if n < min || n > max {
            return Err(format!("{n} is outside {min}-{max}"));
        }
        Ok(n)
    };
    match range.split_once('-') {
        Some((a, b)) => {
            if value(a)? > value(b)? {
                return Err(format!("range `{range}` runs backwards"));
            }
        }
        None => {
            value(range)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_spec;

    #[test]
    fn specs() {
        for ok in ["* * * * *", "*/5 * * * *", "50 23 * * *", "0 0 1,15 * mon-fri", "H/5 * * * *", "@daily"] {
            assert!(check_spec(ok).is_ok(), "{ok}");
        }
        for bad in ["* * * *", "60 * * * *", "*/0 * * * *", "* 24 * * *", "a * * * *", "5-1 * * * *"] {
            assert!(check_spec(bad).is_err(), "{bad}");
        }
    }
}
