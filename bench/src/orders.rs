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
        "order_stages_mean_ms": order_stages(&metrics_before, &metrics_after),
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

/// Where an order's time went between two readings of the api's metrics, as the mean of each
/// histogram in milliseconds: the whole request, then its stages (`OrderService::place`): the
/// quote, the write (for a grouped order, its wait in the group's line, the statement that
/// carried it, and the rest), and the read of the stock it left. What the stages do not cover
/// is the HTTP, authentication, JSON and idempotency work around them.
fn order_stages(before: &[(String, f64)], after: &[(String, f64)]) -> Value {
    let mean_ms = |histogram: &str, labels: &[&str]| {
        let change = |suffix: &str| {
            let name = format!("{histogram}{suffix}");
            series_total(after, &name, labels) - series_total(before, &name, labels)
        };
        let count = change("_count");
        (count > 0.0).then(|| round(change("_sum") * 1000.0 / count, 3))
    };
    let stage = |name: &str| {
        mean_ms(
            "orderly_order_stage_seconds",
            &[&format!("stage=\"{name}\"")],
        )
    };
    let write = stage("write");
    let waiting = mean_ms("orderly_group_commit_wait_seconds", &[]);
    let statement = mean_ms("orderly_group_commit_statement_seconds", &[]);
    // What the write spent outside the group's line and statement: building the order's
    // writes, and its task's wait to run again once its statement answered.
    let write_rest = match (write, waiting, statement) {
        (Some(write), Some(waiting), Some(statement)) => {
            Some(round(write - waiting - statement, 3))
        }
        _ => None,
    };
    json!({
        "request": mean_ms(
            "orderly_http_request_duration_seconds",
            &["method=\"POST\"", "route=\"/api/v1/orders\"", "status=\"201\""],
        ),
        "quote": stage("quote"),
        "write": write,
        "waiting_for_statement": waiting,
        "statement": statement,
        "write_rest": write_rest,
        "stock_read": stage("stock_read"),
    })
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
