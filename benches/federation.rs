//! Federation list lookups with 100k domains: the check every federation request pays; and
//! the event-domain check of a full transaction (`policy::event_domains`).

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

/// A PDU as Synapse sends it (about 1 KiB: hashes, signatures, auth and prev events).
fn pdu(sender: &str, room_server: &str, i: usize) -> serde_json::Value {
    serde_json::json!({
        "auth_events": ["$Fh4XyIg3xKm4gZ0oRkq2cH5Qqvo2bB0y1k3WgJm9cT8", "$pN7Y2m0Qm4v1tVbBfLrWQ8n4yHc2uJx0kRzP5aT6sE1", "$Lq3Vd8sZ0rK2pW6nH1yT4mB9xC5vF7gJ0eU3iO2aQ4w"],
        "content": {"body": format!("message number {i} with some text in it, as people write"), "msgtype": "m.text",
                    "org.matrix.msc1767.text": format!("message number {i} with some text in it, as people write")},
        "depth": 1000 + i,
        "hashes": {"sha256": "Cq8ZbqTqJ3vL0m9fN2sX5yR7aD1eG4hK6jP8uW0zB3c"},
        "origin_server_ts": 1_700_000_000_000u64 + i as u64,
        "prev_events": ["$Xy7Wq2Lm9Vn4Bc6Td8Rf1Gh3Jk5Pz0Sa2Ue4Io6Ky8Mw"],
        "room_id": format!("!OGEhHVWSdvArJzumhm:{room_server}"),
        "sender": sender,
        "type": "m.room.message",
        "signatures": {"tim54321.messenger-483.example.org": {"ed25519:a_AbCd": "K8wqB3mZ0pX7vN2sL5yR9aD1eG4hJ6kP8uW0zB3cQq8ZbqTqJ3vL0m9fN2sX5yR7aD1eG4hK6jP8uW0zB3c"}},
        "unsigned": {"age_ts": 1_700_000_000_000u64 + i as u64}
    })
}

/// 50 PDUs and 100 EDUs (the most Synapse puts in one transaction), every domain federated;
/// with `evil`, the last PDU's sender is not.
fn transaction(evil: bool) -> Vec<u8> {
    let origin = "tim54321.messenger-483.example.org";
    let mut pdus: Vec<_> = (0..50)
        .map(|i| {
            pdu(
                &format!("@user{}:{origin}", i % 7),
                "tim12.messenger-12.example.org",
                i,
            )
        })
        .collect();
    if evil {
        pdus[49] = pdu("@mallory:evil.example.net", origin, 49);
    }
    let edus: Vec<_> = (0..100)
        .map(|i| {
            let user = format!("@user{}:{origin}", i % 7);
            match i % 5 {
                0 => serde_json::json!({"edu_type": "m.typing", "content": {"room_id": "!OGEhHVWSdvArJzumhm:tim12.messenger-12.example.org", "user_id": user, "typing": true}}),
                1 => serde_json::json!({"edu_type": "m.receipt", "content": {"!OGEhHVWSdvArJzumhm:tim12.messenger-12.example.org": {"m.read": {user: {"data": {"ts": 1_700_000_000_000u64}, "event_ids": ["$Xy7Wq2Lm9Vn4Bc6Td8Rf1Gh3Jk5Pz0Sa2Ue4Io6Ky8Mw"]}}}}}),
                2 => serde_json::json!({"edu_type": "m.presence", "content": {"push": [{"user_id": user, "presence": "online", "last_active_ago": 5000, "currently_active": true}]}}),
                3 => serde_json::json!({"edu_type": "m.device_list_update", "content": {"user_id": user, "device_id": "ABCDEFGHIJ", "stream_id": i, "prev_id": [i - 1], "deleted": false}}),
                _ => serde_json::json!({"edu_type": "m.direct_to_device", "content": {"sender": user, "type": "m.room_key_request", "message_id": format!("m{i}"),
                        "messages": {format!("@peer:tim12.messenger-12.example.org"): {"DEVICEID": {"action": "request", "requesting_device_id": "ABCDEFGHIJ"}}}}}),
            }
        })
        .collect();
    serde_json::json!({"origin": origin, "origin_server_ts": 1_700_000_000_000u64, "pdus": pdus, "edus": edus})
        .to_string()
        .into_bytes()
}

fn transactions(c: &mut Criterion) {
    use futures_util::FutureExt;
    use timproxy::policy::event_domains::{EventBody, check};
    let handle = handle();
    let own = "hs1.example.org";
    let clean = transaction(false);
    let evil = transaction(true);
    let run = |body: &[u8]| {
        check(EventBody::Transaction, body, own, &handle)
            .now_or_never()
            .and_then(Result::ok)
    };
    // The figures are only meaningful if the verdicts are the expected ones.
    assert!(run(&clean).is_some_and(|v| v.is_clean() && v.pdus == 50 && v.edus == 100));
    assert!(run(&evil).is_some_and(|v| v.offences.len() == 1));
    eprintln!(
        "event_domains: transaction of 50 PDUs + 100 EDUs is {} bytes",
        clean.len()
    );
    let mut group = c.benchmark_group("event_domains_50_pdus_100_edus");
    group.throughput(criterion::Throughput::Bytes(clean.len() as u64));
    group.bench_function("all_federated", |b| b.iter(|| run(black_box(&clean))));
    group.bench_function("one_offending_pdu", |b| b.iter(|| run(black_box(&evil))));
    // For scale: what reading the whole body into a `serde_json::Value` costs.
    group.bench_function("baseline_parse_to_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&clean)).is_ok())
    });
    group.finish();
}

criterion_group!(benches, lookups, lookups_while_swapping, transactions);
criterion_main!(benches);
