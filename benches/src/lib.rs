//! Benchmarks for auditsink; see benches/.
