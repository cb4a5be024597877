//! HTTP/1.1 to the homeserver, driven from the request's own task.
//!
//! Why not a general-purpose client: every proxied request crossed from the connection task to
//! a pooled client's connection task and back (channels, wake-ups, a pool lock), and on the
//! 2-vCPU reference machine that hand-off cost more than the proxying itself. Here the task that
//! serves the client also writes the request to a pooled keep-alive connection and reads the
//! answer; only a body too large to buffer streams afterwards, from the same connection, which
//! goes back to the pool when the body ends.
//!
//! Scope is exactly what the inbound path needs: plain HTTP/1.1 to one homeserver, bodies framed
//! by `Content-Length`, chunked or connection close; requests whose body is small enough to keep
//! are retried once on a fresh connection when a pooled one turns out to be closed.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::answer::{Answer, RawFields};
use super::forward::{Body, BoxError, full};
use crate::framing::{
    ExchangeError, FieldsSeen, Framing, MAX_ANSWER_FIELDS, UPSTREAM_READ_CHUNK, answer_status,
    fill_to, is_idempotent, length_field, push_content_length, push_field, read_answer_head,
    write_body,
};

/// Request bodies up to this size are read before sending, so a request can be retried on a
/// new connection; answers up to this size are read before the head is passed on, so head and
/// body reach the client in one write.
pub const BUFFERED_BODY_MAX: u64 = 64 * 1024;
/// Room left in an answer's [`RawFields`] block for the fields every answer gets: the CORS
/// fields ([`super::cors`]), when the homeserver sent none of them.
const ROOM_FOR_ADDED_FIELDS: usize = super::cors::MAX_ADDED_LEN;
/// Initial room for a request head sent upstream: a client's fields plus the forwarding ones
/// this hop adds fit without growing the buffer.
const HEAD_CAPACITY: usize = 1024;

/// Why an exchange with the homeserver failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("connecting timed out")]
    ConnectTimeout,
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

impl UpstreamError {
    /// Failures that mean a pooled connection was already dead before this request.
    fn stale_connection(&self) -> bool {
        matches!(self, UpstreamError::Exchange(e) if e.stale_connection())
    }
}

struct Conn {
    io: TcpStream,
    /// Bytes read but not consumed yet; no capacity while the connection is parked.
    buf: BytesMut,
}

struct IdleConn {
    conn: Conn,
    since: Instant,
}

struct PoolInner {
    /// `host:port` to connect to.
    addr: String,
    idle: Mutex<Vec<IdleConn>>,
    max_idle: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
}

impl PoolInner {
    /// The most recently used live connection, if any (LIFO keeps few connections warm).
    fn take(&self) -> Option<Conn> {
        let mut expired = Vec::new();
        let found = {
            let Ok(mut idle) = self.idle.lock() else {
                return None;
            };
            let mut found = None;
            while let Some(entry) = idle.pop() {
                if entry.since.elapsed() < self.idle_timeout {
                    found = Some(entry.conn);
                    break;
                }
                expired.push(entry);
            }
            found
        };
        drop(expired);
        found
    }

