//! Waiting for a quiet disk before a measured run.
//!
//! Every order commits, and every commit waits for PostgreSQL's WAL to reach the disk
//! (`fdatasync`). On this project's benchmark machines (virtual machines on shared storage) a
//! commit's flush normally takes a tenth of a millisecond, but for seconds to minutes after a
//! build or a test run has written gigabytes it takes tens of milliseconds, and a run measured
//! then reports the disk's backlog as the system's tail (docs/performance.md, thirteenth
//! round). Part of that backlog is the kernel's own pending writes, which `sync` writes out at
//! once; part is below the guest, where only the flush's own latency shows it. So before each
//! measured run [`settle`] does both: `sync`, then flushes a small file of its own until the
//! flush is as quick as a quiet disk's ([`Options::quiet_fsync_ms`]) for a second in a row,
//! waiting at most [`MAX_WAIT`]. What it found is reported beside the run's figures, so a run
//! measured on a disk that never became quiet says so.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::{FileExt, MetadataExt},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{Value, json};

use crate::{
    Options,
    stats::{median, round},
};

/// The longest [`settle`] waits for a quiet disk before it lets the run go ahead anyway.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(180);

/// Flushes per probe: their median is the probe's figure, so one slow flush does not count.
const FLUSHES_PER_PROBE: usize = 20;

/// The pause between two flushes of a probe, so a probe samples about 0.2 s of the disk rather
/// than one burst.
const BETWEEN_FLUSHES: Duration = Duration::from_millis(10);

/// Quiet probes in a row that make the disk count as quiet: about a second of quiet disk.
const QUIET_PROBES_IN_A_ROW: usize = 5;

/// What [`settle`] found before one measured run.
#[derive(Debug, Clone)]
pub(crate) struct Settling {
    /// How long `sync` took to write out the kernel's pending writes.
    pub sync: Duration,
    /// How long the flush probes ran after `sync`, until the disk was quiet or [`MAX_WAIT`]
    /// had passed.
    pub waited: Duration,
    /// The last probe's median flush, in milliseconds.
    pub last_flush_p50_ms: f64,
    /// The slowest probe's median flush, in milliseconds: how loaded the disk was when the
    /// wait began.
    pub worst_flush_p50_ms: f64,
    /// Whether the disk became quiet within [`MAX_WAIT`].
    pub quiet: bool,
}

impl Settling {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "sync_ms": round(self.sync.as_secs_f64() * 1000.0, 1),
            "waited_s": round(self.waited.as_secs_f64(), 1),
            "last_flush_p50_ms": round(self.last_flush_p50_ms, 3),
            "worst_flush_p50_ms": round(self.worst_flush_p50_ms, 3),
            "quiet": self.quiet,
        })
    }
}

/// Writes out the kernel's pending writes, then waits until flushing a file on the disk is
/// as quick as on a quiet disk (see the module's header).
pub(crate) async fn settle(options: &Options) -> anyhow::Result<Settling> {
    let started = Instant::now();
    let status = tokio::process::Command::new("sync")
        .status()
        .await
        .context("running sync")?;
    anyhow::ensure!(status.success(), "sync failed: {status}");
    let sync = started.elapsed();

    let quiet_fsync_ms = options.quiet_fsync_ms;
    tokio::task::spawn_blocking(move || {
        let probe = ProbeFile::create()?;
        let waiting_since = Instant::now();
        let mut probes = QuietStreak::default();
        loop {
            let flush_p50_ms = probe.flush_p50_ms()?;
            let quiet = probes.record(flush_p50_ms, quiet_fsync_ms);
            let waited = waiting_since.elapsed();
            if quiet || waited >= MAX_WAIT {
                return Ok(Settling {
                    sync,
                    waited,
                    last_flush_p50_ms: flush_p50_ms,
                    worst_flush_p50_ms: probes.worst_flush_p50_ms,
                    quiet,
                });
            }
        }
    })
    .await?
}

