//! One integration-test binary; each module tests one area against real sockets and stores.

mod cleanup;
mod rawdata;
mod store;
