//! HTTP load with wrk (Debian's `wrk` package): a generated Lua script builds the requests
//! (each order its own `Idempotency-Key`, a random product, the customer's JWT), sends them on
//! a fixed schedule for the fixed-rate runs, and prints wrk's own latency histogram as one JSON
//! line that this module parses.

use std::{path::Path, time::Duration};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What a wrk run sends.
#[derive(Debug, Clone)]
pub enum Load {
    /// `GET path`, the same request each time.
    Get { path: String },
    /// `POST /api/v1/orders` of one unit of a random product of `product_ids` (a one-element
    /// list sends every order for that product), with a unique idempotency key.
    PlaceOrder {
        token: String,
        product_ids: Vec<String>,
    },
}

/// How hard: connections, threads, duration, and an optional fixed rate that turns wrk's
/// closed loop (every connection sends again as soon as it is answered) into requests sent on
/// a schedule.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    /// Requests per second over all threads, or `None` for as fast as the server answers.
    pub rate: Option<f64>,
}

/// How long a connection of a fixed-rate run may wait for its answer before the schedule runs
/// short of free connections (and sends late): [`Shape::paced`] opens `rate` × this many.
const PACED_CONNECTION_SPAN: Duration = Duration::from_millis(100);

impl Shape {
    /// `rate` requests per second in total, for `duration`, on at most `threads` threads.
    ///
    /// Each thread sends on its own fixed schedule (one request every `threads / rate`
    /// seconds, from a random start), and a connection that is answered takes the next free
    /// slot of that schedule. So requests leave at the rate whatever the answers take, as long
    /// as a connection is free; an answer slower than the schedule does not delay the requests
    /// after it. Pausing each connection between its own requests instead (the first version
    /// of this bench) lets one slow moment line the connections up: they are answered
    /// together, pause together and send together from then on, so "half of saturation"
    /// became bursts at the saturation rate with idle gaps between them.
    pub fn paced(rate: f64, threads: usize, duration: Duration) -> Self {
        let rate = rate.max(1.0);
        let connections = ((rate * PACED_CONNECTION_SPAN.as_secs_f64()).ceil() as usize).max(1);
        let threads = threads.min(connections).max(1);
        Self {
            connections: connections.max(threads),
            threads,
            duration,
            rate: Some(rate),
        }
    }
}

/// wrk's figures for one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrkResult {
    pub requests: u64,
    pub duration_us: u64,
    pub requests_per_s: f64,
    /// Responses with a status of 400 or more (wrk counts these as `errors.status`).
    pub non_2xx: u64,
    /// Connect, read, write and timeout errors.
    pub socket_errors: u64,
    pub latency_p50_ms: f64,
    pub latency_p90_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    pub latency_mean_ms: f64,
}

/// Writes the Lua script for `load` and `shape` into `dir`; returns its path.
fn write_script(dir: &Path, name: &str, load: &Load, shape: &Shape) -> anyhow::Result<String> {
    let mut lua = String::new();
    lua.push_str("local thread_counter = 0\nfunction setup(thread)\n  thread:set(\"tid\", thread_counter)\n  thread_counter = thread_counter + 1\nend\n");
    match load {
        Load::Get { path } => {
            lua.push_str(&format!(
                "local req\nfunction init(args)\n  math.randomseed(1000 + tid)\n  req = wrk.format(\"GET\", {path:?})\nend\nfunction request()\n  return req\nend\n"
            ));
        }
        Load::PlaceOrder { token, product_ids } => {
            // Keys unique across runs too: a key reused with another product would be a 422,
            // and with the same one a replay, not a new order.
            let run_id = uuid::Uuid::new_v4().simple();
            let ids = product_ids
                .iter()
                .map(|id| format!("{id:?}"))
                .collect::<Vec<_>>()
                .join(",");
            lua.push_str(&format!(
                r#"local ids = {{{ids}}}
local sent = 0
function init(args)
  math.randomseed(1000 + tid)
end
function request()
  sent = sent + 1
  local body = '{{"items":[{{"product_id":"' .. ids[math.random(#ids)] .. '","quantity":1}}]}}'
  local headers = {{}}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Bearer {token}"
  headers["Idempotency-Key"] = "{run_id}-" .. tid .. "-" .. sent
  return wrk.format("POST", "/api/v1/orders", headers, body)
end
"#
            ));
        }
    }
    if let Some(rate) = shape.rate {
        // wrk asks each thread's `delay()` for a pause (whole milliseconds) before every
        // request of any of its connections, the first included, without saying which
        // connection. Each call takes the thread's next slot, so the slots are sent at the
        // schedule's times whichever connection sends them. The first slot is a random point in
        // the first interval, so the threads do not send in step. Monotonic time comes from
        // `clock_gettime` through LuaJIT's FFI (wrk's Lua has no clock of its own).
        let interval_ms = shape.threads.max(1) as f64 * 1000.0 / rate;
        lua.push_str(&format!(
            r#"local ffi = require("ffi")
ffi.cdef[[
struct bench_timespec {{ long tv_sec; long tv_nsec; }};
int clock_gettime(int clock_id, struct bench_timespec *tp);
]]
local clock = ffi.new("struct bench_timespec")
local CLOCK_MONOTONIC = 1
local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1000000
end
local interval_ms = {interval_ms:.4}
local next_slot = nil
function delay()
  local now = now_ms()
  if next_slot == nil then
    next_slot = now + math.random() * interval_ms
  else
    next_slot = next_slot + interval_ms
  end
  local wait = next_slot - now
  if wait <= 0 then
    return 0
  end
  return math.floor(wait + 0.5)
end
"#
        ));
    }
    lua.push_str(
        r#"function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"#,
    );
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, lua)?;
    Ok(path.display().to_string())
}

#[derive(Deserialize)]
struct RawResult {
    requests: u64,
    duration_us: u64,
    non_2xx: u64,
    socket_errors: u64,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    mean: f64,
}

/// Runs wrk against `base_url` and returns its figures.
pub async fn run(
    work_dir: &Path,
    name: &str,
    base_url: &str,
    load: &Load,
    shape: &Shape,
) -> anyhow::Result<WrkResult> {
    let script = write_script(work_dir, name, load, shape)?;
    let output = tokio::process::Command::new("wrk")
        .arg(format!("-t{}", shape.threads))
        .arg(format!("-c{}", shape.connections))
        .arg(format!("-d{}s", shape.duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(&script)
        .arg(base_url)
        .output()
        .await
        .context("running wrk (install Debian's wrk package)")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "wrk failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("WRKJSON "))
        .with_context(|| format!("no result line in wrk output: {stdout}"))?;
    let raw: RawResult = serde_json::from_str(line)?;
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    Ok(WrkResult {
        requests: raw.requests,
        duration_us: raw.duration_us,
        requests_per_s: (raw.requests as f64 / (raw.duration_us as f64 / 1e6)).round(),
        non_2xx: raw.non_2xx,
        socket_errors: raw.socket_errors,
        latency_p50_ms: ms(raw.p50),
        latency_p90_ms: ms(raw.p90),
        latency_p99_ms: ms(raw.p99),
        latency_max_ms: ms(raw.max),
        latency_mean_ms: (raw.mean / 10.0).round() / 100.0,
    })
}
