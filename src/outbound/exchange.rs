//! HTTP/1.1 on a tunnel's own upstream connection, written and read by the request that uses
//! it.
//!
//! Why not hyper's client connection: it is a second state machine beside the tunnel's
//! server, reached through a channel, and answering through a oneshot; every request crossed
//! both, and its answer head was parsed into a field map, then copied. Here the request's
//! own future writes the request, reads the answer head and hands the body on; an answer of
//! known length up to [`KEPT_BODY_MAX`] is read whole, so the connection is idle again before
//! the answer leaves (measured in `benches/callgrind-outbound.sh`, see BENCHMARKS.md).
//!
//! Scope is what a tunnel's HTTP/1.1 upstream needs: one request at a time, bodies framed by
//! `Content-Length`, chunked or connection close ([`crate::framing`], shared with the inbound
//! listener), interim 1xx answers skipped. h2 upstreams stay with hyper ([`super::own`]).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::forward::UpstreamBody;
use super::upstream::UpstreamStream;
use crate::framing::{
    ExchangeError, FieldsSeen, Framing, MAX_ANSWER_FIELDS, UPSTREAM_READ_CHUNK, answer_status,
    fill_to, is_idempotent, length_field, push_content_length, push_field, read_answer_head,
    write_body,
};
use crate::inbound::forward::BoxError;

/// Request bodies up to this size are read before sending (so the request can be sent again
/// on a new connection); answers of known length up to this size are read before the head
/// is passed on.
const KEPT_BODY_MAX: u64 = 64 * 1024;
/// Initial room for a request head: a homeserver's federation request fits.
const HEAD_CAPACITY: usize = 1024;

/// An HTTP/1.1 upstream connection and what was read from it but not used yet.
pub(crate) struct Conn {
    /// Boxed: the TLS state is over a kilobyte, and the connection moves with every request
    /// (into the request's future, back to the tunnel) while the box is allocated once per
    /// connection.
    io: Box<UpstreamStream>,
    buf: BytesMut,
}

impl Conn {
    pub(crate) fn new(io: UpstreamStream) -> Self {
        Self {
            io: Box::new(io),
            buf: BytesMut::new(),
        }
    }

    /// Whether the idle connection can carry another request (see
    /// [`UpstreamStream::still_open`]).
    pub(crate) fn still_open(&mut self) -> bool {
        self.buf.is_empty() && self.io.still_open()
    }

    /// The connection, for the connector's idle list, if nothing is left unread.
    pub(crate) fn into_idle(self) -> Option<UpstreamStream> {
        self.buf.is_empty().then_some(*self.io)
    }
}

/// Where a connection goes when the answer body that holds it has been read to its end.
pub(crate) type Home = Box<dyn FnOnce(Conn) + Send>;

/// A request ready to be written: its head (with the body, when kept) and a streamed body.
pub(crate) struct Prepared {
    method: Method,
    /// Request line, fields, and a kept body.
    bytes: Vec<u8>,
    /// A body too large to keep, or of unknown length (then sent chunked); taken when sent.
    streamed: Option<(UpstreamBody, bool)>,
    /// Whether the whole request is in `bytes`, so that it can be written again.
    replayable: bool,
}

