//! criterion benchmarks of OceanChat's hot paths; see `benches/`.
//!
//! Run with `cargo bench -p oceanchat-bench`. Groups are named
//! `area/metric`, sizes are swept and `Throughput` is set, so reports read
//! as bytes or elements per second. Everything runs on in-memory data: these
//! measure the code, not the network.
