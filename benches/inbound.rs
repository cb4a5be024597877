//! Hot path of the inbound listener without I/O: classify a typical request mix against the
//! v1.11 table, then run the rules those requests trigger.

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use serde_json::json;
use std::hint::black_box;
use timproxy::config::PolicyConfig;
use timproxy::matrix::endpoints::EndpointTable;
use timproxy::policy;

fn typical_mix() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/_matrix/client/v3/sync"),
        (Method::GET, "/_matrix/client/v3/sync"),
        (
            Method::PUT,
            "/_matrix/client/v3/rooms/%21abc%3Ahs1.test/send/m.room.message/txn1",
        ),
        (
            Method::PUT,
            "/_matrix/client/v3/rooms/%21abc%3Ahs1.test/send/m.reaction/txn2",
        ),
        (Method::POST, "/_matrix/client/v3/keys/query"),
        (
            Method::GET,
            "/_matrix/client/v1/media/download/hs1.test/abcdef",
        ),
        (Method::PUT, "/_matrix/federation/v1/send/1234"),
        (Method::POST, "/_matrix/client/v3/createRoom"),
        (Method::GET, "/_matrix/client/v3/unknown"),
    ]
}

fn bench(c: &mut Criterion) {
    let table = EndpointTable::served(&[]).unwrap();
    let mix = typical_mix();
    c.bench_function("inbound_classify_mix", |b| {
        b.iter(|| {
            for (method, path) in &mix {
                black_box(table.classify(method, black_box(path)));
            }
        })
    });
    let policy_config = PolicyConfig::default();
    let message = json!({"msgtype":"m.text","body":"hello","m.relates_to":{"m.in_reply_to":{"event_id":"$e"}}});
    let reaction = json!({"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"👍🏽"}});
    let create = json!({"preset":"public_chat","invite":["@bob:hs1.test"],"creation_content":{"x":1},"name":"room"});
    let gate = policy::shadow::Gate::enforcing();
    c.bench_function("inbound_policy_mix", |b| {
        b.iter(|| {
            black_box(
                policy::event::check_content(&gate, "m.room.message", black_box(&message)).is_ok(),
            );
            black_box(
                policy::event::check_content(&gate, "m.reaction", black_box(&reaction)).is_ok(),
            );
            let mut body = create.clone();
            black_box(
                policy::create_room::prepare_create_room(&mut body, &policy_config, &gate).is_ok(),
            );
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
