//! The one integration-test binary; each module tests one capability over real sockets,
//! files and processes.

mod gen_ca;
mod outbound;
