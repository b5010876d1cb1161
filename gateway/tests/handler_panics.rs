//! A panic in a connection's handler closes that connection with 1011 and
//! is counted; the core and its other connections carry on. Runs the real
//! transport in this process with a handler that panics on demand (no
//! such handler ships: this stands for a bug in one).

mod common;

use std::rc::Rc;
use std::time::Duration;

use clap::Parser as _;
use common::Client;
use oceanchat_gateway::config::Config;
use oceanchat_gateway::transport::{self, codec, Conn, Core, Handler, Message};
use oceanchat_protocol::CloseCode;

struct PanicsOnDemand;

impl Handler for PanicsOnDemand {
    type Session = Rc<Conn>;

    fn on_open(&self, conn: &Rc<Conn>) -> Rc<Conn> {
        conn.clone()
    }

    fn on_message(&self, conn: &Rc<Conn>, message: Message) {
        match message {
            Message::Text(text) if &text[..] == b"panic" => panic!("a bug in a handler"),
            Message::Text(text) => conn.send(codec::text_frame(&text)),
            Message::Binary(data) => conn.send(codec::binary_frame(&data)),
        }
    }

    fn on_close(&self, _conn: Rc<Conn>) {}
}

#[test]
fn a_panicking_handler_closes_its_connection_only() {
    let port = oceanchat_testkit::free_port();
    let addr = format!("127.0.0.1:{port}");
    let config = Config::parse_from([
        "oceanchat-gateway",
        "--listen",
        &addr,
        "--cores",
        "1",
        "--mode",
        "bench",
    ]);
    let transport_config = config.transport();
    let metrics = transport_config.metrics.clone();
    let listen = config.listen;
    std::thread::spawn(move || {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(async move {
                let listener = transport::bind(listen).unwrap();
                let core = Core::new(0, Rc::new(transport_config), PanicsOnDemand);
                transport::serve(listener, core).await;
            })
    });
    assert!(
        oceanchat_testkit::wait_for_port(port, Duration::from_secs(2)),
        "the transport did not start"
    );

    let mut victim = Client::connect(port);
    let mut bystander = Client::connect(port);
    victim.send_text("panic");
    assert_eq!(victim.expect_close(), Some(CloseCode::INTERNAL_ERROR));

    // The core lives: its other connection is served, and new ones too.
    bystander.send_text("still here");
    bystander.expect_text("still here");
    let mut newcomer = Client::connect(port);
    newcomer.send_text("hello");
    newcomer.expect_text("hello");
    assert_eq!(metrics.core(0).handler_panics.get(), 1);
}
