//! HTTP/1.1 message framing (RFC 9112 §6) wherever timproxy speaks HTTP/1.1 itself: client
//! requests read by the inbound HTTP/1.1 server, homeserver answers read by the inbound upstream
//! client, and remote answers read inside intercepted tunnels ([`crate::outbound`]).
//!
//! One pass over a head's fields decides framing and persistence and drops the hop-by-hop
//! fields; the body decoder works on a connection's read buffer, and [`Framing::poll_next`]
//! reads more when it runs dry. The field writers at the end serve every head this proxy
//! encodes: requests upstream and answers to clients.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode, Version};
use http_body::Body as HttpBody;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::inbound::forward::BoxError;

/// Most chunk-extension bytes accepted in one body, over all its chunk-size lines. Extensions
/// carry nothing this proxy or the homeserver uses, and no body limit counts them: without a
/// cap a client could send megabytes of them.
pub(crate) const MAX_EXTENSIONS: u16 = 4096;
/// Most trailer bytes accepted in one body (the trailer fields are dropped).
pub(crate) const MAX_TRAILERS: u16 = 4096;
/// Most hex digits in a chunk size: 16 fill a `u64`.
const MAX_SIZE_DIGITS: usize = 16;

/// What the fields of a message head say about framing and the connection.
///
/// Names are compared as bytes: building a `HeaderName` for every field just to recognise a
/// handful of them cost more than the comparisons.
#[derive(Default)]
pub(crate) struct FieldsSeen {
    /// The transfer codings named, over all `Transfer-Encoding` fields.
    pub codings: Codings,
    pub content_length: Option<u64>,
    pub date: bool,
    /// The CORS fields present (bits from `cors::field_bit`).
    pub cors_fields: u8,
    close_token: bool,
    keep_alive_token: bool,
    /// `Connection` names a field that frames the message (`Host`, `Content-Length`,
    /// `Transfer-Encoding`): a client asking a hop to drop it wants the hops to disagree.
    names_framing_field: bool,
    /// Other fields the `Connection` field names (lowercase): hop-by-hop too.
    connection_named: Vec<Vec<u8>>,
}

/// The `Transfer-Encoding` list of a head, read across all its fields (RFC 9112 §6.1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Codings {
    /// A `Transfer-Encoding` field is present, even an empty one.
    pub present: bool,
    /// Whether the last coding named is `chunked`, once any coding is named.
    pub last_chunked: Option<bool>,
    /// How often `chunked` is named.
    chunked: u8,
    /// A coding other than `chunked` is named.
    other: bool,
    /// A list element is not a token.
    malformed: bool,
}

impl Codings {
    fn note(&mut self, value: &[u8]) {
        self.present = true;
        for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if coding.is_empty() {
                continue;
            }
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            if chunked {
                self.chunked = self.chunked.saturating_add(1);
            } else if is_token(
                coding
                    .split(|b| *b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii(),
            ) {
                // A coding name, perhaps with parameters: well formed, but not implemented.
                self.other = true;
            } else {
                self.malformed = true;
            }
            self.last_chunked = Some(chunked);
        }
    }
}

