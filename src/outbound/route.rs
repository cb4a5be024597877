//! What a request inside a tunnel is, as far as the destination checks care (TIM-PROXY §5):
//! pure functions over the path and headers, so every case is unit-tested without sockets.

use std::borrow::Cow;

use crate::matrix::x_matrix::{self, XMatrixError};
use http::HeaderMap;
use percent_encoding::percent_decode_str;

/// The kinds of outbound requests the proxy distinguishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/_matrix/federation/…`: the X-Matrix `destination` must be federated. A few
    /// endpoints are spoken without X-Matrix (`auth_optional`): server version discovery and
    /// OpenID userinfo (authenticated by its `access_token` query instead).
    Federation { auth_optional: bool },
    /// `/_matrix/key/…`: key discovery, signed by nobody; the CONNECT host decides.
    Keys,
    /// `/.well-known/matrix/server`: the Host being asked must be federated.
    WellKnownServer,
    /// Unauthenticated media with a `{serverName}` path parameter, which must be federated
    /// (A_26328, outbound too).
    Media { server_name: String },
    /// `/_matrix/push/…` to a push gateway (REF forwards it unchecked).
    Push,
    /// reCAPTCHA verification during registration (REF forwards it unchecked).
    Recaptcha,
    /// Anything else: forwarded only to an `outbound.sso_hosts` tunnel, refused otherwise
    /// (other non-federation destinations are `outbound.passthrough` tunnels, which never get
    /// here).
    Unknown,
}

/// How many [`Route`] kinds there are ([`Route::slot`]).
pub(crate) const ROUTE_KINDS: usize = 7;

impl Route {
    /// A distinct index below [`ROUTE_KINDS`] per kind, for per-route tables.
    pub(crate) fn slot(&self) -> usize {
        match self {
            Route::Federation { .. } => 0,
            Route::Keys => 1,
            Route::WellKnownServer => 2,
            Route::Media { .. } => 3,
            Route::Push => 4,
            Route::Recaptcha => 5,
            Route::Unknown => 6,
        }
    }

    /// Bounded label for metrics and logs (never the raw path, which carries IDs).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Route::Federation { .. } => "/_matrix/federation",
            Route::Keys => "/_matrix/key",
            Route::WellKnownServer => "/.well-known/matrix/server",
            Route::Media { .. } => "/_matrix/media/{serverName}",
            Route::Push => "/_matrix/push",
            Route::Recaptcha => "/recaptcha/api/siteverify",
            Route::Unknown => "other",
        }
    }
}

/// Classify a request path (without query).
pub(crate) fn classify(path: &str) -> Route {
    if let Some(rest) = path.strip_prefix("/_matrix/federation/") {
        let auth_optional = matches!(rest, "v1/version" | "v1/openid/userinfo");
        return Route::Federation { auth_optional };
    }
    if path.starts_with("/_matrix/key/") {
        return Route::Keys;
    }
    if path == "/.well-known/matrix/server" {
        return Route::WellKnownServer;
    }
    if let Some(server_name) = media_server_name(path) {
        return Route::Media { server_name };
    }
    if path.starts_with("/_matrix/push/") {
        return Route::Push;
    }
    if path == "/recaptcha/api/siteverify" {
        return Route::Recaptcha;
    }
    Route::Unknown
}

/// `{serverName}` of `/_matrix/media/{v1,v3,r0}/{download,thumbnail}/{serverName}/…` and
/// `/_matrix/client/v1/media/{download,thumbnail}/{serverName}/…`, percent-decoded.
fn media_server_name(path: &str) -> Option<String> {
    let rest = path
        .strip_prefix("/_matrix/media/v3/")
        .or_else(|| path.strip_prefix("/_matrix/media/r0/"))
        .or_else(|| path.strip_prefix("/_matrix/media/v1/"))
        .or_else(|| path.strip_prefix("/_matrix/client/v1/media/"))?;
    let rest = rest
        .strip_prefix("download/")
        .or_else(|| rest.strip_prefix("thumbnail/"))?;
    let raw = rest.split('/').next().filter(|s| !s.is_empty())?;
    Some(percent_decode_str(raw).decode_utf8_lossy().into_owned())
}

/// What the `Authorization` header says about the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum XMatrix<'a> {
    /// No `Authorization: X-Matrix …` header.
    Absent,
    /// An X-Matrix header without a `destination` parameter.
    NoDestination,
    /// Borrowed from the header unless it had escapes.
    Destination(Cow<'a, str>),
}

