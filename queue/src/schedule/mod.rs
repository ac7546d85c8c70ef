//! Recurring jobs: schedules (a cron expression in a time zone, or a fixed interval) that
//! enqueue one job per tick, however many processes run a [`Schedules::run`] loop, with no
//! leader to elect or lose.
//!
//! How one job per tick holds: a tick's job id is derived from the schedule's name and the tick
//! time (`sched:<name>:<tick ms>`, see [`tick_of`]), so processes that see the same tick enqueue
//! the same id and the engine keeps one (enqueue is idempotent by id). Each schedule's state
//! (last tick, its job, paused) is a small hash; the last tick only moves forward.
//!
//! After downtime a schedule runs its latest missed tick once, not once per missed tick;
//! [`Missed::Skip`] runs none and waits for the next tick. A new schedule starts with the first
//! tick after it was defined. A paused schedule enqueues nothing, and its ticks missed while
//! paused are not made up on resume.
//!
//! Keys (all under the hash tag `{schedules}`, one Redis Cluster slot):
//! `<prefix>:{schedules}:defs` (hash name -> definition JSON), `<prefix>:{schedules}:version`
//! (bumped on every change, so loops reload definitions only then) and
//! `<prefix>:{schedules}:state:<name>` (hash: `since`, `last_tick`, `last_job`, `last_run_at`,
//! `paused`).

pub mod cron;

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use self::cron::{CronError, CronSchedule};
use crate::{engine::QueueEngine, job::JobSpec};

/// When a schedule ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Recurrence {
    /// A cron expression (five or six fields, see [`cron`]) read in an IANA time zone.
    Cron {
        /// `*/2 * * * * *`, `0 6 * * MON`.
        expression: String,
        /// `Europe/Berlin`, `UTC`.
        time_zone: String,
    },
    /// Every `interval_ms`, at the multiples of it since the Unix epoch (so every process
    /// computes the same ticks).
    Interval {
        /// At least one second.
        interval_ms: u64,
    },
}

impl Recurrence {
    /// A cron recurrence, checked now so a bad expression is refused where it is written.
    pub fn cron(expression: &str, time_zone: &str) -> Result<Self, CronError> {
        CronSchedule::parse(expression, time_zone)?;
        Ok(Self::Cron {
            expression: expression.trim().to_owned(),
            time_zone: time_zone.to_owned(),
        })
    }

    /// A fixed interval, at least one second.
    pub fn every(interval: Duration) -> Self {
        Self::Interval {
            interval_ms: (interval.as_millis() as u64).max(1000),
        }
    }

    fn compile(&self) -> Result<Compiled, CronError> {
        Ok(match self {
            Self::Cron {
                expression,
                time_zone,
            } => Compiled::Cron(Box::new(CronSchedule::parse(expression, time_zone)?)),
            Self::Interval { interval_ms } => Compiled::Interval((*interval_ms).max(1000) as i64),
        })
    }
}

/// A recurrence ready to answer "when".
#[derive(Debug, Clone)]
enum Compiled {
    Cron(Box<CronSchedule>),
    Interval(i64),
}

impl Compiled {
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron(cron) => cron.next_after(after),
            Self::Interval(ms) => {
                let next = (after.timestamp_millis().div_euclid(*ms) + 1) * ms;
                Utc.timestamp_millis_opt(next).single()
            }
        }
    }

    fn latest_due(&self, since: DateTime<Utc>, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Cron(cron) => cron.latest_due(since, at),
            Self::Interval(ms) => {
                let tick = at.timestamp_millis().div_euclid(*ms) * ms;
                (tick > since.timestamp_millis())
                    .then(|| Utc.timestamp_millis_opt(tick).single())
                    .flatten()
            }
        }
    }
}

/// What a schedule does about ticks that passed while no process ran it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Run the latest missed tick once.
    #[default]
    RunOnce,
    /// Run none of them; wait for the next tick.
    Skip,
}

