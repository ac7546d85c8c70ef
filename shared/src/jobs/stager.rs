//! The one way the shop stages a job: [`JobStager::stage`], in the caller's unit of work (or
//! the writes of an operation sent as one statement), so the job exists if and only if the
//! operation commits (the outbox relays it after a crash).

use std::sync::Arc;

use uuid::Uuid;

use crate::{
    error::AppError,
    jobs::settings::JobSettings,
    queue::{Job, RunAt, Staging, WriteRef, outbox},
};

/// Stages jobs with the configured [`JobSettings`]; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct JobStager {
    settings: Arc<JobSettings>,
}

impl JobStager {
    /// A stager whose jobs read `settings`.
    pub fn new(settings: JobSettings) -> Self {
        Self {
            settings: Arc::new(settings),
        }
    }

    /// The settings the declarations read (the worker reads time limits from them).
    pub fn settings(&self) -> &JobSettings {
        &self.settings
    }

    /// Stages `job` in `to`, to run as `run_at` says (now, at a time, after a delay); returns
    /// the job id. Written to the outbox with the operation's other writes, at its end.
    pub async fn stage<J: Job<Settings = JobSettings>>(
        &self,
        to: &mut impl Staging,
        job: &J,
        run_at: RunAt,
    ) -> Result<Uuid, AppError> {
        Ok(outbox::stage_job(to, job, &self.settings, run_at).await?)
    }

    /// Stages `job` in `to`, to run now, only if the write `of` returns rows, with those rows
    /// in its payload's `rows` field (see `queue::Writes::stage_for_rows`); returns the job id.
    pub fn stage_for_rows<J: Job<Settings = JobSettings>>(
        &self,
        to: &mut impl Staging,
        of: WriteRef,
        job: &J,
    ) -> Result<Uuid, AppError> {
        Ok(outbox::stage_job_for_rows(to, of, job, &self.settings)?)
    }
}
