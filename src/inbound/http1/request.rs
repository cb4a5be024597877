//! Request heads off a client connection's read buffer.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};

use crate::error::MatrixError;
use crate::framing::{FieldsSeen, Framing, Refusal};

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

/// A refused request head: the answer, and a short reason for logs and the
/// `malformed_requests` metric.
#[derive(Debug)]
pub(crate) struct Refused {
    pub error: MatrixError,
    pub reason: &'static str,
}

fn bad_request(reason: &'static str) -> Refused {
    Refused {
        error: MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            format!("malformed HTTP request: {reason}"),
            RULE,
        ),
        reason,
    }
}

fn unsupported_coding() -> Refused {
    Refused {
        error: MatrixError::new(
            StatusCode::NOT_IMPLEMENTED,
            "M_UNKNOWN",
            "malformed HTTP request: transfer codings other than chunked are not supported",
            RULE,
        ),
        reason: "unsupported transfer coding",
    }
}

pub(crate) fn head_too_large() -> Refused {
    Refused {
        error: MatrixError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "M_TOO_LARGE",
            format!("request head exceeds {MAX_HEAD} bytes or {MAX_FIELDS} fields"),
            RULE,
        ),
        reason: "head too large",
    }
}

/// Parse a complete request head off the front of `buf`; `buf` keeps whatever follows it
/// (body, pipelined requests). Hop-by-hop fields are dropped here, and `Expect` is answered by
/// the connection, so neither reaches the rules or the homeserver.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Parsed, Refused> {
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
    if has_bare_line_feed(&buf[..consumed]) {
        return Err(bad_request("line ends other than CRLF"));
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
    if method == Method::CONNECT {
        return Err(Refused {
            error: MatrixError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "M_UNRECOGNIZED",
                "CONNECT is not served on this listener",
                RULE,
            ),
            reason: "CONNECT",
        });
    }
    let target = parsed.path.unwrap_or("/");
    let target_at = (offset(target.as_bytes()), target.len());
    let origin_form = target.starts_with('/');
    let asterisk_form = target == "*";
    let mut seen = FieldsSeen::default();
    let mut expect_continue = false;
    let mut hosts = 0u8;
    // Fields are remembered as positions and cut from the frozen head below, once the parser
    // no longer borrows `buf`.
    let mut kept = Vec::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"expect") {
            if field.value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Refused {
                    error: MatrixError::new(
                        StatusCode::EXPECTATION_FAILED,
                        "M_UNKNOWN",
                        "only the 100-continue expectation is supported",
                        RULE,
                    ),
                    reason: "unsupported expectation",
                });
            }
            continue;
        }
        if name.len() == 4 && name.eq_ignore_ascii_case(b"host") {
            if !is_host(field.value) {
                return Err(bad_request("invalid Host"));
            }
            hosts = hosts.saturating_add(1);
        }
        if seen.note(name, field.value).map_err(bad_request)? {
            kept.push((
                (offset(name), name.len()),
                (offset(field.value), field.value.len()),
            ));
        }
    }
    // RFC 9112 §3.2: exactly one Host on HTTP/1.1, at most one on HTTP/1.0.
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Err(bad_request("an HTTP/1.1 request needs exactly one Host"));
    }
    let framing = seen
        .request_framing(version)
        .map_err(|refusal| match refusal {
            Refusal::Malformed(reason) => bad_request(reason),
            Refusal::UnsupportedCoding => unsupported_coding(),
        })?;
    let keep_alive = seen.keep_alive(version);
    let head = buf.split_to(consumed).freeze();
    let slice = |(start, len): (usize, usize)| {
        head.get(start..start.saturating_add(len))
            .map(|_| head.slice(start..start + len))
    };
    let uri = slice(target_at)
        .and_then(|t| Uri::from_maybe_shared(t).ok())
        .filter(|uri| origin_form || is_served_target(&method, asterisk_form, uri))
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

/// Whether `head` ends a line with a bare LF. httparse accepts one as a line end (and refuses
/// a bare CR anywhere), but a hop in front of this proxy may read such a line differently:
/// `X-A: a\nTransfer-Encoding: chunked` is one field to some parsers and two to others.
fn has_bare_line_feed(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|at| at == 0 || head[at - 1] != b'\r')
}

