//! `oceanchat-gateway`: see the crate docs and `docs/config.md`.

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    oceanchat_gateway::transport::disable_transparent_huge_pages();
    let config = oceanchat_gateway::config::Config::parse();
    if let Err(error) = oceanchat_gateway::run(config) {
        tracing::error!("{error:#}");
        std::process::exit(1);
    }
}
