//! Each server starts, answers, restarts as documented and frees its port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use mongodb::bson::{doc, Document};
use oceanchat_testkit::{Mongo, Nats, Redis, Stack};

/// Sends one command to Redis in inline form and returns the reply line.
fn redis_command(port: u16, command: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    write!(reader.get_mut(), "{command}\r\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if line.starts_with('$') && line.trim() != "$-1" {
        let mut value = String::new();
        reader.read_line(&mut value).unwrap();
        return value.trim_end().to_owned();
    }
    line.trim_end().to_owned()
}

/// A JetStream API request over the plain NATS protocol; returns the reply.
fn nats_request(port: u16, subject: &str, payload: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to nats");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    write!(
        reader.get_mut(),
        "CONNECT {{\"verbose\":false}}\r\nSUB _reply 1\r\nPUB {subject} _reply {}\r\n{payload}\r\n",
        payload.len()
    )
    .unwrap();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(header) = line.strip_prefix("MSG _reply 1 ") {
            let len: usize = header.trim().parse().unwrap();
            let mut body = vec![0; len + 2];
            reader.read_exact(&mut body).unwrap();
            return String::from_utf8_lossy(&body[..len]).into_owned();
        }
        assert!(!line.starts_with("-ERR"), "nats said {line}");
    }
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn redis_answers_and_restart_comes_back_empty_on_the_same_port() {
    let mut redis = Redis::start();
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(redis_command(port, "SET k v"), "+OK");
    assert_eq!(redis_command(port, "GET k"), "v");

    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis_command(port, "GET k"), "$-1");
}

#[test]
fn persistent_redis_keeps_keys_across_restart() {
    let mut redis = Redis::start_persistent();
    assert_eq!(redis_command(redis.port(), "SET k v"), "+OK");
    redis.restart();
    assert_eq!(redis_command(redis.port(), "GET k"), "v");
}

#[test]
fn stopped_redis_frees_its_port_and_restart_brings_it_back() {
    let mut redis = Redis::start();
    let port = redis.port();
    redis.stop();
    assert!(port_is_free(port));
    redis.restart();
    assert_eq!(redis_command(port, "PING"), "+PONG");
}

#[test]
fn dropping_redis_frees_its_port() {
    let redis = Redis::start();
    let port = redis.port();
    drop(redis);
    assert!(port_is_free(port));
}

#[test]
fn nats_restart_keeps_jetstream_streams() {
    let mut nats = Nats::start();
    let port = nats.port();
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{port}"));
    let created = nats_request(
        port,
        "$JS.API.STREAM.CREATE.T",
        r#"{"name":"T","subjects":["t.>"],"storage":"file"}"#,
    );
    assert!(!created.contains("\"error\""), "create failed: {created}");

    nats.restart();
    assert_eq!(nats.port(), port);
    let info = nats_request(port, "$JS.API.STREAM.INFO.T", "");
    assert!(
        info.contains("\"name\":\"T\"") && !info.contains("\"error\""),
        "stream lost across restart: {info}"
    );

    drop(nats);
    assert!(port_is_free(port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_restart_keeps_data_and_drop_frees_the_port() {
    let mut mongo = Mongo::start();
    let port = mongo.port();
    assert_eq!(
        mongo.url(),
        format!("mongodb://127.0.0.1:{port}/?directConnection=true&retryWrites=false")
    );
    let client = mongodb::Client::with_uri_str(mongo.url()).await.unwrap();
    let docs = client.database("t").collection::<Document>("docs");
    docs.insert_one(doc! {"_id": 1, "v": "kept"}).await.unwrap();
    drop(client);

    mongo.restart();
    assert_eq!(mongo.port(), port);
    let client = mongodb::Client::with_uri_str(mongo.url()).await.unwrap();
    let docs = client.database("t").collection::<Document>("docs");
    let found = docs.find_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(
        found
            .and_then(|d| d.get_str("v").ok().map(str::to_owned))
            .as_deref(),
        Some("kept")
    );
    drop(client);

    drop(mongo);
    assert!(port_is_free(port));
}

#[test]
fn stack_starts_all_three_with_a_unique_database_name() {
    let stack = Stack::start();
    assert_eq!(redis_command(stack.redis.port(), "PING"), "+PONG");
    let info = nats_request(stack.nats.port(), "$JS.API.INFO", "");
    assert!(
        info.contains("\"type\":\"io.nats.jetstream.api.v1.account_info_response\""),
        "{info}"
    );
    assert!(TcpStream::connect(("127.0.0.1", stack.mongo.port())).is_ok());
    assert!(stack.mongo_db.starts_with("oc_test_"));
    let ports = [stack.redis.port(), stack.nats.port(), stack.mongo.port()];
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
}
