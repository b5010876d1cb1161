//! Decoding client request frames (JSON) into typed requests.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oceanchat_protocol::client::{decode_request, encode_request, Op};

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("request/decode");
    let ping = encode_request(1, &Op::Ping {});
    group.throughput(Throughput::Bytes(ping.len() as u64));
    group.bench_function("ping", |b| {
        b.iter(|| decode_request(black_box(&ping)).unwrap())
    });
    for body_len in [16, 256, 4096, 16 * 1024] {
        let frame = encode_request(
            42,
            &Op::Send {
                conv: "g:65f0c0ffee0000000000abcd".into(),
                client_msg_id: "c-0001".into(),
                body: "é".repeat(body_len / 2),
            },
        );
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::new("send", body_len), &frame, |b, frame| {
            b.iter(|| decode_request(black_box(frame)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
