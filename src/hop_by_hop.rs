//! Connection-scoped header fields (RFC 9110 §7.6.1), shared by both proxy directions: they
//! describe one hop, never the end-to-end message, so neither listener forwards them.

use http::header::{CONNECTION, HeaderMap, HeaderName};

/// Every field that is always hop-by-hop, as the lowercase names `HeaderName` uses.
const ALWAYS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether `name` is always hop-by-hop.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str().as_bytes())
}

/// Whether a field name, as received (any case), is always hop-by-hop.
pub fn is_hop_by_hop_name(name: &[u8]) -> bool {
    ALWAYS
        .iter()
        .any(|known| known.len() == name.len() && known.as_bytes().eq_ignore_ascii_case(name))
}

/// Remove hop-by-hop fields, including those the `Connection` field names. Messages rarely
/// carry any, so one pass over the names comes first and usually ends it; otherwise only the
/// names actually present are removed (each removal hashes its name, and nearly every
/// homeserver answer carries `Connection: keep-alive` and nothing else of the kind).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    if doomed.is_empty() {
        return;
    }
    if headers.contains_key(CONNECTION) {
        doomed.extend(
            headers
                .get_all(CONNECTION)
                .iter()
                .filter(|v| v.to_str().is_ok())
                .flat_map(|v| connection_tokens(v.as_bytes()))
                // `keep-alive` is in the list already when present as a field.
                .filter(|name| !name.eq_ignore_ascii_case(b"keep-alive"))
                .filter_map(|name| HeaderName::from_bytes(name).ok()),
        );
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// The options a `Connection` field value lists (comma-separated, trimmed, empty ones
/// skipped): `close`, `keep-alive`, or names of further hop-by-hop fields.
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_names_match_in_any_case_and_only_whole() {
        assert!(is_hop_by_hop_name(b"Keep-Alive"));
        assert!(is_hop_by_hop(&HeaderName::from_static(
            "proxy-authorization"
        )));
        assert!(!is_hop_by_hop_name(b"keep-alive2"));
        assert!(!is_hop_by_hop(&http::header::AUTHORIZATION));
    }

    #[test]
    fn hop_by_hop_fields_and_connection_named_ones_are_removed() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("proxy-authorization", "Basic abc"),
            ("transfer-encoding", "chunked"),
            ("authorization", "X-Matrix origin=a"),
            ("content-length", "12"),
        ] {
            headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, vec!["authorization", "content-length"]);
    }

    #[test]
    fn connection_tokens_are_trimmed_and_empty_ones_skipped() {
        let tokens: Vec<&[u8]> = connection_tokens(b" close ,, X-Hop,").collect();
        assert_eq!(tokens, vec![&b"close"[..], b"X-Hop"]);
    }
}