    /// Like [`PoolInner::take`], but skips connections the homeserver has closed meanwhile
    /// (one non-blocking read each), for requests that cannot simply be sent again.
    fn take_open(&self) -> Option<Conn> {
        while let Some(conn) = self.take() {
            let mut probe = [0u8; 1];
            match conn.io.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(conn),
                // Closed, reset, or unexpected bytes: not usable.
                _ => {}
            }
        }
        None
    }

    /// Keep `conn` for the next request. Its read buffer is given back first (the next read
    /// allocates one): with `max_idle_per_host` connections parked, their buffers were 16 KiB
    /// each.
    fn put(&self, mut conn: Conn) {
        if conn.buf.is_empty() {
            conn.buf = BytesMut::new();
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.max_idle
        {
            idle.push(IdleConn {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let io = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
            .map_err(UpstreamError::Connect)?;
        let _ = io.set_nodelay(true);
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(UPSTREAM_READ_CHUNK),
        })
    }
}

/// Keep-alive connections to the homeserver; cheap to clone.
#[derive(Clone)]
pub(crate) struct UpstreamPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

/// The request body as it will be sent.
enum Outgoing {
    /// Small or empty: kept, so the request can be sent again.
    Kept(Bytes),
    /// Streamed with a known length.
    Sized(Body, u64),
    /// Streamed with chunked framing.
    Chunked(Body),
}

impl UpstreamPool {
    pub(crate) fn new(
        addr: String,
        max_idle: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                addr,
                idle: Mutex::new(Vec::new()),
                max_idle,
                idle_timeout,
                connect_timeout,
            }),
        }
    }

    /// Send one request (`target` is the origin-form request target, byte for byte; `extra`
    /// fields follow the request's own) and return the answer. Bodies of answers up to
    /// [`BUFFERED_BODY_MAX`] are complete; larger ones stream from the connection. The answer's
    /// fields stay as received (`RawFields`), without the hop-by-hop ones.
    pub(crate) async fn send(
        &self,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        extra: &[Option<(HeaderName, HeaderValue)>],
        body: Body,
    ) -> Result<Answer, UpstreamError> {
        let declared = length_field(headers);
        let outgoing = if body.is_end_stream() {
            Outgoing::Kept(Bytes::new())
        } else {
            match body.size_hint().exact() {
                Some(n) if n <= BUFFERED_BODY_MAX => Outgoing::Kept(
                    body.collect()
                        .await
                        .map_err(ExchangeError::RequestBody)?
                        .to_bytes(),
                ),
                Some(n) => Outgoing::Sized(body, n),
                None => Outgoing::Chunked(body),
            }
        };
        // Head and a kept body go out in one write, from one allocation.
        let kept = match &outgoing {
            Outgoing::Kept(bytes) => bytes.len(),
            _ => 0,
        };
        let mut head = Vec::with_capacity(HEAD_CAPACITY + kept);
        encode_head(
            &mut head, method, target, headers, extra, &outgoing, declared,
        );
        let chunked = matches!(outgoing, Outgoing::Chunked(_));
        match outgoing {
            Outgoing::Kept(bytes) => {
                head.extend_from_slice(&bytes);
                // A request that must not run twice is only retried if it provably never
                // left; instead it gets a pooled connection that is checked to be still open.
                let idempotent = is_idempotent(method);
                let pooled = if idempotent {
                    self.inner.take()
                } else {
                    self.inner.take_open()
                };
                // Rare awaits (a new connection, a retry, streamed bodies) are boxed: inline
                // they would enlarge every request's future, which is moved on each await.
                let (conn, reused) = match pooled {
                    Some(conn) => (conn, true),
                    None => (Box::pin(self.inner.connect()).await?, false),
                };
                match self.exchange_kept(conn, &head, method).await {
                    Err(e)
                        if reused
                            && (idempotent
                                || matches!(
                                    e,
                                    UpstreamError::Exchange(ExchangeError::Write(_))
                                ))
                            && e.stale_connection() =>
                    {
                        tracing::debug!(error = %e, "pooled homeserver connection was closed; retrying on a new one");
                        Box::pin(async {
                            let conn = self.inner.connect().await?;
                            self.exchange_kept(conn, &head, method).await
                        })
                        .await
                    }
                    other => other,
                }
            }
            Outgoing::Sized(body, _) | Outgoing::Chunked(body) => {
                // A streamed body cannot be sent twice, so the pooled connection is checked
                // before, whatever the method.
                Box::pin(async {
                    let conn = match self.inner.take_open() {
                        Some(conn) => conn,
                        None => self.inner.connect().await?,
                    };
                    self.exchange_streamed(conn, &head, body, chunked, method)
                        .await
                })
                .await
            }
        }
    }

    async fn exchange_kept(
        &self,
        mut conn: Conn,
        request: &[u8],
        method: &Method,
    ) -> Result<Answer, UpstreamError> {
        conn.io
            .write_all(request)
            .await
            .map_err(ExchangeError::Write)?;
        self.answer(conn, method).await
    }

    async fn exchange_streamed(
        &self,
        mut conn: Conn,
        head: &[u8],
        mut body: Body,
        chunked: bool,
        method: &Method,
    ) -> Result<Answer, UpstreamError> {
        conn.io
            .write_all(head)
            .await
            .map_err(ExchangeError::Write)?;
        write_body(&mut conn.io, &mut body, chunked).await?;
        self.answer(conn, method).await
    }

    /// Read the answer head (skipping interim 1xx answers) and set up its body.
    async fn answer(&self, mut conn: Conn, method: &Method) -> Result<Answer, UpstreamError> {
        let head = read_answer_head(
            &mut conn.io,
            &mut conn.buf,
            |buf| parse_head(buf, method),
            |head| head.parts.status,
        )
        .await?;
        // A small body of known length is read right here, into the same buffer, so the
        // connection is back in the pool before the answer leaves. (Reading it through the
        // streaming body and a collector made this future, which every request moves around,
        // several hundred bytes larger.)
        let Head {
            parts,
            raw,
            keep_alive,
            framing,
        } = head;
        if let Framing::Length(n) = framing
            && n <= BUFFERED_BODY_MAX
        {
            let len = usize::try_from(n).unwrap_or(usize::MAX);
            if !fill_to(&mut conn.io, &mut conn.buf, len, UPSTREAM_READ_CHUNK)
                .await
                .map_err(ExchangeError::Read)?
            {
                return Err(ExchangeError::Invalid("answer body cut off").into());
            }
            let bytes = conn.buf.split_to(len).freeze();
            if keep_alive && conn.buf.is_empty() {
                self.inner.put(conn);
            }
            return Ok(Answer::relayed(parts, raw, full(bytes)));
        }
        let body = UpstreamBody {
            conn: Some(conn),
            framing,
            keep_alive,
            pool: self.inner.clone(),
        };
        Ok(Answer::relayed(
            parts,
            raw,
            http_body_util::BodyExt::boxed_unsync(body),
        ))
    }
}

