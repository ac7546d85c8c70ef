//! Report schedules: an admin's recurring report, the rules of its input and the days each run
//! covers.
//!
//! A schedule is a row in PostgreSQL (the source of truth) mirrored in the queue engine as the
//! schedule named `report:<id>` ([`ReportSchedule::engine_name`]), whose ticks enqueue a
//! [`ScheduledReportJob`](crate::reports::job::ScheduledReportJob). That job reads the run's time
//! from its own id ([`ScheduledRun::of_job_id`]) and requests one report for the days
//! [`ReportPeriod::covered_days`] gives, read in the schedule's time zone.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    error::AppError,
    queue::schedule::{CronSchedule, Recurrence, run_now_of, tick_of},
    reports::model::{MAX_RANGE_DAYS, ReportKind},
};

/// The days a scheduled run covers, counted back from the run's local date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ReportPeriod {
    /// The calendar day before the run's date.
    PreviousDay,
    /// Monday to Sunday of the week before the run's week.
    PreviousWeek,
    /// The calendar month before the run's month.
    PreviousMonth,
    /// From the day after the last day the schedule's previous report covered (or from the day
    /// the schedule was created) through the day before the run's date.
    SinceLastRun,
}

impl ReportPeriod {
    /// The period's name, as clients send it and as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreviousDay => "previous_day",
            Self::PreviousWeek => "previous_week",
            Self::PreviousMonth => "previous_month",
            Self::SinceLastRun => "since_last_run",
        }
    }

    /// Parses a requested period.
    pub fn parse(raw: &str) -> Result<Self, AppError> {
        match raw {
            "previous_day" => Ok(Self::PreviousDay),
            "previous_week" => Ok(Self::PreviousWeek),
            "previous_month" => Ok(Self::PreviousMonth),
            "since_last_run" => Ok(Self::SinceLastRun),
            _ => Err(AppError::invalid_field(
                "period",
                "must be \"previous_day\", \"previous_week\", \"previous_month\" or \
                 \"since_last_run\"",
            )),
        }
    }

    /// The first and last day a run at `at` covers, in `time_zone` (dates, so daylight saving
    /// only matters in turning `at` into the local date). `since` is where `since_last_run`
    /// starts (the other periods ignore it). `None` when there is nothing to cover: a
    /// `since_last_run` whose previous report already reaches yesterday (it ran today already).
    /// A range longer than a report may cover keeps its most recent [`MAX_RANGE_DAYS`].
    pub fn covered_days(
        self,
        at: DateTime<Utc>,
        time_zone: Tz,
        since: NaiveDate,
    ) -> Option<(NaiveDate, NaiveDate)> {
        let today = at.with_timezone(&time_zone).date_naive();
        let yesterday = today.pred_opt()?;
        match self {
            Self::PreviousDay => Some((yesterday, yesterday)),
            Self::PreviousWeek => {
                let monday =
                    today - Duration::days(i64::from(today.weekday().num_days_from_monday()));
                let previous_monday = monday - Duration::days(7);
                Some((previous_monday, monday.pred_opt()?))
            }
            Self::PreviousMonth => {
                let first = today.with_day(1)?;
                let last_of_previous = first.pred_opt()?;
                Some((last_of_previous.with_day(1)?, last_of_previous))
            }
            Self::SinceLastRun => {
                let from = since.max(yesterday - Duration::days(MAX_RANGE_DAYS));
                (from <= yesterday).then_some((from, yesterday))
            }
        }
    }
}

/// A report schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ReportSchedule {
    /// UUIDv7.
    pub id: Uuid,
    /// The admin who owns it: its reports are theirs and emailed to them.
    pub user_id: Uuid,
    /// `sales` or `my_orders` ([`ReportKind`]).
    pub kind: String,
    /// `csv`.
    pub format: String,
    /// Five or six fields (`0 6 * * MON`).
    pub cron: String,
    /// The IANA time zone the expression and the period's days are read in.
    pub time_zone: String,
    /// What each run covers.
    pub period: ReportPeriod,
    /// A paused schedule's ticks make no report.
    pub paused: bool,
    /// Created; a first `since_last_run` starts at this date (in the schedule's time zone).
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// The prefix of the engine names of report schedules.
const ENGINE_PREFIX: &str = "report:";

