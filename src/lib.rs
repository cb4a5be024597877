//! timproxy: a TI-Messenger (TIM) Messenger Proxy.
//!
//! A request's path reads top-down: listener → [`matrix::endpoints`] classification →
//! [`policy`] (pure rules over parsed input and state snapshots) → forward → response.

pub(crate) mod accept;
pub mod admin;
pub mod cleanup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod federation;
pub(crate) mod framing;
pub mod hop_by_hop;
pub mod inbound;
pub mod info_api;
pub mod live;
pub mod logging;
pub mod matrix;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub(crate) mod prefixed;
pub mod rawdata;
pub mod server;
pub mod shutdown;
pub mod spec_check;
pub mod store;
pub mod tls;
