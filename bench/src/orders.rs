//! Placing orders, held against PostgreSQL's own ceiling measured in the same run: orders
//! spread over every seeded product next to `pgbench` at scale 10, and every order for one
//! product (a flash sale: one hot row) next to `pgbench` at scale 1, where every transaction
//! updates the one branch row. Each scenario runs with the workers stopped and again with the
//! benchmark's workers sending the orders' emails and webhooks meanwhile (started, and the
//! earlier runs' backlog drained, before the measurement); each gives saturation (median of
//! the runs) and a fixed rate at half of it with wrk, and the CPU time per order of the api,
//! PostgreSQL, Redis (and the workers).
//!
//! Nothing is vacuumed between runs: each inherits the dead rows the runs before it left, with
//! autovacuum as the server has it (the machine info records its setting), as a live system
//! does.
//!
//! Then the anatomy of one order, through a counting proxy ([`crate::pgwire`]) in front of a
//! second api on the same database: orders placed one at a time, and per order the statements,
//! round trips and transactions it cost PostgreSQL (background statements of that api
//! included), and how long its transaction held the product's row lock. Last, the hot product's
//! stock is checked against the units its orders hold: none may be oversold.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    Options, baseline, emit,
    pgwire::{self, Proxy},
    stats::{percentile, round},
    system::{self, HttpTarget, Seeded, Stack},
    wrk::Load,
};

const DATABASE: &str = "orderly_bench_orders";
/// wrk connections at saturation, as the `system` phase's orders.
const SATURATION_CONNECTIONS: usize = 32;
/// Lowest orders per second as a share of the scenario's pgbench transactions per second.
const RATIO_TARGET: f64 = 0.6;
/// Orders per anatomy scenario, placed one at a time.
const ANATOMY_ORDERS: usize = 300;
/// Orders placed through the proxy before counting starts, so the counts are of connections
/// that have already prepared their statements.
const ANATOMY_WARM_UP: usize = 30;

/// One way of ordering, the pgbench it is held against, and its targets.
struct Scenario {
    name: &'static str,
    product_ids: Vec<String>,
    pgbench_scale: u32,
    /// Highest p99 at saturation, in ms.
    saturation_p99_max_ms: Option<f64>,
    /// Highest p99 at the fixed rate, in ms.
    fixed_rate_p99_max_ms: Option<f64>,
    /// Whether a single non-2xx response misses the target.
    no_failures: bool,
}

/// Runs the pgbench baselines, then the scenarios, the anatomy and the stock check; returns
/// all their figures.
pub async fn run(options: &Options) -> anyhow::Result<Value> {
    // The baselines first, while nothing else runs.
    let mut pgbench = Vec::new();
    for scale in [10, 1] {
        pgbench.push((scale, baseline::pgbench(options, scale).await?));
    }
    let pgbench_tps = |scale: u32| {
        pgbench
            .iter()
            .find(|(s, _)| *s == scale)
            .and_then(|(_, result)| result["tps"].as_f64())
            .unwrap_or(0.0)
    };

    let stack = Stack::start(options, DATABASE, "orders").await?;
    let seeded = system::seed(&stack.client, &stack.base_url, &stack.webhook_url).await?;
    let hot = seeded.product_ids[0].clone();
    let before = stock_and_sold(options, &hot).await?;
    let scenarios = [
        Scenario {
            name: "mix",
            product_ids: seeded.product_ids.clone(),
            pgbench_scale: 10,
            saturation_p99_max_ms: None,
            fixed_rate_p99_max_ms: Some(20.0),
            no_failures: false,
        },
        Scenario {
            name: "hot",
            product_ids: vec![hot.clone()],
            pgbench_scale: 1,
            saturation_p99_max_ms: Some(50.0),
            fixed_rate_p99_max_ms: None,
            no_failures: true,
        },
    ];
    let mut measured = Vec::new();
    for scenario in &scenarios {
        for with_workers in [false, true] {
            let tps = pgbench_tps(scenario.pgbench_scale);
            measured.push(
                measure_scenario(options, &stack, &seeded, scenario, with_workers, tps).await?,
            );
        }
    }
    let anatomy = anatomy(options, &stack, &seeded, &scenarios).await?;

    let after = stock_and_sold(options, &hot).await?;
    let sold = after.1 - before.1;
    let oversold = after.0 + sold != before.0;
    let stock = json!({
        "bench": "orders.stock",
        "product_id": hot,
        "stock_before": before.0,
        "stock_after": after.0,
        "units_sold": sold,
        "oversold": oversold,
    });
    emit(stock.clone());
    stack.stop(options).await?;
    anyhow::ensure!(
        !oversold,
        "the hot product was oversold: stock went from {} to {} while its orders hold {sold} units",
        before.0,
        after.0
    );
    Ok(json!({
        "pgbench": pgbench.into_iter().map(|(_, result)| result).collect::<Vec<_>>(),
        "scenarios": measured,
        "anatomy": anatomy,
        "hot_stock": stock,
        "vacuum_between_runs": false,
    }))
}