/// The probes so far: how many quick ones came in a row, and the slowest.
#[derive(Debug, Default)]
struct QuietStreak {
    quiet_in_a_row: usize,
    worst_flush_p50_ms: f64,
}

impl QuietStreak {
    /// Counts a probe whose median flush took `flush_p50_ms`, and says whether the disk now
    /// counts as quiet: [`QUIET_PROBES_IN_A_ROW`] probes in a row no slower than
    /// `quiet_fsync_ms`. A slow probe starts the count again.
    fn record(&mut self, flush_p50_ms: f64, quiet_fsync_ms: f64) -> bool {
        self.worst_flush_p50_ms = self.worst_flush_p50_ms.max(flush_p50_ms);
        self.quiet_in_a_row = if flush_p50_ms <= quiet_fsync_ms {
            self.quiet_in_a_row + 1
        } else {
            0
        };
        self.quiet_in_a_row >= QUIET_PROBES_IN_A_ROW
    }
}

/// Whether [`settle`]'s probe file is on the same disk as the PostgreSQL server's data folder
/// (`None` where the server does not say, or its folder cannot be read from here, as with a
/// server on another host): if not, the probe says nothing about the commits' flushes.
pub(crate) async fn probe_on_database_disk(options: &Options) -> Option<bool> {
    let data_directory = crate::psql_value(options, "postgres", "show data_directory")
        .await
        .ok()?;
    let database_device = std::fs::metadata(data_directory).ok()?.dev();
    let probe_device = std::fs::metadata(std::env::temp_dir()).ok()?.dev();
    Some(database_device == probe_device)
}

/// A small file in the temporary folder, flushed to measure the disk, and removed on drop.
struct ProbeFile {
    path: PathBuf,
    file: File,
}

impl ProbeFile {
    fn create() -> anyhow::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("orderly-bench-disk-probe-{}", std::process::id()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path, file })
    }

    /// The median of [`FLUSHES_PER_PROBE`] rewrites of one 8 KiB page (the size of a WAL page)
    /// each followed by `fdatasync`, as a commit flushes the WAL, in milliseconds.
    fn flush_p50_ms(&self) -> anyhow::Result<f64> {
        let page = [0x5a_u8; 8192];
        let mut flushes = Vec::with_capacity(FLUSHES_PER_PROBE);
        for _ in 0..FLUSHES_PER_PROBE {
            let started = Instant::now();
            self.file.write_at(&page, 0)?;
            self.file.sync_data()?;
            flushes.push(started.elapsed().as_secs_f64() * 1000.0);
            std::thread::sleep(BETWEEN_FLUSHES);
        }
        Ok(median(&flushes))
    }
}

impl Drop for ProbeFile {
    fn drop(&mut self) {
        // A leftover file in the temporary folder is harmless; nothing to do if it stays.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_is_quiet_only_after_enough_quick_probes_in_a_row() {
        let mut probes = QuietStreak::default();
        for _ in 1..QUIET_PROBES_IN_A_ROW {
            assert!(!probes.record(0.2, 1.0));
        }
        // A slow probe just before the streak would have been long enough starts it again.
        assert!(!probes.record(40.0, 1.0));
        for _ in 1..QUIET_PROBES_IN_A_ROW {
            assert!(!probes.record(0.3, 1.0));
        }
        assert!(
            probes.record(1.0, 1.0),
            "a probe as slow as the limit still counts as quiet"
        );
        assert_eq!(probes.worst_flush_p50_ms, 40.0);
    }

    #[test]
    fn the_probe_measures_flushes_and_leaves_no_file_behind() {
        let probe = ProbeFile::create().unwrap();
        let path = probe.path.clone();
        assert!(path.exists());
        let flush_p50_ms = probe.flush_p50_ms().unwrap();
        assert!(
            flush_p50_ms > 0.0 && flush_p50_ms.is_finite(),
            "{flush_p50_ms}"
        );
        drop(probe);
        assert!(!path.exists(), "{} is still there", path.display());
    }
}