/// Request line and header fields (`extra` after the request's own), with the body framing
/// this proxy chose.
fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    extra: &[Option<(HeaderName, HeaderValue)>],
    outgoing: &Outgoing,
    declared: Option<u64>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // Framing is ours to set; `Expect` was already answered to the client by the server.
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
        {
            continue;
        }
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in extra.iter().flatten() {
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match outgoing {
        Outgoing::Kept(bytes) => {
            if !bytes.is_empty() || declared.is_some() {
                push_content_length(out, bytes.len() as u64);
            }
        }
        Outgoing::Sized(_, n) => push_content_length(out, *n),
        Outgoing::Chunked(_) => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed answer head.
struct Head {
    /// Status and version; no fields, they are in `raw`.
    parts: http::response::Parts,
    raw: RawFields,
    /// Whether the connection may be reused after the body.
    keep_alive: bool,
    /// How the body is delimited.
    framing: Framing,
}

/// Parse a complete response head off the front of `buf`. `None` (and `buf` untouched) when
/// more bytes are needed.
///
/// One pass over the fields does everything the answer needs: framing (RFC 9112 §6.3),
/// persistence and dropping the hop-by-hop fields (RFC 9110 §7.6.1); the kept field lines are
/// copied as they are into one block. Separate lookups afterwards (framing, `Connection`
/// tokens, the hop-by-hop filter) each hashed their names again and were a tenth of the
/// instructions of a proxied request.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, ExchangeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Uninitialised slots: a zeroed array of MAX_HEADERS fields was a 4 KiB memset per answer.
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_ANSWER_FIELDS];
    let mut parsed = httparse::Response::new(&mut []);
    let consumed = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Invalid("too many header fields"));
        }
        Err(_) => return Err(ExchangeError::Invalid("malformed answer head")),
    };
    let (status, version) = answer_status(&parsed)?;
    let mut seen = FieldsSeen::default();
    let base = buf.as_ptr() as usize;
    // A field's `name: value` text in `buf`.
    let line = |field: &httparse::Header<'_>| {
        let start = (field.name.as_ptr() as usize).saturating_sub(base);
        let end = (field.value.as_ptr() as usize).saturating_sub(base) + field.value.len();
        buf.get(start..end)
            .ok_or(ExchangeError::Invalid("invalid header field"))
    };
    // The fields to pass on, one bit per field (a list of them was an allocation per answer),
    // and the room their lines take.
    let mut kept: u128 = 0;
    let mut kept_len = 0;
    for (i, field) in parsed.headers.iter().enumerate() {
        if seen
            .note(field.name.as_bytes(), field.value)
            .map_err(ExchangeError::Invalid)?
        {
            kept |= 1 << i;
            kept_len += line(field)?.len() + 2;
        }
    }
    let framing = seen.response_framing(method, status);
    // A body that runs to the close leaves nothing to reuse.
    let keep_alive = seen.keep_alive(version) && framing != Framing::Eof;
    // With room for the fields the respond phase may add, so adding them copies nothing.
    let mut block = BytesMut::with_capacity(kept_len + ROOM_FOR_ADDED_FIELDS);
    for (i, field) in parsed.headers.iter().enumerate() {
        if kept & (1 << i) == 0 || seen.dropped_later(field.name.as_bytes()) {
            continue;
        }
        block.extend_from_slice(line(field)?);
        block.extend_from_slice(b"\r\n");
    }
    buf.advance(consumed);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    let (parts, ()) = response.into_parts();
    let raw = RawFields::new(
        block,
        seen.content_length
            .filter(|_| seen.codings.last_chunked.is_none()),
        seen.date,
        seen.cors_fields,
    );
    Ok(Some(Head {
        parts,
        raw,
        keep_alive,
        framing,
    }))
}

