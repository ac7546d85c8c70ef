//! `orderly-api`: parse the command line and config, then serve, migrate or create an admin.

use std::{io::Read, net::SocketAddr, process::ExitCode};

use clap::{Parser, Subcommand};
use orderly::{
    Config, Services,
    users::{DisplayName, Email, Password},
};
use orderly_api::{AppState, app, shutdown_signal};

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
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(2);
        }
    };
    orderly::telemetry::init(&config.log);
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
    let address = SocketAddr::new(config.http.host, config.http.port);
    let services = Services::build(config)?;
    orderly_api::metrics::handle();
    let listener = tokio::net::TcpListener::bind(address).await?;
    tracing::info!(address = %listener.local_addr()?, "orderly-api listening");
    app::serve(listener, AppState::new(services), shutdown_signal()).await?;
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
