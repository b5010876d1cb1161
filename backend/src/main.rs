//! `oceanchat-backend`: parses its configuration, sets up logging and runs
//! the services until SIGINT or SIGTERM.

use clap::Parser as _;
use oceanchat_backend::service::{init_logging, shutdown_signal};
use oceanchat_backend::{run, Config};

// The same allocator as the gateway: it hands freed memory back sooner than
// glibc's per-thread arenas, which matters after bursts of password hashing
// on blocking threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    init_logging();
    tracing::info!(?config, "starting");
    match run(config, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "backend failed");
            std::process::ExitCode::FAILURE
        }
    }
}
