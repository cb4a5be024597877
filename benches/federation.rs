//! Federation list lookups with 100k domains: the check every federation request pays.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use timproxy::federation::{DomainEntry, FederationHandle, FederationList, ListSource};

const DOMAINS: usize = 100_000;

fn handle() -> FederationHandle {
    let entries = (0..DOMAINS).map(|i| DomainEntry {
        domain: format!("tim{i}.messenger-{}.example.org", i % 997),
        is_insurance: i % 10 == 0,
        telematik_id: Some(format!("1-SMC-B-Testkarte--{i:012}")),
        ik: if i % 10 == 0 {
            vec![format!("{:09}", 100_000_000 + i)]
        } else {
            Vec::new()
        },
    });
    let list = FederationList::new(
        1,
        time::OffsetDateTime::now_utc(),
        true,
        ListSource::VzdJws,
        entries,
    );
    FederationHandle::with_list(Duration::from_secs(72 * 3600), list)
}

fn lookups(c: &mut Criterion) {
    let handle = handle();
    let mut group = c.benchmark_group("federation_lookup_100k");
    group.bench_function("hit", |b| {
        b.iter(|| handle.lookup(black_box("tim54321.messenger-451.example.org")))
    });
    group.bench_function("hit_mixed_case_with_port", |b| {
        b.iter(|| handle.lookup(black_box("TIM54321.Messenger-451.example.org:8448")))
    });
    group.bench_function("miss", |b| {
        b.iter(|| handle.lookup(black_box("evil.example.net")))
    });
    group.bench_function("find_by_ik", |b| {
        let list = handle.snapshot().unwrap_or_else(|| unreachable!());
        b.iter(|| list.find_by_ik(black_box("100054320")).is_some())
    });
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