/// A `Host` value: `host [":" port]`, the host a name, an IPv4 address or a bracketed IP
/// literal (RFC 9110 §7.2, RFC 3986 §3.2.2). No userinfo, no whitespace.
fn is_host(value: &[u8]) -> bool {
    value.iter().all(|&b| HOST_BYTES[usize::from(b)])
}

/// The bytes a `Host` value may hold, as a table: every request has one, and searching the list
/// of punctuation for each `.` of an address cost more than the rest of the check.
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let punctuation = b"-._~!$&'()*+,;=:[]%";
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
};

/// Whether a target not in origin-form is one this listener serves (RFC 9112 §3.2):
/// absolute-form with an `http` or `https` scheme and no userinfo, or asterisk-form for
/// `OPTIONS`. Authority-form belongs to CONNECT, which is refused before.
fn is_served_target(method: &Method, asterisk_form: bool, uri: &Uri) -> bool {
    if asterisk_form {
        return method == Method::OPTIONS;
    }
    let scheme_ok = uri
        .scheme()
        .is_some_and(|s| *s == http::uri::Scheme::HTTP || *s == http::uri::Scheme::HTTPS);
    let authority_ok = uri
        .authority()
        .is_some_and(|a| !a.as_str().contains('@') && !a.host().is_empty());
    scheme_ok && authority_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names, addresses, IP literals and ports pass; userinfo, whitespace, paths and bytes
    /// outside ASCII are refused with a 400.
    #[test]
    fn host_values_are_checked_byte_by_byte() {
        for host in [
            "hs1.test",
            "127.0.0.1:8008",
            "[::1]:8008",
            "xn--bcher-kva.example",
        ] {
            assert!(is_host(host.as_bytes()), "{host}");
        }
        for host in [
            &b"user@hs1.test"[..],
            b"hs1 .test",
            b"hs1.test/x",
            b"h\xc3\xbcs.test",
            b"a\tb",
        ] {
            assert!(!is_host(host), "{}", host.escape_ascii());
            let mut request = b"GET / HTTP/1.1\r\nHost: ".to_vec();
            request.extend_from_slice(host);
            request.extend_from_slice(b"\r\n\r\n");
            match parse(&mut BytesMut::from(&request[..])) {
                Err(refused) => assert_eq!(refused.reason, "invalid Host"),
                Ok(_) => panic!("Host {} accepted", host.escape_ascii()),
            }
        }
    }

    fn head(raw: &[u8]) -> (RequestHead, BytesMut) {
        let mut buf = BytesMut::from(raw);
        match parse(&mut buf) {
            Ok(Parsed::Head(h)) => (h, buf),
            Ok(Parsed::Partial) => panic!("partial"),
            Ok(Parsed::H2) => panic!("h2"),
            Err(e) => panic!("{}", e.error),
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
        let (h, _) = head(b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n");
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
                b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
                400,
            ),
            (b"GET / HTTP/1.1\r\nhost: a\r\nexpect: nothing\r\n\r\n", 417),
            (b"GET / HTTP/1.1\r\nhost: a\r\nx\0y: 1\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            let mut buf = BytesMut::from(raw);
            match parse(&mut buf) {
                Err(e) => assert_eq!(e.error.status.as_u16(), status, "{raw:?}"),
                Ok(_) => panic!("accepted {raw:?}"),
            }
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&many[..]);
        assert!(matches!(parse(&mut buf), Err(e) if e.error.status == 431));
        let mut huge = b"GET / HTTP/1.1\r\nx: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        let mut buf = BytesMut::from(&huge[..]);
        assert!(matches!(parse(&mut buf), Err(e) if e.error.status == 431));
    }

    /// The status a head is refused with, or `None` when it parses.
    fn refusal(raw: &[u8]) -> Option<u16> {
        let mut buf = BytesMut::from(raw);
        match parse(&mut buf) {
            Ok(Parsed::Head(_)) => None,
            Ok(Parsed::Partial) => panic!("partial: {:?}", String::from_utf8_lossy(raw)),
            Ok(Parsed::H2) => panic!("h2"),
            Err(e) => Some(e.error.status.as_u16()),
        }
    }

    /// Every framing a hop in front could read differently is refused (issue 14, finding 5).
    #[test]
    fn ambiguous_framing_is_refused_at_the_head() {
        let cases: &[(&str, &[u8], u16)] = &[
            ("bare LF between fields", b"POST / HTTP/1.1\r\nhost: a\r\nX-A: a\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("bare LF after the request line", b"GET / HTTP/1.1\nhost: a\r\n\r\n", 400),
            ("bare LF as the empty line", b"GET / HTTP/1.1\r\nhost: a\r\n\n", 400),
            ("bare LF before the request line", b"\nGET / HTTP/1.1\r\nhost: a\r\n\r\n", 400),
            ("bare CR between fields", b"GET / HTTP/1.1\r\nhost: a\rX-A: b\r\n\r\n", 400),
            ("bare CR after the request line", b"GET / HTTP/1.1\rhost: a\r\n\r\n", 400),
            ("empty Transfer-Encoding", b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: \r\ncontent-length: 3\r\n\r\n", 400),
            ("comma-only Transfer-Encoding", b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: ,,\r\ncontent-length: 3\r\n\r\n", 400),
            ("empty Transfer-Encoding alone", b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding:\r\n\r\n", 400),
            ("chunked not last", b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, identity\r\n\r\n", 400),
            ("chunked twice", b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n", 400),
            ("gzip then chunked", b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n", 501),
            ("gzip alone", b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\n", 501),
            ("chunked on HTTP/1.0", b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n", 400),
            ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
            ("two Hosts", b"GET / HTTP/1.1\r\nhost: a\r\nHost: a\r\n\r\n", 400),
            ("Host with a space", b"GET / HTTP/1.1\r\nhost: a b\r\n\r\n", 400),
            ("Host with userinfo", b"GET / HTTP/1.1\r\nhost: u@a\r\n\r\n", 400),
            ("Host with a slash", b"GET / HTTP/1.1\r\nhost: a/b\r\n\r\n", 400),
            ("absolute-form with userinfo", b"GET http://u:p@a/ HTTP/1.1\r\nhost: a\r\n\r\n", 400),
            ("absolute-form ftp", b"GET ftp://a/ HTTP/1.1\r\nhost: a\r\n\r\n", 400),
            ("asterisk-form on GET", b"GET * HTTP/1.1\r\nhost: a\r\n\r\n", 400),
            ("authority-form", b"GET a:443 HTTP/1.1\r\nhost: a\r\n\r\n", 400),
            ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n", 405),
            ("Connection: host", b"GET / HTTP/1.1\r\nhost: a\r\nconnection: host\r\n\r\n", 400),
            ("Connection: content-length", b"POST / HTTP/1.1\r\nhost: a\r\nconnection: content-length\r\ncontent-length: 2\r\n\r\n", 400),
            ("Connection: transfer-encoding", b"POST / HTTP/1.1\r\nhost: a\r\nconnection: Transfer-Encoding\r\ntransfer-encoding: chunked\r\n\r\n", 400),
        ];
        for (name, raw, status) in cases {
            assert_eq!(refusal(raw), Some(*status), "{name}");
        }
    }

    #[test]
    fn strict_heads_still_accept_what_rfc_9112_allows() {
        let cases: &[(&str, &[u8])] = &[
            ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n"),
            ("empty Host", b"GET / HTTP/1.1\r\nhost:\r\n\r\n"),
            (
                "Host with port",
                b"GET / HTTP/1.1\r\nhost: hs1.test:8008\r\n\r\n",
            ),
            ("IPv6 Host", b"GET / HTTP/1.1\r\nhost: [::1]:8008\r\n\r\n"),
            (
                "absolute-form http",
                b"GET http://hs1.test/_matrix/client/versions HTTP/1.1\r\nhost: hs1.test\r\n\r\n",
            ),
            (
                "absolute-form https",
                b"GET https://hs1.test:443/x?y=1 HTTP/1.1\r\nhost: hs1.test\r\n\r\n",
            ),
            (
                "asterisk-form on OPTIONS",
                b"OPTIONS * HTTP/1.1\r\nhost: a\r\n\r\n",
            ),
            (
                "chunked",
                b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n",
            ),
            (
                "a leading empty line",
                b"\r\nGET / HTTP/1.1\r\nhost: a\r\n\r\n",
            ),
            (
                "tab in a value",
                b"GET / HTTP/1.1\r\nhost: a\r\nx-a: b\tc\r\n\r\n",
            ),
        ];
        for (name, raw) in cases {
            assert_eq!(refusal(raw), None, "{name}");
        }
    }

    /// What parsing a whole buffer came to, comparable across runs: the refusal status, or
    /// the head's parts and what stayed in the buffer.
    fn outcome(buf: &mut BytesMut) -> Option<Result<(String, Vec<u8>), u16>> {
        match parse(buf) {
            Ok(Parsed::Partial) => None,
            Ok(Parsed::H2) => Some(Ok(("h2".into(), buf.to_vec()))),
            Ok(Parsed::Head(h)) => Some(Ok((
                format!(
                    "{} {} {:?} {:?} {:?} keep-alive {} continue {}",
                    h.parts.method,
                    h.parts.uri,
                    h.parts.version,
                    h.parts.headers,
                    h.framing,
                    h.keep_alive,
                    h.expect_continue,
                ),
                buf.to_vec(),
            ))),
            Err(e) => Some(Err(e.error.status.as_u16())),
        }
    }

    mod split_reads {
        use super::*;
        use proptest::prelude::*;

        fn line_end() -> impl Strategy<Value = &'static str> {
            prop_oneof![8 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r")]
        }

        fn field() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "host: hs1.test",
                "Host: hs1.test",
                "content-length: 2",
                "content-length: 3",
                "transfer-encoding: chunked",
                "transfer-encoding: gzip, chunked",
                "transfer-encoding: ",
                "connection: close",
                "connection: keep-alive, x-hop",
                "connection: host",
                "x-hop: 1",
                "expect: 100-continue",
                "authorization: Bearer tok",
                "x-a: a b\tc",
                "accept: */*",
            ])
        }

        fn request() -> impl Strategy<Value = Vec<u8>> {
            let start = prop::sample::select(vec![
                "GET /_matrix/client/versions HTTP/1.1",
                "POST /_matrix/client/v3/login?x=%2F HTTP/1.1",
                "PUT http://hs1.test/_matrix/client/v3/x HTTP/1.1",
                "OPTIONS * HTTP/1.1",
                "GET * HTTP/1.1",
                "POST / HTTP/1.0",
                "GET http://u@hs1.test/ HTTP/1.1",
                "CONNECT hs1.test:443 HTTP/1.1",
                "BREW /pot HTTP/1.1",
            ]);
            let fields = prop::collection::vec((field(), line_end()), 0..6);
            let body =
                prop::sample::select(vec!["", "{}", "2\r\n{}\r\n0\r\n\r\n", "GET / HTTP/1.1\r\n"]);
            (start, line_end(), fields, line_end(), body).prop_map(
                |(start, start_end, fields, end, body)| {
                    let mut raw = format!("{start}{start_end}");
                    for (field, field_end) in fields {
                        raw.push_str(field);
                        raw.push_str(field_end);
                    }
                    raw.push_str(end);
                    raw.push_str(body);
                    raw.into_bytes()
                },
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// The connection parses again after every read: whatever the reads' boundaries,
            /// a head parses to what it parses to in one piece, and a partial head is either
            /// waited on or refused exactly as the whole one is.
            #[test]
            fn a_head_split_across_reads_parses_as_in_one_piece(raw in request()) {
                let whole = outcome(&mut BytesMut::from(&raw[..]));
                for at in 0..raw.len() {
                    let mut buf = BytesMut::from(&raw[..at]);
                    match outcome(&mut buf) {
                        None => {
                            buf.extend_from_slice(&raw[at..]);
                            prop_assert_eq!(outcome(&mut buf), whole.clone(), "split at {}", at);
                        }
                        Some(Err(early)) => {
                            prop_assert_eq!(Some(Err(early)), whole.clone(), "split at {}", at)
                        }
                        // The head was complete before the split: the rest is what follows it.
                        Some(Ok((head, mut rest))) => {
                            rest.extend_from_slice(&raw[at..]);
                            prop_assert_eq!(Some(Ok((head, rest))), whole.clone(), "split at {}", at)
                        }
                    }
                }
            }
        }
    }
}
