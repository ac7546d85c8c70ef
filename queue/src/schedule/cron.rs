//! Cron expressions with seconds and a time zone, and when they fire.
//!
//! Six fields, `second minute hour day-of-month month day-of-week` (`*/2 * * * * *`), or the
//! classic five without seconds (`0 6 * * MON`, second 0). Each field takes `*`, a value, a range
//! `a-b`, a step `*/n` or `a-b/n` or `a/n`, and comma-separated lists of those; months and
//! weekdays also by name (`JAN`, `MON`; Sunday is 0 or 7). As in Vixie cron, when both day
//! fields are restricted a day matches if either does.
//!
//! Daylight-saving transitions follow Vixie cron, which is what cron users expect:
//! - a job at a fixed hour whose local time falls in the hour skipped in spring (02:30 on the
//!   day clocks jump from 02:00 to 03:00) runs once, right after the jump;
//! - a job at a fixed hour whose local time occurs twice in autumn runs once, at the first;
//! - a job whose hour field is `*` or a step (`*/2`) follows the wall clock: it does not fire in
//!   the skipped hour, and fires in both passes of the repeated one.

use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// A parsed cron expression in a time zone.
#[derive(Clone, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    time_zone: Tz,
    seconds: u64,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// Whether the day-of-month / day-of-week field was `*` (see the module's day rule).
    any_day_of_month: bool,
    any_day_of_week: bool,
    /// Whether the hour field is `*` or a step over all hours: the job follows the wall clock
    /// through daylight-saving transitions instead of firing once per local time.
    wall_clock_hours: bool,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CronSchedule({:?} in {})",
            self.expression, self.time_zone
        )
    }
}

/// Why an expression or time zone was refused; the message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// The widest daylight-saving shift searched around a transition (real ones are 30 min to 2 h).
const MAX_SHIFT_HOURS: i64 = 3;

/// How far ahead a next firing is searched before the expression is declared never to fire
/// (`0 0 0 30 2 *`, the 30th of February).
const SEARCH_YEARS: i32 = 8;

