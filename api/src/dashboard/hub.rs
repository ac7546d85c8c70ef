//! The dashboard's live-update hub: one per api process, it tells the open live streams
//! ([`super::live`]) when the queues changed, so what live pages cost does not grow with the
//! number of open pages. A single task, started with the first stream and stopped when the last
//! one ends, reads the queues' change signal (every queue's counts and current minute of
//! throughput, and the live workers: one pipelined read per queue) once per [`SIGNAL_EVERY`] and
//! wakes the streams only when it changed.
//!
//! It knows nothing of pages or sessions (the application state holds it; the streams render).

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use orderly::{
    jobs::QUEUE_NAMES,
    queue::{QueueEngine, WorkerInfo, inspect::MinuteStats, inspect::QueueCounts},
};
use tokio::sync::watch;

/// How often the hub reads the queues' change signal.
pub const SIGNAL_EVERY: Duration = Duration::from_secs(1);

/// The per-process hub that tells open dashboard streams when the queues changed; cheap to clone.
#[derive(Clone)]
pub struct LiveHub(Arc<Hub>);

struct Hub {
    engine: QueueEngine,
    queues: &'static [&'static str],
    /// The queue watcher's channel while it runs (its value counts changes); `None` while no
    /// stream is open. The watcher stops and clears it when the last receiver is gone.
    running: Mutex<Running>,
    /// `true` once the api shuts down: the watcher stops and no stream opens any more.
    stop: watch::Sender<bool>,
}

#[derive(Default)]
struct Running {
    changes: Option<watch::Sender<u64>>,
    stopped: bool,
}

impl LiveHub {
    /// A hub over `engine` watching every queue of the shop; nothing runs until a stream opens.
    pub fn new(engine: QueueEngine) -> Self {
        Self(Arc::new(Hub {
            engine,
            queues: &QUEUE_NAMES,
            running: Mutex::new(Running::default()),
            stop: watch::Sender::new(false),
        }))
    }

    /// A receiver woken whenever the queues changed, starting the watcher if none runs; `None`
    /// once the api shuts down.
    pub(crate) fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        let mut running = self.0.lock();
        if running.stopped {
            return None;
        }
        if let Some(changes) = &running.changes {
            return Some(changes.subscribe());
        }
        let (changes, receiver) = watch::channel(0);
        running.changes = Some(changes);
        tokio::spawn(watch_queues(self.0.clone()));
        Some(receiver)
    }

    /// Ends every open stream now and refuses new ones (the api is shutting down).
    pub fn shut_down(&self) {
        let mut running = self.0.lock();
        running.stopped = true;
        // Dropping the only sender ends every stream's wait at once.
        running.changes = None;
        self.0.stop.send_replace(true);
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the watcher compares from one read to the next.
#[derive(Debug, PartialEq)]
struct Signal {
    queues: Vec<(QueueCounts, Option<MinuteStats>)>,
    workers: Vec<WorkerInfo>,
}

async fn read_signal(hub: &Hub) -> redis::RedisResult<Signal> {
    let (summaries, workers) = hub.engine.summaries(hub.queues, 1).await?;
    Ok(Signal {
        queues: summaries
            .into_iter()
            .map(|summary| (summary.counts, summary.throughput.into_iter().last()))
            .collect(),
        workers,
    })
}

/// The watcher: reads the signal every [`SIGNAL_EVERY`] and wakes the streams when it changed,
/// until no stream is left or the api shuts down.
async fn watch_queues(hub: Arc<Hub>) {
    let mut stop = hub.stop.subscribe();
    let mut ticks = tokio::time::interval(SIGNAL_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Signal> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        {
            let mut running = hub.lock();
            if running
                .changes
                .as_ref()
                .is_none_or(|changes| changes.receiver_count() == 0)
            {
                running.changes = None;
                return;
            }
        }
        let read = tokio::select! {
            read = read_signal(&hub) => read,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        match read {
            Ok(signal) => {
                failing = false;
                if last.as_ref() != Some(&signal) {
                    last = Some(signal);
                    if let Some(changes) = &hub.lock().changes {
                        changes.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
            }
            Err(error) => {
                // Once per outage: the streams stay open and catch up when Redis is back.
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(%error, "dashboard live updates: the queues could not be read");
                }
            }
        }
    }
}