/// Why a request head's framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 400: the framing is malformed or ambiguous.
    Malformed(&'static str),
    /// 501: a transfer coding other than `chunked` (RFC 9112 §6.1).
    UnsupportedCoding,
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A non-empty run of `tchar`s.
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
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

/// Whether `name` (any case) is `known` (lower case). Called for every field of every head
/// both listeners read, where names nearly always arrive in lower case or with a few capitals:
/// a byte equal to its lowercase form is settled by one comparison, where `eq_ignore_ascii_case`
/// lowercases both sides of every byte.
fn is(name: &[u8], known: &str) -> bool {
    name.len() == known.len()
        && name
            .iter()
            .zip(known.as_bytes())
            .all(|(&b, &k)| b == k || (k.is_ascii_lowercase() && b | 0x20 == k))
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
            self.codings.note(value);
            return Ok(false);
        }
        if is(name, "connection") {
            for token in crate::hop_by_hop::connection_tokens(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    self.close_token = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive_token = true;
                } else {
                    self.names_framing_field |= is(token, "host")
                        || is(token, "content-length")
                        || is(token, "transfer-encoding");
                    self.connection_named.push(token.to_ascii_lowercase());
                }
            }
            return Ok(false);
        }
        if is(name, "date") {
            self.date = true;
            return Ok(true);
        }
        self.cors_fields |= crate::inbound::cors::field_bit(name);
        Ok(!crate::hop_by_hop::is_hop_by_hop_name(name))
    }

    /// Whether a field that [`FieldsSeen::note`] kept is to be dropped after all, once the
    /// whole head has been seen: named by `Connection`, or a `Content-Length` beside
    /// `Transfer-Encoding` (RFC 9112 §6.3).
    pub fn dropped_later(&self, name: &[u8]) -> bool {
        (self.codings.last_chunked.is_some() && is(name, "content-length"))
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
        match (self.codings.last_chunked, self.content_length) {
            (Some(true), _) => Framing::chunked(),
            // A transfer coding other than chunked last: the body runs to the close.
            (Some(false), _) | (None, None) => Framing::Eof,
            (None, Some(n)) => Framing::Length(n),
        }
    }

    /// How a request's body is delimited (RFC 9112 §6.3). Whatever two hops could read
    /// differently is refused rather than guessed at, since two hops disagreeing about where a
    /// request ends is request smuggling: both `Content-Length` and `Transfer-Encoding` (RFC
    /// 9112 §6.3 lets a server refuse it), an empty or malformed coding list, `chunked` not
    /// last or named twice, chunked on HTTP/1.0 (which has no chunked coding), and a
    /// `Connection` field naming a framing field. Codings other than `chunked` are not
    /// implemented (501).
    pub fn request_framing(&self, version: Version) -> Result<Framing, Refusal> {
        if self.names_framing_field {
            return Err(Refusal::Malformed("Connection names a framing field"));
        }
        let codings = self.codings;
        if !codings.present {
            return Ok(Framing::Length(self.content_length.unwrap_or(0)));
        }
        let refused = if self.content_length.is_some() {
            "both Content-Length and Transfer-Encoding"
        } else if version == Version::HTTP_10 {
            "Transfer-Encoding on HTTP/1.0"
        } else if codings.malformed || codings.last_chunked.is_none() {
            "empty or malformed Transfer-Encoding"
        } else if codings.chunked > 1 {
            "chunked named twice"
        } else if codings.chunked == 1 && codings.last_chunked == Some(false) {
            "chunked is not the last transfer coding"
        } else if codings.other {
            return Err(Refusal::UnsupportedCoding);
        } else {
            return Ok(Framing::chunked());
        };
        Err(Refusal::Malformed(refused))
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
    /// After the last chunk: trailer lines up to an empty line, this many trailer bytes so far.
    Trailers(u16),
}

/// Where a body ends, and how far decoding has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// This many bytes left.
    Length(u64),
    /// Chunked, and the chunk-extension bytes read so far.
    Chunked(Chunk, u16),
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
const TOO_MUCH_EXTENSION: &str = "chunk extensions too long";
const TOO_MUCH_TRAILER: &str = "trailer fields too long";

/// Take one CRLF-terminated line from `buf` (without the CRLF), if complete. A line longer
/// than `max` is refused with `too_long`, even before its end arrives; a bare LF or CR, or any
/// other control character but HTAB, is refused.
fn take_line(
    buf: &mut BytesMut,
    max: usize,
    too_long: &'static str,
) -> Result<Option<Bytes>, &'static str> {
    let Some(at) = memchr::memchr(b'\n', buf) else {
        // The line's CR may already be here; its characters are checked once it is complete.
        return match buf.len() > max.saturating_add(1) {
            true => Err(too_long),
            false => Ok(None),
        };
    };
    if at == 0 || buf[at - 1] != b'\r' {
        return Err(INVALID_CHUNK);
    }
    if at - 1 > max {
        return Err(too_long);
    }
    let line = buf.split_to(at - 1).freeze();
    buf.advance(2);
    if line.iter().any(|&b| b != b'\t' && b.is_ascii_control()) {
        return Err(INVALID_CHUNK);
    }
    Ok(Some(line))
}

/// A chunk-size line: 1 to 16 hex digits, then nothing or extensions (`[BWS] ";" ...`); a sign,
/// a `0x` prefix or surrounding whitespace is refused. Returns the size and the extension bytes.
fn chunk_size(line: &[u8]) -> Result<(u64, usize), &'static str> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > MAX_SIZE_DIGITS {
        return Err(INVALID_CHUNK);
    }
    let (hex, extensions) = line.split_at(digits);
    let after_bws = extensions.iter().find(|b| **b != b' ' && **b != b'\t');
    if !extensions.is_empty() && after_bws != Some(&b';') {
        return Err(INVALID_CHUNK);
    }
    let size = hex.iter().fold(0u64, |n, &b| {
        // Hex digits only (checked above), at most 16 of them: no overflow.
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => b - b'A' + 10,
        };
        (n << 4) | u64::from(digit)
    });
    Ok((size, extensions.len()))
}

