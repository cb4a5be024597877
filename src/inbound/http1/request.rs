//! Request heads off a client connection's read buffer.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use crate::error::MatrixError;
use crate::inbound::framing::{FieldsSeen, Framing};

/// Largest request head accepted (request line and fields); beyond it the client gets 431.
/// Federation requests carry long `X-Matrix` fields, so this is generous.
pub(crate) const MAX_HEAD: usize = 256 * 1024;
/// Most header fields accepted in one request.
const MAX_FIELDS: usize = 100;
/// The start of every HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Rule id of malformed-request rejections in logs and metrics.
pub(crate) const RULE: &str = "http-parse";

/// A parsed request head.
pub(crate) struct RequestHead {
    pub parts: http::request::Parts,
    pub framing: Framing,
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
}

// Not boxed: a parsed head is moved straight into its request, once per request; boxing it
// would add an allocation to every request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Parsed {
    Head(RequestHead),
    /// More bytes are needed.
    Partial,
    /// The connection speaks HTTP/2 with prior knowledge.
    H2,
}

fn bad_request(reason: &'static str) -> MatrixError {
    MatrixError::new(
        StatusCode::BAD_REQUEST,
        "M_UNKNOWN",
        format!("malformed HTTP request: {reason}"),
        RULE,
    )
}

pub(crate) fn head_too_large() -> MatrixError {
    MatrixError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "M_TOO_LARGE",
        format!("request head exceeds {MAX_HEAD} bytes or {MAX_FIELDS} fields"),
        RULE,
    )
}

/// Parse a complete request head off the front of `buf`; `buf` keeps whatever follows it
/// (body, pipelined requests). Hop-by-hop fields are dropped here, and `Expect` is answered by
/// the connection, so neither reaches the rules or the homeserver.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Parsed, MatrixError> {
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return Ok(Parsed::Partial);
    }
    if buf.starts_with(H2_PREFACE) {
        return Ok(Parsed::H2);
    }
    // Uninitialised slots: a zeroed array of fields costs a memset per request.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let consumed = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(head_too_large()),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(head_too_large()),
        Err(httparse::Error::Version) => return Err(bad_request("unsupported HTTP version")),
        Err(_) => return Err(bad_request("invalid request line or header field")),
    };
    if consumed > MAX_HEAD {
        return Err(head_too_large());
    }
    let method = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
        .ok_or_else(|| bad_request("invalid method"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize).saturating_sub(base);
    let target = parsed.path.unwrap_or("/");
    let target_at = (offset(target.as_bytes()), target.len());
    let mut seen = FieldsSeen::default();
    let mut expect_continue = false;
    // Fields are remembered as positions and cut from the frozen head below, once the parser
    // no longer borrows `buf`.
    let mut kept = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"expect") {
            if field.value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(MatrixError::new(
                    StatusCode::EXPECTATION_FAILED,
                    "M_UNKNOWN",
                    "only the 100-continue expectation is supported",
                    RULE,
                ));
            }
            continue;
        }
        if seen.note(name, field.value).map_err(bad_request)? {
            kept.push((
                (offset(name), name.len()),
                (offset(field.value), field.value.len()),
            ));
        }
    }
    let framing = seen.request_framing().map_err(bad_request)?;
    let keep_alive = seen.keep_alive(version);
    let head = buf.split_to(consumed).freeze();
    let slice = |(start, len): (usize, usize)| {
        head.get(start..start.saturating_add(len))
            .map(|_| head.slice(start..start + len))
    };
    let uri = slice(target_at)
        .and_then(|t| Uri::from_maybe_shared(t).ok())
        .ok_or_else(|| bad_request("invalid request target"))?;
    let mut headers = HeaderMap::with_capacity(kept.len());
    for (name_at, value_at) in kept {
        let name = head
            .get(name_at.0..name_at.0.saturating_add(name_at.1))
            .unwrap_or_default();
        if seen.dropped_later(name) {
            continue;
        }
        let name = HeaderName::from_bytes(name).map_err(|_| bad_request("invalid field name"))?;
        let value = slice(value_at)
            .and_then(|v| HeaderValue::from_maybe_shared(v).ok())
            .ok_or_else(|| bad_request("invalid header field value"))?;
        headers.append(name, value);
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let (parts, ()) = request.into_parts();
    Ok(Parsed::Head(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> (RequestHead, BytesMut) {
        let mut buf = BytesMut::from(raw);
        match parse(&mut buf) {
            Ok(Parsed::Head(h)) => (h, buf),
            Ok(Parsed::Partial) => panic!("partial"),
            Ok(Parsed::H2) => panic!("h2"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_head_is_cut_off_the_buffer_with_hop_by_hop_fields_dropped() {
        let (h, rest) = head(
            b"PUT /_matrix/client/v3/x?a=%2F HTTP/1.1\r\nHost: hs1.test\r\nConnection: x-hop, keep-alive\r\n\
              X-Hop: 1\r\nContent-Length: 2\r\nExpect: 100-continue\r\nAccept: a\r\nAccept: b\r\n\r\n{}GET",
        );
        assert_eq!(h.parts.method, Method::PUT);
        assert_eq!(h.parts.uri.path(), "/_matrix/client/v3/x");
        assert_eq!(h.parts.uri.query(), Some("a=%2F"));
        assert_eq!(h.framing, Framing::Length(2));
        assert!(h.keep_alive && h.expect_continue);
        assert!(h.parts.headers.get("x-hop").is_none());
        assert!(h.parts.headers.get("connection").is_none());
        assert!(h.parts.headers.get("expect").is_none());
        let accept: Vec<_> = h.parts.headers.get_all("accept").iter().collect();
        assert_eq!(accept, ["a", "b"]);
        assert_eq!(&rest[..], b"{}GET");
    }

    #[test]
    fn persistence_follows_the_version() {
        let (h, _) = head(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive);
        let (h, _) = head(b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n");
        assert!(h.keep_alive);
        let (h, _) = head(b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n");
        assert!(!h.keep_alive);
    }

    #[test]
    fn partial_heads_and_the_h2_preface_wait_or_hand_over() {
        for partial in [&b"GET /_matrix/cli"[..], b"PRI * HTTP/2.0\r\n", b""] {
            let mut buf = BytesMut::from(partial);
            assert!(
                matches!(parse(&mut buf), Ok(Parsed::Partial)),
                "{partial:?}"
            );
        }
        let mut buf = BytesMut::from(H2_PREFACE);
        assert!(matches!(parse(&mut buf), Ok(Parsed::H2)));
    }

    #[test]
    fn malformed_heads_are_matrix_errors() {
        let cases: [(&[u8], u16); 6] = [
            (b"HELLO\r\n\r\n", 400),
            (b"GET / HTTP/9.9\r\n\r\n", 400),
            (
                b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
                400,
            ),
            (b"GET / HTTP/1.1\r\nexpect: nothing\r\n\r\n", 417),
            (b"GET / HTTP/1.1\r\nx\0y: 1\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            let mut buf = BytesMut::from(raw);
            match parse(&mut buf) {
                Err(e) => assert_eq!(e.status.as_u16(), status, "{raw:?}"),
                Ok(_) => panic!("accepted {raw:?}"),
            }
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&many[..]);
        assert!(matches!(parse(&mut buf), Err(e) if e.status == 431));
        let mut huge = b"GET / HTTP/1.1\r\nx: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        let mut buf = BytesMut::from(&huge[..]);
        assert!(matches!(parse(&mut buf), Err(e) if e.status == 431));
    }
}