/// A schedule: its name, when it ticks and the job each tick enqueues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleDef {
    /// Unique among schedules; part of every tick's job id (letters, digits, `_-.:`).
    pub name: String,
    /// When it ticks.
    pub recurrence: Recurrence,
    /// The job each tick enqueues: queue, kind, payload, priority and retry policy (its id and
    /// start time are set per tick).
    pub job: JobSpec,
    /// Ticks missed during downtime.
    #[serde(default)]
    pub missed: Missed,
}

/// A schedule as operators see it: the definition and what it last did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleView {
    /// The definition.
    pub def: ScheduleDef,
    /// Ticks are not enqueued while paused.
    pub paused: bool,
    /// The last tick that enqueued a job (or was skipped), ms since the epoch.
    pub last_tick_ms: Option<i64>,
    /// The job the last tick or "run now" enqueued (look it up in its queue for the outcome).
    pub last_job_id: Option<String>,
    /// When the scheduler enqueued that job, ms since the epoch.
    pub last_run_at_ms: Option<i64>,
    /// The next tick, ms since the epoch (`None`: never again, or paused).
    pub next_tick_ms: Option<i64>,
}

/// Why a schedule could not be defined or changed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The name or recurrence is not acceptable; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// No schedule has that name.
    #[error("no schedule named {0:?}")]
    NotFound(String),
    /// Redis refused or lost a call.
    #[error("schedule redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The job id a schedule's tick enqueues: `sched:<name>:<tick ms>`.
pub fn tick_job_id(name: &str, tick: DateTime<Utc>) -> String {
    format!("sched:{name}:{}", tick.timestamp_millis())
}

/// The schedule name and tick time a job id stands for, if it is a tick's job (a handler
/// reading the period it covers, e.g. "the day before the tick").
pub fn tick_of(job_id: &str) -> Option<(&str, DateTime<Utc>)> {
    let rest = job_id.strip_prefix("sched:")?;
    let (name, ms) = rest.rsplit_once(':')?;
    let tick = Utc.timestamp_millis_opt(ms.parse().ok()?).single()?;
    Some((name, tick))
}

/// The schedule name and time a "run now" job id stands for (`sched:<name>:now:<UUIDv7>`, see
/// [`Schedules::run_now`]). The time is the one the id's UUIDv7 carries, so every attempt of
/// that job reads the same time, as every attempt of a tick's job reads its tick.
pub fn run_now_of(job_id: &str) -> Option<(&str, DateTime<Utc>)> {
    let rest = job_id.strip_prefix("sched:")?;
    let (name, id) = rest.rsplit_once(":now:")?;
    let (secs, nanos) = uuid::Uuid::parse_str(id).ok()?.get_timestamp()?.to_unix();
    let at = Utc
        .timestamp_opt(i64::try_from(secs).ok()?, nanos)
        .single()?;
    (!name.is_empty()).then_some((name, at))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// Moves a schedule's last tick forward (never back) and records the job it enqueued.
const ADVANCE: &str = r"
local last = tonumber(redis.call('HGET', KEYS[1], 'last_tick') or '0')
if tonumber(ARGV[1]) > last then
  redis.call('HSET', KEYS[1], 'last_tick', ARGV[1], 'last_job', ARGV[2], 'last_run_at', ARGV[3])
  return 1
end
return 0
";

/// The schedules of one key prefix: define, list, pause, run now, and the loop that enqueues
/// their ticks. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Schedules {
    engine: QueueEngine,
    advance: std::sync::Arc<redis::Script>,
}

impl Schedules {
    /// The schedules stored beside `engine`'s queues.
    pub fn new(engine: QueueEngine) -> Self {
        Self {
            engine,
            advance: std::sync::Arc::new(redis::Script::new(ADVANCE)),
        }
    }

    fn key(&self, suffix: &str) -> String {
        format!("{}:{{schedules}}:{suffix}", self.engine.prefix())
    }

    fn state_key(&self, name: &str) -> String {
        self.key(&format!("state:{name}"))
    }

