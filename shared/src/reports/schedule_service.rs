//! Report schedule rules: admins create, change, pause and delete schedules; each run requests
//! one report.
//!
//! PostgreSQL is the source of truth, the queue engine runs the ticks: every change is written
//! to the row first, then mirrored to the engine schedule `report:<id>` (defined, redefined,
//! paused, resumed or removed). A crash or a Redis failure between the two leaves them apart
//! until [`ReportScheduleService::reconcile`], which every worker process runs at start and
//! every minute, brings the engine back in line with the rows.
//!
//! A run ([`ReportScheduleService::run`]) inserts the report for its schedule's owner and stages
//! its build in one transaction, exactly as a request over HTTP does, except that the per-user
//! cap on open reports does not apply (nobody asked twice: the schedule's owner chose it once).
//! One report per schedule and run: a retried run's insert conflicts and stages nothing.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::AppError,
    jobs::JobStager,
    pagination::{Page, PageRequest},
    queue::{
        Job, Outbox, RunAt, UnitOfWork,
        schedule::{Missed, Recurrence, ScheduleDef, ScheduleView, Schedules},
    },
    reports::{
        job::{ReportJob, ScheduledReportJob},
        model::{Report, ReportKind},
        repository::ReportRepository,
        schedule::{
            NewReportSchedule, ReportPeriod, ReportSchedule, ReportScheduleChanges, ScheduledRun,
        },
        schedule_repository::ReportScheduleRepository,
    },
    users::{Actor, Role, UserService},
};

/// A schedule with what the engine says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportScheduleView {
    /// The schedule as stored.
    pub schedule: ReportSchedule,
    /// Its next tick (`None` while paused, or when the engine does not know it yet).
    pub next_run_at: Option<DateTime<Utc>>,
    /// When its last tick or "run now" enqueued its job.
    pub last_run_at: Option<DateTime<Utc>>,
}

/// What a reconciliation changed in the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Schedules defined, redefined, paused or resumed to match their rows.
    pub mirrored: usize,
    /// Engine `report:` schedules removed because their row is gone.
    pub removed: usize,
}

/// Report schedules: the admin API's rules, the engine mirror and each run's report.
#[derive(Debug, Clone)]
pub struct ReportScheduleService {
    pool: PgPool,
    schedules: ReportScheduleRepository,
    reports: ReportRepository,
    engine: Schedules,
    users: UserService,
    jobs: JobStager,
    outbox: Outbox,
}

impl ReportScheduleService {
    /// Wires the service.
    pub fn new(
        pool: PgPool,
        engine: Schedules,
        users: UserService,
        jobs: JobStager,
        outbox: Outbox,
    ) -> Self {
        Self {
            pool,
            schedules: ReportScheduleRepository,
            reports: ReportRepository,
            engine,
            users,
            jobs,
            outbox,
        }
    }

    fn require_admin(actor: &Actor) -> Result<(), AppError> {
        if actor.is_admin() {
            Ok(())
        } else {
            Err(AppError::forbidden("report schedules are for admins"))
        }
    }

    /// Creates a schedule owned by the admin `actor` (403 for anyone else): its reports are
    /// theirs and emailed to them. Its first run is its first tick after now.
    #[tracing::instrument(skip(self, new), fields(user_id = %actor.user_id))]
    pub async fn create(
        &self,
        actor: &Actor,
        new: NewReportSchedule,
    ) -> Result<ReportScheduleView, AppError> {
        Self::require_admin(actor)?;
        let schedule = self
            .schedules
            .insert(&self.pool, actor.user_id, &new)
            .await?;
        tracing::info!(schedule_id = %schedule.id, "report schedule created");
        Ok(self.mirror_and_view(schedule).await)
    }

    /// Every schedule (admins), newest first.
    pub async fn list(
        &self,
        actor: &Actor,
        page: PageRequest,
    ) -> Result<Page<ReportScheduleView>, AppError> {
        Self::require_admin(actor)?;
        let page = self.schedules.list(&self.pool, &page).await?;
        let mut engine = self.engine_views().await;
        Ok(page.map(|schedule| {
            let current = engine.remove(&ReportSchedule::engine_name(schedule.id));
            view(schedule, current.as_ref())
        }))
    }

    /// One schedule (admins); 404 if there is none.
    pub async fn get(&self, actor: &Actor, id: Uuid) -> Result<ReportScheduleView, AppError> {
        Self::require_admin(actor)?;
        let schedule = self
            .schedules
            .find(&self.pool, id)
            .await?
            .ok_or_else(not_found)?;
        let current = self
            .engine_views()
            .await
            .remove(&ReportSchedule::engine_name(id));
        Ok(view(schedule, current.as_ref()))
    }

