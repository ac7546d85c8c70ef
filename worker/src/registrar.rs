//! [`Registrar`]: how a worker process says which handler runs which jobs. One typed call per
//! job type, [`Registrar::handle`], reads the queue and time limit from the type's
//! [`Job`](orderly::queue::Job) declaration and starts an apalis worker for it when the process
//! serves that queue; [`Registrar::finish`] refuses to start a process that would serve a queue
//! nobody handles.

use std::{future::Future, time::Duration};

use apalis::prelude::{Monitor, WorkerBuilder, WorkerBuilderExt};
use apalis_core::task::data::Data;
use orderly::{
    jobs::{JobSettings, QUEUES},
    queue::{Job, JobError, JobInfo, RedisBackend},
};
use serde::de::DeserializeOwned;

use crate::{
    context::JobContext,
    options::{Backends, WorkerOptions},
};

/// Collects one apalis worker per served queue on a `Monitor`.
pub struct Registrar {
    monitor: Monitor,
    context: JobContext,
    options: WorkerOptions,
    worker_id: String,
    backends: Backends,
    /// Queues that got a handler so far.
    handled: Vec<String>,
    /// Registration mistakes, reported together by `finish`.
    mistakes: Vec<String>,
}

impl Registrar {
    /// A registrar for a process with `options`, whose backends are remembered in `backends`
    /// (for heartbeats and shutdown).
    pub fn new(
        context: &JobContext,
        options: &WorkerOptions,
        worker_id: &str,
        backends: &Backends,
    ) -> Self {
        Self {
            monitor: Monitor::new(),
            context: context.clone(),
            options: options.clone(),
            worker_id: worker_id.to_owned(),
            backends: backends.clone(),
            handled: Vec::new(),
            mistakes: Vec::new(),
        }
    }

    /// Runs `handler` for the jobs of the shop's job type `J` (inferred from the handler's first
    /// argument), with the time limit its declaration gives, if this process serves `J`'s queue.
    pub fn handle<J, H, Fut>(mut self, handler: H) -> Self
    where
        J: Job<Settings = JobSettings>,
        H: Fn(J, Data<JobContext>, Data<JobInfo>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        if !QUEUES.contains(&J::QUEUE) {
            self.mistakes.push(format!(
                "a handler is registered for queue {:?}, which orderly::jobs::QUEUES does not list",
                J::QUEUE.as_str()
            ));
            return self;
        }
        if !self.options.queues.iter().any(|q| J::QUEUE == q.as_str()) {
            return self;
        }
        let timeout = J::timeout(self.context.services.jobs.settings());
        self.serve_queue(J::QUEUE.as_str(), timeout, handler)
    }

    /// Runs `handler` for every job on `queue`, decoded as `J`, each attempt limited to
    /// `timeout`: for queues named at run time (tests, the benchmark, the drills). The shop's
    /// job types use [`Registrar::handle`].
    pub fn serve_queue<J, H, Fut>(mut self, queue: &str, timeout: Duration, handler: H) -> Self
    where
        J: DeserializeOwned + Send + Sync + Unpin + 'static,
        H: Fn(J, Data<JobContext>, Data<JobInfo>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        if self.handled.iter().any(|q| q == queue) {
            self.mistakes
                .push(format!("queue {queue:?} has two handlers"));
            return self;
        }
        self.handled.push(queue.to_owned());
        let context = self.context.clone();
        let settings = self.options.backend_settings();
        let concurrency = self.options.concurrency;
        let worker_id = self.worker_id.clone();
        let backends = self.backends.clone();
        let queue = queue.to_owned();
        self.monitor = self.monitor.register(move |_restarts| {
            let backend = RedisBackend::<J>::new(
                context.services.queue.clone(),
                &queue,
                &worker_id,
                settings.clone(),
            );
            backends.add(backend.shared());
            WorkerBuilder::new(format!("{queue}@{worker_id}"))
                .backend(backend)
                .data(context.clone())
                .catch_panic()
                // Concurrency outside the timeout, so a job's time limit starts when it runs,
                // not while it waits for a free slot.
                .concurrency(concurrency)
                .timeout(timeout)
                .build(handler.clone())
        });
        self
    }

    /// The monitor with every worker registered. Refused, naming each, when a queue this
    /// process was asked to serve got no handler or a registration was wrong.
    pub fn finish(mut self) -> anyhow::Result<Monitor> {
        for queue in &self.options.queues {
            if !self.handled.contains(queue) {
                self.mistakes
                    .push(format!("queue {queue:?} is served but has no handler"));
            }
        }
        if self.mistakes.is_empty() {
            Ok(self.monitor)
        } else {
            anyhow::bail!(
                "the worker's handlers do not match its queues: {}",
                self.mistakes.join("; ")
            )
        }
    }
}
