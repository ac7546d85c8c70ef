//! `orderly-api`: parse the command line and config, then serve, migrate or create an admin.

use std::{io::Read, net::SocketAddr, process::ExitCode};

use clap::{Parser, Subcommand};
use orderly::{
    Config, Services,
    users::{DisplayName, Email, Password},
};
use orderly_api::{AppState, app, shutdown_signal};

// mimalloc instead of glibc's allocator: a request or a job makes many small allocations that
// live only as long as it does, which glibc serves with locks and periodic consolidation that
// showed up as a sixth of the api's CPU under the order load (docs/performance.md, seventh round).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "orderly-api", version, about = "Orderly HTTP API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations (or revert the last one with --revert).
    Migrate {
        /// Revert the most recent migration instead.
        #[arg(long)]
        revert: bool,
    },
    /// Exit 0 if the api on this machine (`PORT`) answers `/health/live` (container health
    /// checks: the runtime image has no curl).
    Healthcheck,
    /// Create an admin account, or promote an existing one; the password is read from stdin.
    CreateAdmin {
        /// The admin's email.
        #[arg(long)]
        email: String,
        /// Display name for a new account.
        #[arg(long, default_value = "Administrator")]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck) = cli.command {
        return healthcheck();
    }
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    // Kept until main returns: dropping it sends the last buffered spans.
    let _telemetry = orderly::telemetry::init(&config.log, &config.traces, "orderly-api");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(config).await,
            Command::Migrate { revert } => migrate(config, revert).await,
            Command::CreateAdmin { email, name } => create_admin(config, &email, &name).await,
            Command::Healthcheck => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "orderly-api failed");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Installed before anything else, so an early SIGTERM is a graceful stop, not a kill.
    let signal = shutdown_signal();
    let address = SocketAddr::new(config.http.host, config.http.port);
    let services = Services::build(config)?;
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "orderly-api listening");
    app::serve(listener, AppState::new(services), signal).await?;
    Ok(())
}

async fn migrate(config: Config, revert: bool) -> anyhow::Result<()> {
    let pool = orderly::db::pool_options(&config.database)
        .connect_with(orderly::db::connect_options(&config.database)?)
        .await?;
    if revert {
        match orderly::db::revert_last(&pool).await? {
            Some(version) => tracing::info!(version, "reverted migration"),
            None => tracing::info!("no migration to revert"),
        }
    } else {
        orderly::db::migrate(&pool).await?;
        tracing::info!("migrations applied");
    }
    Ok(())
}

async fn create_admin(config: Config, email: &str, name: &str) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password)?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    let services = Services::build(config)?;
    let (user, created) = services
        .users
        .create_admin(
            Email::parse(email)?,
            Password::parse(password)?,
            DisplayName::parse(name)?,
        )
        .await?;
    tracing::info!(user_id = %user.id, email = %user.email, created, "admin ready");
    Ok(())
}

/// A minimal HTTP/1.0 probe of `/health/live` on 127.0.0.1:`PORT`, without loading the config
/// (a health check must not depend on secrets) or any HTTP client.
fn healthcheck() -> ExitCode {
    use std::io::Write;
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let probe = || -> std::io::Result<bool> {
        let timeout = std::time::Duration::from_secs(2);
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /health/live HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
    };
    match probe() {
        Ok(true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
