//! Frame header parsing, unmasking and whole-frame decoding.

use std::hint::black_box;
use std::io::Cursor;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oceanchat_client::wire::{self, opcode, Header};
use oceanchat_gateway::transport::codec::{unmask, Decoder, Limits};
use tungstenite::protocol::frame::FrameHeader;

const SIZES: [usize; 4] = [16, 128, 1024, 16 * 1024];

/// A masked client text frame with `len` bytes of payload.
fn client_frame(len: usize) -> Vec<u8> {
    let header = Header::new(opcode::TEXT).mask(Some([0x12, 0x34, 0x56, 0x78]));
    wire::frame(header, &vec![b'a'; len])
}

fn header_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/header_parse");
    for len in SIZES {
        let frame = client_frame(len);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(len), &frame, |b, frame| {
            b.iter(|| {
                let mut cursor = Cursor::new(black_box(&frame[..]));
                FrameHeader::parse(&mut cursor).unwrap().unwrap()
            })
        });
    }
    group.finish();
}

fn unmask_bytes(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/unmask");
    for len in SIZES {
        let mut data = vec![0xa5u8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter(|| unmask(black_box(&mut data), [1, 2, 3, 4]))
        });
    }
    group.finish();
}

fn decode_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame/decode");
    let limits = Limits {
        max_frame_bytes: 1 << 20,
        max_message_bytes: 1 << 20,
    };
    for len in SIZES {
        let frame = client_frame(len);
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &frame, |b, frame| {
            let mut decoder = Decoder::new(limits);
            b.iter(|| {
                decoder.feed(black_box(frame));
                decoder.decode().unwrap().unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, header_parse, unmask_bytes, decode_frame);
criterion_main!(benches);
