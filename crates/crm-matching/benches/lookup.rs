//! Criterion benches for duplicate lookup: one incoming record against an index of
//! generated customers, and one pair comparison.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use crm_matching::synth::{generate, SynthConfig};
use crm_matching::{compare, prepare_all, MatchConfig, Matcher, Prepared, Record};

fn lookup(c: &mut Criterion) {
    let data = generate(&SynthConfig { records: 100_000, seed: 7, ..SynthConfig::default() });
    let mut matcher = Matcher::default();
    for p in prepare_all(&data.records) {
        matcher.insert_prepared(p);
    }
    let probes: Vec<Record> =
        data.records.iter().step_by(97).map(|r| Record { id: "incoming".into(), ..r.clone() }).collect();
    let mut i = 0;
    c.bench_function("matching/lookup/100k customers", |b| {
        b.iter(|| {
            i = (i + 1) % probes.len();
            black_box(matcher.find(&probes[i]))
        })
    });

    let config = MatchConfig::default();
    let pairs: Vec<(Prepared, Prepared)> =
        data.records.windows(2).step_by(101).map(|w| (Prepared::new(&w[0]), Prepared::new(&w[1]))).collect();
    let mut j = 0;
    c.bench_function("matching/compare/pair", |b| {
        b.iter(|| {
            j = (j + 1) % pairs.len();
            black_box(compare(&pairs[j].0, &pairs[j].1, &config))
        })
    });
    let mut k = 0;
    c.bench_function("matching/prepare/record", |b| {
        b.iter(|| {
            k = (k + 1) % data.records.len();
            black_box(Prepared::new(&data.records[k]))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = lookup
}
criterion_main!(benches);