impl CronSchedule {
    /// Parses `expression` (five or six fields) in the IANA time zone `time_zone`
    /// (`Europe/Berlin`, `UTC`).
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, CronError> {
        let time_zone: Tz = time_zone.parse().map_err(|_| {
            CronError(format!(
                "unknown time zone {time_zone:?} (an IANA name such as \"Europe/Berlin\" or \"UTC\")"
            ))
        })?;
        let fields: Vec<&str> = expression.split_whitespace().collect();
        let fields: Vec<&str> = match fields.len() {
            5 => std::iter::once("0").chain(fields).collect(),
            6 => fields,
            n => {
                return Err(CronError(format!(
                    "a cron expression has 5 or 6 fields (second minute hour day month weekday), \
                     not {n}"
                )));
            }
        };
        let seconds = parse_field(fields[0], "second", 0, 59, &[])?;
        let minutes = parse_field(fields[1], "minute", 0, 59, &[])?;
        let hours = parse_field(fields[2], "hour", 0, 23, &[])?;
        let days_of_month = parse_field(fields[3], "day of month", 1, 31, &[])?;
        let months = parse_field(fields[4], "month", 1, 12, &MONTHS)?;
        let mut days_of_week = parse_field(fields[5], "day of week", 0, 7, &WEEKDAYS)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & !(1 << 7);
        }
        let any = |field: &str| field == "*" || field == "?";
        Ok(Self {
            expression: expression.trim().to_owned(),
            time_zone,
            seconds,
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            any_day_of_month: any(fields[3]),
            any_day_of_week: any(fields[5]),
            wall_clock_hours: fields[2].starts_with('*'),
        })
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone its fields are read in.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// The first firing strictly after `after`, or `None` if it never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let tz = self.time_zone;
        let after_local = after.with_timezone(&tz).naive_local();
        // Near a transition local time is not monotonic in real time; start early enough to see
        // the second pass of a repeated hour. Elsewhere start right after `after`.
        let window = Duration::hours(MAX_SHIFT_HOURS);
        let offset_at = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
        let start = if offset_at(after - window) == offset_at(after + window) {
            truncate_to_second(after_local) + Duration::seconds(1)
        } else {
            truncate_to_second(after_local) - window
        };
        let limit = NaiveDate::from_ymd_opt(after_local.year() + SEARCH_YEARS, 1, 1)?
            .and_time(NaiveTime::MIN);
        // The earliest firing seen so far in a second pass of a repeated hour; a first-pass (or
        // unambiguous) firing found later in local order ends the search.
        let mut best_second_pass: Option<DateTime<Utc>> = None;
        let mut candidate = self.next_local(start, limit)?;
        loop {
            let (first, second) = self.instants(candidate);
            if let Some(second) = second.filter(|t| *t > after) {
                best_second_pass = Some(best_second_pass.map_or(second, |b| b.min(second)));
            }
            if let Some(first) = first.filter(|t| *t > after) {
                return Some(best_second_pass.map_or(first, |b| b.min(first)));
            }
            // Past the widest shift beyond a second-pass firing, nothing earlier can follow.
            if let Some(best) = best_second_pass
                && candidate > best.with_timezone(&tz).naive_local() + window
            {
                return Some(best);
            }
            candidate = self.next_local(candidate + Duration::seconds(1), limit)?;
        }
    }

    /// The latest firing after `since` and at or before `at`, if any: the tick that is due
    /// (however many were missed, one answer).
    pub fn latest_due(&self, since: DateTime<Utc>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Walk only the recent past first: a one-second schedule down for a day would otherwise
        // step through 86,400 firings. Only a schedule that did not fire recently (so fires
        // rarely) walks back further.
        let recent_from = since.max(at - Duration::hours(2 * MAX_SHIFT_HOURS));
        let latest_between = |from: DateTime<Utc>, to: DateTime<Utc>| {
            let mut latest = None;
            let mut cursor = from;
            while let Some(next) = self.next_after(cursor).filter(|t| *t <= to) {
                latest = Some(next);
                cursor = next;
            }
            latest
        };
        latest_between(recent_from, at).or_else(|| {
            (recent_from > since)
                .then(|| latest_between(since, recent_from))
                .flatten()
        })
    }

    /// The real instants a local time stands for: (first pass, second pass). A time in a
    /// repeated hour has two; a time in a skipped hour has the instant the clocks jumped to
    /// for a fixed-hour job and none for a wall-clock job.
    fn instants(&self, local: NaiveDateTime) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        match self.time_zone.from_local_datetime(&local) {
            LocalResult::Single(t) => (Some(t.with_timezone(&Utc)), None),
            LocalResult::Ambiguous(first, second) => {
                let first = first.with_timezone(&Utc);
                if self.wall_clock_hours {
                    (Some(first), Some(second.with_timezone(&Utc)))
                } else {
                    (Some(first), None)
                }
            }
            LocalResult::None if self.wall_clock_hours => (None, None),
            LocalResult::None => (self.end_of_gap(local), None),
        }
    }

    /// The instant the clocks jumped to, for a local time inside a skipped interval.
    fn end_of_gap(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let mut probe = local.with_second(0)?;
        for _ in 0..(MAX_SHIFT_HOURS * 60) {
            probe += Duration::minutes(1);
            if let Some(t) = self.time_zone.from_local_datetime(&probe).earliest() {
                return Some(t.with_timezone(&Utc));
            }
        }
        None
    }

    /// The first local time at or after `from` (and before `limit`) whose fields all match.
    fn next_local(&self, from: NaiveDateTime, limit: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = truncate_to_second(from);
        while t < limit {
            if !has(self.months, t.month()) {
                t = first_of_next_month(t.date())?.and_time(NaiveTime::MIN);
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().succ_opt()?.and_time(NaiveTime::MIN);
                continue;
            }
            if !has(self.hours, t.hour()) {
                t = t.date().and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1);
                continue;
            }
            if !has(self.minutes, t.minute()) {
                t = t.date().and_hms_opt(t.hour(), t.minute(), 0)? + Duration::minutes(1);
                continue;
            }
            if !has(self.seconds, t.second()) {
                t += Duration::seconds(1);
                continue;
            }
            return Some(t);
        }
        None
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let by_month = has(self.days_of_month, date.day());
        let by_week = has(self.days_of_week, date.weekday().num_days_from_sunday());
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (true, false) => by_week,
            (false, true) => by_month,
            (false, false) => by_month || by_week,
        }
    }
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn has(set: u64, value: u32) -> bool {
    set & (1u64 << value) != 0
}

