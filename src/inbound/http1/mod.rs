//! The inbound listener's HTTP/1.1 server.
//!
//! Why not a general-purpose server: on the proxied hot path the server's own machinery (a
//! dispatcher between connection and service, its buffers and header encoding) cost as many
//! instructions as the rules and the forwarding together. This one does only what a reverse
//! proxy in front of a homeserver needs, in the connection's task: read a head, hand the request
//! to [`super::handle`], write the answer, repeat. Bodies up to
//! [`super::upstream::BUFFERED_BODY_MAX`] are read before the request is handled (the rules and
//! the homeserver get them in one piece); larger and chunked ones stream through
//! [`body::feed`]. Connections that open with the HTTP/2 preface are handed back to the caller.
//!
//! Timeouts: the first request head must arrive within `inbound.header_read_timeout`; a
//! kept-alive connection may idle for [`KEEP_ALIVE_TIMEOUT`], after which the next head must
//! again complete within `header_read_timeout` of its first bytes; a body must keep coming
//! (each read within `header_read_timeout`).

mod body;
mod request;
mod response;

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use http::{Method, Request};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::InboundState;
use super::forward::{self, Deadline, Peer};
use super::upstream::BUFFERED_BODY_MAX;
use crate::framing::{self, Framing};
use crate::live::Live;
use crate::shutdown::Shutdown;
use body::FeedEnd;
use request::{Parsed, Refused, RequestHead};
use response::Reply;

/// How long a kept-alive connection may wait for its next request.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(75);
/// Read granularity, and the size of the buffer a connection holds while a request is read.
const READ_CHUNK: usize = 8 * 1024;
/// The least room the first read of a request allocates (see [`poll_read_unbuffered`]).
const FIRST_READ_ROOM: usize = 2 * 1024;
/// How long a connection closed with input unread goes on reading (and dropping) it.
const LINGER: Duration = Duration::from_secs(2);
/// How much it reads at most meanwhile.
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Read more of the connection into `buf`; `Ok(0)` at end of stream.
///
/// A buffer without capacity (an idle connection's, see [`Connection::release_buffers`]) is
/// not allocated until bytes arrive: the read goes into a stack buffer and is copied over, so a
/// connection waiting for its next request holds no heap buffer. The copy is a request head,
/// usually a few hundred bytes.
pub(crate) async fn read_more<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        if buf.capacity() == 0 {
            poll_read_unbuffered(io, buf, cx)
        } else {
            framing::poll_fill(io, buf, READ_CHUNK, cx)
        }
    })
    .await
}

/// One read through the stack into `buf`, which is allocated only once bytes arrived.
fn poll_read_unbuffered<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut read = ReadBuf::uninit(&mut stack);
    ready!(Pin::new(io).poll_read(cx, &mut read))?;
    let filled = read.filled();
    // Sized to what arrived: a request head is usually a few hundred bytes, and a buffer of
    // READ_CHUNK per request in flight stays resident in the allocator after a burst of them.
    // A larger request grows it as it is read (`framing::poll_fill`).
    *buf = BytesMut::with_capacity(filled.len().max(FIRST_READ_ROOM));
    buf.extend_from_slice(filled);
    Poll::Ready(Ok(filled.len()))
}

/// One connection's state between requests.
struct Connection<'c, I> {
    io: I,
    buf: BytesMut,
    out: Vec<u8>,
    /// Loaded once per request: each request runs on the configuration current when its head
    /// arrived.
    state: &'c Live<InboundState>,
    drain: Shutdown,
    /// Completes when the listener drains. Made once per connection: a `wait()` future per
    /// wait registered and unregistered a waiter on every request.
    drained: Pin<Box<dyn Future<Output = ()> + Send>>,
    draining: bool,
    /// One timer per connection, re-armed only when it fires or must fire earlier (see
    /// [`Deadline::Lent`]): arming a timer per request cost more than reading the request.
    timer: Pin<Box<tokio::time::Sleep>>,
    /// `inbound.write_timeout` when the connection was accepted.
    write_timeout: Duration,
}