/// One scenario at saturation and at the fixed rate, the workers started first when
/// `with_workers` and stopped after.
async fn measure_scenario(
    options: &Options,
    stack: &Stack,
    seeded: &Seeded,
    scenario: &Scenario,
    with_workers: bool,
    pgbench_tps: f64,
) -> anyhow::Result<Value> {
    let workers = if with_workers {
        let workers =
            system::start_workers(&stack.launcher, &format!("orders-{}", scenario.name)).await?;
        // The jobs earlier runs left are drained first: measured, the workers keep pace with
        // the orders placed meanwhile, as on a live system, rather than racing through a
        // backlog the size of a saturation run.
        system::wait_for_empty_queues(&stack.client, &stack.base_url, Duration::from_secs(600))
            .await?;
        workers
    } else {
        Vec::new()
    };
    let target = HttpTarget {
        work_dir: &stack.launcher.work_dir,
        base_url: &stack.base_url,
        api_pid: stack.api.pid(),
        worker_pids: workers.iter().map(|(w, _)| w.pid()).collect(),
        vacuum: None,
        metrics: Some(&stack.client),
    };
    let load = Load::PlaceOrder {
        token: seeded.customer_token.clone(),
        product_ids: scenario.product_ids.clone(),
    };
    let name = format!("orders_{}_{}_workers", scenario.name, workers.len());
    let metrics_before = system::metric_series(&stack.client, &stack.base_url).await?;
    let measured = system::measure(options, &target, &name, &load, SATURATION_CONNECTIONS).await;
    let metrics_after = system::metric_series(&stack.client, &stack.base_url).await?;
    let worker_count = workers.len();
    for (worker, _) in workers {
        worker.stop(Duration::from_secs(40)).await?;
    }
    let measured = measured?;

    let ratio = if pgbench_tps > 0.0 {
        measured.saturation_rps / pgbench_tps
    } else {
        0.0
    };
    let saturation_p99 = measured.saturation_median(|r| r.latency_p99_ms);
    let failures =
        measured.saturation_failures() + measured.fixed.non_2xx + measured.fixed.socket_errors;
    let meets_targets = ratio >= RATIO_TARGET
        && scenario
            .saturation_p99_max_ms
            .is_none_or(|max| saturation_p99 <= max)
        && scenario
            .fixed_rate_p99_max_ms
            .is_none_or(|max| measured.fixed.latency_p99_ms <= max)
        && (!scenario.no_failures || failures == 0);
    let summary = measured.figures(json!({
        "bench": "orders",
        "scenario": scenario.name,
        "products": scenario.product_ids.len(),
        "workers": worker_count,
        "pgbench_scale": scenario.pgbench_scale,
        "pgbench_tps": pgbench_tps,
        "ratio_to_pgbench": round(ratio, 2),
        // Across the saturation and fixed-rate runs.
        "orders_per_statement": per_statement(&metrics_before, &metrics_after),
        "group_statements_failed": failed_statements(&metrics_before, &metrics_after),
        "order_stages_mean_ms": order_stages(&metrics_before, &metrics_after),
        "half_load_order_stages": measured
            .fixed_metrics
            .as_ref()
            .map(|(before, after)| order_stage_tails(before, after)),
        "half_load_orders_per_statement": measured
            .fixed_metrics
            .as_ref()
            .and_then(|(before, after)| per_statement(before, after)),
        "targets": {
            "ratio_to_pgbench_min": RATIO_TARGET,
            "saturation_p99_max_ms": scenario.saturation_p99_max_ms,
            "fixed_rate_p99_max_ms": scenario.fixed_rate_p99_max_ms,
            "non_2xx_or_errors_max": scenario.no_failures.then_some(0),
        },
        "meets_targets": meets_targets,
    }));
    emit(summary.clone());
    Ok(summary)
}

