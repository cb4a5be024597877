//! Federation list: sources (registration service, VZD JWS, file), verification, the
//! in-memory snapshot, persistence and refresh.

pub mod list;

pub use list::{DomainEntry, FederationHandle, FederationList, ListSource, Membership};
