//! Certificate costs on the outbound hot path: minting a leaf (cold CONNECT to a new host),
//! building its `ServerConfig`, and the cache hit every later CONNECT pays.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use timproxy::config::CacheConfig;
use timproxy::metrics::Metrics;
use timproxy::tls::Authority;
use timproxy::tls::ca::{CaOptions, CertificateAuthority, generate_ca};
use timproxy::tls::cache::build_server_config;
use timproxy::tls::leaf::{LeafUsage, SubjectName, mint};

fn ca() -> CertificateAuthority {
    let generated = generate_ca(&CaOptions::default()).expect("generate CA");
    CertificateAuthority::from_generated(&generated).expect("load CA")
}

fn tls(c: &mut Criterion) {
    let validity = Duration::from_secs(7 * 24 * 3600);
    let authority_ca = ca();
    let names = [SubjectName::parse("bench.test").expect("name")];

    c.bench_function("leaf_mint_p256", |b| {
        b.iter(|| {
            mint(
                &authority_ca,
                black_box(&names),
                validity,
                LeafUsage::Server,
            )
            .expect("mint")
        })
    });

    let leaf = mint(&authority_ca, &names, validity, LeafUsage::Server).expect("mint");
    let provider = timproxy::tls::crypto_provider();
    c.bench_function("server_config_build", |b| {
        b.iter(|| {
            build_server_config(black_box(&leaf), &authority_ca, provider.clone()).expect("build")
        })
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let authority = Arc::new(Authority::new(
        ca(),
        &CacheConfig {
            max_entries: 10_000,
            ttl: Duration::from_secs(3600),
        },
        validity,
        Metrics::new(),
    ));
    runtime
        .block_on(authority.server_config("bench.test"))
        .expect("warm");
    c.bench_function("server_config_cache_hit", |b| {
        b.iter(|| {
            runtime
                .block_on(authority.server_config(black_box("bench.test")))
                .expect("hit")
        })
    });
}

criterion_group!(benches, tls);
criterion_main!(benches);