/// Read the `destination` parameter of the request's X-Matrix authorization exactly as the
/// receiving Synapse will read it ([`crate::matrix::x_matrix`]). `Err` with the reason when
/// the receiver could read another destination (several `Authorization` fields, quoted
/// commas, repeated parameters, another spelling of the scheme, …): such a request must not
/// leave, whatever its route.
pub(crate) fn x_matrix_destination(headers: &HeaderMap) -> Result<XMatrix<'_>, &'static str> {
    match x_matrix::XMatrixRef::from_headers(headers) {
        Ok(None) | Err(XMatrixError::Scheme) => Ok(XMatrix::Absent),
        Ok(Some(x)) => Ok(x
            .destination
            .filter(|d| !d.is_empty())
            .map_or(XMatrix::NoDestination, XMatrix::Destination)),
        Err(XMatrixError::MissingOrigin) => Err("X-Matrix header has no origin"),
        Err(XMatrixError::Ambiguous(why) | XMatrixError::Malformed(why)) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::AUTHORIZATION;

    fn headers(auth: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for a in auth {
            map.append(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        map
    }

    #[test]
    fn destination_is_read_in_any_order_quoted_or_bare() {
        let cases = [
            (
                r#"X-Matrix origin="hs1.test:8448",destination="hs2.test:8449",key="ed25519:a",sig="x""#,
                "hs2.test:8449",
            ),
            (
                r#"X-Matrix destination=hs2.test,origin=hs1.test,key=k,sig=s"#,
                "hs2.test",
            ),
            (
                r#"X-Matrix origin="hs1.test", destination="d\"q" ,key="k",sig=s"#,
                r#"d"q"#,
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(
                x_matrix_destination(&headers(&[header])),
                Ok(XMatrix::Destination(expected.into())),
                "{header}"
            );
        }
    }

    #[test]
    fn missing_header_or_parameter_is_distinguished() {
        assert_eq!(x_matrix_destination(&headers(&[])), Ok(XMatrix::Absent));
        assert_eq!(
            x_matrix_destination(&headers(&["Bearer abc"])),
            Ok(XMatrix::Absent)
        );
        assert_eq!(
            x_matrix_destination(&headers(&[r#"X-Matrix origin="hs1.test",key="k",sig="s""#])),
            Ok(XMatrix::NoDestination)
        );
    }

    /// The receiving Synapse reads the last X-Matrix field and splits at every comma: a
    /// request whose destination it could read differently never leaves.
    #[test]
    fn destinations_the_receiver_could_read_differently_are_refused() {
        for fields in [
            &[r#"X-Matrix destination="unterminated"#][..],
            &[
                "Bearer a",
                r#"X-Matrix origin=hs1.test,destination="d",key=k,sig=s"#,
            ],
            &[
                r#"X-Matrix origin=hs1.test,destination=hs2.test,key=k,sig=s"#,
                r#"X-Matrix origin=hs1.test,destination=hs3.test,key=k,sig=s"#,
            ],
            &[
                r#"X-Matrix origin=hs1.test,destination=hs2.test,x="1,destination=hs3.test",key=k,sig=s"#,
            ],
            &[r#"X-Matrix origin=hs1.test,destination=hs2.test,destination=hs3.test,key=k,sig=s"#],
            &[r#"x-matrix origin=hs1.test,destination=hs2.test,key=k,sig=s"#],
            &[r#"X-Matrix destination=hs2.test,key=k,sig=s"#],
        ] {
            assert!(
                x_matrix_destination(&headers(fields)).is_err(),
                "{fields:?}"
            );
        }
    }

    #[test]
    fn paths_are_classified() {
        let fed = |auth_optional| Route::Federation { auth_optional };
        let cases = [
            ("/_matrix/federation/v1/send/123", fed(false)),
            ("/_matrix/federation/v2/invite/!r:a/$e", fed(false)),
            ("/_matrix/federation/v1/media/download/abc", fed(false)),
            ("/_matrix/federation/v1/version", fed(true)),
            ("/_matrix/federation/v1/openid/userinfo", fed(true)),
            ("/_matrix/key/v2/server", Route::Keys),
            ("/_matrix/key/v2/query/hs1.test", Route::Keys),
            ("/.well-known/matrix/server", Route::WellKnownServer),
            (
                "/_matrix/media/v3/download/hs1.test%3A8448/abc",
                Route::Media {
                    server_name: "hs1.test:8448".to_owned(),
                },
            ),
            (
                "/_matrix/client/v1/media/thumbnail/hs2.test/abc",
                Route::Media {
                    server_name: "hs2.test".to_owned(),
                },
            ),
            ("/_matrix/media/v3/upload", Route::Unknown),
            ("/_matrix/push/v1/notify", Route::Push),
            ("/recaptcha/api/siteverify", Route::Recaptcha),
            ("/blubs", Route::Unknown),
            ("/_matrix/federationx", Route::Unknown),
        ];
        for (path, expected) in cases {
            assert_eq!(classify(path), expected, "{path}");
        }
    }
}
