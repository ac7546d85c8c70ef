//! The `orderly-worker` binary stops cleanly on SIGTERM, with exit status 0, and its
//! `healthcheck` subcommand (the container health check) tells a live worker from a stopped one
//! and names the store it cannot reach (start-up checks of its configuration are in
//! `startup.rs`).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use orderly::testing::{database_url, delete_prefix, redis_url, unique_prefix};
use sqlx::PgPool;

use crate::helpers::{WorkerProcess, vars};

const WORKER: &str = env!("CARGO_BIN_EXE_orderly-worker");

fn bare_command() -> Command {
    let mut command = Command::new(WORKER);
    // A clean environment and an empty working directory: no stray `.env` is read.
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    command.current_dir(std::env::temp_dir());
    command
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn sigterm_stops_the_worker_cleanly(pool: PgPool) {
    let url = database_url(&pool);
    let prefix = unique_prefix("wbin");
    let mut child = bare_command()
        .env("DATABASE_URL", url)
        .env("REDIS_URL", redis_url())
        .env("REDIS_PREFIX", &prefix)
        .env("JWT_SECRET", orderly::testing::random_secret())
        .env(
            "MAIL_DIR",
            std::env::temp_dir().join(format!("{prefix}-mail")),
        )
        .env(
            "STORAGE_DIR",
            std::env::temp_dir().join(format!("{prefix}-storage")),
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("\"worker ready\"") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("worker became ready");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "worker did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");
    delete_prefix(&redis_url(), &prefix);
}

/// Runs `orderly-worker healthcheck` with the environment a worker on `prefix` with `overrides`
/// gets (a container's health check runs beside the worker, with the same variables).
fn healthcheck(prefix: &str, overrides: &[(&str, String)]) -> std::process::Output {
    bare_command()
        .arg("healthcheck")
        .envs(vars(prefix, overrides))
        .output()
        .expect("the worker binary runs")
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the health check until it passes (the first heartbeat may land just after "worker
/// ready") or `within` has passed; returns the last result.
async fn healthcheck_until_healthy(
    prefix: &str,
    overrides: &[(&str, String)],
    within: Duration,
) -> std::process::Output {
    let deadline = Instant::now() + within;
    loop {
        let output = healthcheck(prefix, overrides);
        if output.status.success() || Instant::now() >= deadline {
            return output;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn healthcheck_passes_while_the_worker_runs_and_fails_once_it_stopped(pool: PgPool) {
    let prefix = unique_prefix("whealth");
    let env = [("DATABASE_URL", database_url(&pool))];

    // No worker yet: nothing on this host heartbeats under this prefix.
    let before = healthcheck(&prefix, &env);
    assert_eq!(before.status.code(), Some(1), "{}", stderr(&before));
    assert!(
        stderr(&before).contains("no fresh heartbeat from a worker on host"),
        "{}",
        stderr(&before)
    );

    let mut worker = WorkerProcess::start(&prefix, &[], &env);
    worker.wait_ready().await;
    let running = healthcheck_until_healthy(&prefix, &env, Duration::from_secs(10)).await;
    assert!(
        running.status.success(),
        "healthy while the worker runs: {}",
        stderr(&running)
    );
    assert_eq!(stderr(&running), "", "a pass prints nothing");

    worker.terminate();
    assert!(worker.wait_exit().await.success(), "clean exit");
    // A clean stop removes the registry entry at once (a killed worker's goes stale).
    let after = healthcheck(&prefix, &env);
    assert_eq!(
        after.status.code(),
        Some(1),
        "unhealthy once the worker stopped"
    );
    let reason = stderr(&after);
    assert_eq!(reason.lines().count(), 1, "one line: {reason}");
    assert!(
        reason.starts_with("unhealthy: no fresh heartbeat from a worker on host"),
        "{reason}"
    );
    delete_prefix(&redis_url(), &prefix);
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn healthcheck_names_the_store_it_cannot_reach(pool: PgPool) {
    let prefix = unique_prefix("whealth");
    // A port nothing listens on: bound, read back, released.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let no_redis = healthcheck(
        &prefix,
        &[
            ("DATABASE_URL", database_url(&pool)),
            ("REDIS_URL", format!("redis://127.0.0.1:{closed_port}")),
        ],
    );
    assert_eq!(no_redis.status.code(), Some(1));
    let reason = stderr(&no_redis);
    assert_eq!(reason.lines().count(), 1, "one line: {reason}");
    assert!(
        reason.starts_with("unhealthy: Redis is unreachable: "),
        "{reason}"
    );

    let no_postgres = healthcheck(
        &prefix,
        &[(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{closed_port}/orderly"),
        )],
    );
    assert_eq!(no_postgres.status.code(), Some(1));
    let reason = stderr(&no_postgres);
    assert_eq!(reason.lines().count(), 1, "one line: {reason}");
    assert!(
        reason.starts_with("unhealthy: PostgreSQL is unreachable: "),
        "{reason}"
    );
}
