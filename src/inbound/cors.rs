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
//!
//! Homeserver answers keep their fields as received ([`RawFields`](super::answer::RawFields));
//! the parser that read them noted which CORS fields are among them ([`field_bit`]), and
//! missing ones are added to that block ([`Answer::append`]). Looking for them in the block
//! again, and building field-map entries for them, was a tenth of the instructions of a
//! proxied request (`benches/callgrind-inbound.sh`); the parser also leaves room for them in
//! the block ([`MAX_ADDED_LEN`]), so adding them copies nothing.

use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::answer::{Answer, Fields};
use super::forward::{Body, empty};

/// Endpoint label of preflights in metrics and raw-data reports.
pub(crate) const PREFLIGHT_TEMPLATE: &str = "OPTIONS (CORS preflight)";

/// The fields every answer carries: the values the spec recommends, with the two additions
/// Synapse makes (`HEAD`, `Date`), so an answer looks the same to a browser whether the
/// homeserver or the proxy wrote it. Field `i` is bit `1 << i` of [`field_bit`].
const FIELDS: [(&str, &str); 3] = [
    ("access-control-allow-origin", "*"),
    (
        "access-control-allow-methods",
        "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    ),
    (
        "access-control-allow-headers",
        "X-Requested-With, Content-Type, Authorization, Date",
    ),
];
/// [`FIELDS`] as a field map takes them, made at compile time.
const ENTRIES: [(HeaderName, HeaderValue); 3] = {
    const fn entry(i: usize) -> (HeaderName, HeaderValue) {
        (
            HeaderName::from_static(FIELDS[i].0),
            HeaderValue::from_static(FIELDS[i].1),
        )
    }
    [entry(0), entry(1), entry(2)]
};
/// Every bit of [`field_bit`] set.
const ALL: u8 = (1 << FIELDS.len()) - 1;
/// Bytes the field lines [`complete`] may add to a homeserver answer, at most (the answer
/// parser leaves this much room).
pub(crate) const MAX_ADDED_LEN: usize = {
    let mut len = 0;
    let mut i = 0;
    while i < FIELDS.len() {
        len += FIELDS[i].0.len() + ": ".len() + FIELDS[i].1.len() + "\r\n".len();
        i += 1;
    }
    len
};

/// The bit of a CORS field name already in a [`HeaderName`] (always lower case, so compared
/// byte for byte), `0` for any other name.
pub(crate) fn name_bit(name: &HeaderName) -> u8 {
    FIELDS
        .iter()
        .position(|(field, _)| name.as_str() == *field)
        .map_or(0, |i| 1 << i)
}

/// The bit of a CORS field name (any case), `0` for any other name. Called for every field of
/// every homeserver answer, so it compares lengths first.
pub(crate) fn field_bit(name: &[u8]) -> u8 {
    let mut bits = 0;
    for (i, (field, _)) in FIELDS.iter().enumerate() {
        if name.len() == field.len() && name.eq_ignore_ascii_case(field.as_bytes()) {
            bits |= 1 << i;
        }
    }
    bits
}

/// The answer to any `OPTIONS` request.
pub(crate) fn preflight() -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response.headers_mut().extend(ENTRIES);
    response
}