impl Prepared {
    /// Encode `request` (origin-form target) for `authority`; bodies up to
    /// [`KEPT_BODY_MAX`] are read first.
    pub(crate) async fn new(
        request: Request<UpstreamBody>,
        authority: &str,
    ) -> Result<Self, ExchangeError> {
        let (parts, body) = request.into_parts();
        let declared = length_field(&parts.headers);
        let (kept, streamed) = if body.is_end_stream() {
            (Bytes::new(), None)
        } else {
            match body.size_hint().exact() {
                Some(n) if n <= KEPT_BODY_MAX => (
                    body.collect()
                        .await
                        .map_err(ExchangeError::RequestBody)?
                        .to_bytes(),
                    None,
                ),
                Some(n) => (Bytes::new(), Some((body, Some(n)))),
                None => (Bytes::new(), Some((body, None))),
            }
        };
        let mut bytes = Vec::with_capacity(HEAD_CAPACITY + kept.len());
        bytes.extend_from_slice(parts.method.as_str().as_bytes());
        bytes.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        bytes.extend_from_slice(target.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        encode_fields(&mut bytes, &parts.headers, authority);
        match &streamed {
            None if !kept.is_empty() || declared.is_some() => {
                push_content_length(&mut bytes, kept.len() as u64);
            }
            None => {}
            Some((_, Some(n))) => push_content_length(&mut bytes, *n),
            Some((_, None)) => bytes.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(&kept);
        Ok(Self {
            method: parts.method,
            bytes,
            replayable: streamed.is_none(),
            streamed: streamed.map(|(body, n)| (body, n.is_none())),
        })
    }

    /// Whether it may be sent again after a kept-alive connection turned out to be closed:
    /// its body is kept, and the method allows it, or the failure shows nothing was sent.
    pub(crate) fn retry_after(&self, error: &ExchangeError) -> bool {
        self.replayable
            && error.stale_connection()
            && (is_idempotent(&self.method) || matches!(error, ExchangeError::Write(_)))
    }

    /// Whether a kept-alive connection must be checked before use: only a request that may
    /// be sent again can find out by trying.
    pub(crate) fn needs_open_connection(&self) -> bool {
        !self.replayable || !is_idempotent(&self.method)
    }
}

/// The request's fields, framing left out (this hop sets it) and `Expect` too (the tunnel's
/// server answered it); `Host` from the authority when the request has none.
fn encode_fields(out: &mut Vec<u8>, headers: &HeaderMap, authority: &str) {
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
        {
            continue;
        }
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !headers.contains_key(header::HOST) {
        push_field(out, b"host", authority.as_bytes());
    }
}

/// Write `request` on `conn` and read the answer head. The connection comes back with an
/// answer whose body was read whole; otherwise the body takes it and sends it `home` when it
/// has been read to its end.
pub(crate) async fn exchange(
    mut conn: Conn,
    request: &mut Prepared,
    home: impl FnOnce() -> Home,
) -> Result<(Response<AnswerBody>, Option<Conn>), ExchangeError> {
    let tls = conn.io.tls();
    tls.write_all(&request.bytes)
        .await
        .map_err(ExchangeError::Write)?;
    if let Some((mut body, chunked)) = request.streamed.take() {
        Box::pin(write_body(tls, &mut body, chunked)).await?;
    }
    tls.flush().await.map_err(ExchangeError::Write)?;
    let method = &request.method;
    let head = read_answer_head(
        conn.io.tls(),
        &mut conn.buf,
        |buf| parse_head(buf, method),
        |head| head.response.status(),
    )
    .await?;
    let Head {
        response,
        keep_alive,
        framing,
    } = head;
    if let Framing::Length(n) = framing
        && n <= KEPT_BODY_MAX
    {
        let len = usize::try_from(n).unwrap_or(usize::MAX);
        let Conn { io, buf } = &mut conn;
        if !fill_to(io.tls(), buf, len, UPSTREAM_READ_CHUNK)
            .await
            .map_err(ExchangeError::Read)?
        {
            return Err(ExchangeError::Invalid("answer body cut off"));
        }
        let bytes = conn.buf.split_to(len).freeze();
        let idle = (keep_alive && conn.buf.is_empty()).then_some(conn);
        return Ok((response.map(|()| AnswerBody::whole(bytes)), idle));
    }
    let body = AnswerBody {
        state: State::Streaming {
            conn,
            framing,
            home: keep_alive.then(home),
        },
    };
    Ok((response.map(|()| body), None))
}

/// A parsed answer head.
struct Head {
    /// Status, version and the fields to pass on.
    response: Response<()>,
    /// Whether the connection may be reused after the body.
    keep_alive: bool,
    framing: Framing,
}

/// The length of the head at the front of `buf` (through the empty line that ends it), once
/// it is all there. A bare LF ends lines too, as the parser allows.
fn head_len(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(n) = buf[from..].iter().position(|&b| b == b'\n') {
        let end = from + n + 1;
        match buf.get(end..) {
            Some([b'\n', ..]) => return Some(end + 1),
            Some([b'\r', b'\n', ..]) => return Some(end + 2),
            _ => from = end,
        }
    }
    None
}

/// Parse a complete answer head off the front of `buf`; `None` (and `buf` untouched) when
/// more bytes are needed. One pass over the fields decides framing and persistence and drops
/// the hop-by-hop ones; the values kept share the head's bytes instead of being copied.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, ExchangeError> {
    let Some(len) = head_len(buf) else {
        return Ok(None);
    };
    let head = buf.split_to(len).freeze();
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_ANSWER_FIELDS];
    let mut parsed = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        &head,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Invalid("too many header fields"));
        }
        _ => return Err(ExchangeError::Invalid("malformed answer head")),
    }
    let (status, version) = answer_status(&parsed)?;
    let mut seen = FieldsSeen::default();
    // The fields to pass on, one bit per field.
    let mut kept: u128 = 0;
    for (i, field) in parsed.headers.iter().enumerate() {
        if seen
            .note(field.name.as_bytes(), field.value)
            .map_err(ExchangeError::Invalid)?
        {
            kept |= 1 << i;
        }
    }
    let framing = seen.response_framing(method, status);
    // A body that runs to the close leaves nothing to reuse.
    let keep_alive = seen.keep_alive(version) && framing != Framing::Eof;
    let mut headers = HeaderMap::with_capacity(kept.count_ones() as usize);
    for (i, field) in parsed.headers.iter().enumerate() {
        let name = field.name.as_bytes();
        if kept & (1 << i) == 0 || seen.dropped_later(name) {
            continue;
        }
        let name = HeaderName::from_bytes(name)
            .map_err(|_| ExchangeError::Invalid("invalid header field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice_ref(field.value))
            .map_err(|_| ExchangeError::Invalid("invalid header field value"))?;
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(Head {
        response,
        keep_alive,
        framing,
    }))
}

/// An answer body from the tunnel's own upstream connection.
pub(crate) struct AnswerBody {
    state: State,
}

enum State {
    /// Read whole with the head; `None` once handed on.
    Whole(Option<Bytes>),
    /// Read from the connection as the tunnel's client takes it.
    Streaming {
        conn: Conn,
        framing: Framing,
        /// Where the connection goes at the body's end; `None`: it closes.
        home: Option<Home>,
    },
    Done,
}

impl AnswerBody {
    fn whole(bytes: Bytes) -> Self {
        Self {
            state: State::Whole((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// The body has been read to its end: the connection goes home if it may be reused.
    fn finish(&mut self) {
        if let State::Streaming { conn, home, .. } = std::mem::replace(&mut self.state, State::Done)
            && let Some(home) = home
            && conn.buf.is_empty()
        {
            home(conn);
        }
    }
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let (conn, framing) = match &mut this.state {
            State::Whole(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            State::Done => return Poll::Ready(None),
            State::Streaming { conn, framing, .. } => (conn, framing),
        };
        let Conn { io, buf } = conn;
        match ready!(framing.poll_next(io.tls(), buf, UPSTREAM_READ_CHUNK, cx)) {
            Ok(Some(data)) => {
                // A length-delimited body is over with its last byte, and its reader asks no
                // more once `is_end_stream` says so: the connection goes home now.
                if framing.is_end() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Err(error) => {
                this.state = State::Done;
                let error =
                    error.into_relayed("the remote closed the connection inside the answer body");
                Poll::Ready(Some(Err(error)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Whole(bytes) => bytes.is_none(),
            State::Streaming { framing, .. } => framing.is_end(),
            State::Done => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            State::Streaming { framing, .. } => framing
                .exact_len()
                .map_or_else(SizeHint::default, SizeHint::with_exact),
            State::Done => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Either, Full};
    use std::io;

    async fn prepared(method: Method, body_len: usize) -> Prepared {
        let request = Request::builder()
            .method(method)
            .uri("/_matrix/federation/v1/send/1")
            .body(Either::Right(Full::new(Bytes::from(vec![b'x'; body_len]))))
            .unwrap();
        Prepared::new(request, "hs2.test:8448").await.unwrap()
    }

    fn closed() -> ExchangeError {
        ExchangeError::Closed
    }

    fn write_failed() -> ExchangeError {
        ExchangeError::Write(io::Error::from(io::ErrorKind::BrokenPipe))
    }

    #[tokio::test]
    async fn only_requests_kept_whole_are_sent_again() {
        let get = prepared(Method::GET, 0).await;
        assert!(get.retry_after(&closed()));
        assert!(!get.needs_open_connection());
        assert!(!get.retry_after(&ExchangeError::Invalid("answer cut off")));

        // Not idempotent: again only when it provably never left.
        let post = prepared(Method::POST, 10).await;
        assert!(!post.retry_after(&closed()));
        assert!(post.retry_after(&write_failed()));
        assert!(post.needs_open_connection());
        assert!(
            post.bytes
                .ends_with(b"content-length: 10\r\n\r\nxxxxxxxxxx")
        );

        // Streamed: its body is gone once sent, whatever the method.
        let mut put = prepared(Method::PUT, 100_000).await;
        assert!(put.needs_open_connection());
        assert!(put.streamed.take().is_some());
        assert!(!put.retry_after(&closed()));
        assert!(!put.retry_after(&write_failed()));
    }

    #[test]
    fn a_head_ends_at_its_empty_line_whatever_the_line_ends() {
        assert_eq!(head_len(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"), Some(25));
        assert_eq!(head_len(b"HTTP/1.1 200 OK\nA: b\n\nbody"), Some(22));
        assert_eq!(head_len(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
        assert_eq!(head_len(b""), None);
    }

    #[test]
    fn answer_fields_are_kept_as_sent_without_the_hop_by_hop_ones() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: x-hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nX-Kept: a b\r\n\r\n{}"[..],
        );
        let head = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(&buf[..], b"{}");
        assert!(head.keep_alive);
        assert_eq!(head.framing, Framing::Length(2));
        let fields = head.response.headers();
        assert_eq!(fields["x-kept"], "a b");
        assert_eq!(fields["content-length"], "2");
        for gone in ["connection", "x-hop", "keep-alive"] {
            assert!(fields.get(gone).is_none(), "{gone}");
        }
        let sent = &b"HTTP/1.1 200 OK\r\nContent-"[..];
        let mut partial = BytesMut::from(sent);
        assert!(parse_head(&mut partial, &Method::GET).unwrap().is_none());
        assert_eq!(&partial[..], sent, "an incomplete head stays in the buffer");
        let mut broken = BytesMut::from(&b"HTTP/1.1 2x0 OK\r\n\r\n"[..]);
        assert!(matches!(
            parse_head(&mut broken, &Method::GET),
            Err(ExchangeError::Invalid(_))
        ));
    }
}