    /// Changes a schedule (admins; 404 if there is none). A new cron expression or time zone
    /// starts its ticks afresh from now (a tick of the new expression that would have fallen
    /// before the change is not run); pausing stops its ticks, resuming starts them from the
    /// next one.
    #[tracing::instrument(skip(self, changes), fields(user_id = %actor.user_id))]
    pub async fn update(
        &self,
        actor: &Actor,
        id: Uuid,
        changes: ReportScheduleChanges,
    ) -> Result<ReportScheduleView, AppError> {
        Self::require_admin(actor)?;
        let mut tx = self.pool.begin().await?;
        let current = self
            .schedules
            .lock(&mut tx, id)
            .await?
            .ok_or_else(not_found)?;
        let next = changes.apply_to(&current)?;
        let schedule = if next == current {
            current
        } else {
            self.schedules.update(&mut tx, &next).await?
        };
        tx.commit().await?;
        Ok(self.mirror_and_view(schedule).await)
    }

    /// Deletes a schedule (admins; 404 if there is none). Its reports stay, unlinked; a run
    /// already enqueued does nothing.
    #[tracing::instrument(skip(self), fields(user_id = %actor.user_id))]
    pub async fn delete(&self, actor: &Actor, id: Uuid) -> Result<(), AppError> {
        Self::require_admin(actor)?;
        if !self.schedules.delete(&self.pool, id).await? {
            return Err(not_found());
        }
        if let Err(error) = self.engine.remove(&ReportSchedule::engine_name(id)).await {
            tracing::warn!(schedule_id = %id, %error, "could not remove the engine schedule; reconciliation will");
        }
        Ok(())
    }

    /// Makes the engine's `report:` schedules match the rows: each row defined (its state
    /// kept), redefined if it changed, paused or resumed as the row says; each engine schedule
    /// without a row removed. Only what differs is written, so running it often is cheap and
    /// never disturbs a tick (resuming a schedule that is not paused would skip one).
    #[tracing::instrument(skip(self))]
    pub async fn reconcile(&self) -> Result<Reconciled, AppError> {
        let rows = self.schedules.all(&self.pool).await?;
        let mut engine: HashMap<String, ScheduleView> = self
            .engine
            .list()
            .await?
            .into_iter()
            .filter(|v| ReportSchedule::id_of_engine_name(&v.def.name).is_some())
            .map(|v| (v.def.name.clone(), v))
            .collect();
        let mut done = Reconciled::default();
        for schedule in &rows {
            let current = engine.remove(&ReportSchedule::engine_name(schedule.id));
            if self.in_line(schedule, current.as_ref())? {
                continue;
            }
            // Read again: an admin may have changed it (and mirrored the change) since.
            let Some(fresh) = self.schedules.find(&self.pool, schedule.id).await? else {
                continue;
            };
            if self.mirror(&fresh, current.as_ref()).await? {
                done.mirrored += 1;
            }
        }
        // Left over: engine schedules without a row. One created between reading the rows and
        // listing the engine would be among them, so each is checked again before it goes.
        for name in engine.into_keys() {
            let Some(id) = ReportSchedule::id_of_engine_name(&name) else {
                continue;
            };
            if self.schedules.find(&self.pool, id).await?.is_none() {
                self.engine.remove(&name).await?;
                done.removed += 1;
            }
        }
        if done != Reconciled::default() {
            tracing::info!(
                mirrored = done.mirrored,
                removed = done.removed,
                "report schedules reconciled"
            );
        }
        Ok(done)
    }

    /// Runs `schedule_id` once, for `run`: inserts the report of the days its period covers
    /// (owned by the schedule's owner) and stages its build, in one transaction. `None`, and
    /// nothing written, when there is nothing to do: the schedule is gone, paused (a tick; a
    /// "run now" still runs), its owner is no longer an admin and it is a `sales` report, its
    /// `since_last_run` period has nothing new to cover yet, or this run already made its report.
    #[tracing::instrument(skip(self), fields(at = %run.at, manual = run.manual))]
    pub async fn run(
        &self,
        schedule_id: Uuid,
        run: ScheduledRun,
    ) -> Result<Option<Report>, AppError> {
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        // Locked: two runs of one schedule (a tick and a "run now") take turns, so the second
        // sees the first's report when it works out `since_last_run`.
        let Some(schedule) = self.schedules.lock(uow.conn(), schedule_id).await? else {
            tracing::warn!("report schedule no longer exists; nothing to run");
            return Ok(None);
        };
        if schedule.paused && !run.manual {
            tracing::info!("report schedule is paused; this tick makes no report");
            return Ok(None);
        }
        if schedule.kind == ReportKind::Sales.as_str() && !self.owner_is_admin(&schedule).await? {
            tracing::warn!(owner = %schedule.user_id, "the schedule's owner is no longer an admin; no sales report");
            return Ok(None);
        }
        let tz = schedule.tz()?;
        let since = match schedule.period {
            ReportPeriod::SinceLastRun => {
                match self
                    .reports
                    .last_covered_day(uow.conn(), schedule.id)
                    .await?
                {
                    Some(last) => last.succ_opt().unwrap_or(last),
                    None => schedule.created_at.with_timezone(&tz).date_naive(),
                }
            }
            _ => run.at.date_naive(),
        };
        let Some((from, to)) = schedule.period.covered_days(run.at, tz, since) else {
            tracing::info!(%since, "nothing new to cover since the schedule's last report");
            return Ok(None);
        };
        let report_id = Uuid::now_v7();
        let job_id = self
            .jobs
            .stage(&mut uow, &ReportJob { report_id }, RunAt::Now)
            .await?;
        let inserted = self
            .reports
            .insert_scheduled(uow.conn(), report_id, &schedule, from, to, run.at, job_id)
            .await?;
        let Some(report) = inserted else {
            // Dropping the unit of work rolls back the staged build too.
            tracing::info!("this run already made its report");
            return Ok(None);
        };
        self.outbox.commit(uow).await?;
        tracing::info!(report_id = %report.id, %from, %to, "scheduled report requested");
        Ok(Some(report))
    }