/// An answer body read from its connection; the connection goes back to the pool when the
/// body has been read to its end (and is closed when the body is dropped early).
struct UpstreamBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<PoolInner>,
}

impl UpstreamBody {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.pool.put(conn);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(
            this.framing
                .poll_next(&mut conn.io, &mut conn.buf, UPSTREAM_READ_CHUNK, cx)
        ) {
            Ok(Some(data)) => {
                // A length-delimited body is over with its last byte, and a reader that goes
                // by `is_end_stream` (hyper's h2 server) asks no more: back to the pool now.
                if this.framing.is_end() {
                    this.finish();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Err(e) => {
                this.conn = None;
                this.framing = Framing::Done;
                let e = e.into_relayed("homeserver closed the connection inside the answer body");
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing.is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::answer::Fields;
    use http::Version;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A one-connection-at-a-time fake homeserver that answers each request with the next
    /// canned bytes and records what it received.
    async fn serve_canned(
        answers: Vec<&'static [u8]>,
    ) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let (mut s, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut buf = vec![0u8; 65536];
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                s.write_all(answer).await.unwrap();
            }
            seen
        });
        (addr, task)
    }

    fn pool(addr: String) -> UpstreamPool {
        UpstreamPool::new(addr, 4, Duration::from_secs(60), Duration::from_secs(5))
    }

    async fn try_send(
        pool: &UpstreamPool,
        method: Method,
        target: &str,
        body: Body,
    ) -> Result<Answer, UpstreamError> {
        pool.send(&method, target, &HeaderMap::new(), &[], body)
            .await
    }

    async fn send(pool: &UpstreamPool, method: Method, target: &str, body: Body) -> Answer {
        try_send(pool, method, target, body).await.unwrap()
    }

    async fn body_of(answer: Answer) -> Bytes {
        let (_, _, body) = answer.into_wire();
        body.collect().await.unwrap().to_bytes()
    }

    /// The fields as received of an answer, or a failed test.
    fn raw(answer: &Answer) -> &RawFields {
        match answer.fields() {
            Fields::Raw(raw) => raw,
            Fields::Map(headers) => panic!("the fields were turned into a map: {headers:?}"),
        }
    }

    #[tokio::test]
    async fn chunked_answer_is_decoded_and_connection_reused() {
        let (addr, server) = serve_canned(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let pool = pool(addr);
        let r = send(&pool, Method::GET, "/a?b=%2F", full(Bytes::new())).await;
        assert_eq!(r.status(), 200);
        assert_eq!(body_of(r).await, "hello world");
        let r = send(&pool, Method::PUT, "/b", full("{}")).await;
        assert_eq!(r.status(), 201);
        assert_eq!(body_of(r).await, "ok");
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(seen.starts_with("GET /a?b=%2F HTTP/1.1\r\n"), "{seen}");
        assert!(
            seen.contains("PUT /b HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}"),
            "{seen}"
        );
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_head_requests_have_no_body() {
        let (addr, server) = serve_canned(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
        ])
        .await;
        let pool = pool(addr);
        let r = send(&pool, Method::POST, "/x", full("1")).await;
        assert_eq!(body_of(r).await, "abc");
        let r = send(&pool, Method::HEAD, "/x", full(Bytes::new())).await;
        assert_eq!(r.content_length(), Some(1000));
        let r = r.into_response();
        assert_eq!(r.headers()["content-length"], "1000");
        assert!(r.into_body().collect().await.unwrap().to_bytes().is_empty());
        server.await.unwrap();
    }

    #[tokio::test]
    async fn hop_by_hop_fields_are_dropped_while_the_head_is_parsed() {
        let (addr, server) = serve_canned(vec![
            // Connection names another field; Keep-Alive, Transfer-Encoding and the
            // Content-Length beside it are not passed on either; repeated fields keep order.
            b"HTTP/1.1 200 OK\r\nx-hop: 1\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nset-cookie: a\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\nset-cookie: b\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            // HTTP/1.0 without keep-alive: the body runs to the close, the connection is
            // not reused.
            b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\n",
        ])
        .await;
        let pool = pool(addr);
        let mut r = send(&pool, Method::GET, "/a", full(Bytes::new())).await;
        assert_eq!(raw(&r).block(), b"set-cookie: a\r\nset-cookie: b\r\n");
        assert_eq!(r.content_length(), None);
        let mut names: Vec<&str> = r.headers_mut().keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, vec!["set-cookie"]);
        let cookies: Vec<_> = r.headers_mut().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, vec!["a", "b"]);
        assert_eq!(body_of(r).await, "ok");
        // The chunked answer ended cleanly, so the same connection serves the next request.
        let r = send(&pool, Method::GET, "/b", full(Bytes::new()))
            .await
            .into_response();
        assert_eq!(r.version(), Version::HTTP_10);
        assert_eq!(r.headers()["content-type"], "text/plain");
        drop(r);
        assert!(
            pool.inner.take().is_none(),
            "an HTTP/1.0 answer without keep-alive is not pooled"
        );
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        assert!(seen.contains("GET /b HTTP/1.1"), "{seen}");
    }

