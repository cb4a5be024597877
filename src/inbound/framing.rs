//! HTTP/1.1 message framing (RFC 9112 §6) for both ends of the inbound path: client requests
//! read by [`super::http1`] and homeserver answers read by [`super::upstream`].
//!
//! One pass over a head's fields decides framing and persistence and drops the hop-by-hop
//! fields; the body decoder works on a connection's read buffer, and [`Framing::poll_next`]
//! reads more when it runs dry. The field writers at the end serve both heads this proxy
//! encodes: requests to the homeserver and answers to clients.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Version};
use tokio::io::AsyncRead;

/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;

/// What the fields of a message head say about framing and the connection.
///
/// Names are compared as bytes: building a `HeaderName` for every field just to recognise a
/// handful of them cost more than the comparisons.
#[derive(Default)]
pub(crate) struct FieldsSeen {
    /// Whether the last transfer coding named is `chunked`, if any was named.
    pub transfer_coding: Option<bool>,
    pub content_length: Option<u64>,
    pub date: bool,
    /// The CORS fields present (bits from `cors::field_bit`).
    pub cors_fields: u8,
    close_token: bool,
    keep_alive_token: bool,
    /// Other fields the `Connection` field names (lowercase): hop-by-hop too.
    connection_named: Vec<Vec<u8>>,
}

/// A non-empty run of ASCII digits that fits a `u64`.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn is(name: &[u8], known: &str) -> bool {
    name.len() == known.len() && name.eq_ignore_ascii_case(known.as_bytes())
}

impl FieldsSeen {
    /// Record one field; `false` when it is hop-by-hop and not to be passed on.
    pub fn note(&mut self, name: &[u8], value: &[u8]) -> Result<bool, &'static str> {
        if is(name, "content-length") {
            let n = parse_decimal(value.trim_ascii()).ok_or("invalid Content-Length")?;
            if self.content_length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length");
            }
            self.content_length = Some(n);
            return Ok(true);
        }
        if is(name, "transfer-encoding") {
            if let Some(last) = value
                .split(|b| *b == b',')
                .map(<[u8]>::trim_ascii)
                .rfind(|t| !t.is_empty())
            {
                self.transfer_coding = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
            return Ok(false);
        }
        if is(name, "connection") {
            for token in crate::hop_by_hop::connection_tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close_token = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive_token = true;
                } else {
                    self.connection_named.push(token.to_ascii_lowercase());
                }
            }
            return Ok(false);
        }
        if is(name, "date") {
            self.date = true;
            return Ok(true);
        }
        self.cors_fields |= super::cors::field_bit(name);
        Ok(!crate::hop_by_hop::is_hop_by_hop_name(name))
    }

    /// Whether a field that [`FieldsSeen::note`] kept is to be dropped after all, once the
    /// whole head has been seen: named by `Connection`, or a `Content-Length` beside
    /// `Transfer-Encoding` (RFC 9112 §6.3).
    pub fn dropped_later(&self, name: &[u8]) -> bool {
        (self.transfer_coding.is_some() && is(name, "content-length"))
            || self
                .connection_named
                .iter()
                .any(|named| name.eq_ignore_ascii_case(named))
    }

    /// Whether the connection stays open after this message.
    pub fn keep_alive(&self, version: Version) -> bool {
        match version {
            Version::HTTP_10 => self.keep_alive_token && !self.close_token,
            _ => !self.close_token,
        }
    }

    /// How an answer's body is delimited (RFC 9112 §6.3).
    pub fn response_framing(&self, method: &Method, status: StatusCode) -> Framing {
        if method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Framing::Length(0);
        }
        match (self.transfer_coding, self.content_length) {
            (Some(true), _) => Framing::Chunked(Chunk::Size),
            // A transfer coding other than chunked last: the body runs to the close.
            (Some(false), _) | (None, None) => Framing::Eof,
            (None, Some(n)) => Framing::Length(n),
        }
    }

    /// How a request's body is delimited (RFC 9112 §6.3). Both `Content-Length` and
    /// `Transfer-Encoding`, or a coding other than `chunked` last, are refused rather than
    /// guessed at: two hops disagreeing about where a request ends is request smuggling.
    pub fn request_framing(&self) -> Result<Framing, &'static str> {
        match (self.transfer_coding, self.content_length) {
            (Some(true), None) => Ok(Framing::Chunked(Chunk::Size)),
            (Some(true), Some(_)) => Err("both Content-Length and Transfer-Encoding"),
            (Some(false), _) => Err("unsupported transfer coding"),
            (None, Some(n)) => Ok(Framing::Length(n)),
            (None, None) => Ok(Framing::Length(0)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty line.
    Trailers,
}

/// Where a body ends, and how far decoding has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Until the peer closes the connection.
    Eof,
    Done,
}