impl ReportSchedule {
    /// The engine schedule mirroring schedule `id`: `report:<id>`.
    pub fn engine_name(id: Uuid) -> String {
        format!("{ENGINE_PREFIX}{id}")
    }

    /// The schedule an engine schedule name mirrors, if it is a report schedule's.
    pub fn id_of_engine_name(name: &str) -> Option<Uuid> {
        name.strip_prefix(ENGINE_PREFIX)?.parse().ok()
    }

    /// The time zone, parsed (a stored one was checked when it was written).
    pub fn tz(&self) -> Result<Tz, AppError> {
        self.time_zone
            .parse()
            .map_err(|_| AppError::internal(format!("stored time zone {:?}", self.time_zone)))
    }
}

/// The least time between two runs of a report schedule: a report covers whole days, so a
/// schedule firing every second would only queue the same report over and over.
pub const MIN_INTERVAL: Duration = Duration::hours(1);

/// Checks a time zone: an IANA name.
fn parse_time_zone(raw: &str) -> Result<String, AppError> {
    raw.parse::<Tz>().map(|_| raw.to_owned()).map_err(|_| {
        AppError::invalid_field(
            "timezone",
            format!(
                "unknown time zone {raw:?} (an IANA name such as \"Europe/Berlin\" or \"UTC\")"
            ),
        )
    })
}

/// Checks a cron expression (five or six fields) read in `time_zone`, and that its runs are at
/// least [`MIN_INTERVAL`] apart (over its next few dozen runs).
fn parse_cron(raw: &str, time_zone: &str) -> Result<String, AppError> {
    let invalid = |message: String| AppError::invalid_field("cron", message);
    let recurrence = Recurrence::cron(raw, time_zone).map_err(|e| invalid(e.to_string()))?;
    let Recurrence::Cron { expression, .. } = recurrence else {
        return Err(invalid("is not a cron expression".into()));
    };
    let cron = CronSchedule::parse(&expression, time_zone).map_err(|e| invalid(e.to_string()))?;
    let mut previous = cron
        .next_after(Utc::now())
        .ok_or_else(|| invalid("never fires".into()))?;
    for _ in 0..48 {
        let Some(next) = cron.next_after(previous) else {
            break;
        };
        if next - previous < MIN_INTERVAL {
            return Err(invalid(format!(
                "fires more often than once every {} minutes; a report covers whole days",
                MIN_INTERVAL.num_minutes()
            )));
        }
        previous = next;
    }
    Ok(expression)
}

/// Checks the format: only `csv` exists.
fn parse_format(raw: &str) -> Result<String, AppError> {
    if raw == "csv" {
        Ok(raw.to_owned())
    } else {
        Err(AppError::invalid_field("format", "must be \"csv\""))
    }
}

/// A checked new schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReportSchedule {
    /// What each report covers.
    pub kind: ReportKind,
    /// `csv`.
    pub format: String,
    /// A checked cron expression.
    pub cron: String,
    /// A known IANA time zone.
    pub time_zone: String,
    /// The days each run covers.
    pub period: ReportPeriod,
}

impl NewReportSchedule {
    /// Checks each field; the error names the first one at fault.
    pub fn parse(
        kind: &str,
        format: &str,
        cron: &str,
        time_zone: &str,
        period: &str,
    ) -> Result<Self, AppError> {
        let kind = ReportKind::parse(kind)?;
        let format = parse_format(format)?;
        let time_zone = parse_time_zone(time_zone)?;
        let cron = parse_cron(cron, &time_zone)?;
        let period = ReportPeriod::parse(period)?;
        Ok(Self {
            kind,
            format,
            cron,
            time_zone,
            period,
        })
    }
}