    #[tokio::test]
    async fn the_cors_fields_an_answer_lacks_are_added_in_place() {
        let (addr, server) = serve_canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\n{}",
        ])
        .await;
        let mut r = send(&pool(addr), Method::GET, "/", full(Bytes::new())).await;
        let before = raw(&r).block().as_ptr();
        crate::inbound::cors::complete(&mut r);
        assert_eq!(
            raw(&r).block().as_ptr(),
            before,
            "adding the CORS fields moved the block"
        );
        let text = std::str::from_utf8(raw(&r).block()).unwrap();
        assert!(
            text.starts_with("content-type: application/json\r\ncontent-length: 2\r\n")
                && text.contains("access-control-allow-origin: *\r\n")
                && text.ends_with("\r\n"),
            "{text}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn broken_answers_are_errors_not_panics() {
        for canned in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let (addr, _server) = serve_canned(vec![canned]).await;
            let err = try_send(&pool(addr), Method::GET, "/", full(Bytes::new()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, UpstreamError::Exchange(ExchangeError::Invalid(_))),
                "{err}"
            );
        }
    }

    /// Wait (bounded) until the homeserver's close of the pooled connection has arrived, so the
    /// next request finds a closed connection in the pool.
    async fn closed_by_the_homeserver(pool: &UpstreamPool) {
        let conn = pool.inner.take().expect("a pooled connection");
        tokio::time::timeout(Duration::from_secs(10), conn.io.readable())
            .await
            .expect("the homeserver closes the connection")
            .unwrap();
        pool.inner.put(conn);
    }

    #[tokio::test]
    async fn a_closed_pooled_connection_is_replaced_transparently() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            // First connection: answer once, then close (an idle timeout on the homeserver).
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1")
                .await
                .unwrap();
            drop(s);
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n2")
                .await
                .unwrap();
            drop(s);
            // A POST is not resent blindly: the closed pooled connection is noticed before.
            let (mut s, _) = listener.accept().await.unwrap();
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"POST /once HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n3")
                .await
                .unwrap();
        });
        let pool = pool(addr);
        let r = send(&pool, Method::GET, "/", full(Bytes::new())).await;
        assert_eq!(body_of(r).await, "1");
        closed_by_the_homeserver(&pool).await;
        let r = send(&pool, Method::GET, "/", full(Bytes::new())).await;
        assert_eq!(body_of(r).await, "2");
        closed_by_the_homeserver(&pool).await;
        let r = send(&pool, Method::POST, "/once", full("{}")).await;
        assert_eq!(body_of(r).await, "3");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_large_answer_read_to_its_length_gives_its_connection_back() {
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let big = BIG.get_or_init(|| {
            let mut v = b"HTTP/1.1 200 OK\r\ncontent-length: 200000\r\n\r\n".to_vec();
            v.extend(std::iter::repeat_n(b'x', 200_000));
            v
        });
        let (addr, _server) = serve_canned(vec![
            big.as_slice(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n2",
        ])
        .await;
        let pool = pool(addr);
        let (_, _, mut body) = send(&pool, Method::GET, "/", full(Bytes::new()))
            .await
            .into_wire();
        // As hyper's h2 server reads: until `is_end_stream`, never to the end.
        let mut len = 0;
        while !body.is_end_stream() {
            len += body
                .frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap()
                .len();
        }
        assert_eq!(len, 200_000);
        // The fake accepts one connection only: a second one would wait for ever.
        let second = tokio::time::timeout(
            Duration::from_secs(10),
            send(&pool, Method::GET, "/", full(Bytes::new())),
        )
        .await
        .expect("the answer's connection did not go back to the pool");
        assert_eq!(body_of(second).await, "2");
    }

    #[tokio::test]
    async fn large_answers_stream_and_cut_off_bodies_error() {
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let big = BIG.get_or_init(|| {
            let mut v = b"HTTP/1.1 200 OK\r\ncontent-length: 200000\r\n\r\n".to_vec();
            v.extend(std::iter::repeat_n(b'x', 200_000));
            v
        });
        let (addr, _server) = serve_canned(vec![big.as_slice()]).await;
        let r = send(&pool(addr), Method::GET, "/", full(Bytes::new())).await;
        let (_, _, body) = r.into_wire();
        assert_eq!(body.size_hint().exact(), Some(200_000));
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 200_000);

        let (addr, _server) = serve_canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nshort",
        ])
        .await;
        let r = try_send(&pool(addr), Method::GET, "/", full(Bytes::new()))
            .await
            .unwrap_err();
        assert!(
            matches!(r, UpstreamError::Exchange(ExchangeError::Invalid(_))),
            "{r}"
        );
    }
}
