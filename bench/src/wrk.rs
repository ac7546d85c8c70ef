//! HTTP load with wrk (Debian's `wrk` package): a generated Lua script builds the requests
//! (each order its own `Idempotency-Key`, a random product, the customer's JWT), paces each
//! connection for the fixed-rate runs, and prints wrk's own latency histogram as one JSON line
//! that this module parses.

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

/// How hard: connections, threads, duration, and an optional per-connection pause that turns
/// wrk's closed loop into an (approximately) fixed rate of `connections * 1000 / pause_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    pub pause_ms: Option<u64>,
}

impl Shape {
    /// About `rate` requests per second in total, for `duration`, on at most `threads` threads.
    /// Each connection pauses between requests, so the rate is set by the pacing, not by how
    /// fast the server answers (as long as it answers within the pause); high rates get more
    /// connections rather than pauses too short for wrk's timer.
    pub fn paced(rate: f64, threads: usize, duration: Duration) -> Self {
        let rate = rate.max(1.0);
        let pause_ms = ((256.0 * 1000.0 / rate).floor() as u64).clamp(1, 100);
        let connections = ((rate * pause_ms as f64 / 1000.0).round() as usize).max(1);
        Self {
            connections,
            threads: threads.min(connections).max(1),
            duration,
            pause_ms: Some(pause_ms),
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
    if let Some(pause) = shape.pause_ms {
        // wrk asks for a delay before every request, the first included. The first one of each
        // connection is a random point in the pause, so the connections are spread over it
        // instead of all firing at the same instant (a burst of every connection at start that
        // alone would be the p99 of a short run); after that each keeps its own phase.
        let per_thread = shape.connections.div_ceil(shape.threads.max(1));
        lua.push_str(&format!(
            "local started = 0\nfunction delay()\n  if started < {per_thread} then\n    started = started + 1\n    return math.random(0, {pause})\n  end\n  return {pause}\nend\n"
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
