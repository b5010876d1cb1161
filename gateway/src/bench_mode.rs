//! `--mode bench`: the comparison protocol on the same transport as chat,
//! so that what benchmarks and conformance tests measure is the product.
//!
//! Every connection is in one room. A text message whose first byte is `B`
//! is published to every connection of the process, sender included; any
//! other message is echoed to its sender. Any path upgrades. No Redis, NATS
//! or MongoDB is involved.
//!
//! A published frame is encoded once, queued on the local connections of
//! the sender's core, and the same `Bytes` goes to every other core through
//! its queue, where it is queued on that core's connections: one encoding
//! per process, never one per recipient.

use std::cell::OnceCell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::cores;
use crate::cores::CoreSetup;
use crate::transport::{codec, Conn, Core, Handler, Message};

/// Depth of each core's queue of published frames.
const QUEUE_DEPTH: usize = 4096;

/// What one core is told by the others (and by the signal thread).
#[derive(Debug)]
enum Command {
    /// Queue this encoded frame on every connection of the core.
    Publish(Bytes),
    /// Stop accepting and close every connection with this code.
    Drain(u16),
}

/// The bench handler of one core.
pub struct Bench {
    /// The queues of the other cores.
    others: Vec<mpsc::Sender<Command>>,
    /// This core, for local publishing; set right after it is built.
    core: OnceCell<Weak<Core<Bench>>>,
}

impl Bench {
    fn publish(&self, frame: Bytes) {
        if let Some(core) = self.core.get().and_then(Weak::upgrade) {
            core.broadcast(&frame);
        }
        for other in &self.others {
            match other.try_send(Command::Publish(frame.clone())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(command)) => {
                    // That core is behind: wait for room off this path
                    // rather than drop a message or block the core.
                    let other = other.clone();
                    monoio::spawn(async move {
                        let _ = other.send(command).await;
                    });
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

impl Handler for Bench {
    /// The connection itself, to echo to.
    type Session = Rc<Conn>;

    fn on_open(&self, conn: &Rc<Conn>) -> Rc<Conn> {
        conn.clone()
    }

    fn on_message(&self, conn: &Rc<Conn>, message: Message) {
        match message {
            Message::Text(text) if text.first() == Some(&b'B') => {
                self.publish(codec::text_frame(&text));
            }
            Message::Text(text) => conn.send(codec::text_frame(&text)),
            Message::Binary(data) => conn.send(codec::binary_frame(&data)),
        }
    }

    fn on_close(&self, _conn: Rc<Conn>) {}
}

/// Runs the bench server until SIGTERM or SIGINT, then drains like chat.
pub fn run(config: Config) -> anyhow::Result<()> {
    cores::check_listen(config.listen)?;
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..config.cores())
        .map(|_| mpsc::channel(QUEUE_DEPTH))
        .unzip();
    start_signal_thread(senders.clone())?;

    let transport = config.transport();
    let grace = Duration::from_secs(config.shutdown_grace_s);
    let modes = inboxes
        .into_iter()
        .enumerate()
        .map(|(index, inbox)| BenchCore {
            others: senders
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != index)
                .map(|(_, s)| s.clone())
                .collect(),
            inbox,
        });
    let setups = cores::setups(config.listen, &transport, grace, modes);
    drop(senders);
    cores::run(config.driver, setups, core_main, || {
        tracing::info!(
            listen = %config.listen,
            cores = config.cores(),
            driver = ?config.driver,
            "gateway started in bench mode"
        )
    })
}

/// What a bench-mode core has of its own.
struct BenchCore {
    /// The queues of the other cores.
    others: Vec<mpsc::Sender<Command>>,
    inbox: mpsc::Receiver<Command>,
}

async fn core_main(setup: CoreSetup<BenchCore>) -> anyhow::Result<()> {
    let listener = cores::bind(setup.index, setup.listen)?;
    let bench = Bench {
        others: setup.mode.others,
        core: OnceCell::new(),
    };
    let core = Core::new(setup.index, Rc::new(setup.transport), bench);
    let _ = core.handler.core.set(Rc::downgrade(&core));
    monoio::spawn(handle_commands(core.clone(), setup.mode.inbox));
    cores::serve_until_drained(listener, core, setup.grace).await;
    Ok(())
}

/// Applies other cores' publications and the drain, a batch at a time.
async fn handle_commands(core: Rc<Core<Bench>>, mut inbox: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(256);
    while inbox.recv_many(&mut batch, 256).await > 0 {
        for command in batch.drain(..) {
            match command {
                Command::Publish(frame) => core.broadcast(&frame),
                Command::Drain(code) => core.drain(code, "server restart"),
            }
        }
    }
}

/// On SIGTERM or SIGINT, tells every core to drain with 1012.
fn start_signal_thread(cores: Vec<mpsc::Sender<Command>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")?;
    // Installed before any core starts, so an early SIGTERM is not lost.
    let (mut term, mut int) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::info!("draining: closing every connection with 1012");
                for core in &cores {
                    let _ = core
                        .send(Command::Drain(
                            oceanchat_protocol::CloseCode::SERVICE_RESTART,
                        ))
                        .await;
                }
            });
        })?;
    Ok(())
}