fn truncate_to_second(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap_or(t)
}

fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    let (year, month) = if date.month() == 12 {
        (date.year() + 1, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)
}

/// Parses one field into a bit set of the values it allows. `names` are the values' names
/// starting at `min` (months from 1, weekdays from 0).
fn parse_field(
    field: &str,
    what: &str,
    min: u32,
    max: u32,
    names: &[&str],
) -> Result<u64, CronError> {
    let refuse = |why: &str| {
        CronError(format!(
            "the {what} field {field:?} is invalid: {why} (allowed: {min}-{max})"
        ))
    };
    let value = |text: &str| -> Result<u32, CronError> {
        let upper = text.to_ascii_uppercase();
        let number = match names.iter().position(|name| *name == upper) {
            Some(index) => index as u32 + if names.len() == 12 { 1 } else { 0 },
            None => text
                .parse::<u32>()
                .map_err(|_| refuse(&format!("{text:?} is not a number or a name")))?,
        };
        if number < min || number > max {
            return Err(refuse(&format!("{number} is out of range")));
        }
        Ok(number)
    };
    let mut set = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| refuse(&format!("step {step:?} is not a number")))?;
                if step == 0 {
                    return Err(refuse("a step must be at least 1"));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = match range {
            "*" | "?" => (min, max),
            _ => match range.split_once('-') {
                Some((low, high)) => (value(low)?, value(high)?),
                // `a/n` means from a to the end.
                None if step > 1 => (value(range)?, max),
                None => {
                    let single = value(range)?;
                    (single, single)
                }
            },
        };
        if low > high {
            return Err(refuse(&format!("the range {low}-{high} runs backwards")));
        }
        let mut v = low;
        while v <= high {
            set |= 1u64 << v;
            v += step;
        }
    }
    if set == 0 {
        return Err(refuse("it allows no value"));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn firings(cron: &CronSchedule, from: &str, n: usize) -> Vec<String> {
        let mut at = utc(from);
        (0..n)
            .map(|_| {
                at = cron.next_after(at).unwrap();
                at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            })
            .collect()
    }

    #[test]
    fn seconds_steps_and_five_field_expressions() {
        let every_two = CronSchedule::parse("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(
            firings(&every_two, "2026-01-01T00:00:00.5Z", 3),
            [
                "2026-01-01T00:00:02Z",
                "2026-01-01T00:00:04Z",
                "2026-01-01T00:00:06Z"
            ]
        );
        let monday_six = CronSchedule::parse("0 6 * * MON", "UTC").unwrap();
        // 2026-01-01 is a Thursday.
        assert_eq!(
            firings(&monday_six, "2026-01-01T00:00:00Z", 2),
            ["2026-01-05T06:00:00Z", "2026-01-12T06:00:00Z"]
        );
    }

    #[test]
    fn a_time_zone_moves_the_firing() {
        let berlin = CronSchedule::parse("0 6 * * MON", "Europe/Berlin").unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            firings(&berlin, "2026-01-01T00:00:00Z", 1),
            ["2026-01-05T05:00:00Z"]
        );
        assert_eq!(
            firings(&berlin, "2026-07-01T00:00:00Z", 1),
            ["2026-07-06T04:00:00Z"]
        );
    }

    #[test]
    fn a_fixed_time_in_the_skipped_hour_runs_once_right_after_the_jump() {
        // 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST (01:00Z).
        let daily = CronSchedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            firings(&daily, "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T01:00:00Z", // 03:00 CEST, right after the jump
                "2026-03-30T00:30:00Z", // 02:30 CEST
                "2026-03-31T00:30:00Z",
            ]
        );
    }

    #[test]
    fn a_fixed_time_in_the_repeated_hour_runs_once() {
        // 2026-10-25: Berlin falls back from 03:00 CEST to 02:00 CET (01:00Z).
        let daily = CronSchedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            firings(&daily, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn a_wall_clock_job_skips_the_missing_hour_and_runs_in_both_passes_of_the_repeated_one() {
        let half_hourly = CronSchedule::parse("0 */30 * * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            firings(&half_hourly, "2026-03-29T00:15:00Z", 3),
            [
                "2026-03-29T00:30:00Z", // 01:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST: 02:00 and 02:30 never happened
                "2026-03-29T01:30:00Z",
            ]
        );
        assert_eq!(
            firings(&half_hourly, "2026-10-24T23:45:00Z", 6),
            [
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET, the second pass
                "2026-10-25T01:30:00Z", // 02:30 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
                "2026-10-25T02:30:00Z",
            ]
        );
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // The 1st of the month or any Friday.
        let cron = CronSchedule::parse("0 0 0 1 * FRI", "UTC").unwrap();
        assert_eq!(
            firings(&cron, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-02T00:00:00Z",
                "2026-01-09T00:00:00Z",
                "2026-01-16T00:00:00Z"
            ]
        );
        let sunday_as_seven = CronSchedule::parse("0 0 12 * * 7", "UTC").unwrap();
        assert_eq!(
            firings(&sunday_as_seven, "2026-01-01T00:00:00Z", 1),
            ["2026-01-04T12:00:00Z"]
        );
    }

    #[test]
    fn an_impossible_date_never_fires() {
        let cron = CronSchedule::parse("0 0 0 30 FEB *", "UTC").unwrap();
        assert_eq!(cron.next_after(utc("2026-01-01T00:00:00Z")), None);
    }

    #[test]
    fn the_due_tick_is_the_latest_one_however_many_were_missed() {
        let every_minute = CronSchedule::parse("0 * * * * *", "UTC").unwrap();
        let since = utc("2026-01-01T00:00:30Z");
        assert_eq!(
            every_minute.latest_due(since, utc("2026-01-01T00:05:10Z")),
            Some(utc("2026-01-01T00:05:00Z"))
        );
        assert_eq!(
            every_minute.latest_due(since, utc("2026-01-01T00:00:59Z")),
            None
        );
        // A day of downtime with a one-second schedule: still one answer, quickly.
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            every_second.latest_due(since, utc("2026-01-02T00:00:00.5Z")),
            Some(utc("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_are_refused_naming_the_field() {
        for (expression, names) in [
            ("* * * *", "5 or 6 fields"),
            ("61 * * * * *", "second"),
            ("* 60 * * * *", "minute"),
            ("* * 24 * * *", "hour"),
            ("* * * 0 * *", "day of month"),
            ("* * * * 13 *", "month"),
            ("* * * * * 8", "day of week"),
            ("*/0 * * * * *", "step"),
            ("* * 5-2 * * *", "backwards"),
            ("* * * * * FUNDAY", "day of week"),
        ] {
            let error = CronSchedule::parse(expression, "UTC")
                .unwrap_err()
                .to_string();
            assert!(error.contains(names), "{expression}: {error}");
        }
        let error = CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert!(error.to_string().contains("time zone"), "{error}");
    }
}
