//! Request bodies too large to read before the request is handled: the connection reads them
//! (see [`feed`]) while the handler consumes them, one chunk in flight at a time, so a slow
//! homeserver slows the client down instead of filling memory.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::inbound::forward::BoxError;
use crate::inbound::framing::{BodyError, Framing};

/// The handler's end of a streamed request body.
pub(crate) struct StreamedBody {
    chunks: mpsc::Receiver<Result<Bytes, BoxError>>,
    /// Bytes still to come when the length is known.
    remaining: Option<u64>,
}

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

pub(crate) fn channel(framing: Framing) -> (mpsc::Sender<Result<Bytes, BoxError>>, StreamedBody) {
    let (tx, rx) = mpsc::channel(1);
    (
        tx,
        StreamedBody {
            chunks: rx,
            remaining: framing.exact_len(),
        },
    )
}

impl HttpBody for StreamedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
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
/// by `idle`: a client that stops sending mid-body does not hold its slot forever.
pub(crate) async fn feed<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    mut framing: Framing,
    chunks: mpsc::Sender<Result<Bytes, BoxError>>,
    idle: Duration,
) -> FeedEnd {
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