    async fn owner_is_admin(&self, schedule: &ReportSchedule) -> Result<bool, AppError> {
        Ok(self
            .users
            .find(schedule.user_id)
            .await?
            .is_some_and(|user| user.role == Role::Admin))
    }

    /// The engine schedule a row stands for.
    fn engine_def(&self, schedule: &ReportSchedule) -> Result<ScheduleDef, AppError> {
        let recurrence = Recurrence::cron(&schedule.cron, &schedule.time_zone).map_err(|e| {
            AppError::internal(format!(
                "stored schedule {} does not parse: {e}",
                schedule.id
            ))
        })?;
        let name = ReportSchedule::engine_name(schedule.id);
        let mut job = ScheduledReportJob {
            schedule_id: schedule.id,
        }
        .spec(self.jobs.settings())?;
        // Each tick sets its own id, and no request causes a tick: both are fixed here, so the
        // same row always gives the same definition and reconciling finds nothing to change.
        job.id.clone_from(&name);
        job.request_id = None;
        Ok(ScheduleDef {
            name,
            recurrence,
            job,
            // A report missed while no worker ran is still wanted, once.
            missed: Missed::RunOnce,
        })
    }

    /// Whether the engine holds `schedule` as it is (`current`: its engine view).
    fn in_line(
        &self,
        schedule: &ReportSchedule,
        current: Option<&ScheduleView>,
    ) -> Result<bool, AppError> {
        Ok(match current {
            Some(view) => {
                view.paused == schedule.paused && view.def == self.engine_def(schedule)?
            }
            None => false,
        })
    }

    /// Brings the engine schedule of `schedule` in line with it, given what the engine holds
    /// (`current`); whether anything was written.
    async fn mirror(
        &self,
        schedule: &ReportSchedule,
        current: Option<&ScheduleView>,
    ) -> Result<bool, AppError> {
        let def = self.engine_def(schedule)?;
        let name = def.name.clone();
        match current {
            Some(view) if view.def == def => {
                if view.paused == schedule.paused {
                    return Ok(false);
                }
                self.engine.set_paused(&name, schedule.paused).await?;
            }
            Some(view) if view.def.recurrence == def.recurrence => {
                // Same ticks, another job: replace the definition, keep the state.
                self.engine.define(&def).await?;
                if view.paused != schedule.paused {
                    self.engine.set_paused(&name, schedule.paused).await?;
                }
            }
            other => {
                // New, or new ticks: start afresh, so a tick of the new expression that would
                // have fallen before now is not run as "missed".
                if other.is_some() {
                    self.engine.remove(&name).await?;
                }
                self.engine.define(&def).await?;
                if schedule.paused {
                    self.engine.set_paused(&name, true).await?;
                }
            }
        }
        Ok(true)
    }

    /// Mirrors `schedule` to the engine and returns its view. The row is already written: an
    /// engine failure is logged and left to reconciliation, not returned.
    async fn mirror_and_view(&self, schedule: ReportSchedule) -> ReportScheduleView {
        let name = ReportSchedule::engine_name(schedule.id);
        let current = self.engine_views().await.remove(&name);
        if let Err(error) = self.mirror(&schedule, current.as_ref()).await {
            tracing::warn!(schedule_id = %schedule.id, %error, "could not mirror the report schedule to the engine; reconciliation will");
            return view(schedule, None);
        }
        let current = self.engine_views().await.remove(&name);
        view(schedule, current.as_ref())
    }

    /// The engine's schedules by name; empty (and logged) if Redis does not answer, since the
    /// rows still say everything but the next and last run.
    async fn engine_views(&self) -> HashMap<String, ScheduleView> {
        match self.engine.list().await {
            Ok(views) => views.into_iter().map(|v| (v.def.name.clone(), v)).collect(),
            Err(error) => {
                tracing::warn!(%error, "could not read the engine's schedules");
                HashMap::new()
            }
        }
    }
}

fn not_found() -> AppError {
    AppError::not_found("report schedule not found")
}

fn at_ms(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
}

/// A row with the engine's next and last run.
fn view(schedule: ReportSchedule, current: Option<&ScheduleView>) -> ReportScheduleView {
    ReportScheduleView {
        next_run_at: current
            .filter(|_| !schedule.paused)
            .and_then(|v| at_ms(v.next_tick_ms)),
        last_run_at: current.and_then(|v| at_ms(v.last_run_at_ms)),
        schedule,
    }
}
