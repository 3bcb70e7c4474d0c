//! Five-field cron expressions in an IANA time zone.
//!
//! The grammar is checked here, field by field, so a 400 can say which field and which value
//! is wrong: `minute hour day-of-month month day-of-week`, each `*`, a number, a range `a-b`,
//! a step `*/n` or `a-b/n`, or a comma list of those; bounds 0-59, 0-23, 1-31, 1-12 and 0-6
//! (0 is Sunday). Nothing else (no seconds, names, `L`, `W`, `#`, `?` or `@daily`), so an
//! expression means the same thing to every cron a reader knows.
//!
//! Due times come from the `croner` crate in the schedule's zone (`chrono-tz`). As croner
//! defines it: a fixed-time schedule whose local time falls in a DST gap runs at the first
//! valid time after the gap, on the same day; one whose local time occurs twice runs once, at
//! the first. Interval schedules (`*/15 * * * *`) skip times inside a gap and run in both
//! passes of a repeated hour. Day-of-month and day-of-week combine with OR when both are
//! restricted, as in Vixie cron.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// A field's name and bounds, in order.
const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 6),
];

/// A checked schedule: expression and zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    zone: Tz,
}

/// Checks a time zone name against the IANA database.
pub fn parse_zone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name).map_err(|_| {
        format!(
            "{name:?} is not an IANA time zone name (e.g. UTC, Europe/Berlin, America/New_York)"
        )
    })
}

/// Checks an expression; the error names the field and value at fault.
pub fn check_expression(expression: &str) -> Result<(), String> {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "{expression:?} has {} fields; expected five: minute hour day-of-month month day-of-week",
            fields.len()
        ));
    }
    for (text, (name, low, high)) in fields.iter().zip(FIELDS) {
        check_field(text, low, high).map_err(|why| format!("{name} field {text:?}: {why}"))?;
    }
    Ok(())
}

fn check_field(text: &str, low: u32, high: u32) -> Result<(), String> {
    let number = |s: &str| -> Result<u32, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 2 {
            return Err(format!("{s:?} is not a number from {low} to {high}"));
        }
        let n: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if n < low || n > high {
            return Err(format!("{n} is out of range {low}-{high}"));
        }
        Ok(n)
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (part, None),
        };
        if let Some(step) = step {
            let ok =
                !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()) && step.len() <= 2;
            let n: u32 = if ok { step.parse().unwrap_or(0) } else { 0 };
            if n == 0 || n > high.max(1) {
                return Err(format!(
                    "step {step:?} must be a number from 1 to {}",
                    high.max(1)
                ));
            }
        }
        match range {
            "*" => {}
            _ => match range.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (number(a)?, number(b)?);
                    if a > b {
                        return Err(format!("range {a}-{b} runs backwards"));
                    }
                }
                None if step.is_some() => {
                    return Err(format!(
                        "a step needs * or a range before it ({part:?}; write */n or a-b/n)"
                    ));
                }
                None => {
                    number(range)?;
                }
            },
        }
    }
    Ok(())
}

impl CronSchedule {
    /// Checks both and builds the schedule; `Err` is `(field, message)` for a 400.
    pub fn parse(expression: &str, zone: &str) -> Result<CronSchedule, (&'static str, String)> {
        check_expression(expression).map_err(|m| ("cronExpression", m))?;
        let zone = parse_zone(zone).map_err(|m| ("timezone", m))?;
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(expression)
            .map_err(|e| ("cronExpression", format!("{expression:?}: {e}")))?;
        Ok(CronSchedule { cron, zone })
    }

