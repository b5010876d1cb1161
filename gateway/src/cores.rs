//! One monoio runtime per core, shared by both modes: start them, serve a
//! transport handler on each until it drains, and join them.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use monoio::net::TcpListener;

use crate::config::Driver;
use crate::transport::{self, Core, Handler, TransportConfig};

/// What one core thread needs: the part both modes share, and the mode's
/// own part (`mode`).
pub struct CoreSetup<M> {
    pub index: u16,
    pub listen: SocketAddr,
    pub transport: TransportConfig,
    /// How long a drain waits for connections to close.
    pub grace: Duration,
    pub mode: M,
}

/// One setup per core, in core order, each with its part of `modes`.
pub fn setups<M>(
    listen: SocketAddr,
    transport: &TransportConfig,
    grace: Duration,
    modes: impl IntoIterator<Item = M>,
) -> Vec<CoreSetup<M>> {
    modes
        .into_iter()
        .enumerate()
        .map(|(index, mode)| CoreSetup {
            index: index as u16,
            listen,
            transport: transport.clone(),
            grace,
            mode,
        })
        .collect()
}

/// Fails clearly if another process listens on `addr`. Every core binds
/// with `SO_REUSEPORT`, which would otherwise share the port silently with
/// another process of the same user.
pub fn check_listen(addr: SocketAddr) -> anyhow::Result<()> {
    std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    Ok(())
}

/// Runs `main(setup)` for each setup on a thread of its own, each on a
/// monoio runtime of the chosen driver, and waits for all of them.
pub fn run<S, Fut>(
    driver: Driver,
    setups: Vec<S>,
    main: fn(S) -> Fut,
    started: impl FnOnce(),
) -> anyhow::Result<()>
where
    S: Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + 'static,
{
    let threads: Vec<_> = setups
        .into_iter()
        .enumerate()
        .map(|(index, setup)| {
            std::thread::Builder::new()
                .name(format!("core-{index}"))
                .spawn(move || block_on(driver, main(setup))?)
        })
        .collect::<Result<_, _>>()?;
    started();
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => anyhow::bail!("a core thread panicked"),
        }
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Runs `future` on a monoio runtime of the chosen driver.
fn block_on<F: Future>(driver: Driver, future: F) -> anyhow::Result<F::Output> {
    // Size the io_uring rings for tens of thousands of connections per
    // core instead of monoio's 1,024 entries.
    const RING_ENTRIES: u32 = 16 * 1024;
    Ok(match driver {
        Driver::Uring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .enable_timer()
            .build()
            .context("io_uring is not available here; use --driver epoll")?
            .block_on(future),
        Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .context("cannot start the epoll runtime")?
            .block_on(future),
    })
}

/// Binds this core's listener.
pub fn bind(index: u16, listen: SocketAddr) -> anyhow::Result<TcpListener> {
    transport::bind(listen).with_context(|| format!("core {index} cannot listen on {listen}"))
}

/// Accepts until the core drains, then gives its connections `grace` to
/// finish their close handshakes.
pub async fn serve_until_drained<H: Handler>(
    listener: TcpListener,
    core: Rc<Core<H>>,
    grace: Duration,
) {
    transport::serve(listener, core.clone()).await;
    let deadline = Instant::now() + grace;
    while core.connection_count() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}
