//! Integration tests: real listeners on 127.0.0.1:0, real HTTP, small fakes next to the tests.

mod compose;
mod serve;
mod spec_check;
mod support;