    /// The first due time strictly after `after` (ms), or `None` if the expression never
    /// matches again (e.g. 31 February).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let after = self.zone.timestamp_millis_opt(after_ms).single()?;
        self.cron
            .find_next_occurrence(&after, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The next `n` due times after `after` (ms), as UTC times.
    pub fn upcoming(&self, after_ms: i64, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = after_ms;
        while out.len() < n {
            let Some(next) = self.next_after(at) else {
                break;
            };
            out.push(DateTime::from_timestamp_millis(next).unwrap_or_default());
            at = next;
        }
        out
    }

    /// How many due times fall in `(after, until]`, counting at most `cap`.
    pub fn count_between(&self, after_ms: i64, until_ms: i64, cap: usize) -> usize {
        let mut count = 0;
        let mut at = after_ms;
        while count < cap {
            match self.next_after(at) {
                Some(next) if next <= until_ms => {
                    count += 1;
                    at = next;
                }
                _ => break,
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    fn next(expr: &str, zone: &str, after: &str) -> String {
        let s = CronSchedule::parse(expr, zone).unwrap();
        let at = s.next_after(ms(after)).unwrap();
        DateTime::from_timestamp_millis(at)
            .unwrap()
            .with_timezone(&parse_zone(zone).unwrap())
            .to_rfc3339()
    }

    #[test]
    fn every_field_at_its_bounds() {
        for ok in [
            "0 0 1 1 0",
            "59 23 31 12 6",
            "*/5 * * * *",
            "0-59/59 0-23/23 1-31/31 1-12/12 0-6/6",
            "0,15,30,45 9-17 * * 1-5",
            "* * * * *",
            "0 2 1 * *",
        ] {
            assert!(
                check_expression(ok).is_ok(),
                "{ok}: {:?}",
                check_expression(ok)
            );
        }
        for (bad, says) in [
            ("60 * * * *", "minute field \"60\": 60 is out of range 0-59"),
            ("* 24 * * *", "hour field \"24\": 24 is out of range 0-23"),
            (
                "* * 0 * *",
                "day-of-month field \"0\": 0 is out of range 1-31",
            ),
            (
                "* * 32 * *",
                "day-of-month field \"32\": 32 is out of range 1-31",
            ),
            ("* * * 0 *", "month field \"0\": 0 is out of range 1-12"),
            ("* * * 13 *", "month field \"13\": 13 is out of range 1-12"),
            (
                "* * * * 7",
                "day-of-week field \"7\": 7 is out of range 0-6",
            ),
            ("*/0 * * * *", "step \"0\""),
            ("*/60 * * * *", "step \"60\""),
            ("5/5 * * * *", "a step needs * or a range"),
            ("30-10 * * * *", "runs backwards"),
            ("* * * * MON", "\"MON\" is not a number"),
            ("@daily", "has 1 fields"),
            ("0 0 * * * *", "has 6 fields"),
            ("0 0 * *", "has 4 fields"),
            ("", "has 0 fields"),
            ("* * L * *", "\"L\" is not a number"),
            ("* * * * 1#2", "is not a number"),
            ("1,,2 * * * *", "\"\" is not a number"),
            ("-1 * * * *", "\"\" is not a number"),
            ("? * * * *", "\"?\" is not a number"),
        ] {
            let err = check_expression(bad).unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn zones_are_checked() {
        assert!(CronSchedule::parse("0 2 * * *", "Europe/Berlin").is_ok());
        let (field, message) = CronSchedule::parse("0 2 * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(field, "timezone");
        assert!(message.contains("IANA"), "{message}");
        assert_eq!(
            CronSchedule::parse("0 2 * *", "UTC").unwrap_err().0,
            "cronExpression"
        );
    }

    #[test]
    fn next_runs_in_plain_time() {
        assert_eq!(
            next("*/5 * * * *", "UTC", "2026-01-19T10:02:00Z"),
            "2026-01-19T10:05:00+00:00"
        );
        // Sunday at 2 AM, New York.
        assert_eq!(
            next("0 2 * * 0", "America/New_York", "2026-01-19T12:00:00Z"),
            "2026-01-25T02:00:00-05:00"
        );
        // Day-of-month OR day-of-week (Vixie): the 1st, or any Monday.
        assert_eq!(
            next("0 0 1 * 1", "UTC", "2026-02-01T00:00:00Z"),
            "2026-02-02T00:00:00+00:00"
        );
        // 31 February never comes.
        let never = CronSchedule::parse("0 0 31 2 *", "UTC").unwrap();
        assert_eq!(never.next_after(ms("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn daylight_saving_gaps_and_repeats_in_two_zones() {
        // New York springs forward on 2026-03-08 (02:00 -> 03:00): 02:30 does not exist that
        // day, so the daily run happens at the first valid time after the gap.
        assert_eq!(
            next("30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z"),
            "2026-03-08T03:00:00-04:00"
        );
        // The next day is normal again.
        assert_eq!(
            next("30 2 * * *", "America/New_York", "2026-03-08T12:00:00Z"),
            "2026-03-09T02:30:00-04:00"
        );
        // Falls back on 2026-11-01 (01:00-02:00 twice): a fixed-time run happens once, at the
        // first 01:30 (EDT), not again an hour later.
        let daily = CronSchedule::parse("30 1 * * *", "America/New_York").unwrap();
        let first = daily.next_after(ms("2026-11-01T04:00:00Z")).unwrap();
        assert_eq!(first, ms("2026-11-01T01:30:00-04:00"));
        assert_eq!(
            daily.next_after(first).unwrap(),
            ms("2026-11-02T01:30:00-05:00")
        );
        // An interval schedule runs in both passes of the repeated hour.
        let quarter = CronSchedule::parse("*/30 * * * *", "America/New_York").unwrap();
        let runs = quarter.upcoming(ms("2026-11-01T04:50:00Z"), 4);
        let utc: Vec<String> = runs.iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(
            utc,
            [
                "2026-11-01T05:00:00+00:00", // 01:00 EDT
                "2026-11-01T05:30:00+00:00", // 01:30 EDT
                "2026-11-01T06:00:00+00:00", // 01:00 EST
                "2026-11-01T06:30:00+00:00", // 01:30 EST
            ]
        );
        // Berlin springs forward on 2026-03-29 (02:00 -> 03:00) and falls back on 2026-10-25
        // (03:00 -> 02:00).
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z"),
            "2026-03-29T03:00:00+02:00"
        );
        let berlin = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let first = berlin.next_after(ms("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, ms("2026-10-25T02:30:00+02:00"));
        assert_eq!(
            berlin.next_after(first).unwrap(),
            ms("2026-10-26T02:30:00+01:00")
        );
        // Interval schedules skip the missing hour.
        let hourly = CronSchedule::parse("0 * * * *", "Europe/Berlin").unwrap();
        let runs = hourly.upcoming(ms("2026-03-29T00:30:00Z"), 2);
        assert_eq!(
            runs.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
            ["2026-03-29T01:00:00+00:00", "2026-03-29T02:00:00+00:00"] // 03:00, 04:00 CEST
        );
    }

    #[test]
    fn missed_due_times_are_counted_with_a_cap() {
        let every_minute = CronSchedule::parse("* * * * *", "UTC").unwrap();
        let from = ms("2026-01-01T00:00:00Z");
        assert_eq!(
            every_minute.count_between(from, from + 10 * 60_000, 1000),
            10
        );
        assert_eq!(
            every_minute.count_between(from, from + 5000 * 60_000, 1000),
            1000
        );
        assert_eq!(every_minute.count_between(from, from + 59_999, 1000), 0);
    }
}
