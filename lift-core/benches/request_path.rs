//! Request-path features in lift-core: building the EMF documents of an invocation.
//!
//! `cargo bench -p lift-core --bench request_path`

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use lift_core::metrics::{Metrics, MetricsConfig, MetricsSink, Unit};

struct Discard;

impl MetricsSink for Discard {
    fn write(&self, document: &str) {
        black_box(document);
    }
}

fn metrics(c: &mut Criterion) {
    let config = MetricsConfig::new("Bench")
        .service("orders")
        .default_dimension("stage", "prod")
        .sink(Discard);
    let names: Vec<String> = (0..10).map(|i| format!("Metric{i}")).collect();
    let mut group = c.benchmark_group("request_path");
    group.bench_function("metrics_emf_flush", |b| {
        b.iter(|| {
            let metrics = Metrics::default();
            metrics.dimension("tenant", "acme").expect("dimension");
            for (i, name) in names.iter().enumerate() {
                metrics
                    .value(name, i as f64, Unit::Milliseconds)
                    .expect("value");
            }
            for document in metrics.take_documents(&config, UNIX_EPOCH + Duration::from_secs(1)) {
                black_box(document);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