    /// Creates or replaces the schedule `def.name`, keeping its state (a process that starts
    /// defines its schedules again without resetting them). Its first tick is the first after
    /// it was first defined.
    pub async fn define(&self, def: &ScheduleDef) -> Result<(), ScheduleError> {
        if !valid_name(&def.name) {
            return Err(ScheduleError::Invalid(format!(
                "schedule name {:?} must be 1 to 128 letters, digits or _-.:",
                def.name
            )));
        }
        def.recurrence
            .compile()
            .map_err(|e| ScheduleError::Invalid(e.to_string()))?;
        let json = serde_json::to_string(def)
            .map_err(|e| ScheduleError::Invalid(format!("definition is not JSON: {e}")))?;
        let now = Utc::now().timestamp_millis();
        let mut redis = self.engine.redis();
        redis::pipe()
            .atomic()
            .hset(self.key("defs"), &def.name, json)
            .ignore()
            .hset_nx(self.state_key(&def.name), "since", now)
            .ignore()
            .incr(self.key("version"), 1)
            .ignore()
            .query_async::<()>(&mut redis)
            .await?;
        Ok(())
    }

    /// Removes a schedule and its state; `false` if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, ScheduleError> {
        let mut redis = self.engine.redis();
        let (removed,): (u32,) = redis::pipe()
            .atomic()
            .hdel(self.key("defs"), name)
            .del(self.state_key(name))
            .ignore()
            .incr(self.key("version"), 1)
            .ignore()
            .query_async(&mut redis)
            .await?;
        Ok(removed > 0)
    }

    /// Pauses or resumes a schedule. Resuming does not make up the ticks missed while paused.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<(), ScheduleError> {
        let mut redis = self.engine.redis();
        if !redis.hexists::<_, _, bool>(self.key("defs"), name).await? {
            return Err(ScheduleError::NotFound(name.to_owned()));
        }
        let state = self.state_key(name);
        let now = Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset(&state, "paused", u8::from(paused))
            .ignore();
        if !paused {
            // Ticks before the resume are not made up.
            pipe.hset(&state, "since", now).ignore();
        }
        pipe.incr(self.key("version"), 1).ignore();
        pipe.query_async::<()>(&mut redis).await?;
        Ok(())
    }

    /// Enqueues the schedule's job now, outside its ticks; returns the job id.
    pub async fn run_now(&self, name: &str) -> Result<String, ScheduleError> {
        let def = self
            .get(name)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(name.to_owned()))?;
        let now = Utc::now();
        let id = format!("sched:{name}:now:{}", uuid::Uuid::now_v7());
        let spec = def.job.with_id(id.clone()).run_at(now);
        self.engine.enqueue(&[spec]).await?;
        let mut redis = self.engine.redis();
        redis
            .hset_multiple::<_, _, _, ()>(
                self.state_key(name),
                &[
                    ("last_job", id.clone()),
                    ("last_run_at", now.timestamp_millis().to_string()),
                ],
            )
            .await?;
        Ok(id)
    }

    /// One schedule's definition.
    pub async fn get(&self, name: &str) -> Result<Option<ScheduleDef>, ScheduleError> {
        let mut redis = self.engine.redis();
        let json: Option<String> = redis.hget(self.key("defs"), name).await?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Every schedule with its state and next tick, by name.
    pub async fn list(&self) -> Result<Vec<ScheduleView>, ScheduleError> {
        let defs = self.load_defs().await?;
        let states = self
            .load_states(defs.iter().map(|d| d.name.as_str()))
            .await?;
        let now = Utc::now();
        let mut views: Vec<ScheduleView> = defs
            .into_iter()
            .zip(states)
            .map(|(def, state)| {
                let next_tick_ms = (!state.paused)
                    .then(|| def.recurrence.compile().ok())
                    .flatten()
                    .and_then(|c| c.next_after(now))
                    .map(|t| t.timestamp_millis());
                ScheduleView {
                    def,
                    paused: state.paused,
                    last_tick_ms: state.last_tick_ms,
                    last_job_id: state.last_job_id,
                    last_run_at_ms: state.last_run_at_ms,
                    next_tick_ms,
                }
            })
            .collect();
        views.sort_by(|a, b| a.def.name.cmp(&b.def.name));
        Ok(views)
    }

    async fn load_defs(&self) -> Result<Vec<ScheduleDef>, ScheduleError> {
        let mut redis = self.engine.redis();
        let all: HashMap<String, String> = redis.hgetall(self.key("defs")).await?;
        let mut defs = Vec::with_capacity(all.len());
        for (name, json) in all {
            match serde_json::from_str::<ScheduleDef>(&json) {
                Ok(def) => defs.push(def),
                Err(error) => tracing::warn!(schedule = %name, %error, "unreadable schedule"),
            }
        }
        Ok(defs)
    }

    async fn load_states<'a>(
        &self,
        names: impl Iterator<Item = &'a str>,
    ) -> Result<Vec<ScheduleState>, ScheduleError> {
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hgetall(self.state_key(name));
        }
        if pipe.cmd_iter().next().is_none() {
            return Ok(Vec::new());
        }
        let raw: Vec<HashMap<String, String>> = pipe.query_async(&mut self.engine.redis()).await?;
        Ok(raw.into_iter().map(ScheduleState::from).collect())
    }

    /// Enqueues the due tick of every schedule, as of `now`; returns the job ids it added
    /// (another process may have added the same tick's job first: then nothing is added).
    pub async fn enqueue_due(&self, now: DateTime<Utc>) -> Result<Vec<String>, ScheduleError> {
        let defs = compile_all(self.load_defs().await?);
        self.enqueue_due_of(&defs, now).await
    }

    async fn enqueue_due_of(
        &self,
        defs: &[(ScheduleDef, Compiled)],
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, ScheduleError> {
        let states = self
            .load_states(defs.iter().map(|(d, _)| d.name.as_str()))
            .await?;
        let mut added = Vec::new();
        for ((def, recurrence), state) in defs.iter().zip(states) {
            if state.paused {
                continue;
            }
            let since = state
                .last_tick_ms
                .max(state.since_ms)
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .unwrap_or(now);
            let Some(tick) = recurrence.latest_due(since, now) else {
                continue;
            };
            let id = tick_job_id(&def.name, tick);
            // More than a minute late means it passed while no process ran the schedule.
            let late = now - tick > chrono::Duration::seconds(60);
            if def.missed == Missed::Skip && late {
                self.advance(&def.name, tick, "", now).await?;
                continue;
            }
            let spec = def.job.clone().with_id(id.clone()).run_at(tick);
            if self.engine.enqueue(&[spec]).await?.first() == Some(&true) {
                added.push(id.clone());
            }
            self.advance(&def.name, tick, &id, now).await?;
        }
        Ok(added)
    }

    async fn advance(
        &self,
        name: &str,
        tick: DateTime<Utc>,
        job_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ScheduleError> {
        self.advance
            .key(self.state_key(name))
            .arg(tick.timestamp_millis())
            .arg(job_id)
            .arg(now.timestamp_millis())
            .invoke_async::<i64>(&mut self.engine.redis())
            .await?;
        Ok(())
    }

    /// The earliest next tick among `defs` after `now`.
    fn next_tick(defs: &[(ScheduleDef, Compiled)], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        defs.iter().filter_map(|(_, c)| c.next_after(now)).min()
    }

    /// Enqueues ticks until `stop` is cancelled: every process that runs this loop does so
    /// safely at once. It wakes at the next tick, and at least every `refresh` to see new,
    /// changed or paused schedules; a Redis failure is logged and retried.
    pub async fn run(self, refresh: Duration, stop: CancellationToken) {
        // Definitions are parsed once per change of the version counter, not on every pass.
        let mut defs: Vec<(ScheduleDef, Compiled)> = Vec::new();
        // The counter the definitions were loaded at (`Some(None)`: before any schedule existed).
        let mut loaded_at: Option<Option<i64>> = None;
        loop {
            let current: Option<i64> = self
                .engine
                .redis()
                .get(self.key("version"))
                .await
                .unwrap_or(None);
            if loaded_at != Some(current) {
                match self.load_defs().await {
                    Ok(loaded) => {
                        defs = compile_all(loaded);
                        loaded_at = Some(current);
                    }
                    Err(error) => tracing::warn!(%error, "could not load schedules"),
                }
            }
            let now = Utc::now();
            if !defs.is_empty()
                && let Err(error) = self.enqueue_due_of(&defs, now).await
            {
                tracing::warn!(%error, "could not enqueue due schedule ticks");
            }
            let wait = Self::next_tick(&defs, Utc::now())
                .and_then(|t| (t - Utc::now()).to_std().ok())
                .map_or(refresh, |until| until.min(refresh));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

/// The definitions whose recurrence parses, each with it parsed (`define` refuses the others;
/// one written by hand into Redis is logged and skipped).
fn compile_all(defs: Vec<ScheduleDef>) -> Vec<(ScheduleDef, Compiled)> {
    defs.into_iter()
        .filter_map(|def| match def.recurrence.compile() {
            Ok(compiled) => Some((def, compiled)),
            Err(error) => {
                tracing::warn!(schedule = %def.name, %error, "schedule with a bad recurrence skipped");
                None
            }
        })
        .collect()
}

/// What a schedule's state hash holds.
#[derive(Debug, Default)]
struct ScheduleState {
    since_ms: Option<i64>,
    last_tick_ms: Option<i64>,
    last_job_id: Option<String>,
    last_run_at_ms: Option<i64>,
    paused: bool,
}

impl From<HashMap<String, String>> for ScheduleState {
    fn from(mut raw: HashMap<String, String>) -> Self {
        let number = |raw: &HashMap<String, String>, field: &str| {
            raw.get(field).and_then(|v| v.parse::<i64>().ok())
        };
        Self {
            since_ms: number(&raw, "since"),
            last_tick_ms: number(&raw, "last_tick").filter(|t| *t > 0),
            last_run_at_ms: number(&raw, "last_run_at"),
            paused: raw.get("paused").is_some_and(|p| p == "1"),
            last_job_id: raw.remove("last_job").filter(|j| !j.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_job_id_names_its_schedule_and_time() {
        let tick = Utc.timestamp_millis_opt(1_767_225_600_000).unwrap();
        let id = tick_job_id("maintenance:purge", tick);
        assert_eq!(id, "sched:maintenance:purge:1767225600000");
        assert_eq!(tick_of(&id), Some(("maintenance:purge", tick)));
        assert_eq!(tick_of("0193-not-a-tick"), None);
    }

    #[test]
    fn a_run_now_job_id_names_its_schedule_and_the_time_it_was_asked_for() {
        let before = Utc::now();
        let id = format!("sched:report:abc:now:{}", uuid::Uuid::now_v7());
        let (name, at) = run_now_of(&id).unwrap();
        assert_eq!(name, "report:abc");
        assert!(
            (at - before).num_milliseconds().abs() < 1000,
            "{at} is about {before}"
        );
        assert_eq!(tick_of(&id), None, "not a tick");
        assert_eq!(run_now_of("sched:report:abc:1767225600000"), None);
        assert_eq!(run_now_of("sched:report:abc:now:not-a-uuid"), None);
    }

    #[test]
    fn intervals_tick_on_multiples_of_themselves() {
        let every_ten = Recurrence::every(Duration::from_secs(10))
            .compile()
            .unwrap();
        let at = |ms: i64| Utc.timestamp_millis_opt(ms).unwrap();
        assert_eq!(every_ten.next_after(at(12_345)), Some(at(20_000)));
        assert_eq!(every_ten.latest_due(at(0), at(35_000)), Some(at(30_000)));
        assert_eq!(every_ten.latest_due(at(30_000), at(35_000)), None);
    }
}
