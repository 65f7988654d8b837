//! Discovery and balancing benchmarks (filled in below).
fn main() {}