/// The sum of every series of the api's metrics whose name starts with `name` and which
/// carries all of `labels`.
fn series_total(series: &[(String, f64)], name: &str, labels: &[&str]) -> f64 {
    series
        .iter()
        .filter(|(s, _)| s.starts_with(name) && labels.iter().all(|label| s.contains(label)))
        .map(|(_, value)| value)
        .sum()
}

/// Orders per statement of the api's group commit between two readings of its metrics; `None`
/// without grouping.
fn per_statement(before: &[(String, f64)], after: &[(String, f64)]) -> Option<f64> {
    let change = |name| series_total(after, name, &[]) - series_total(before, name, &[]);
    let statements = change("orderly_group_commit_statements_total");
    (statements > 0.0).then(|| {
        round(
            change("orderly_group_commit_operations_total") / statements,
            2,
        )
    })
}

/// Group statements that failed between two readings of the api's metrics (each sends its
/// orders again alone: a slow path an order's write time shows).
fn failed_statements(before: &[(String, f64)], after: &[(String, f64)]) -> f64 {
    let name = "orderly_group_commit_statements_total";
    let failed = ["outcome=\"failed\""];
    series_total(after, name, &failed) - series_total(before, name, &failed)
}

/// What a histogram of the api's recorded between two readings of its metrics: how many
/// samples, their sum, and its cumulative buckets (upper bound in seconds, samples at or under
/// it), the series whose names start with `histogram` and that carry every one of `labels`.
struct HistogramChange {
    count: f64,
    sum: f64,
    buckets: Vec<(f64, f64)>,
}

impl HistogramChange {
    fn between(
        before: &[(String, f64)],
        after: &[(String, f64)],
        histogram: &str,
        labels: &[&str],
    ) -> Option<Self> {
        let change = |name: &str, extra: &[&str]| {
            let all: Vec<&str> = labels.iter().chain(extra).copied().collect();
            series_total(after, name, &all) - series_total(before, name, &all)
        };
        let count = change(&format!("{histogram}_count"), &[]);
        if count <= 0.0 {
            return None;
        }
        let bucket_name = format!("{histogram}_bucket");
        // Each bound as printed (`le="0.005"`, `le="+Inf"`), to match its series exactly.
        let mut bounds: Vec<(f64, String)> = after
            .iter()
            .filter(|(s, _)| s.starts_with(&bucket_name) && labels.iter().all(|l| s.contains(l)))
            .filter_map(|(s, _)| {
                let le = s.split("le=\"").nth(1)?.split('"').next()?;
                Some((le.parse::<f64>().ok()?, format!("le=\"{le}\"")))
            })
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        bounds.dedup_by(|a, b| a.0 == b.0);
        let buckets = bounds
            .into_iter()
            .map(|(bound, le)| (bound, change(&bucket_name, &[le.as_str()])))
            .collect();
        Some(Self {
            count,
            sum: change(&format!("{histogram}_sum"), &[]),
            buckets,
        })
    }

    fn mean_ms(&self) -> f64 {
        round(self.sum * 1000.0 / self.count, 3)
    }

    /// The 99th percentile in milliseconds, estimated as Prometheus's `histogram_quantile`
    /// does: linear within the bucket the rank falls in. In the last bucket (past the largest
    /// finite bound), that bound.
    fn p99_ms(&self) -> f64 {
        let rank = self.count * 0.99;
        let mut lower = (0.0, 0.0);
        for &(bound, cumulative) in &self.buckets {
            if cumulative >= rank {
                if bound.is_infinite() {
                    return round(lower.0 * 1000.0, 3);
                }
                // The bucket before ended under the rank, so this one holds samples.
                let within = (rank - lower.1) / (cumulative - lower.1);
                return round((lower.0 + (bound - lower.0) * within) * 1000.0, 3);
            }
            lower = (bound, cumulative);
        }
        round(lower.0 * 1000.0, 3)
    }
}

/// The histograms of an order's time, each with the labels that pick its series: the whole
/// request (created orders only), then its stages (`OrderService::place`): the quote, the write
/// (for a grouped order, its wait in the group's line, and the statement that carried it), and
/// the read of the stock it left. What the stages do not cover is the HTTP, authentication,
/// JSON and idempotency work around them.
const ORDER_TIMES: [(&str, &str, &[&str]); 6] = [
    (
        "request",
        "orderly_http_request_duration_seconds",
        &[
            "method=\"POST\"",
            "route=\"/api/v1/orders\"",
            "status=\"201\"",
        ],
    ),
    ("quote", "orderly_order_stage_seconds", &["stage=\"quote\""]),
    ("write", "orderly_order_stage_seconds", &["stage=\"write\""]),
    (
        "waiting_for_statement",
        "orderly_group_commit_wait_seconds",
        &[],
    ),
    ("statement", "orderly_group_commit_statement_seconds", &[]),
    (
        "stock_read",
        "orderly_order_stage_seconds",
        &["stage=\"stock_read\""],
    ),
];

