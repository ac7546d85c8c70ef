//! The processes under test: the release `orderly-api` and `orderly-worker` binaries started
//! with a configuration of the benchmark's own, their readiness (first `/health` 200 for the
//! api, the `worker ready` log line for a worker), their memory and CPU time read from `/proc`
//! (the CPU time of PostgreSQL's and Redis's server processes too), and a graceful stop
//! (SIGTERM, then wait).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, Command},
    sync::watch,
};

use crate::stats::round;

/// Where the binaries are and how every process under test is configured.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// Folder with `orderly-api` and `orderly-worker` (a release build).
    pub bin_dir: PathBuf,
    /// Working folder of the processes (logs, mail and storage folders); no `.env` there.
    pub work_dir: PathBuf,
    /// Environment shared by the api and the workers.
    pub env: Vec<(String, String)>,
}

impl Launcher {
    /// Path of one of the binaries.
    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Starts `binary args` with the benchmark's environment; its output goes to
    /// `<work_dir>/<name>.log`, and a line containing `ready_marker` marks it ready.
    pub fn spawn(
        &self,
        name: &str,
        binary: &str,
        args: &[&str],
        ready_marker: Option<&'static str>,
    ) -> anyhow::Result<Proc> {
        self.spawn_with_log_filter("", name, binary, args, ready_marker)
    }

    /// [`Launcher::spawn`] with `extra_filter` appended to `RUST_LOG` (`,target=info`).
    pub fn spawn_with_log_filter(
        &self,
        extra_filter: &str,
        name: &str,
        binary: &str,
        args: &[&str],
        ready_marker: Option<&'static str>,
    ) -> anyhow::Result<Proc> {
        let started = Instant::now();
        let mut command = Command::new(self.binary(binary));
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if !extra_filter.is_empty() {
            let base = self
                .env
                .iter()
                .find(|(k, _)| k == "RUST_LOG")
                .map_or("warn", |(_, v)| v.as_str());
            command.env("RUST_LOG", format!("{base}{extra_filter}"));
        }
        let mut child = command
            .current_dir(&self.work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary(binary).display()))?;
        let pid = child.id().context("child has no pid")?;
        let (ready_tx, ready_rx) = watch::channel(None);
        let log_path = self.work_dir.join(format!("{name}.log"));
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        tokio::spawn(async move {
            let Ok(mut log) = tokio::fs::File::create(&log_path).await else {
                return;
            };
            let mut out = BufReader::new(stdout).lines();
            let mut err = BufReader::new(stderr).lines();
            let (mut out_open, mut err_open) = (true, true);
            while out_open || err_open {
                let line = tokio::select! {
                    line = out.next_line(), if out_open => line.ok().flatten().or_else(|| { out_open = false; None }),
                    line = err.next_line(), if err_open => line.ok().flatten().or_else(|| { err_open = false; None }),
                };
                let Some(line) = line else { continue };
                if ready_marker.is_some_and(|marker| line.contains(marker)) {
                    let _ = ready_tx.send(Some(started.elapsed()));
                }
                let _ = log.write_all(line.as_bytes()).await;
                let _ = log.write_all(b"\n").await;
            }
        });
        Ok(Proc {
            name: name.to_owned(),
            child,
            pid,
            started,
            ready: ready_rx,
        })
    }
}

/// A running process under test.
#[derive(Debug)]
pub struct Proc {
    /// Label in the results (`api`, `worker-1`).
    pub name: String,
    child: Child,
    pid: u32,
    started: Instant,
    ready: watch::Receiver<Option<Duration>>,
}

impl Proc {
    /// The process id, for [`sample_peak_rss`].
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the ready line; returns the time from spawn to it.
    pub async fn wait_ready_line(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let name = self.name.clone();
        tokio::time::timeout(timeout, self.ready.wait_for(Option::is_some))
            .await
            .with_context(|| format!("{name} did not become ready within {timeout:?}"))?
            .with_context(|| format!("{name} exited before it was ready"))?
            .context("ready")
    }

