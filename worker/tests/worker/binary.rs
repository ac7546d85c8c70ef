//! The `orderly-worker` binary stops cleanly on SIGTERM, with exit status 0 (start-up checks
//! of its configuration are in `startup.rs`).

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use orderly::testing::{database_url, delete_prefix, redis_url, unique_prefix};
use sqlx::PgPool;

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
