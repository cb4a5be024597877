//! Writing answers to the client: the head is encoded straight from the response parts into
//! one buffer, and a body that is already complete joins it, so a typical answer leaves in a
//! single write.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::task::Poll;
use std::time::Duration;

use futures_util::FutureExt;
use http::{StatusCode, Version, header};
use http_body_util::BodyExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::framing::{push_content_length, push_field};
use crate::inbound::answer::Answer;

/// Body bytes gathered before a write; larger bodies go out in pieces of about this size.
const WRITE_BATCH: usize = 64 * 1024;
/// Room reserved for an answer's status line and the fields this hop adds (`date`,
/// `content-length`, `connection`, `transfer-encoding`).
const HEAD_ROOM: usize = 160;
/// Room reserved per field kept in the answer's map (a typical name and value).
const FIELD_ROOM: usize = 64;

/// What the answer must respect from its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reply {
    pub head_request: bool,
    pub version: Version,
    pub keep_alive: bool,
    /// How long each write may take (`inbound.write_timeout`).
    pub write_timeout: Duration,
}

/// How the answer body is delimited on the wire.
enum Delimit {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// An HTTP-date for answers made here (the homeserver's answers carry their own); formatted
/// once per second per thread.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let now = time::OffsetDateTime::now_utc();
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != now.unix_timestamp() {
            last.1 = now.format(FORMAT).unwrap_or_default();
            last.0 = now.unix_timestamp();
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(last.1.as_bytes());
        out.extend_from_slice(b"\r\n");
    });
}

/// Write all of `bytes` within `limit`. Nearly every write completes at once, so the timer is
/// armed only when the first attempt has to wait: a client that stops reading fills the
/// socket buffer, and is then given `limit` to make room.
pub(crate) async fn send<I: AsyncWrite + Unpin>(
    io: &mut I,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    within(limit, io.write_all(bytes)).await
}

/// Flush `io` within `limit` (a TLS stream writes on flush).
pub(crate) async fn flush<I: AsyncWrite + Unpin>(io: &mut I, limit: Duration) -> io::Result<()> {
    within(limit, io.flush()).await
}

async fn within(limit: Duration, op: impl Future<Output = io::Result<()>>) -> io::Result<()> {
    let mut op = std::pin::pin!(op);
    let first = std::future::poll_fn(|cx| Poll::Ready(op.as_mut().poll(cx))).await;
    if let Poll::Ready(done) = first {
        return done;
    }
    tokio::time::timeout(limit, op).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client stopped reading: a write took longer than inbound.write_timeout",
        ))
    })
}

