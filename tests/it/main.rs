//! Integration tests: real listeners on 127.0.0.1:0, real HTTP, real stores (SQLite and the
//! machine's PostgreSQL), small fakes next to the tests that use them.

mod browser;
mod cleanup;
mod compose;
mod coverage;
mod federation;
mod federation_boundary;
mod framing;
mod gen_ca;
mod http1_differential;
mod inbound;
mod info_api;
mod kubernetes;
mod ocsp;
mod outbound;
mod properties;
mod rawdata;
mod reload;
mod robustness;
mod serve;
mod shadow;
mod spec_check;
mod store;
mod support;
