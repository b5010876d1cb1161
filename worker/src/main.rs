//! `oceanchat-worker`: parses its configuration, sets up logging and runs
//! the worker (or, with `--receiver`, the local push receiver) until
//! SIGINT or SIGTERM.

use clap::Parser as _;
use oceanchat_backend::service::{init_logging, shutdown_signal};
use oceanchat_worker::{receiver, run, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    init_logging();
    tracing::info!(?config, "starting");
    let result = match config.receiver {
        Some(addr) => receiver::run(addr, shutdown_signal()).await,
        None => run(config, shutdown_signal()).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            std::process::ExitCode::FAILURE
        }
    }
}
