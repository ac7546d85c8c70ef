//! The `orderly-worker` binary refuses a bad configuration before it claims any job: non-zero
//! exit and one stderr line naming the variable (or flag), secrets never echoed.
//!
//! Every run starts from an empty environment in an empty temporary working directory, so
//! neither the developer's shell nor a `.env` file can leak into what is tested.

use std::process::{Command, ExitStatus, Stdio};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_orderly-worker");

fn run_worker_with(args: &[&str], vars: &[(&str, &str)]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(WORKER_BIN)
        .args(args)
        .env_clear()
        .envs(vars.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("orderly-worker runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn assert_one_line_naming(status: ExitStatus, stderr: &str, name: &str) {
    assert!(
        !status.success(),
        "orderly-worker should refuse to start; stderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got {stderr:?}");
    assert!(lines[0].contains(name), "{name} not named in {stderr:?}");
}

const DATABASE_URL: (&str, &str) = ("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/orderly");
const REDIS_URL: (&str, &str) = ("REDIS_URL", "redis://127.0.0.1:6379");

#[test]
fn missing_database_url_stops_the_worker_naming_the_variable() {
    let (status, stderr) = run_worker_with(&[], &[]);
    assert_one_line_naming(status, &stderr, "DATABASE_URL");
}

#[test]
fn malformed_concurrency_stops_the_worker_naming_the_variable() {
    let (status, stderr) = run_worker_with(
        &[],
        &[
            DATABASE_URL,
            REDIS_URL,
            ("JWT_SECRET", &orderly::testing::random_secret()),
            ("WORKER_CONCURRENCY", "lots"),
        ],
    );
    assert_one_line_naming(status, &stderr, "WORKER_CONCURRENCY");
}

#[test]
fn short_jwt_secret_stops_the_worker_without_echoing_it() {
    let short_secret = "hunter2-too-short";
    let (status, stderr) = run_worker_with(
        &[],
        &[DATABASE_URL, REDIS_URL, ("JWT_SECRET", short_secret)],
    );
    assert_one_line_naming(status, &stderr, "JWT_SECRET");
    assert!(
        !stderr.contains(short_secret),
        "the secret was echoed: {stderr:?}"
    );
}

#[test]
fn unknown_queue_flag_stops_the_worker_naming_the_queue() {
    let (status, stderr) = run_worker_with(
        &["--queues", "emails,bananas"],
        &[
            DATABASE_URL,
            REDIS_URL,
            ("JWT_SECRET", &orderly::testing::random_secret()),
        ],
    );
    assert_one_line_naming(status, &stderr, "bananas");
}

#[test]
fn secrets_published_in_the_repository_stop_the_worker() {
    for published in [
        "dev-only-secret-change-me-dev-only-secret-change-me",
        "change-me-to-a-long-random-string-of-32-bytes",
    ] {
        let (status, stderr) =
            run_worker_with(&[], &[DATABASE_URL, REDIS_URL, ("JWT_SECRET", published)]);
        assert_one_line_naming(status, &stderr, "JWT_SECRET");
        assert!(
            !stderr.contains(published),
            "the secret was echoed: {stderr:?}"
        );
    }
}

#[test]
fn unknown_queue_in_the_environment_stops_the_worker_naming_the_variable() {
    let (status, stderr) = run_worker_with(
        &[],
        &[
            DATABASE_URL,
            REDIS_URL,
            ("JWT_SECRET", &orderly::testing::random_secret()),
            ("WORKER_QUEUES", "emails,bananas"),
        ],
    );
    assert_one_line_naming(status, &stderr, "WORKER_QUEUES");
    assert!(stderr.contains("bananas"), "{stderr}");
}

#[test]
fn a_limit_on_an_unknown_queue_stops_the_worker_naming_the_variable() {
    let (status, stderr) = run_worker_with(
        &[],
        &[
            DATABASE_URL,
            REDIS_URL,
            ("JWT_SECRET", &orderly::testing::random_secret()),
            ("QUEUE_RATE_LIMITS", "emails=40/s,bananas=1/s"),
        ],
    );
    assert_one_line_naming(status, &stderr, "QUEUE_RATE_LIMITS");
    assert!(stderr.contains("bananas"), "{stderr}");
}
