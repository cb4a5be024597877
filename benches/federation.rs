//! Federation list lookups with 100k domains: the check every federation request pays.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use timproxy::federation::{DomainEntry, FederationHandle, FederationList, ListSource, Membership};

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

/// Lookups while another thread keeps swapping in a new 100k list (clone + swap, as a
/// refresh does): the reader pays one atomic load more at worst, and never sees a half list.
fn lookups_while_swapping(c: &mut Criterion) {
    let handle = handle();
    let Some(template) = handle.snapshot() else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (handle, stop, swaps) = (handle.clone(), stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            let mut version = template.version;
            while !stop.load(Ordering::Relaxed) {
                let mut next = (*template).clone();
                version += 1;
                next.version = version;
                handle.replace(next);
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut group = c.benchmark_group("federation_lookup_100k_during_swaps");
    group.bench_function("hit", |b| {
        b.iter(|| {
            let found = handle.lookup(black_box("tim54321.messenger-451.example.org"));
            assert!(
                matches!(found, Membership::Member { .. }),
                "a member was not found during a swap"
            );
        })
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    let _ = swapper.join();
    eprintln!(
        "federation_lookup_100k_during_swaps: {} swaps while measuring",
        swaps.load(Ordering::Relaxed)
    );
}

criterion_group!(benches, lookups, lookups_while_swapping);
criterion_main!(benches);