impl<I: AsyncRead + AsyncWrite + Unpin> Connection<'_, I> {
    /// Wait until `deadline` for more bytes. `false` when none will come: end of stream, a
    /// read error, the deadline, or a drain between requests (`between_requests` and nothing
    /// buffered; a request already begun is still served).
    async fn read_until(&mut self, deadline: Instant, between_requests: bool) -> bool {
        let mut deadline = Deadline::Lent {
            at: deadline,
            timer: self.timer.as_mut(),
        };
        loop {
            tokio::select! {
                biased;
                read = read_more(&mut self.io, &mut self.buf) => {
                    return matches!(read, Ok(n) if n > 0);
                }
                () = deadline.passed() => return false,
                () = self.drained.as_mut(), if !self.draining => {
                    self.draining = true;
                    if between_requests && self.buf.is_empty() {
                        return false;
                    }
                }
            }
        }
    }

    /// The next request head: complete, malformed, or none.
    async fn next_head(
        &mut self,
        idle_deadline: Instant,
        header_timeout: Duration,
    ) -> Result<Result<RequestHead, Refused>, Option<Bytes>> {
        let mut deadline = idle_deadline;
        let mut started = false;
        loop {
            match request::parse(&mut self.buf) {
                Ok(Parsed::Head(head)) => return Ok(Ok(head)),
                Ok(Parsed::H2) => return Err(Some(self.buf.split().freeze())),
                Ok(Parsed::Partial) => {}
                Err(err) => return Ok(Err(err)),
            }
            if self.draining && self.buf.is_empty() {
                return Err(None);
            }
            // Once a head has begun, all of it must arrive within the header timeout.
            if !started && !self.buf.is_empty() {
                started = true;
                deadline = deadline.min(Instant::now() + header_timeout);
            }
            if !self.read_until(deadline, true).await {
                return Err(None);
            }
        }
    }

    /// The next request head; a malformed one is answered and the connection closed, as is a
    /// connection with no further request.
    async fn open_next(&mut self, idle_deadline: Instant, header_timeout: Duration) -> Opened {
        // The ending is made inside the match and awaited after it, so that the head matched
        // on is not kept beside it.
        let ending = match self.next_head(idle_deadline, header_timeout).await {
            Ok(Ok(head)) => return Opened::Request(head),
            Err(Some(preface)) => return Opened::H2(preface),
            // Boxed: rare, and its answer would otherwise take a slot in every connection.
            Ok(Err(refused)) => Either::Left(Box::pin(self.reject(refused))),
            Err(None) => Either::Right(self.close(false)),
        };
        ending.await;
        Opened::Closed
    }

    async fn reject(&mut self, refused: Refused) {
        let Refused { error: err, reason } = refused;
        {
            let state = self.state.load();
            state.metrics.reject(super::LISTENER, err.rule);
            state
                .metrics
                .malformed_requests
                .get_or_create(&crate::metrics::ListenerReasonLabels {
                    listener: super::LISTENER,
                    reason,
                })
                .inc();
        }
        tracing::debug!(
            rule = err.rule,
            reason,
            status = err.status.as_u16(),
            side = "client",
            "malformed request refused"
        );
        let reply = Reply {
            head_request: false,
            version: http::Version::HTTP_11,
            keep_alive: false,
            write_timeout: self.write_timeout,
        };
        let _ = response::write(
            &mut self.io,
            &mut self.out,
            forward::error_response(&err).into(),
            reply,
        )
        .await;
        self.close(true).await;
    }

    /// Close the connection. With input still unread (a refused head, a body the handler did
    /// not take), it is read and dropped for a moment first: closing a socket with unread input
    /// resets the connection, and the reset can destroy the answer before the client reads it.
    async fn close(&mut self, unread_input: bool) {
        // Bounded: shutting TLS down writes, and the client may have stopped reading.
        let _ = tokio::time::timeout(self.write_timeout, self.io.shutdown()).await;
        if unread_input {
            // Boxed: rare, and its timer would otherwise take a slot in every connection.
            Box::pin(self.linger()).await;
        }
    }

    async fn linger(&mut self) {
        let until = Instant::now() + LINGER;
        let mut dropped = 0usize;
        while dropped < LINGER_BYTES {
            self.buf.clear();
            match tokio::time::timeout_at(until, read_more(&mut self.io, &mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => dropped += n,
                _ => return,
            }
        }
    }

    /// Between requests: give the buffers back, so that an idle connection holds none. The
    /// next read goes through the stack (see [`read_more`]); a pipelined request already in
    /// `buf` keeps it.
    fn release_buffers(&mut self) {
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        self.out = Vec::new();
    }

    /// One request: read its body as framed, handle it, write the answer.
    async fn exchange(
        &mut self,
        head: RequestHead,
        peer: &Peer,
        header_timeout: Duration,
    ) -> io::Result<Next> {
        let RequestHead {
            parts,
            framing,
            keep_alive,
            expect_continue,
        } = head;
        let reply = Reply {
            head_request: parts.method == Method::HEAD,
            version: parts.version,
            keep_alive,
            write_timeout: self.write_timeout,
        };
        // A client waiting for `100 Continue` gets it only when the handler reads the body
        // (the route and the rules accepted the request), so its body streams.
        let waits_for_continue = expect_continue && self.buf.is_empty();
        let mut streamed = None;
        let body = match framing {
            Framing::Length(0) => forward::empty(),
            Framing::Length(n) if n <= BUFFERED_BODY_MAX && !waits_for_continue => {
                let len = usize::try_from(n).unwrap_or(usize::MAX);
                while self.buf.len() < len {
                    let deadline = Instant::now() + header_timeout;
                    if !self.read_until(deadline, false).await {
                        return Ok(Next::Close {
                            unread_input: false,
                        });
                    }
                }
                forward::full(self.buf.split_to(len).freeze())
            }
            framing => {
                let (tx, rx, wanted) = body::channel(framing, waits_for_continue);
                streamed = Some((framing, tx, wanted));
                rx.boxed_unsync()
            }
        };
        // Not boxed on its own: this future is already on the heap for the request's lifetime.
        let state = self.state.load();
        let deadline = Deadline::Lent {
            at: state.forwarder.deadline_from(Instant::now()),
            timer: self.timer.as_mut(),
        };
        let mut handler = std::pin::pin!(super::handle(
            state,
            Request::from_parts(parts, body),
            peer,
            deadline,
        ));
        let (response, fed) = match streamed {
            None => (handler.await, FeedEnd::Complete),
            Some((framing, tx, wanted)) => {
                let mut feed = std::pin::pin!(body::feed(
                    &mut self.io,
                    &mut self.buf,
                    framing,
                    tx,
                    wanted,
                    header_timeout,
                    self.write_timeout,
                ));
                let mut fed = None;
                let response = std::future::poll_fn(|cx| {
                    if fed.is_none()
                        && let Poll::Ready(end) = feed.as_mut().poll(cx)
                    {
                        fed = Some(end);
                    }
                    handler.as_mut().poll(cx)
                })
                .await;
                (response, fed.unwrap_or(FeedEnd::Abandoned))
            }
        };
        if self.drain.is_triggered() {
            self.draining = true;
        }
        let reply = Reply {
            keep_alive: reply.keep_alive && fed == FeedEnd::Complete && !self.draining,
            ..reply
        };
        Ok(
            match response::write(&mut self.io, &mut self.out, response, reply).await? {
                true => Next::KeepAlive,
                false => Next::Close {
                    unread_input: fed == FeedEnd::Abandoned,
                },
            },
        )
    }
}

