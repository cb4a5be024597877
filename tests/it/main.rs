//! One integration-test binary; each module tests one area against real sockets on 127.0.0.1.

mod federation;
mod info_api;