/// Add the CORS fields `answer` does not carry yet: to the homeserver's fields as received
/// when it has them, else to its field map.
pub(crate) fn complete(answer: &mut Answer) {
    let present = match answer.fields() {
        Fields::Raw(raw) => raw.cors_fields(),
        Fields::Map(headers) => ENTRIES
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| headers.contains_key(name))
            .fold(0, |bits, (i, _)| bits | 1 << i),
    };
    if present == ALL {
        return;
    }
    for (i, (name, value)) in ENTRIES.into_iter().enumerate() {
        if present & (1 << i) == 0 {
            answer.append(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::answer::RawFields;
    use http::header::{
        ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    };

    const NAMES: [HeaderName; 3] = [
        ACCESS_CONTROL_ALLOW_ORIGIN,
        ACCESS_CONTROL_ALLOW_METHODS,
        ACCESS_CONTROL_ALLOW_HEADERS,
    ];

    /// How often `name` occurs among the answer's fields, in whichever form they are.
    fn field_count(answer: &Answer, name: &HeaderName) -> usize {
        match answer.fields() {
            Fields::Raw(raw) => raw
                .block()
                .split(|b| *b == b'\n')
                .filter_map(|line| line.split(|b| *b == b':').next())
                .filter(|field| field.eq_ignore_ascii_case(name.as_str().as_bytes()))
                .count(),
            Fields::Map(headers) => headers.get_all(name).iter().count(),
        }
    }

    /// The fields as received of an answer, or a failed test.
    fn raw_block(answer: &Answer) -> &[u8] {
        match answer.fields() {
            Fields::Raw(raw) => raw.block(),
            Fields::Map(headers) => panic!("the fields were turned into a map: {headers:?}"),
        }
    }

    /// An answer as the homeserver parser leaves it: fields in a block, CORS bits noted.
    fn with_raw(block: &'static str) -> Answer {
        let cors_fields = block
            .split("\r\n")
            .filter_map(|line| line.split(':').next())
            .fold(0, |bits, name| bits | field_bit(name.as_bytes()));
        let (parts, body) = Response::new(empty()).into_parts();
        Answer::relayed(
            parts,
            RawFields::new(block.into(), None, false, cors_fields),
            body,
        )
    }

    /// An answer the proxy made, with `fields`.
    fn own(fields: &[(HeaderName, &'static str)]) -> Answer {
        let mut response = Response::new(empty());
        for (name, value) in fields {
            response
                .headers_mut()
                .insert(name, HeaderValue::from_static(value));
        }
        Answer::from(response)
    }

    #[test]
    fn field_bits_name_exactly_the_cors_fields_in_any_case() {
        for (i, (name, _)) in FIELDS.iter().enumerate() {
            assert_eq!(field_bit(name.as_bytes()), 1 << i, "{name}");
        }
        assert_eq!(field_bit(b"Access-Control-Allow-Origin"), 1);
        assert_eq!(field_bit(b"ACCESS-CONTROL-ALLOW-METHODS"), 2);
        assert_eq!(field_bit(b"access-control-allow-headers"), 4);
        for other in [
            &b"access-control-allow-origin-x"[..],
            b"access-control-allow-origi",
            b"access-control-allow-morigin",
            b"access-control-allow-hethods",
            b"xccess-control-allow-origin",
            b"access-control-expose-headers",
            b"content-type",
            b"",
        ] {
            assert_eq!(field_bit(other), 0, "{}", String::from_utf8_lossy(other));
        }
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
        let mut answer = own(&[(http::header::CONTENT_TYPE, "application/json")]);
        complete(&mut answer);
        let response = answer.into_response();
        for (name, (_, value)) in NAMES.iter().zip(FIELDS) {
            assert_eq!(response.headers()[name], value, "{name}");
        }
    }

    #[test]
    fn homeserver_fields_as_received_are_never_doubled() {
        // As Synapse sends them, in its own capitalisation.
        let block = "Content-Type: application/json\r\nAccess-Control-Allow-Origin: *\r\n\
             Access-Control-Allow-Methods: GET, HEAD, POST, PUT, DELETE, OPTIONS\r\n\
             ACCESS-CONTROL-ALLOW-HEADERS: X-Requested-With\r\n";
        let mut answer = with_raw(block);
        complete(&mut answer);
        assert_eq!(
            raw_block(&answer),
            block.as_bytes(),
            "the homeserver's fields changed"
        );
        for name in &NAMES {
            assert_eq!(field_count(&answer, name), 1, "{name}");
        }
    }

    #[test]
    fn missing_fields_are_added_beside_the_homeserver_ones() {
        let mut answer = with_raw(
            "Content-Type: application/json\r\naccess-control-allow-origin: https://app.example\r\n",
        );
        complete(&mut answer);
        for name in &NAMES {
            assert_eq!(field_count(&answer, name), 1, "{name}");
        }
        let text = String::from_utf8(raw_block(&answer).to_vec()).unwrap();
        assert!(
            text.starts_with("Content-Type: application/json\r\naccess-control-allow-origin: https://app.example\r\n")
                && text.ends_with("\r\n"),
            "{text}"
        );
        // Completed once, it stays as it is.
        complete(&mut answer);
        assert_eq!(raw_block(&answer), text.as_bytes());
        // A field name that only starts like a CORS one is not one.
        let mut answer = with_raw("access-control-allow-origin-x: *\r\n");
        complete(&mut answer);
        assert_eq!(field_count(&answer, &ACCESS_CONTROL_ALLOW_ORIGIN), 1);
    }

    #[test]
    fn fields_already_in_the_map_are_kept() {
        let mut answer = own(&[(ACCESS_CONTROL_ALLOW_ORIGIN, "https://app.example")]);
        complete(&mut answer);
        assert_eq!(field_count(&answer, &ACCESS_CONTROL_ALLOW_METHODS), 1);
        let response = answer.into_response();
        assert_eq!(
            response
                .headers()
                .get_all(ACCESS_CONTROL_ALLOW_ORIGIN)
                .iter()
                .collect::<Vec<_>>(),
            vec![HeaderValue::from_static("https://app.example")]
        );
    }
}