/// Write `answer`; `Ok(true)` when the connection can carry another request. A homeserver
/// answer's fields as received are written as they are, without a field map.
pub(crate) async fn write<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    answer: Answer,
    reply: Reply,
) -> io::Result<bool> {
    let declared = answer.content_length();
    let (parts, raw, mut body) = answer.into_wire();
    let status = parts.status;
    let mut keep_alive = reply.keep_alive;
    let bodiless = reply.head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let delimit = if bodiless {
        Delimit::None
    } else if let Some(n) = declared {
        Delimit::Length(n)
    } else if let Some(n) = http_body::Body::size_hint(&body).exact() {
        Delimit::Length(n)
    } else if reply.version == Version::HTTP_11 {
        Delimit::Chunked
    } else {
        keep_alive = false;
        Delimit::Close
    };
    out.clear();
    // One allocation for the head and a small body: an idle connection holds no buffer (see
    // `Connection::release_buffers`), and growing one by doubling from empty was four
    // reallocations and copies per answer.
    let body_in_batch = match delimit {
        Delimit::Length(n) if n < WRITE_BATCH as u64 => usize::try_from(n).unwrap_or(0),
        _ => 0,
    };
    let room = HEAD_ROOM
        + raw.as_ref().map_or(0, |raw| raw.block().len())
        + parts.headers.len() * FIELD_ROOM
        + body_in_batch;
    if out.capacity() == 0 {
        // Allocated outright: `reserve` on an empty vector takes a slower path to the same end.
        *out = Vec::with_capacity(room);
    } else {
        out.reserve(room);
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    if let Some(raw) = raw {
        out.extend_from_slice(raw.block());
        has_date = raw.has_date();
    }
    for (name, value) in &parts.headers {
        // Framing and persistence are this hop's to set.
        if *name == header::TRANSFER_ENCODING || *name == header::CONNECTION {
            continue;
        }
        has_date |= *name == header::DATE;
        push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match delimit {
        Delimit::Length(n) if declared.is_none() => push_content_length(out, n),
        Delimit::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !has_date {
        push_date(out);
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if reply.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let limit = reply.write_timeout;
    if matches!(delimit, Delimit::None) {
        send(io, out, limit).await?;
        flush(io, limit).await?;
        return Ok(keep_alive);
    }
    let chunked = matches!(delimit, Delimit::Chunked);
    let mut sent: u64 = 0;
    let mut overran = false;
    loop {
        // Whatever is ready joins the pending bytes; they leave when the body has to wait.
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                send(io, out, limit).await?;
                flush(io, limit).await?;
                out.clear();
                body.frame().await
            }
        };
        let mut data = match frame {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                _ => continue,
            },
            // The answer broke off: the client can only learn it from the connection closing.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "answer body broke off");
                send(io, out, limit).await?;
                return Ok(false);
            }
        };
        if let Delimit::Length(n) = delimit {
            let left = n.saturating_sub(sent);
            if data.len() as u64 > left {
                // Bytes past the announced length would be read as the start of the next
                // answer: they are cut, and the connection is closed after the rest.
                tracing::debug!(
                    content_length = n,
                    "answer body longer than its Content-Length: cut"
                );
                data.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                overran = true;
            }
        }
        sent = sent.saturating_add(data.len() as u64);
        if chunked {
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if data.len() >= WRITE_BATCH {
            send(io, out, limit).await?;
            out.clear();
            send(io, &data, limit).await?;
        } else {
            out.extend_from_slice(&data);
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        if overran {
            break;
        }
        if out.len() >= WRITE_BATCH {
            send(io, out, limit).await?;
            out.clear();
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    send(io, out, limit).await?;
    flush(io, limit).await?;
    if out.capacity() > WRITE_BATCH {
        *out = Vec::new();
    }
    // A body shorter or longer than announced leaves the client unable to find the next
    // answer: close instead.
    if let Delimit::Length(n) = delimit
        && (n != sent || overran)
    {
        return Ok(false);
    }
    Ok(keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::answer::RawFields;
    use crate::inbound::forward::{Body, full};
    use http::Response;

    async fn written(answer: impl Into<Answer>, reply: Reply) -> (String, bool) {
        let mut wire = Vec::new();
        let mut out = Vec::new();
        let keep = write(&mut wire, &mut out, answer.into(), reply)
            .await
            .unwrap();
        (String::from_utf8(wire).unwrap(), keep)
    }

    /// A homeserver answer with `block` as its fields as received.
    fn relayed(block: &'static str, content_length: Option<u64>, body: Body) -> Answer {
        let (parts, ()) = Response::new(()).into_parts();
        let has_date = block.to_ascii_lowercase().contains("date:");
        Answer::relayed(
            parts,
            RawFields::new(block.into(), content_length, has_date, 0),
            body,
        )
    }

    /// A body of these pieces, of unknown length.
    fn stream(parts: Vec<&'static str>) -> Body {
        let frames = parts
            .into_iter()
            .map(|p| Ok::<_, crate::inbound::forward::BoxError>(http_body::Frame::data(p.into())));
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    const KEEP_11: Reply = Reply {
        head_request: false,
        version: Version::HTTP_11,
        keep_alive: true,
        write_timeout: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn complete_bodies_get_a_length_and_a_date() {
        let mut response = Response::new(full("{}"));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let (wire, keep) = written(response, KEEP_11).await;
        assert!(keep);
        assert!(wire.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"));
        assert!(wire.contains("content-length: 2\r\n"), "{wire}");
        assert!(
            wire.contains("\r\ndate: ") && wire.ends_with(" GMT\r\n\r\n{}"),
            "{wire}"
        );
    }

    #[tokio::test]
    async fn streams_without_length_are_chunked_or_closed() {
        let (wire, keep) = written(Response::new(stream(vec!["ab", "", "cde"])), KEEP_11).await;
        assert!(keep);
        assert!(wire.contains("transfer-encoding: chunked\r\n"), "{wire}");
        assert!(
            wire.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
            "{wire}"
        );
        let old = Reply {
            version: Version::HTTP_10,
            ..KEEP_11
        };
        let (wire, keep) = written(Response::new(stream(vec!["ab"])), old).await;
        assert!(!keep);
        assert!(wire.contains("connection: close\r\n") && wire.ends_with("\r\n\r\nab"));
    }

    #[tokio::test]
    async fn head_answers_keep_their_length_but_send_no_body() {
        let mut response = Response::new(full("ignored"));
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        response.headers_mut().insert(
            header::DATE,
            "Sat, 28 Nov 2026 10:00:00 GMT".parse().unwrap(),
        );
        let reply = Reply {
            head_request: true,
            ..KEEP_11
        };
        let (wire, keep) = written(response, reply).await;
        assert!(keep);
        assert_eq!(
            wire,
            "HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ndate: Sat, 28 Nov 2026 10:00:00 GMT\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn raw_answer_fields_are_written_as_received() {
        let answer = relayed(
            "Content-Type: text/plain\r\nDate: Sat, 28 Nov 2026 10:00:00 GMT\r\nContent-Length: 5\r\n",
            Some(5),
            full("hello"),
        );
        let (wire, keep) = written(answer, KEEP_11).await;
        assert!(keep);
        assert_eq!(
            wire,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: Sat, 28 Nov 2026 10:00:00 GMT\r\nContent-Length: 5\r\n\r\nhello"
        );
    }

    /// The field lines of an HTTP/1 answer on the wire, without the date this hop adds.
    fn wire_fields(wire: &str) -> Vec<String> {
        let head = wire.split("\r\n\r\n").next().unwrap_or_default();
        head.split("\r\n")
            .skip(1)
            .filter(|line| !line.starts_with("date: "))
            .map(|line| line.to_ascii_lowercase())
            .collect()
    }

    /// The fields of an h2 answer as `name: value` lines, in the map's order.
    fn map_fields(response: &Response<Body>) -> Vec<String> {
        response
            .headers()
            .iter()
            .map(|(name, value)| {
                format!("{name}: {}", value.to_str().unwrap()).to_ascii_lowercase()
            })
            .collect()
    }

    #[tokio::test]
    async fn edits_through_the_answer_reach_http1_and_h2_alike() {
        use http::header::{HeaderName, HeaderValue};
        let homeserver = || {
            relayed(
                "Content-Type: text/plain\r\nX-Old: 1\r\nContent-Length: 5\r\n",
                Some(5),
                full("hello"),
            )
        };
        let added = || {
            (
                HeaderName::from_static("x-added"),
                HeaderValue::from_static("a"),
            )
        };
        // An added field goes in place: HTTP/1 writes the block without a map being built.
        let append = |answer: &mut Answer| {
            let (name, value) = added();
            answer.append(name, value);
        };
        let mut http1 = homeserver();
        append(&mut http1);
        assert!(matches!(
            http1.fields(),
            crate::inbound::answer::Fields::Raw(_)
        ));
        let mut h2 = homeserver();
        append(&mut h2);
        let (wire, _) = written(http1, KEEP_11).await;
        let expected = [
            "content-type: text/plain",
            "x-old: 1",
            "content-length: 5",
            "x-added: a",
        ];
        assert_eq!(wire_fields(&wire), expected, "{wire}");
        assert_eq!(map_fields(&h2.into_response()), expected);
        // An edit of the field map sees every field, and both forms carry it.
        let edit = |answer: &mut Answer| {
            let headers = answer.headers_mut();
            assert_eq!(headers["x-old"], "1");
            headers.remove("x-old");
            headers.insert("x-edited", HeaderValue::from_static("b"));
        };
        let mut http1 = homeserver();
        append(&mut http1);
        edit(&mut http1);
        let mut h2 = homeserver();
        append(&mut h2);
        edit(&mut h2);
        let (wire, _) = written(http1, KEEP_11).await;
        let h2 = h2.into_response();
        let mut on_wire = wire_fields(&wire);
        let mut in_map = map_fields(&h2);
        on_wire.sort();
        in_map.sort();
        assert_eq!(
            on_wire,
            [
                "content-length: 5",
                "content-type: text/plain",
                "x-added: a",
                "x-edited: b"
            ],
            "{wire}"
        );
        assert_eq!(in_map, on_wire);
        assert!(wire.ends_with("\r\n\r\nhello"), "{wire}");
    }

    #[tokio::test]
    async fn a_body_shorter_than_announced_closes_the_connection() {
        let mut response = Response::new(full("abc"));
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, "10".parse().unwrap());
        let (_, keep) = written(response, KEEP_11).await;
        assert!(!keep);
    }

    #[tokio::test]
    async fn a_body_longer_than_announced_is_cut_and_the_connection_closed() {
        for parts in [
            vec!["hello", "HTTP/1.1 200 OK"],
            vec!["helloHTTP/1.1 200 OK"],
        ] {
            let mut response = Response::new(stream(parts));
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, "5".parse().unwrap());
            let (wire, keep) = written(response, KEEP_11).await;
            assert!(!keep);
            assert!(wire.ends_with("\r\n\r\nhello"), "{wire}");
        }
        // Raw homeserver fields announce the length the same way.
        let answer = relayed(
            "Content-Length: 5\r\nDate: Sat, 28 Nov 2026 10:00:00 GMT\r\n",
            Some(5),
            full("hello, and more"),
        );
        let (wire, keep) = written(answer, KEEP_11).await;
        assert!(!keep);
        assert!(wire.ends_with("\r\n\r\nhello"), "{wire}");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_given_up_after_the_write_timeout() {
        // A pipe with room for 1 KiB that nobody reads.
        let (mut server, _client) = tokio::io::duplex(1024);
        let mut out = Vec::new();
        let reply = Reply {
            write_timeout: Duration::from_millis(50),
            ..KEEP_11
        };
        let response = Response::new(full(vec![b'x'; 256 * 1024]));
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            write(&mut server, &mut out, response.into(), reply),
        )
        .await
        .expect("the write timeout ends the write");
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