/// A trailer line is a field: a token name, a colon, a value (control characters are refused
/// by [`take_line`]).
fn is_trailer_field(line: &[u8]) -> bool {
    line.iter()
        .position(|b| *b == b':')
        .is_some_and(|colon| is_token(&line[..colon]))
}

impl Framing {
    /// A chunked body, before its first chunk.
    pub fn chunked() -> Framing {
        Framing::Chunked(Chunk::Size, 0)
    }

    /// Take the next piece of body off the front of `buf`. Trailer fields are dropped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
        loop {
            match *self {
                Framing::Done => return Ok(Decoded::End),
                Framing::Length(0) => {
                    *self = Framing::Done;
                    return Ok(Decoded::End);
                }
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left), _) => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let rest = left - take as u64;
                    *self = match *self {
                        Framing::Chunked(_, ext) if rest == 0 => {
                            Framing::Chunked(Chunk::DataEnd, ext)
                        }
                        Framing::Chunked(_, ext) => Framing::Chunked(Chunk::Data(rest), ext),
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
                Framing::Chunked(Chunk::DataEnd, ext) => {
                    if buf.len() < 2 {
                        return match buf.first().copied() {
                            None | Some(b'\r') => Ok(Decoded::More),
                            Some(_) => Err(INVALID_CHUNK),
                        };
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(INVALID_CHUNK);
                    }
                    buf.advance(2);
                    *self = Framing::Chunked(Chunk::Size, ext);
                }
                Framing::Chunked(Chunk::Size, ext) => {
                    let room = usize::from(MAX_EXTENSIONS - ext);
                    let Some(line) = take_line(buf, MAX_SIZE_DIGITS + room, TOO_MUCH_EXTENSION)?
                    else {
                        return Ok(Decoded::More);
                    };
                    let (size, extension) = chunk_size(&line)?;
                    if extension > room {
                        return Err(TOO_MUCH_EXTENSION);
                    }
                    // At most MAX_EXTENSIONS in all (checked just above).
                    let ext = ext + extension as u16;
                    *self = Framing::Chunked(
                        if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        },
                        ext,
                    );
                }
                Framing::Chunked(Chunk::Trailers(spent), ext) => {
                    let room = usize::from(MAX_TRAILERS - spent);
                    let Some(line) = take_line(buf, room, TOO_MUCH_TRAILER)? else {
                        return Ok(Decoded::More);
                    };
                    if line.is_empty() {
                        *self = Framing::Done;
                        return Ok(Decoded::End);
                    }
                    // Each line costs its CRLF too, so endless empty-looking input still ends.
                    let cost = line.len() + 2;
                    if cost > room {
                        return Err(TOO_MUCH_TRAILER);
                    }
                    if !is_trailer_field(&line) {
                        return Err(INVALID_CHUNK);
                    }
                    *self = Framing::Chunked(Chunk::Trailers(spent + cost as u16), ext);
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

impl BodyError {
    /// As the error of a relayed body; `cut_off` tells who closed the connection inside it.
    pub(crate) fn into_relayed(self, cut_off: &'static str) -> BoxError {
        match self {
            BodyError::Io(e) => Box::new(e),
            BodyError::CutOff => Box::new(io::Error::new(io::ErrorKind::UnexpectedEof, cut_off)),
            BodyError::Invalid(reason) => {
                Box::new(io::Error::new(io::ErrorKind::InvalidData, reason))
            }
        }
    }
}

/// Read more of `io` into `buf` until it holds `len` bytes; `false` when the peer closed the
/// connection first.
pub(crate) async fn fill_to<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    len: usize,
    chunk: usize,
) -> io::Result<bool> {
    while buf.len() < len {
        if std::future::poll_fn(|cx| poll_fill(io, buf, chunk, cx)).await? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Largest answer head accepted from an upstream server.
pub(crate) const MAX_ANSWER_HEAD: usize = 64 * 1024;
/// Most answer header fields accepted (at most 128: the head parsers keep one bit per field).
pub(crate) const MAX_ANSWER_FIELDS: usize = 128;
const _: () = assert!(MAX_ANSWER_FIELDS <= u128::BITS as usize);
/// Read granularity on upstream connections.
pub(crate) const UPSTREAM_READ_CHUNK: usize = 16 * 1024;

/// Why an HTTP/1.1 exchange on an upstream connection (the homeserver's, or a remote
/// server's inside a tunnel) failed once the connection was there.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    #[error("sending the request failed: {0}")]
    Write(io::Error),
    #[error("reading the answer failed: {0}")]
    Read(io::Error),
    #[error("connection closed before an answer")]
    Closed,
    #[error("invalid answer: {0}")]
    Invalid(&'static str),
    #[error("reading the request body failed: {0}")]
    RequestBody(BoxError),
}

impl ExchangeError {
    /// Failures that mean a kept-alive connection was already dead before this request.
    pub(crate) fn stale_connection(&self) -> bool {
        matches!(
            self,
            ExchangeError::Write(_) | ExchangeError::Read(_) | ExchangeError::Closed
        )
    }
}

/// Read an answer head from `io` into `buf`: `parse` takes a complete head off the front of
/// `buf` (`None` while more bytes are needed), `status` tells its status. Interim 1xx
/// answers are skipped; a protocol switch is refused, as nothing here asked for one.
pub(crate) async fn read_answer_head<I, H>(
    io: &mut I,
    buf: &mut BytesMut,
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<H>, ExchangeError>,
    status: impl Fn(&H) -> StatusCode,
) -> Result<H, ExchangeError>
where
    I: AsyncRead + Unpin,
{
    let mut received_any = false;
    loop {
        if let Some(head) = parse(buf)? {
            let status = status(&head);
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(ExchangeError::Invalid("unexpected protocol switch"));
            }
            if status.is_informational() {
                continue;
            }
            return Ok(head);
        }
        if buf.len() >= MAX_ANSWER_HEAD {
            return Err(ExchangeError::Invalid("answer head too large"));
        }
        let n = std::future::poll_fn(|cx| poll_fill(io, buf, UPSTREAM_READ_CHUNK, cx))
            .await
            .map_err(ExchangeError::Read)?;
        if n == 0 {
            return Err(if received_any {
                ExchangeError::Invalid("answer cut off")
            } else {
                ExchangeError::Closed
            });
        }
        received_any = true;
    }
}

/// The status and version of a parsed answer head.
pub(crate) fn answer_status(
    parsed: &httparse::Response<'_, '_>,
) -> Result<(StatusCode, Version), ExchangeError> {
    let status = parsed
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or(ExchangeError::Invalid("invalid status code"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    Ok((status, version))
}

/// Write `body` to `io` as it comes, one write per piece, chunk-framed when `chunked`; its
/// trailers are not forwarded.
pub(crate) async fn write_body<W, B>(
    io: &mut W,
    body: &mut B,
    chunked: bool,
) -> Result<(), ExchangeError>
where
    W: AsyncWrite + Unpin,
    B: HttpBody<Data = Bytes, Error = BoxError> + Unpin,
{
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(ExchangeError::RequestBody)?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let mut piece = Vec::with_capacity(data.len() + 20);
        if chunked {
            piece.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        piece.extend_from_slice(&data);
        if chunked {
            piece.extend_from_slice(b"\r\n");
        }
        io.write_all(&piece).await.map_err(ExchangeError::Write)?;
    }
    if chunked {
        io.write_all(b"0\r\n\r\n")
            .await
            .map_err(ExchangeError::Write)?;
    }
    Ok(())
}

/// Read more of `io` into `buf`, keeping room for at least half a `chunk`; `Ok(0)` at end of
/// stream.
pub(crate) fn poll_fill<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    chunk: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() == 0 {
        // The common case (a connection's buffer is given back between messages), and a
        // fresh allocation costs half of what `reserve` pays to find out that it needs one.
        *buf = BytesMut::with_capacity(chunk);
    } else if buf.capacity() - buf.len() < chunk / 2 {
        buf.reserve(chunk);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Methods a client may repeat without changing the outcome (RFC 9110 §9.2.2): what a proxy
/// may send again when a kept-alive connection turns out to be closed.
pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
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

    /// Field names match in any case, and only the letters fold: `-` and every other byte
    /// must be the same, even where setting bit 5 would make them equal (CR and `-`).
    #[test]
    fn field_names_match_case_insensitively_and_exactly() {
        for name in [
            "content-length",
            "Content-Length",
            "CONTENT-LENGTH",
            "cOnTeNt-LeNgTh",
        ] {
            assert!(is(name.as_bytes(), "content-length"), "{name}");
        }
        for name in [
            &b"content_length"[..],
            b"content\rlength",
            b"content-lengt",
            b"content-lengths",
            b"kontent-length",
        ] {
            assert!(!is(name, "content-length"), "{}", name.escape_ascii());
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (out, end) = drain(
            Framing::chunked(),
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\nNEXT",
        )
        .unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(end, Framing::Done);
    }

    #[test]
    fn chunked_bodies_stop_for_more_mid_chunk_and_reject_garbage() {
        let (out, state) = drain(Framing::chunked(), b"a\r\n0123").unwrap();
        assert_eq!(out, b"0123");
        assert_eq!(state, Framing::Chunked(Chunk::Data(6), 0));
        assert!(drain(Framing::chunked(), b"zz\r\n").is_err());
        assert!(drain(Framing::chunked(), b"1\r\nabc").is_err());
        assert!(drain(Framing::chunked(), b"10000000000000000\r\n").is_err());
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
        assert_eq!(
            seen.request_framing(Version::HTTP_11),
            Ok(Framing::Length(0))
        );
        assert!(seen.note(b"Content-Length", b"5").unwrap());
        assert_eq!(
            seen.request_framing(Version::HTTP_11),
            Ok(Framing::Length(5))
        );
        assert!(!seen.note(b"transfer-encoding", b"chunked").unwrap());
        assert!(seen.request_framing(Version::HTTP_11).is_err());
        assert!(seen.dropped_later(b"content-length"));
        let mut gzip = FieldsSeen::default();
        gzip.note(b"Transfer-Encoding", b"chunked, gzip").unwrap();
        assert!(gzip.request_framing(Version::HTTP_11).is_err());
        let mut bad = FieldsSeen::default();
        assert!(bad.note(b"content-length", b"+5").is_err());
        assert!(bad.note(b"content-length", b"5").is_ok());
        assert!(bad.note(b"content-length", b"6").is_err());
    }

    fn request_framing_of(fields: &[(&str, &str)], version: Version) -> Result<Framing, Refusal> {
        let mut seen = FieldsSeen::default();
        for (name, value) in fields {
            seen.note(name.as_bytes(), value.as_bytes())
                .map_err(Refusal::Malformed)?;
        }
        seen.request_framing(version)
    }

    #[test]
    fn transfer_codings_other_than_one_final_chunked_are_refused() {
        let te = |value| request_framing_of(&[("Transfer-Encoding", value)], Version::HTTP_11);
        for ok in ["chunked", "Chunked", " chunked ", "chunked,", ", chunked"] {
            assert_eq!(te(ok), Ok(Framing::chunked()), "{ok:?}");
        }
        for malformed in [
            "",
            " ",
            ",",
            " , ,",
            "chunked, gzip",
            "chunked, chunked",
            "chunked,chunked",
            "chun ked",
            "\"chunked\"",
        ] {
            assert!(
                matches!(te(malformed), Err(Refusal::Malformed(_))),
                "{malformed:?}: {:?}",
                te(malformed)
            );
        }
        for unsupported in ["gzip", "gzip, chunked", "x-custom, chunked", "deflate"] {
            assert_eq!(
                te(unsupported),
                Err(Refusal::UnsupportedCoding),
                "{unsupported:?}"
            );
        }
        // Codings are one list over all fields.
        let two = [
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ];
        assert!(matches!(
            request_framing_of(&two, Version::HTTP_11),
            Err(Refusal::Malformed(_))
        ));
        let split = [
            ("transfer-encoding", "gzip"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(
            request_framing_of(&split, Version::HTTP_11),
            Err(Refusal::UnsupportedCoding)
        );
        let empty_then_length = [("transfer-encoding", ""), ("content-length", "3")];
        assert!(request_framing_of(&empty_then_length, Version::HTTP_11).is_err());
        let old = [("transfer-encoding", "chunked")];
        assert!(matches!(
            request_framing_of(&old, Version::HTTP_10),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn connection_naming_a_framing_field_is_refused() {
        for named in ["host", "Content-Length", "close, transfer-encoding"] {
            let fields = [("connection", named), ("content-length", "0")];
            assert!(
                matches!(
                    request_framing_of(&fields, Version::HTTP_11),
                    Err(Refusal::Malformed(_))
                ),
                "{named:?}"
            );
        }
        let fine = [("connection", "keep-alive, x-hop")];
        assert_eq!(
            request_framing_of(&fine, Version::HTTP_11),
            Ok(Framing::Length(0))
        );
    }

    #[test]
    fn chunk_sizes_are_bare_hex_digits() {
        for bad in [
            &b"+2\r\nab\r\n0\r\n\r\n"[..],
            b"-2\r\nab\r\n0\r\n\r\n",
            b" 2 \r\nab\r\n0\r\n\r\n",
            b" 2\r\nab\r\n0\r\n\r\n",
            b"2 \r\nab\r\n0\r\n\r\n",
            b"2\x0b\r\nab\r\n0\r\n\r\n",
            b"0x2\r\nab\r\n0\r\n\r\n",
            b"00000000000000002\r\nab\r\n0\r\n\r\n",
            b"\r\n",
            b"2\nab\r\n0\r\n\r\n",
            b"2;a\nb\r\nab\r\n0\r\n\r\n",
            b"2;a\rb\r\nab\r\n0\r\n\r\n",
            b"2;a\0\r\nab\r\n0\r\n\r\n",
            b"2\r\nab\n0\r\n\r\n",
            b"2\r\nab\r\n0\r\nx-t: 1\n\r\n",
            b"2\r\nab\r\n0\r\nnot a field\r\n\r\n",
            b"2\r\nab\r\n0\r\n\n",
        ] {
            assert!(
                drain(Framing::chunked(), bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"2\r\nab\r\n0\r\n\r\n"[..],
            b"0000000000000002\r\nab\r\n0\r\n\r\n",
            b"2 ;ext\r\nab\r\n0;last=\"q\"\r\n\r\n",
            b"2\t;a=b\r\nab\r\n0\r\nx-t: 1\r\ny: \t2\r\n\r\n",
        ] {
            let (out, end) = drain(Framing::chunked(), good).unwrap();
            assert_eq!(
                (out.as_slice(), end),
                (&b"ab"[..], Framing::Done),
                "{good:?}"
            );
        }
        assert!(
            drain(Framing::chunked(), b"FFFFFFFFFFFFFFFF\r\n").is_ok(),
            "16 digits fit a u64"
        );
    }

    #[test]
    fn chunk_extensions_and_trailers_are_capped_per_body() {
        let ext = "x".repeat(1000);
        let mut body = String::new();
        for _ in 0..4 {
            body.push_str(&format!("1;{ext}\r\na\r\n"));
        }
        let (out, _) = drain(Framing::chunked(), body.as_bytes()).unwrap();
        assert_eq!(out, b"aaaa", "4 x 1001 extension bytes fit");
        body.push_str(&format!("1;{ext}\r\na\r\n"));
        assert_eq!(
            drain(Framing::chunked(), body.as_bytes()).unwrap_err(),
            TOO_MUCH_EXTENSION
        );
        // One line too long is refused before its end arrives.
        let endless = format!("1;{}", "x".repeat(usize::from(MAX_EXTENSIONS) + 100));
        assert_eq!(
            drain(Framing::chunked(), endless.as_bytes()).unwrap_err(),
            TOO_MUCH_EXTENSION
        );
        let field = format!("x-t: {}\r\n", "v".repeat(1000));
        let trailers = |n: usize| format!("0\r\n{}\r\n", field.repeat(n));
        assert!(drain(Framing::chunked(), trailers(4).as_bytes()).is_ok());
        assert_eq!(
            drain(Framing::chunked(), trailers(5).as_bytes()).unwrap_err(),
            TOO_MUCH_TRAILER
        );
    }

    #[test]
    fn chunked_decoding_waits_at_every_split() {
        let body = b"5;e=1\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n";
        for at in 0..=body.len() {
            let mut framing = Framing::chunked();
            let mut buf = BytesMut::from(&body[..at]);
            let mut out = Vec::new();
            let mut fed = false;
            loop {
                match framing.decode(&mut buf).unwrap() {
                    Decoded::Data(d) => out.extend_from_slice(&d),
                    Decoded::More if !fed => {
                        buf.extend_from_slice(&body[at..]);
                        fed = true;
                    }
                    Decoded::More => panic!("stuck at split {at}"),
                    Decoded::End => break,
                }
            }
            assert_eq!(out, b"hello world", "split {at}");
        }
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
