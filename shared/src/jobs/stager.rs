//! The one way the shop stages a job: [`JobStager::stage`], in the caller's unit of work, so
//! the job exists if and only if the transaction commits (the outbox relays it after a crash).

use std::sync::Arc;

use uuid::Uuid;

use crate::{
    error::AppError,
    jobs::settings::JobSettings,
    queue::{Job, RunAt, UnitOfWork, outbox},
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

    /// Stages `job` in `uow`, to run as `run_at` says (now, at a time, after a delay); returns
    /// the job id. Written to the outbox with the transaction's other jobs at commit.
    pub async fn stage<J: Job<Settings = JobSettings>>(
        &self,
        uow: &mut UnitOfWork<'_>,
        job: &J,
        run_at: RunAt,
    ) -> Result<Uuid, AppError> {
        Ok(outbox::stage_job(uow, job, &self.settings, run_at).await?)
    }
}