/// One step of [`Framing::decode`].
#[derive(Debug)]
pub(crate) enum Decoded {
    Data(Bytes),
    /// The buffer holds no complete next piece: read more.
    More,
    End,
}

pub(crate) const INVALID_CHUNK: &str = "invalid chunked encoding";

/// Take one CRLF-terminated line from `buf` (without the CRLF), if complete.
fn take_line(buf: &mut BytesMut) -> Result<Option<Bytes>, &'static str> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(at) => {
            let line = buf.split_to(at).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(INVALID_CHUNK),
        None => Ok(None),
    }
}

fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line.split(|b| *b == b';').next().unwrap_or(&[]);
    std::str::from_utf8(digits)
        .ok()
        .map(str::trim)
        .filter(|d| !d.is_empty() && d.len() <= 15)
        .and_then(|d| u64::from_str_radix(d, 16).ok())
        .ok_or(INVALID_CHUNK)
}

impl Framing {
    /// Take the next piece of body off the front of `buf`. Trailer fields are dropped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
        loop {
            match *self {
                Framing::Done => return Ok(Decoded::End),
                Framing::Length(0) => {
                    *self = Framing::Done;
                    return Ok(Decoded::End);
                }
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let rest = left - take as u64;
                    *self = match *self {
                        Framing::Chunked(_) if rest == 0 => Framing::Chunked(Chunk::DataEnd),
                        Framing::Chunked(_) => Framing::Chunked(Chunk::Data(rest)),
                        _ => Framing::Length(rest),
                    };
                    return Ok(Decoded::Data(data));
                }
                Framing::Eof => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    return Ok(Decoded::Data(buf.split().freeze()));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Decoded::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(INVALID_CHUNK);
                    }
                    buf.advance(2);
                    *self = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(state) => {
                    let Some(line) = take_line(buf)? else {
                        return Ok(Decoded::More);
                    };
                    match state {
                        Chunk::Size => {
                            let size = chunk_size(&line)?;
                            *self = Framing::Chunked(if size == 0 {
                                Chunk::Trailers
                            } else {
                                Chunk::Data(size)
                            });
                        }
                        Chunk::Trailers if line.is_empty() => {
                            *self = Framing::Done;
                            return Ok(Decoded::End);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The next piece of a body read from `io` (buffered in `buf`, read in pieces of about
    /// `chunk` bytes): `Some` data, or `None` at the body's end.
    pub fn poll_next<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        buf: &mut BytesMut,
        chunk: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, BodyError>> {
        loop {
            match self.decode(buf) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Ok(Some(data))),
                Ok(Decoded::End) => return Poll::Ready(Ok(None)),
                Ok(Decoded::More) => match ready!(poll_fill(io, buf, chunk, cx)) {
                    Ok(0) if self.at_eof() => return Poll::Ready(Ok(None)),
                    Ok(0) => return Poll::Ready(Err(BodyError::CutOff)),
                    Ok(_) => {}
                    Err(e) => return Poll::Ready(Err(BodyError::Io(e))),
                },
                Err(reason) => {
                    *self = Framing::Done;
                    return Poll::Ready(Err(BodyError::Invalid(reason)));
                }
            }
        }
    }

    /// The peer closed the connection: whether that ends the body properly.
    pub fn at_eof(&mut self) -> bool {
        let ends = matches!(self, Framing::Eof | Framing::Done);
        *self = Framing::Done;
        ends
    }

    pub fn is_end(&self) -> bool {
        matches!(self, Framing::Done | Framing::Length(0))
    }

    /// Bytes left, when known.
    pub fn exact_len(&self) -> Option<u64> {
        match self {
            Framing::Length(n) => Some(*n),
            Framing::Done => Some(0),
            _ => None,
        }
    }
}

/// Why a body could not be read to its end.
#[derive(Debug)]
pub(crate) enum BodyError {
    Io(io::Error),
    /// The peer closed the connection inside the body.
    CutOff,
    /// The framing was broken.
    Invalid(&'static str),
}

/// Read more of `io` into `buf`, keeping room for at least half a `chunk`; `Ok(0)` at end of
/// stream.
pub(crate) fn poll_fill<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    chunk: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < chunk / 2 {
        buf.reserve(chunk);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// The `Content-Length` a field map declares, if it is well formed.
pub(crate) fn length_field(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| parse_decimal(v.as_bytes().trim_ascii()))
}

/// Append one `name: value` field line.
pub(crate) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append a `content-length` field line.
pub(crate) fn push_content_length(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    push_field(out, b"content-length", &digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(mut framing: Framing, input: &[u8]) -> Result<(Vec<u8>, Framing), &'static str> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match framing.decode(&mut buf)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::More | Decoded::End => return Ok((out, framing)),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (out, end) = drain(
            Framing::Chunked(Chunk::Size),
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\nNEXT",
        )
        .unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(end, Framing::Done);
    }

    #[test]
    fn chunked_bodies_stop_for_more_mid_chunk_and_reject_garbage() {
        let (out, state) = drain(Framing::Chunked(Chunk::Size), b"a\r\n0123").unwrap();
        assert_eq!(out, b"0123");
        assert_eq!(state, Framing::Chunked(Chunk::Data(6)));
        assert!(drain(Framing::Chunked(Chunk::Size), b"zz\r\n").is_err());
        assert!(drain(Framing::Chunked(Chunk::Size), b"1\r\nabc").is_err());
        assert!(drain(Framing::Chunked(Chunk::Size), b"10000000000000000\r\n").is_err());
    }

    #[test]
    fn length_bodies_leave_the_next_message_in_the_buffer() {
        let mut buf = BytesMut::from(&b"abcGET"[..]);
        let mut framing = Framing::Length(3);
        assert!(matches!(framing.decode(&mut buf), Ok(Decoded::Data(d)) if d == "abc"));
        assert!(matches!(framing.decode(&mut buf), Ok(Decoded::End)));
        assert_eq!(&buf[..], b"GET");
        assert!(!Framing::Length(2).at_eof());
        assert!(Framing::Eof.at_eof());
    }

    #[test]
    fn request_framing_refuses_ambiguous_bodies() {
        let mut seen = FieldsSeen::default();
        assert_eq!(seen.request_framing(), Ok(Framing::Length(0)));
        assert!(seen.note(b"Content-Length", b"5").unwrap());
        assert_eq!(seen.request_framing(), Ok(Framing::Length(5)));
        assert!(!seen.note(b"transfer-encoding", b"chunked").unwrap());
        assert!(seen.request_framing().is_err());
        assert!(seen.dropped_later(b"content-length"));
        let mut gzip = FieldsSeen::default();
        gzip.note(b"Transfer-Encoding", b"chunked, gzip").unwrap();
        assert!(gzip.request_framing().is_err());
        let mut bad = FieldsSeen::default();
        assert!(bad.note(b"content-length", b"+5").is_err());
        assert!(bad.note(b"content-length", b"5").is_ok());
        assert!(bad.note(b"content-length", b"6").is_err());
    }

    #[test]
    fn content_length_lines_are_written_in_decimal() {
        for n in [0, 7, 1_000, u64::MAX] {
            let mut out = Vec::new();
            push_content_length(&mut out, n);
            assert_eq!(out, format!("content-length: {n}\r\n").into_bytes());
        }
    }

    #[test]
    fn decimals_are_digits_only_and_bounded() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(
            parse_decimal(b"1234567890123456789"),
            Some(1_234_567_890_123_456_789)
        );
        for bad in [
            &b""[..],
            b"+1",
            b"-1",
            b"1 2",
            b"0x10",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hop_by_hop_fields_are_recognised_by_their_bytes() {
        let mut seen = FieldsSeen::default();
        assert!(!seen.note(b"Connection", b"close, X-Hop").unwrap());
        assert!(!seen.note(b"Keep-Alive", b"timeout=5").unwrap());
        assert!(!seen.note(b"upgrade", b"h2c").unwrap());
        assert!(seen.note(b"x-hop", b"1").unwrap());
        assert!(seen.dropped_later(b"X-HOP"));
        assert!(!seen.dropped_later(b"x-other"));
        assert!(
            seen.note(b"Date", b"Sat, 28 Nov 2026 10:00:00 GMT")
                .unwrap()
        );
        assert!(seen.date);
        assert!(!seen.keep_alive(Version::HTTP_11));
    }
}
