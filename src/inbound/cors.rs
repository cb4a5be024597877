//! CORS for Matrix clients in a browser (client-server API v1.11, "Web Browser Clients").
//!
//! A browser lets a page from another origin read an answer only when the answer carries
//! `Access-Control-Allow-Origin`, and it sends a preflight `OPTIONS` before every request that
//! has an `Authorization` or JSON `Content-Type` field, i.e. before almost every Matrix call.
//! So:
//!
//! - every `OPTIONS` request is answered here, `204` with the CORS fields, on every path: the
//!   spec says all endpoints support `OPTIONS` and that the server must not perform any logic
//!   of the endpoint for it. Nothing is forwarded, so a preflight for an endpoint TIM refuses
//!   still succeeds, and the browser goes on to the real request and can read its Matrix
//!   error;
//! - every other answer gets the CORS fields it lacks: the proxy's own answers (a TIM
//!   rejection without them reaches the page as an opaque network failure) and homeserver
//!   answers without them. Synapse already adds them to its own answers, and a browser refuses
//!   an answer whose `Access-Control-Allow-Origin` appears twice, so a field the answer already
//!   carries is left exactly as it is.

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    HeaderName, HeaderValue,
};
use http::{HeaderMap, Response, StatusCode};

use super::forward::{Body, empty};
use super::upstream::RawFields;

/// Endpoint label of preflights in metrics and raw-data reports.
pub(crate) const PREFLIGHT_TEMPLATE: &str = "OPTIONS (CORS preflight)";

/// How many CORS fields [`FIELDS`] names.
const COUNT: usize = 3;

/// The fields every answer carries: the values the spec recommends, with the two additions
/// Synapse makes (`HEAD`, `Date`), so an answer looks the same to a browser whether the
/// homeserver or the proxy wrote it.
const FIELDS: [(HeaderName, HeaderValue); COUNT] = [
    (ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
    (
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    ),
    (
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization, Date"),
    ),
];

/// The answer to any `OPTIONS` request.
pub(crate) fn preflight() -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    for (name, value) in FIELDS {
        headers.insert(name, value);
    }
    response
}

/// Add the CORS fields `response` does not carry yet, in its field map or among the
/// homeserver's fields as received ([`RawFields`]).
pub(crate) fn complete<B>(response: &mut Response<B>) {
    let mut present = [false; COUNT];
    if let Some(raw) = response.extensions().get::<RawFields>() {
        mark_raw(&raw.block, &mut present);
    }
    mark_map(response.headers(), &mut present);
    let headers = response.headers_mut();
    for ((name, value), present) in FIELDS.into_iter().zip(present) {
        if !present {
            headers.insert(name, value);
        }
    }
}

/// Mark the fields named in a block of `name: value` lines.
fn mark_raw(block: &[u8], present: &mut [bool; COUNT]) {
    for line in block.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = &line[..colon];
        // Every CORS field name starts with `access-control-`: most lines stop at the first
        // byte.
        if !name.first().is_some_and(|b| b.eq_ignore_ascii_case(&b'a')) {
            continue;
        }
        for ((field, _), seen) in FIELDS.iter().zip(present.iter_mut()) {
            *seen |= name.eq_ignore_ascii_case(field.as_str().as_bytes());
        }
    }
}

fn mark_map(headers: &HeaderMap, present: &mut [bool; COUNT]) {
    if headers.is_empty() {
        return;
    }
    for ((field, _), seen) in FIELDS.iter().zip(present.iter_mut()) {
        *seen |= headers.contains_key(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn field_count(response: &Response<()>, name: &HeaderName) -> usize {
        let raw = response.extensions().get::<RawFields>().map_or(0, |raw| {
            raw.block
                .split(|b| *b == b'\n')
                .filter(|line| {
                    line.len() > name.as_str().len()
                        && line[..name.as_str().len()]
                            .eq_ignore_ascii_case(name.as_str().as_bytes())
                        && line[name.as_str().len()] == b':'
                })
                .count()
        });
        raw + response.headers().get_all(name).iter().count()
    }

    fn with_raw(block: &'static str) -> Response<()> {
        let mut response = Response::new(());
        response.extensions_mut().insert(RawFields {
            block: Bytes::from_static(block.as_bytes()),
            content_length: None,
            has_date: false,
        });
        response
    }

    #[test]
    fn preflight_is_204_with_every_field_and_no_body() {
        let response = preflight();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(response.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(
            response.headers()[ACCESS_CONTROL_ALLOW_METHODS]
                .to_str()
                .unwrap()
                .contains("PUT")
        );
        assert!(
            response.headers()[ACCESS_CONTROL_ALLOW_HEADERS]
                .to_str()
                .unwrap()
                .contains("Authorization")
        );
        assert_eq!(http_body::Body::size_hint(response.body()).exact(), Some(0));
    }

    #[test]
    fn own_answer_without_fields_gets_all_of_them() {
        let mut response = Response::new(());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        complete(&mut response);
        for (name, value) in &FIELDS {
            assert_eq!(response.headers().get(name), Some(value), "{name}");
        }
    }

    #[test]
    fn homeserver_fields_as_received_are_never_doubled() {
        // As Synapse sends them, in its own capitalisation.
        let mut response = with_raw(
            "Content-Type: application/json\r\nAccess-Control-Allow-Origin: *\r\n\
             Access-Control-Allow-Methods: GET, HEAD, POST, PUT, DELETE, OPTIONS\r\n\
             ACCESS-CONTROL-ALLOW-HEADERS: X-Requested-With\r\n",
        );
        complete(&mut response);
        assert!(response.headers().is_empty(), "{:?}", response.headers());
        for (name, _) in &FIELDS {
            assert_eq!(field_count(&response, name), 1, "{name}");
        }
    }

    #[test]
    fn missing_fields_are_added_beside_the_homeserver_ones() {
        let mut response = with_raw("access-control-allow-origin: https://app.example\r\n");
        complete(&mut response);
        assert_eq!(response.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN), None);
        for (name, _) in &FIELDS {
            assert_eq!(field_count(&response, name), 1, "{name}");
        }
        // A field name that only starts like a CORS one is not one.
        let mut response = with_raw("access-control-allow-origin-x: *\r\naccess: *\r\n");
        complete(&mut response);
        assert_eq!(response.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }

    #[test]
    fn fields_already_in_the_map_are_kept() {
        let mut response = Response::new(());
        response.headers_mut().insert(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        complete(&mut response);
        assert_eq!(
            response
                .headers()
                .get_all(ACCESS_CONTROL_ALLOW_ORIGIN)
                .iter()
                .collect::<Vec<_>>(),
            vec![HeaderValue::from_static("https://app.example")]
        );
        assert_eq!(field_count(&response, &ACCESS_CONTROL_ALLOW_METHODS), 1);
    }
}
