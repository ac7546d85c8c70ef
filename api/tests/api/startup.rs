//! The `orderly-api` binary itself: configuration failures stop it before it serves (non-zero
//! exit, one stderr line naming the variable, secrets never echoed), and SIGTERM stops a serving
//! process cleanly (exit status 0).
//!
//! Every run starts from an empty environment in an empty temporary working directory, so
//! neither the developer's shell nor a `.env` file can leak into what is tested.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio::process::Command;

use crate::helpers::{redis_url, unique_prefix};

const API_BIN: &str = env!("CARGO_BIN_EXE_orderly-api");

/// Runs `orderly-api` with exactly `vars` and returns (exit status, stderr).
async fn run_api_with(vars: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(API_BIN)
        .env_clear()
        .envs(vars.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("orderly-api runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_line_naming(status: std::process::ExitStatus, stderr: &str, variable: &str) {
    assert!(
        !status.success(),
        "orderly-api should refuse to start; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got {stderr:?}");
    assert!(
        lines[0].contains(variable),
        "{variable} not named in {stderr:?}"
    );
}

#[tokio::test]
async fn missing_database_url_stops_the_api_naming_the_variable() {
    let (status, stderr) = run_api_with(&[]).await;
    assert_one_line_naming(status, &stderr, "DATABASE_URL");
}

#[tokio::test]
async fn malformed_port_stops_the_api_naming_the_variable() {
    let (status, stderr) = run_api_with(&[
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orderly"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("JWT_SECRET", crate::helpers::test_secret()),
        ("PORT", "eighty"),
    ])
    .await;
    assert_one_line_naming(status, &stderr, "PORT");
}

#[tokio::test]
async fn short_jwt_secret_stops_the_api_without_echoing_it() {
    let short_secret = "hunter2-too-short";
    let (status, stderr) = run_api_with(&[
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orderly"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("JWT_SECRET", short_secret),
    ])
    .await;
    assert_one_line_naming(status, &stderr, "JWT_SECRET");
    assert!(
        !stderr.contains(short_secret),
        "the secret was echoed: {stderr:?}"
    );
}

#[tokio::test]
async fn published_and_low_entropy_secrets_stop_the_api_naming_the_variable() {
    for refused in [
        // Once the defaults of .env.example and docker-compose.yml: anyone could sign with them.
        "dev-only-secret-change-me-dev-only-secret-change-me",
        "change-me-to-a-long-random-string-of-32-bytes",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "abcd1234abcd1234abcd1234abcd1234",
    ] {
        let (status, stderr) = run_api_with(&[
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orderly"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("JWT_SECRET", refused),
        ])
        .await;
        assert_one_line_naming(status, &stderr, "JWT_SECRET");
        assert!(
            !stderr.contains(refused),
            "the secret was echoed: {stderr:?}"
        );
    }
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn api_exits_with_status_zero_on_sigterm(pool: PgPool) {
    let dir = tempfile::tempdir().expect("temp dir");
    // A port that was free a moment ago (the binary has no way to report a port-0 choice).
    let port = orderly::testing::free_port().to_string();
    let prefix = unique_prefix();
    let database_url = orderly::testing::database_url(&pool);
    let mut child = Command::new(API_BIN)
        .env_clear()
        .envs([
            ("DATABASE_URL", database_url.as_str()),
            ("REDIS_URL", redis_url().as_str()),
            ("REDIS_PREFIX", prefix.as_str()),
            ("JWT_SECRET", crate::helpers::test_secret()),
            ("HOST", "127.0.0.1"),
            ("PORT", port.as_str()),
            ("RUST_LOG", "warn"),
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("orderly-api starts");

    // Wait until it serves. The deadline only bounds a broken start; it measures nothing.
    let client = reqwest::Client::new();
    let live = format!("http://127.0.0.1:{port}/health/live");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            let output = child.wait_with_output().await.expect("output");
            panic!(
                "orderly-api exited early ({status}): {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if let Ok(response) = client.get(&live).send().await
            && response.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "orderly-api never answered {live}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let pid = child.id().expect("child pid").to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(kill.success(), "kill -TERM failed");

    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("orderly-api stopped after SIGTERM")
        .expect("output");
    assert!(
        output.status.success(),
        "orderly-api exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    orderly::testing::delete_prefix(&crate::helpers::redis_url(), &prefix);
}
