//! The peer comparison's plain tokio + tokio-tungstenite server of the
//! comparison protocol: every connection is in one room; a text message
//! starting with `B` goes to every connection (the sender too), anything
//! else back to its sender.
//!
//! Written the way a tokio user would write it: one task reading and one
//! writing per connection, the writer draining an unbounded channel and
//! flushing once per batch, a broadcast cloning one `Message` (its payload
//! is a shared `Bytes`) into each connection's channel. A current-thread
//! runtime, since the comparison pins each server to one core. The only
//! deliberate tuning is a 4 KiB read buffer: tungstenite's 128 KiB default
//! costs about 138 KB per idle connection (see the field notes).
//!
//! Usage: oceanchat-peer-tokio --listen 127.0.0.1:PORT

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Room = Rc<RefCell<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = match args.as_slice() {
        [_, flag, addr] if flag == "--listen" => addr.clone(),
        _ => {
            eprintln!("usage: oceanchat-peer-tokio --listen 127.0.0.1:PORT");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(listen))
}

async fn serve(listen: String) -> std::io::Result<()> {
    let listener = TcpListener::bind(&listen).await?;
    eprintln!("listening on {listen}");
    let room: Room = Rc::default();
    let mut next_id = 0u64;
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait, then go on.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        next_id += 1;
        tokio::task::spawn_local(connection(stream, next_id, room.clone()));
    }
}

async fn connection(stream: TcpStream, id: u64, room: Room) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    room.borrow_mut().insert(id, tx.clone());

    let writer = tokio::task::spawn_local(async move {
        while let Some(message) = rx.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            // Everything queued meanwhile leaves in the same flush.
            while let Ok(message) = rx.try_recv() {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    while let Some(Ok(message)) = stream.next().await {
        match message {
            Message::Text(ref text) if text.as_str().starts_with('B') => {
                for peer in room.borrow().values() {
                    let _ = peer.send(message.clone());
                }
            }
            Message::Text(_) | Message::Binary(_) => {
                let _ = tx.send(message);
            }
            Message::Close(_) => break,
            // tungstenite answers pings itself.
            _ => {}
        }
    }
    room.borrow_mut().remove(&id);
    drop(tx);
    writer.abort();
}