/// Checked changes to a schedule; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportScheduleChanges {
    /// New kind.
    pub kind: Option<ReportKind>,
    /// New format.
    pub format: Option<String>,
    /// New cron expression (checked in UTC here, and again in the schedule's time zone once
    /// merged with it).
    pub cron: Option<String>,
    /// New time zone.
    pub time_zone: Option<String>,
    /// New period.
    pub period: Option<ReportPeriod>,
    /// Pause (`true`) or resume (`false`).
    pub paused: Option<bool>,
}

impl ReportScheduleChanges {
    /// Checks each given field; the error names the first one at fault.
    pub fn parse(
        kind: Option<&str>,
        format: Option<&str>,
        cron: Option<&str>,
        time_zone: Option<&str>,
        period: Option<&str>,
        paused: Option<bool>,
    ) -> Result<Self, AppError> {
        let time_zone = time_zone.map(parse_time_zone).transpose()?;
        Ok(Self {
            kind: kind.map(ReportKind::parse).transpose()?,
            format: format.map(parse_format).transpose()?,
            cron: cron
                .map(|c| parse_cron(c, time_zone.as_deref().unwrap_or("UTC")))
                .transpose()?,
            time_zone,
            period: period.map(ReportPeriod::parse).transpose()?,
            paused,
        })
    }

    /// `schedule` with the changes applied, checked as a whole (the cron expression in the
    /// resulting time zone).
    pub fn apply_to(&self, schedule: &ReportSchedule) -> Result<ReportSchedule, AppError> {
        let mut next = schedule.clone();
        if let Some(kind) = self.kind {
            next.kind = kind.as_str().to_owned();
        }
        if let Some(format) = &self.format {
            next.format.clone_from(format);
        }
        if let Some(time_zone) = &self.time_zone {
            next.time_zone.clone_from(time_zone);
        }
        if let Some(cron) = &self.cron {
            next.cron.clone_from(cron);
        }
        if self.cron.is_some() || self.time_zone.is_some() {
            next.cron = parse_cron(&next.cron, &next.time_zone)?;
        }
        if let Some(period) = self.period {
            next.period = period;
        }
        if let Some(paused) = self.paused {
            next.paused = paused;
        }
        Ok(next)
    }
}

/// One run of a schedule, as its job's id tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledRun {
    /// The tick's time, or when "run now" was asked for: the same on every attempt of the job,
    /// so it identifies the run (one report per schedule and run).
    pub at: DateTime<Utc>,
    /// An operator's "run now" (it runs even while the schedule is paused), not a tick.
    pub manual: bool,
}

