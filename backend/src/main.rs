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

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    init_logging();
    tracing::info!(?config, "starting");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.worker_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, shutdown_signal())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "backend failed");
            std::process::ExitCode::FAILURE
        }
    }
}
