//! Request bodies too large to read before the request is handled: the connection reads them
//! (see [`feed`]) while the handler consumes them, one chunk in flight at a time, so a slow
//! homeserver slows the client down instead of filling memory.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use crate::framing::{BodyError, Framing};
use crate::inbound::forward::BoxError;

/// The handler's end of a streamed request body.
pub(crate) struct StreamedBody {
    chunks: mpsc::Receiver<Result<Bytes, BoxError>>,
    /// Bytes still to come when the length is known.
    remaining: Option<u64>,
    /// Told when the handler first asks for the body: the client waits for `100 Continue`,
    /// which goes out only then.
    wanted: Option<oneshot::Sender<()>>,
}

/// The feed's end of [`StreamedBody::wanted`].
pub(crate) type Wanted = Option<oneshot::Receiver<()>>;

/// How reading a streamed body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeedEnd {
    /// The whole body was read; the connection can carry another request.
    Complete,
    /// The handler stopped reading (it answered early): the rest is still unread.
    Abandoned,
    /// The client sent a broken body, went quiet or went away.
    Failed,
}

/// A streamed body and the sender [`feed`] fills it from. With `on_demand` (the client waits
/// for `100 Continue`), the feed also gets a [`Wanted`] that fires when the handler first polls
/// the body: a request the route or the rules refuse is answered without a `100` first.
pub(crate) fn channel(
    framing: Framing,
    on_demand: bool,
) -> (mpsc::Sender<Result<Bytes, BoxError>>, StreamedBody, Wanted) {
    let (tx, rx) = mpsc::channel(1);
    let (wanted, wanted_rx) = match on_demand {
        true => {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let body = StreamedBody {
        chunks: rx,
        remaining: framing.exact_len(),
        wanted,
    };
    (tx, body, wanted_rx)
}

impl HttpBody for StreamedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(wanted) = this.wanted.take() {
            let _ = wanted.send(());
        }
        match this.chunks.poll_recv(cx) {
            Poll::Ready(Some(Ok(data))) => {
                if let Some(left) = this.remaining.as_mut() {
                    *left = left.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

fn body_error(message: &'static str) -> BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        message,
    ))
}

/// Read one request body off the connection into `chunks`. Each wait for the client is bounded
/// by `idle`: a client that stops sending mid-body does not hold its slot forever. With
/// `wanted`, `100 Continue` is written (within `write_timeout`) once the handler asks for the
/// body, and nothing is read before; if it never asks, the body stays unread.
pub(crate) async fn feed<I: AsyncRead + AsyncWrite + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    mut framing: Framing,
    chunks: mpsc::Sender<Result<Bytes, BoxError>>,
    wanted: Wanted,
    idle: Duration,
    write_timeout: Duration,
) -> FeedEnd {
    if let Some(wanted) = wanted {
        if wanted.await.is_err() {
            return FeedEnd::Abandoned;
        }
        let sent = async {
            super::response::send(io, b"HTTP/1.1 100 Continue\r\n\r\n", write_timeout).await?;
            super::response::flush(io, write_timeout).await
        };
        if sent.await.is_err() {
            let _ = chunks
                .send(Err(body_error("writing 100 Continue to the client failed")))
                .await;
            return FeedEnd::Failed;
        }
    }
    loop {
        let next = tokio::time::timeout(
            idle,
            std::future::poll_fn(|cx| framing.poll_next(io, buf, super::READ_CHUNK, cx)),
        )
        .await;
        let failure = match next {
            Ok(Ok(Some(data))) => {
                if chunks.send(Ok(data)).await.is_err() {
                    return FeedEnd::Abandoned;
                }
                continue;
            }
            Ok(Ok(None)) => return FeedEnd::Complete,
            Ok(Err(BodyError::CutOff)) => "client closed the connection inside the request body",
            Ok(Err(BodyError::Io(_))) => "reading the request body failed",
            Ok(Err(BodyError::Invalid(reason))) => reason,
            Err(_) => "client stopped sending the request body",
        };
        let _ = chunks.send(Err(body_error(failure))).await;
        return FeedEnd::Failed;
    }
}
