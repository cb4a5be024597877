//! Federation list lookups with 100k domains: the check every federation request pays.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use timproxy::federation::{DomainEntry, FederationHandle, FederationList, ListSource, Membership};

const DOMAINS: usize = 100_000;
/// A domain that is in the list (same formula as [`handle`]).
const MEMBER: &str = "tim54321.messenger-483.example.org";
const MEMBER_MIXED_CASE_WITH_PORT: &str = "TIM54321.Messenger-483.example.org:8448";

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
    // The figures below are only meaningful if the "hit" domains really are members.
    assert!(matches!(handle.lookup(MEMBER), Membership::Member { .. }));
    assert!(matches!(
        handle.lookup(MEMBER_MIXED_CASE_WITH_PORT),
        Membership::Member { .. }
    ));
    assert!(matches!(
        handle.lookup("evil.example.net"),
        Membership::NotMember
    ));
    let mut group = c.benchmark_group("federation_lookup_100k");
    group.bench_function("hit", |b| b.iter(|| handle.lookup(black_box(MEMBER))));
    group.bench_function("hit_mixed_case_with_port", |b| {
        b.iter(|| handle.lookup(black_box(MEMBER_MIXED_CASE_WITH_PORT)))
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

/// Lookups while another thread keeps swapping 100k-domain snapshots in as fast as it can
/// (a refresh swaps once a minute): readers never see a half list and never block.
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
            // Two distinct snapshots, swapped back and forth as fast as possible.
            let mut other = (*template).clone();
            other.version += 1;
            let lists = [template, Arc::new(other)];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i ^= 1;
                handle.replace_shared(lists[i].clone());
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut group = c.benchmark_group("federation_lookup_100k_during_swaps");
    group.bench_function("hit", |b| {
        b.iter(|| {
            let found = handle.lookup(black_box(MEMBER));
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