/// Serve HTTP/1.x on `io` until the client or the server closes the connection. Returns the
/// connection and the bytes read so far when the client turns out to speak HTTP/2.
///
/// A plain function returning the connection's loop: an `async fn` would keep its arguments
/// beside the [`Connection`] made of them for as long as the connection lives, and this
/// future is most of what an idle connection costs.
pub(crate) fn serve<'c, I>(
    io: I,
    state: &'c Live<InboundState>,
    peer: &'c Peer,
    drain: Shutdown,
) -> impl Future<Output = Option<(I, Bytes)>> + 'c
where
    I: AsyncRead + AsyncWrite + Unpin + 'c,
{
    let (header_timeout, write_timeout) = {
        let loaded = state.load();
        let inbound = &loaded.config.inbound;
        (inbound.header_read_timeout, inbound.write_timeout)
    };
    let draining = drain.is_triggered();
    let drained = Box::pin(drain.fired());
    let mut conn = Connection {
        io,
        // Allocated when the first bytes arrive (see `read_more`).
        buf: BytesMut::new(),
        out: Vec::new(),
        state,
        draining,
        drain,
        drained,
        timer: Box::pin(tokio::time::sleep(header_timeout)),
        write_timeout,
    };
    async move {
        let mut idle_deadline = conn.timer.deadline();
        loop {
            // No await in these arms: a value matched on stays in the connection's future for
            // every await of its match, and a request head is a quarter KiB.
            let head = match conn.open_next(idle_deadline, header_timeout).await {
                Opened::Request(head) => head,
                Opened::H2(preface) => return Some((conn.io, preface)),
                Opened::Closed => return None,
            };
            // Boxed: a request's state (the handler's future, a streamed body's feed, the
            // answer being written) is several KiB, and an idle connection should not carry a
            // slot for it. One allocation per request costs less than that slot on every idle
            // connection. The slot is allocated before the future is made, so that it is built
            // in place rather than on the stack and copied.
            let exchange = Box::write(Box::new_uninit(), conn.exchange(head, peer, header_timeout));
            match Box::into_pin(exchange).await {
                Ok(Next::KeepAlive) => {}
                Ok(Next::Close { unread_input }) => {
                    conn.close(unread_input).await;
                    return None;
                }
                Err(_) => {
                    conn.close(false).await;
                    return None;
                }
            }
            conn.release_buffers();
            idle_deadline = Instant::now() + KEEP_ALIVE_TIMEOUT;
        }
    }
}

