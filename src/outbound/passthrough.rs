//! Pass-through tunnels: the homeserver's traffic to destinations that are not homeservers
//! (its OIDC/SAML/CAS identity provider, push gateways, identity servers, reCAPTCHA), listed
//! by the operator in `outbound.passthrough`.
//!
//! With `HTTPS_PROXY` set, Synapse sends all of its outgoing HTTPS through the outbound
//! listener, not only federation. Such a CONNECT is answered `200` after the destination was
//! dialled, and then the bytes are copied both ways without TLS interception.
//!
//! Why not intercept them like federation: Synapse verifies federation TLS against
//! `federation_custom_ca_list` (the proxy's CA), but every other outgoing connection against
//! the system trust store. Intercepting would need the proxy CA in that store, which makes the
//! proxy trusted for every site on the host — a much wider trust than TIM asks for — and would
//! replace the provider's verified identity by the proxy's. No TIM rule reads the content of
//! this traffic; what TIM asks is that the homeserver reaches nothing the operator did not
//! approve, and that is the list. The price: paths to a listed host are not seen, so a listed
//! host is trusted with every path on it (list `host:port`, not a bare host, to narrow it).
//!
//! A listed host is tunnelled even when it is also in the federation list: the operator's
//! explicit entry wins. Federation to it then fails closed, because Synapse trusts only the
//! proxy CA for federation and the real certificate does not chain to it.

use std::str::FromStr;

use bytes::Bytes;
use http::uri::Authority;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::connect::{self, ConnectTarget};
use super::upstream::{DialError, connect_tcp};
use super::{LISTENER, OutboundState, rules};
use crate::error::MatrixError;

/// Endpoint label of pass-through tunnels in metrics and logs.
pub(crate) const LABEL: &str = "CONNECT (pass-through)";

/// One `outbound.passthrough` entry, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `host`: every port.
    Host(String),
    /// `host:port`: that port only.
    Authority(String),
}

/// Parse an entry: a host name or IP literal (IPv6 in brackets), optionally with `:port`.
pub fn parse_entry(entry: &str) -> Result<Entry, String> {
    let text = entry.trim().to_ascii_lowercase();
    let bad = || format!("`{entry}` must be `host` or `host:port`");
    if text.is_empty() || text.contains(['/', '@', '*', ' ']) {
        return Err(bad());
    }
    let has_port = match text.rsplit_once(':') {
        // `[::1]` alone has colons inside the brackets only.
        Some((head, _)) => !text.starts_with('[') || head.ends_with(']'),
        None => false,
    };
    if has_port {
        let target = connect::parse_target(&text).map_err(|_| bad())?;
        Ok(Entry::Authority(target.authority.as_str().to_owned()))
    } else {
        Authority::from_str(&format!("{text}:1")).map_err(|_| bad())?;
        Ok(Entry::Host(text))
    }
}

/// A parsed host list of [`Entry`]s: `outbound.passthrough` or `outbound.sso_hosts`.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostList {
    entries: Vec<Entry>,
}

impl HostList {
    /// Entries that do not parse were refused by config validation; here they are skipped.
    pub(crate) fn new<'a>(entries: impl IntoIterator<Item = &'a String>) -> Self {
        Self {
            entries: entries
                .into_iter()
                .filter_map(|e| parse_entry(e).ok())
                .collect(),
        }
    }

    pub(crate) fn contains(&self, target: &ConnectTarget) -> bool {
        self.entries.iter().any(|entry| match entry {
            Entry::Host(host) => *host == target.host,
            Entry::Authority(authority) => authority == target.authority.as_str(),
        })
    }
}

/// Dial `target`, answer the CONNECT, and copy bytes both ways until either side closes.
/// `early` holds bytes the client sent right after its CONNECT head (a ClientHello sent
/// without waiting for the `200`).
pub(crate) async fn serve(
    mut client: TcpStream,
    early: Bytes,
    target: ConnectTarget,
    state: &OutboundState,
) {
    let dialed = tokio::time::timeout(
        state.connector.policy().connect_timeout,
        connect_tcp(state.connector.policy(), target.bare_host(), target.port),
    )
    .await;
    let mut upstream = match dialed {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => return refuse(&mut client, &dial_error(&error, &target), state).await,
        Err(_) => {
            let error = MatrixError::gateway_timeout(
                format!("connecting to {} timed out", target.authority),
                rules::UPSTREAM_TIMEOUT,
            );
            return refuse(&mut client, &error, state).await;
        }
    };
    if connect::write_established(&mut client).await.is_err() {
        return;
    }
    state.metrics.request(LISTENER, LABEL, 200);
    tracing::debug!(
        listener = LISTENER,
        destination = %target.authority,
        "outbound: pass-through tunnel opened"
    );
    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
        return;
    }
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => tracing::debug!(
            listener = LISTENER,
            destination = %target.authority,
            sent,
            received,
            "outbound: pass-through tunnel closed"
        ),
        Err(error) => tracing::debug!(
            listener = LISTENER,
            destination = %target.authority,
            %error,
            "outbound: pass-through tunnel broke off"
        ),
    }
}

fn dial_error(error: &DialError, target: &ConnectTarget) -> MatrixError {
    match error {
        DialError::Private { .. } => {
            MatrixError::forbidden(error.to_string(), rules::PRIVATE_DESTINATION)
        }
        _ => MatrixError::bad_gateway(
            format!("Can't connect to server {}: {error}", target.authority),
            rules::UPSTREAM_CONNECT,
        ),
    }
}

async fn refuse(client: &mut TcpStream, error: &MatrixError, state: &OutboundState) {
    error.record(&state.metrics, LISTENER, "CONNECT", LABEL);
    state
        .metrics
        .request(LISTENER, LABEL, error.status.as_u16());
    let _ = connect::write_matrix_error(client, error).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(text: &str) -> ConnectTarget {
        connect::parse_target(text).unwrap()
    }

    #[test]
    fn entries_name_a_host_or_one_port_of_it() {
        assert_eq!(
            parse_entry("IdP.Example.org"),
            Ok(Entry::Host("idp.example.org".into()))
        );
        assert_eq!(
            parse_entry("push.example.org:443"),
            Ok(Entry::Authority("push.example.org:443".into()))
        );
        assert_eq!(parse_entry("[::1]"), Ok(Entry::Host("[::1]".into())));
        assert_eq!(
            parse_entry("[::1]:8443"),
            Ok(Entry::Authority("[::1]:8443".into()))
        );
        for bad in [
            "",
            "https://idp.example.org",
            "idp.example.org/path",
            "*.example.org",
            "user@idp.example.org",
            "idp.example.org:0",
            "idp.example.org:http",
            "idp example.org",
        ] {
            assert!(parse_entry(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_host_entry_matches_every_port_an_authority_entry_one() {
        let list = HostList::new(&["idp.example.org".to_owned(), "push.test:8443".to_owned()]);
        assert!(list.contains(&target("idp.example.org:443")));
        assert!(list.contains(&target("IDP.example.org:8448")));
        assert!(list.contains(&target("push.test:8443")));
        assert!(!list.contains(&target("push.test:443")));
        assert!(!list.contains(&target("evil-idp.example.org:443")));
        assert!(!list.contains(&target("example.org:443")));
        assert!(!list.contains(&target("sub.idp.example.org:443")));
        assert!(!HostList::new(&[]).contains(&target("idp.example.org:443")));
    }
}
