//! Synapse's single-sign-on pages beyond the Matrix API (OIDC callback, identity-provider
//! picker, user-name picker, consent, CAS ticket, …), shipped as data in `sso_endpoints.txt`
//! and added to the inbound endpoint table when `inbound.sso_endpoints` is on
//! ([`crate::config::Config::sso_endpoints_enabled`]).
//!
//! They go through the same path as `inbound.extra_endpoints`: forwarded as they are, with the
//! CORS fields completed; no TIM rule applies to them because none of them touches rooms,
//! invites or events.

use crate::matrix::endpoints::{Endpoint, TableError, parse_extra};

/// The built-in list, one `METHOD /path` per line, `#` comments.
pub const SSO_ENDPOINTS: &str = include_str!("sso_endpoints.txt");

/// The `METHOD /path` entries of the list, comments and blank lines removed.
pub fn entries() -> impl Iterator<Item = &'static str> {
    SSO_ENDPOINTS
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
}

/// The list as endpoints for [`crate::matrix::endpoints::EndpointTable`].
pub fn endpoints() -> Result<Vec<Endpoint>, TableError> {
    entries().map(parse_extra).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::endpoints::{Classification, EndpointTable, v1_11};
    use http::Method;

    #[test]
    fn every_entry_parses_and_none_repeats_a_v1_11_endpoint() {
        let sso = endpoints().unwrap();
        let spec = EndpointTable::new(v1_11()).unwrap();
        for endpoint in &sso {
            assert!(
                matches!(
                    spec.classify(&endpoint.method, &endpoint.template),
                    Classification::NotFound | Classification::MethodNotAllowed { .. }
                ),
                "{} {} is already a v1.11 endpoint",
                endpoint.method,
                endpoint.template
            );
        }
        let mut all = v1_11();
        let spec_len = all.len();
        all.extend(sso);
        let table = EndpointTable::new(all).unwrap();
        assert_eq!(
            table.endpoints().len(),
            spec_len + endpoints().unwrap().len(),
            "an entry is listed twice"
        );
    }

    #[test]
    fn the_login_walk_is_covered() {
        let entries: Vec<String> = entries().map(str::to_owned).collect();
        let table = EndpointTable::served(&entries).unwrap();
        for (method, path) in [
            (Method::GET, "/_matrix/client/v3/login/sso/redirect"),
            (Method::GET, "/_synapse/client/oidc/callback"),
            (Method::POST, "/_synapse/client/oidc/callback"),
            (Method::GET, "/_synapse/client/pick_idp"),
            (
                Method::POST,
                "/_synapse/client/pick_username/account_details",
            ),
            (Method::GET, "/_synapse/client/new_user_consent"),
            (Method::GET, "/_matrix/client/v3/login/cas/ticket"),
            // r0 by the shipped aliases.
            (Method::GET, "/_matrix/client/r0/login/cas/ticket"),
            (Method::POST, "/_matrix/client/v3/login"),
        ] {
            assert!(
                matches!(
                    table.classify(&method, path),
                    Classification::Matched { .. }
                ),
                "{method} {path}"
            );
        }
        // Other Synapse pages stay closed.
        for path in [
            "/_synapse/admin/v1/users",
            "/_synapse/client/unsubscribe",
            "/_synapse/client/password_reset/email/submit_token",
        ] {
            assert_eq!(
                table.classify(&Method::GET, path),
                Classification::NotFound,
                "{path}"
            );
        }
    }
}