/// How a connection's wait for its next request ended.
#[expect(
    clippy::large_enum_variant,
    reason = "the head goes straight into the request's boxed exchange; boxing it as well would cost an allocation per request"
)]
enum Opened {
    Request(RequestHead),
    /// The client speaks HTTP/2 with prior knowledge; these bytes of it were read.
    H2(Bytes),
    Closed,
}

/// What becomes of the connection after an answer.
enum Next {
    KeepAlive,
    Close { unread_input: bool },
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// An idle connection waits for its next request without a heap buffer: the pending read
    /// leaves `buf` unallocated, and the bytes that arrive later land in it whole.
    #[tokio::test]
    async fn waiting_for_a_request_holds_no_buffer() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        {
            let mut read = std::pin::pin!(read_more(&mut server, &mut buf));
            assert!(read.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(buf.capacity(), 0, "a pending read allocated a buffer");

        let head = b"GET /_matrix/client/versions HTTP/1.1\r\nHost: hs1.test\r\n\r\n";
        client.write_all(head).await.unwrap();
        let mut got = 0;
        while got < head.len() {
            let n = read_more(&mut server, &mut buf).await.unwrap();
            assert!(n > 0, "end of stream before the head was read");
            got += n;
        }
        assert_eq!(&buf[..], &head[..]);
        // Room for the rest of a larger request, but not a whole read chunk per request.
        assert!(
            (FIRST_READ_ROOM..READ_CHUNK).contains(&buf.capacity()),
            "first read allocated {} bytes",
            buf.capacity()
        );

        drop(client);
        buf.clear();
        let mut empty = BytesMut::new();
        assert_eq!(read_more(&mut server, &mut empty).await.unwrap(), 0);
    }
}
