//! Fan-out of one message to many recipients: encoding the frame once and
//! sharing the `Bytes`, against encoding the event and frame per recipient.

use std::collections::VecDeque;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oceanchat_gateway::transport::codec::text_frame;
use oceanchat_protocol::client::{encode_event, Event, Message};

const RECIPIENTS: usize = 1000;

fn event(body_len: usize) -> Event {
    Event::Msg(Message {
        conv: "g:65f0c0ffee".into(),
        seq: 123_456,
        msg_id: "65f0c0ffee0000000000abcd".into(),
        from: "65f0c0ffee0000000000beef".into(),
        ts: 1_790_000_000_000,
        body: "x".repeat(body_len),
        client_msg_id: "c-1234".into(),
    })
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout/1000_sinks");
    group.throughput(Throughput::Elements(RECIPIENTS as u64));
    for body_len in [100, 1000, 10_000] {
        let event = event(body_len);
        // In-memory sinks standing in for connection outboxes.
        let mut sinks: Vec<VecDeque<Bytes>> = vec![VecDeque::new(); RECIPIENTS];
        group.bench_function(BenchmarkId::new("encode_once", body_len), |b| {
            b.iter(|| {
                let frame = text_frame(&encode_event(black_box(&event)));
                for sink in sinks.iter_mut() {
                    sink.push_back(frame.clone());
                }
                sinks.iter_mut().for_each(VecDeque::clear);
            })
        });
        group.bench_function(BenchmarkId::new("encode_per_recipient", body_len), |b| {
            b.iter(|| {
                for sink in sinks.iter_mut() {
                    sink.push_back(text_frame(&encode_event(black_box(&event))));
                }
                sinks.iter_mut().for_each(VecDeque::clear);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