impl ScheduledRun {
    /// The schedule and run a job id stands for: a tick's (`sched:report:<id>:<ms>`) or a "run
    /// now" (`sched:report:<id>:now:<UUIDv7>`). `None` for any other id.
    pub fn of_job_id(job_id: &str) -> Option<(Uuid, Self)> {
        let (name, at, manual) = match tick_of(job_id) {
            Some((name, at)) => (name, at, false),
            None => {
                let (name, at) = run_now_of(job_id)?;
                (name, at, true)
            }
        };
        Some((
            ReportSchedule::id_of_engine_name(name)?,
            Self { at, manual },
        ))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use chrono_tz::{America::Los_Angeles, Asia::Tokyo, Europe::Berlin, UTC};

    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// The instant of a local wall-clock time in `tz` (the earlier one when it is ambiguous).
    fn local(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        tz.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn covered(period: ReportPeriod, at: DateTime<Utc>, tz: Tz) -> Option<(NaiveDate, NaiveDate)> {
        period.covered_days(at, tz, day(2000, 1, 1))
    }

    #[test]
    fn previous_day_is_the_local_day_before_even_where_utc_is_still_on_the_day_before() {
        // 00:30 on Tuesday in Berlin (summer time) is 22:30 on Monday in UTC.
        let at = local(Berlin, 2026, 7, 14, 0, 30);
        assert_eq!(at.date_naive(), day(2026, 7, 13));
        assert_eq!(
            covered(ReportPeriod::PreviousDay, at, Berlin),
            Some((day(2026, 7, 13), day(2026, 7, 13)))
        );
        assert_eq!(
            covered(ReportPeriod::PreviousDay, at, UTC),
            Some((day(2026, 7, 12), day(2026, 7, 12)))
        );
        // 18:00 on Monday in Los Angeles is already Tuesday in UTC.
        let evening = local(Los_Angeles, 2026, 1, 5, 18, 0);
        assert_eq!(evening.date_naive(), day(2026, 1, 6));
        assert_eq!(
            covered(ReportPeriod::PreviousDay, evening, Los_Angeles),
            Some((day(2026, 1, 4), day(2026, 1, 4)))
        );
    }

    #[test]
    fn previous_week_is_monday_to_sunday_before_across_a_daylight_saving_change() {
        // Clocks in Berlin went forward on Sunday 29 March 2026: the week before Monday 30
        // March is 23 to 29 March, whatever the hour of the run.
        for (h, mi) in [(0, 0), (6, 0), (23, 59)] {
            let at = local(Berlin, 2026, 3, 30, h, mi);
            assert_eq!(
                covered(ReportPeriod::PreviousWeek, at, Berlin),
                Some((day(2026, 3, 23), day(2026, 3, 29))),
                "run at {h:02}:{mi:02}"
            );
        }
        // Midnight on Monday in Berlin is still Sunday in UTC: UTC's previous week is another.
        let midnight = local(Berlin, 2026, 3, 30, 0, 0);
        assert_eq!(
            covered(ReportPeriod::PreviousWeek, midnight, UTC),
            Some((day(2026, 3, 16), day(2026, 3, 22)))
        );
        // The autumn change (25 October 2026), on a Wednesday run: the week of 19 to 25 October.
        let wednesday = local(Berlin, 2026, 10, 28, 6, 0);
        assert_eq!(
            covered(ReportPeriod::PreviousWeek, wednesday, Berlin),
            Some((day(2026, 10, 19), day(2026, 10, 25)))
        );
        // Over a year's end.
        let new_year = local(Berlin, 2027, 1, 1, 6, 0);
        assert_eq!(
            covered(ReportPeriod::PreviousWeek, new_year, Berlin),
            Some((day(2026, 12, 21), day(2026, 12, 27)))
        );
    }

    #[test]
    fn previous_month_is_the_calendar_month_before_in_local_time() {
        // 00:30 on 1 March in Berlin is still February in UTC.
        let at = local(Berlin, 2026, 3, 1, 0, 30);
        assert_eq!(
            covered(ReportPeriod::PreviousMonth, at, Berlin),
            Some((day(2026, 2, 1), day(2026, 2, 28)))
        );
        assert_eq!(
            covered(ReportPeriod::PreviousMonth, at, UTC),
            Some((day(2026, 1, 1), day(2026, 1, 31)))
        );
        // A leap year's February, and a January run covering December.
        assert_eq!(
            covered(
                ReportPeriod::PreviousMonth,
                local(Tokyo, 2028, 3, 15, 9, 0),
                Tokyo
            ),
            Some((day(2028, 2, 1), day(2028, 2, 29)))
        );
        assert_eq!(
            covered(
                ReportPeriod::PreviousMonth,
                local(Berlin, 2027, 1, 31, 23, 0),
                Berlin
            ),
            Some((day(2026, 12, 1), day(2026, 12, 31)))
        );
        // A 31-day month after a 30-day one.
        assert_eq!(
            covered(
                ReportPeriod::PreviousMonth,
                local(UTC, 2026, 5, 31, 12, 0),
                UTC
            ),
            Some((day(2026, 4, 1), day(2026, 4, 30)))
        );
    }

    #[test]
    fn since_last_run_covers_the_days_not_yet_covered_up_to_yesterday() {
        let at = local(Berlin, 2026, 7, 14, 0, 30);
        let since = |since| ReportPeriod::SinceLastRun.covered_days(at, Berlin, since);
        assert_eq!(
            since(day(2026, 7, 10)),
            Some((day(2026, 7, 10), day(2026, 7, 13)))
        );
        assert_eq!(
            since(day(2026, 7, 13)),
            Some((day(2026, 7, 13), day(2026, 7, 13)))
        );
        // Already covered through yesterday (it ran earlier today): nothing to cover.
        assert_eq!(since(day(2026, 7, 14)), None);
        // A very long gap keeps the most recent MAX_RANGE_DAYS days.
        let (from, to) = since(day(2001, 1, 1)).unwrap();
        assert_eq!(to, day(2026, 7, 13));
        assert_eq!((to - from).num_days(), MAX_RANGE_DAYS);
    }

    #[test]
    fn input_is_checked_naming_the_field() {
        let field = |e: AppError| match e {
            AppError::Unprocessable { details, .. } => details[0].field.clone(),
            other => panic!("{other:?}"),
        };
        let ok = NewReportSchedule::parse(
            "sales",
            "csv",
            " 0 6 * * MON ",
            "Europe/Berlin",
            "previous_week",
        )
        .unwrap();
        assert_eq!(ok.cron, "0 6 * * MON");
        assert!(
            NewReportSchedule::parse("sales", "csv", "0 0 6 1 * *", "UTC", "previous_month")
                .is_ok()
        );
        let bad = |kind, format, cron, tz, period| {
            field(NewReportSchedule::parse(kind, format, cron, tz, period).unwrap_err())
        };
        assert_eq!(
            bad("sales", "csv", "0 6 * *", "UTC", "previous_day"),
            "cron"
        );
        assert_eq!(
            bad("sales", "csv", "0 61 * * *", "UTC", "previous_day"),
            "cron"
        );
        assert_eq!(
            bad("sales", "csv", "* * * * * *", "UTC", "previous_day"),
            "cron"
        );
        assert_eq!(
            bad("sales", "csv", "*/5 * * * *", "UTC", "previous_day"),
            "cron"
        );
        assert_eq!(
            bad(
                "sales",
                "csv",
                "0 6 * * *",
                "Berlin/Nowhere",
                "previous_day"
            ),
            "timezone"
        );
        assert_eq!(
            bad("sales", "csv", "0 6 * * *", "UTC", "yesterday"),
            "period"
        );
        assert_eq!(
            bad("everything", "csv", "0 6 * * *", "UTC", "previous_day"),
            "kind"
        );
        assert_eq!(
            bad("sales", "pdf", "0 6 * * *", "UTC", "previous_day"),
            "format"
        );
    }

    #[test]
    fn run_ids_of_ticks_and_of_run_now_name_the_schedule() {
        let id = Uuid::now_v7();
        let tick = Utc.timestamp_millis_opt(1_767_225_600_000).unwrap();
        let job_id = crate::queue::schedule::tick_job_id(&ReportSchedule::engine_name(id), tick);
        assert_eq!(
            ScheduledRun::of_job_id(&job_id),
            Some((
                id,
                ScheduledRun {
                    at: tick,
                    manual: false
                }
            ))
        );
        let now = format!("sched:report:{id}:now:{}", Uuid::now_v7());
        let (of, run) = ScheduledRun::of_job_id(&now).unwrap();
        assert_eq!(of, id);
        assert!(run.manual);
        assert_eq!(
            ScheduledRun::of_job_id("sched:maintenance:trim:1767225600000"),
            None
        );
        assert_eq!(ScheduledRun::of_job_id(&Uuid::now_v7().to_string()), None);
    }
}