    /// Waits until `url` answers 200; returns the time from spawn to that answer.
    pub async fn wait_http_ok(
        &mut self,
        client: &reqwest::Client,
        url: &str,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(response) = client.get(url).send().await
                && response.status().is_success()
            {
                return Ok(self.started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited with {status} before it was ready", self.name);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not answer {url} within {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Resident memory now, in MB.
    pub fn rss_mb(&self) -> f64 {
        proc_status_kb(self.pid, "VmRSS:") / 1024.0
    }

    /// Highest resident memory so far, in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        proc_status_kb(self.pid, "VmHWM:") / 1024.0
    }

    /// SIGTERM, then waits for the exit (killing it after `grace`); returns how long the
    /// graceful stop took.
    pub async fn stop(mut self, grace: Duration) -> anyhow::Result<Duration> {
        let asked = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .context("kill -TERM")?;
        anyhow::ensure!(status.success(), "kill -TERM {} failed", self.pid);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(
                    status.success(),
                    "{} exited with {status} on SIGTERM",
                    self.name
                );
                Ok(asked.elapsed())
            }
            Err(_) => {
                self.child.kill().await?;
                anyhow::bail!("{} did not stop within {grace:?} of SIGTERM", self.name)
            }
        }
    }
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
pub fn proc_status_kb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

/// CPU time of process `pid` so far in clock ticks: user and system time, plus those of the
/// children it has waited for (so the postmaster still accounts for a backend that exited
/// between two readings); 0 when unreadable.
pub fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces and parentheses: fields are counted after its last `)`,
    // where the state (the third field) comes first; utime, stime, cutime and cstime are the
    // fourteenth to seventeenth.
    let Some((_, fields)) = stat.rsplit_once(')') else {
        return 0;
    };
    fields
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// [`cpu_ticks`] summed over every process whose `/proc/<pid>/comm` satisfies `matches`.
pub fn cpu_ticks_where(matches: impl Fn(&str) -> bool) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| matches(comm.trim_end()))
        })
        .map(cpu_ticks)
        .sum()
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat`'s CPU times (`getconf CLK_TCK`, or
/// the Linux default when that cannot be run).
pub fn clock_ticks_per_s() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// CPU ticks so far of the api, of the workers (together), and of every PostgreSQL and Redis
/// server process on the machine: two of these around a measurement say where its CPU went.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    api: u64,
    workers: u64,
    postgres: u64,
    redis: u64,
    wrk: u64,
    machine: MachineTicks,
}

/// The whole machine's CPU time so far, all cores summed, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct MachineTicks {
    /// User, system, interrupt and softirq time: what every process and the kernel's own
    /// network processing spent.
    busy: u64,
    /// Idle and waiting for I/O.
    idle: u64,
    /// Time the hypervisor gave this VM's cores to someone else.
    steal: u64,
}

impl MachineTicks {
    fn read() -> Self {
        let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
            return Self::default();
        };
        let Some(cpu) = stat.lines().next() else {
            return Self::default();
        };
        // cpu user nice system idle iowait irq softirq steal guest guest_nice; guest time is
        // already counted in user.
        let t: Vec<u64> = cpu
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let at = |i: usize| t.get(i).copied().unwrap_or(0);
        Self {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            idle: at(3) + at(4),
            steal: at(7),
        }
    }
}

impl CpuSample {
    /// Reads them now.
    pub fn take(api: u32, workers: &[u32]) -> Self {
        Self {
            api: cpu_ticks(api),
            workers: workers.iter().map(|pid| cpu_ticks(*pid)).sum(),
            postgres: cpu_ticks_where(|comm| comm.starts_with("postgres")),
            redis: cpu_ticks_where(|comm| comm == "redis-server"),
            // wrk runs as this process's child, and a child's times reach its parent's once it
            // has been waited for: each wrk run is over by the second reading.
            wrk: cpu_ticks(std::process::id()),
            machine: MachineTicks::read(),
        }
    }

    /// CPU microseconds per request of each process group from `self` to `later`, `requests`
    /// having been served in between (the workers' only when there are any).
    pub fn per_request_us(&self, later: &Self, requests: u64, with_workers: bool) -> Value {
        let us_per_tick = 1e6 / clock_ticks_per_s();
        let per_request = |before: u64, after: u64| {
            round(
                after.saturating_sub(before) as f64 * us_per_tick / requests.max(1) as f64,
                0,
            )
        };
        let (before, after) = (self.machine, later.machine);
        let elapsed = (after.busy + after.idle + after.steal)
            .saturating_sub(before.busy + before.idle + before.steal)
            .max(1) as f64;
        let share =
            |before: u64, after: u64| round(after.saturating_sub(before) as f64 / elapsed, 3);
        let mut figures = json!({
            "api": per_request(self.api, later.api),
            "postgres": per_request(self.postgres, later.postgres),
            "redis": per_request(self.redis, later.redis),
            // The load generator (wrk, and this process driving it) runs on the same cores.
            "wrk": per_request(self.wrk, later.wrk),
            // Everything the machine's cores did, the kernel's network processing included.
            "machine": per_request(before.busy, after.busy),
            "machine_idle_share": share(before.idle, after.idle),
            "machine_steal_share": share(before.steal, after.steal),
        });
        if with_workers {
            figures["workers"] = json!(per_request(self.workers, later.workers));
        }
        figures
    }
}

/// Size of a file in MB (release binaries).
pub fn file_mb(path: &Path) -> f64 {
    std::fs::metadata(path)
        .map(|m| m.len() as f64 / 1_048_576.0)
        .unwrap_or(0.0)
}

/// Samples the RSS of `procs` every 100 ms until `stop` fires; returns the highest sample per
/// process, in the order given.
pub async fn sample_peak_rss(pids: Vec<u32>, mut stop: watch::Receiver<bool>) -> Vec<f64> {
    let mut peaks = vec![0.0f64; pids.len()];
    loop {
        for (peak, pid) in peaks.iter_mut().zip(&pids) {
            *peak = peak.max(proc_status_kb(*pid, "VmRSS:") / 1024.0);
        }
        tokio::select! {
            _ = stop.changed() => return peaks,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