/// Where an order's time went between two readings of the api's metrics: the mean of each of
/// [`ORDER_TIMES`] in milliseconds, and what the write spent outside the group's line and
/// statement (building the order's writes, and its task's wait to run again once its statement
/// answered).
fn order_stages(before: &[(String, f64)], after: &[(String, f64)]) -> Value {
    let mut stages = serde_json::Map::new();
    for (name, histogram, labels) in ORDER_TIMES {
        let mean = HistogramChange::between(before, after, histogram, labels).map(|h| h.mean_ms());
        stages.insert(name.to_owned(), json!(mean));
    }
    let mean = |name: &str| stages.get(name).and_then(Value::as_f64);
    let write_rest = match (
        mean("write"),
        mean("waiting_for_statement"),
        mean("statement"),
    ) {
        (Some(write), Some(waiting), Some(statement)) => {
            Some(round(write - waiting - statement, 3))
        }
        _ => None,
    };
    stages.insert("write_rest".to_owned(), json!(write_rest));
    Value::Object(stages)
}

/// The mean and the 99th percentile (estimated from the buckets) in milliseconds of each of
/// [`ORDER_TIMES`] between two readings: at half load, which stage the tail is in.
fn order_stage_tails(before: &[(String, f64)], after: &[(String, f64)]) -> Value {
    let mut stages = serde_json::Map::new();
    for (name, histogram, labels) in ORDER_TIMES {
        let figures = HistogramChange::between(before, after, histogram, labels)
            .map(|h| json!({"mean_ms": h.mean_ms(), "p99_ms": h.p99_ms()}));
        stages.insert(name.to_owned(), json!(figures));
    }
    Value::Object(stages)
}

/// A second api, its database reached through the counting proxy; per scenario, orders placed
/// one at a time and what each cost PostgreSQL.
async fn anatomy(
    options: &Options,
    stack: &Stack,
    seeded: &Seeded,
    scenarios: &[Scenario],
) -> anyhow::Result<Vec<Value>> {
    let proxy = Proxy::start(pgwire::upstream_address(&options.pg_server_url)?).await?;
    let port = system::free_port()?;
    let base_url = format!("http://127.0.0.1:{port}");
    let database_url = pgwire::through_proxy(
        &format!("{}/{DATABASE}", options.pg_server_url),
        proxy.port(),
    )?;
    let launcher = stack.launcher_with(&[
        ("DATABASE_URL", database_url),
        ("PORT", port.to_string()),
        ("PUBLIC_BASE_URL", base_url.clone()),
    ]);
    let mut api = launcher.spawn("api-anatomy", "orderly-api", &["serve"], None)?;
    api.wait_http_ok(
        &stack.client,
        &format!("{base_url}/health"),
        Duration::from_secs(30),
    )
    .await?;

    let mut results = Vec::new();
    for scenario in scenarios {
        let mut products = scenario.product_ids.iter().cycle();
        for product in products.by_ref().take(ANATOMY_WARM_UP) {
            place_order(&stack.client, &base_url, seeded, product).await?;
        }
        proxy.reset();
        let mut order_ms = Vec::with_capacity(ANATOMY_ORDERS);
        for product in products.by_ref().take(ANATOMY_ORDERS) {
            let started = Instant::now();
            place_order(&stack.client, &base_url, seeded, product).await?;
            order_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        // Statements the api batches in the background (the deletes of pushed outbox rows)
        // belong to these orders too.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let counts = proxy.counts();
        let per_order = |n: u64| round(n as f64 / ANATOMY_ORDERS as f64, 2);
        let summary = json!({
            "bench": "orders.anatomy",
            "scenario": scenario.name,
            "orders": ANATOMY_ORDERS,
            "statements_per_order": per_order(counts.executes + counts.simple_queries),
            "round_trips_per_order": per_order(counts.syncs + counts.simple_queries),
            "pings_per_order": per_order(counts.pings),
            "transactions_per_order": per_order(counts.commits),
            "prepares_per_order": per_order(counts.parses),
            "lock_holds": counts.lock_holds_us.len(),
            "lock_hold_p50_us": round(percentile(&counts.lock_holds_us, 50.0), 0),
            "lock_hold_p99_us": round(percentile(&counts.lock_holds_us, 99.0), 0),
            "order_p50_ms": round(percentile(&order_ms, 50.0), 2),
            "order_p99_ms": round(percentile(&order_ms, 99.0), 2),
            "counts": {
                "simple_queries": counts.simple_queries,
                "parses": counts.parses,
                "executes": counts.executes,
                "syncs": counts.syncs,
                "pings": counts.pings,
                "commits": counts.commits,
            },
        });
        emit(summary.clone());
        results.push(summary);
    }
    api.stop(Duration::from_secs(40)).await?;
    Ok(results)
}

/// One order of one unit of `product`, read to the end.
async fn place_order(
    client: &reqwest::Client,
    base_url: &str,
    seeded: &Seeded,
    product: &str,
) -> anyhow::Result<()> {
    system::order_request(client, base_url, &seeded.customer_token, product)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(())
}

/// `product`'s stock and the units its orders hold, read in one statement.
async fn stock_and_sold(options: &Options, product: &str) -> anyhow::Result<(i64, i64)> {
    let id: Uuid = product.parse().context("product id")?;
    let row = crate::psql_value(
        options,
        DATABASE,
        &format!(
            "select stock, (select coalesce(sum(quantity), 0) from order_items where product_id = p.id) \
             from products p where id = '{id}'"
        ),
    )
    .await?;
    let (stock, sold) = row
        .split_once('|')
        .with_context(|| format!("no stock row for {id}: {row:?}"))?;
    Ok((stock.parse()?, sold.parse()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram's series as the api's `/metrics` prints them: cumulative buckets, a sum and
    /// a count, for the stage `stage`.
    fn stage_series(stage: &str, buckets: &[(&str, f64)], sum: f64) -> Vec<(String, f64)> {
        let name = "orderly_order_stage_seconds";
        let mut series: Vec<(String, f64)> = buckets
            .iter()
            .map(|(le, n)| {
                (
                    format!("{name}_bucket{{stage=\"{stage}\",le=\"{le}\"}}"),
                    *n,
                )
            })
            .collect();
        let count = buckets.last().map_or(0.0, |(_, n)| *n);
        series.push((format!("{name}_sum{{stage=\"{stage}\"}}"), sum));
        series.push((format!("{name}_count{{stage=\"{stage}\"}}"), count));
        series
    }

    #[test]
    fn a_stages_tail_is_read_from_the_buckets_it_filled_between_two_readings() {
        let before = [
            stage_series(
                "write",
                &[
                    ("0.005", 100.0),
                    ("0.01", 100.0),
                    ("0.025", 100.0),
                    ("+Inf", 100.0),
                ],
                0.3,
            ),
            // Another stage's samples are not this one's.
            stage_series(
                "quote",
                &[
                    ("0.005", 0.0),
                    ("0.01", 0.0),
                    ("0.025", 0.0),
                    ("+Inf", 500.0),
                ],
                50.0,
            ),
        ]
        .concat();
        // Between the readings: 900 samples under 5 ms, 80 from 5 to 10 ms, 20 from 10 to 25 ms.
        let after = [
            stage_series(
                "write",
                &[
                    ("0.005", 1000.0),
                    ("0.01", 1080.0),
                    ("0.025", 1100.0),
                    ("+Inf", 1100.0),
                ],
                4.3,
            ),
            stage_series(
                "quote",
                &[
                    ("0.005", 0.0),
                    ("0.01", 0.0),
                    ("0.025", 0.0),
                    ("+Inf", 900.0),
                ],
                90.0,
            ),
        ]
        .concat();
        let write = HistogramChange::between(
            &before,
            &after,
            "orderly_order_stage_seconds",
            &["stage=\"write\""],
        )
        .expect("samples between the readings");
        assert_eq!(write.count, 1000.0);
        assert_eq!(write.mean_ms(), 4.0);
        // Rank 990 falls 10 samples into the 20 between 10 and 25 ms.
        assert_eq!(write.p99_ms(), 17.5);

        // Past the largest finite bound, that bound is all that can be said.
        let quote = HistogramChange::between(
            &before,
            &after,
            "orderly_order_stage_seconds",
            &["stage=\"quote\""],
        )
        .expect("samples between the readings");
        assert_eq!(quote.p99_ms(), 25.0);
        assert!(
            HistogramChange::between(
                &before,
                &before,
                "orderly_order_stage_seconds",
                &["stage=\"write\""]
            )
            .is_none()
        );
    }
}
