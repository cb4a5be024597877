//! The proxy request head: `CONNECT host:port` (HTTP/1.0 as Synapse sends it, or 1.1), read
//! by hand from the raw socket so the tunnel starts on exactly the bytes after the head and
//! malformed requests get the reference's plain-text 400.

use std::io;
use std::str::FromStr;

use bytes::{Buf, Bytes, BytesMut};
use http::uri::Authority;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::MatrixError;

/// Largest proxy request head accepted.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// Where a CONNECT asks to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    /// Host as written in the CONNECT line, lower-cased; IPv6 literals keep their brackets.
    pub host: String,
    pub port: u16,
    /// `host:port`, the authority of every upstream request in this tunnel.
    pub authority: Authority,
}

impl ConnectTarget {
    /// The host without IPv6 brackets (certificate names, DNS, TLS server name).
    pub fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

/// A parsed proxy request head.
#[derive(Debug)]
pub(crate) enum Head {
    Connect(ConnectTarget),
    /// Any other method (plain `GET http://…` forwarding is not offered).
    Other {
        method: String,
    },
}

/// Why a head could not be used; each maps to the reference's answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeadError {
    /// The client closed before sending a complete head (port probes do this).
    #[error("connection closed before a complete request head")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("Unable to parse HTTP message{0}")]
    Parse(String),
    #[error("there was no destination in CONNECT request")]
    NoDestination,
}

/// Read one request head; returns it and the bytes the client sent after it.
pub(crate) async fn read_head<IO>(io: &mut IO) -> Result<(Head, Bytes), HeadError>
where
    IO: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(if buf.is_empty() {
                HeadError::Closed
            } else {
                HeadError::Parse(": incomplete request head".to_owned())
            });
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let head = interpret(&request)?;
                buf.advance(len);
                return Ok((head, buf.freeze()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(HeadError::Parse(": request head too large".to_owned()));
            }
            Err(e) => return Err(HeadError::Parse(format!(": {e}"))),
        }
    }
}

fn interpret(request: &httparse::Request<'_, '_>) -> Result<Head, HeadError> {
    let method = request.method.unwrap_or_default();
    if method != "CONNECT" {
        return Ok(Head::Other {
            method: method.to_owned(),
        });
    }
    let target = request.path.unwrap_or_default().trim();
    if target.is_empty() {
        return Err(HeadError::NoDestination);
    }
    parse_target(target).map(Head::Connect)
}

/// Parse an authority-form CONNECT target; the port is mandatory (RFC 9110 §9.3.6).
pub(crate) fn parse_target(target: &str) -> Result<ConnectTarget, HeadError> {
    let bad = |why: &str| HeadError::Parse(format!(": CONNECT target `{target}` {why}"));
    let authority = Authority::from_str(target).map_err(|_| bad("is not host:port"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry user information"));
    }
    let port = authority.port_u16().ok_or_else(|| bad("lacks a port"))?;
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() || port == 0 {
        return Err(bad("is not host:port"));
    }
    let authority =
        Authority::from_str(&format!("{host}:{port}")).map_err(|_| bad("is not host:port"))?;
    Ok(ConnectTarget {
        host,
        port,
        authority,
    })
}

/// `HTTP/1.1 200`: Synapse accepts any `HTTP/1.x 200`.
pub(crate) async fn write_established<IO: AsyncWrite + Unpin>(io: &mut IO) -> io::Result<()> {
    io.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    io.flush().await
}

/// The reference's plain-text 400 for unusable heads; the connection is closed after it.
pub(crate) async fn write_plain_400<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    message: &str,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        message.len()
    );
    io.write_all(head.as_bytes()).await?;
    io.write_all(message.as_bytes()).await?;
    io.shutdown().await
}

/// A Matrix JSON error answered before any tunnel exists; the connection is closed after it.
pub(crate) async fn write_matrix_error<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    error: &MatrixError,
) -> io::Result<()> {
    let body = error.body();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        error.status.as_u16(),
        error.status.canonical_reason().unwrap_or(""),
        body.len()
    );
    io.write_all(head.as_bytes()).await?;
    io.write_all(&body).await?;
    io.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn head_of(bytes: &[u8]) -> Result<(Head, Bytes), HeadError> {
        let mut reader = bytes;
        read_head(&mut reader).await
    }

    #[tokio::test]
    async fn synapse_style_http10_connect_without_host_is_accepted() {
        let (head, rest) = head_of(b"CONNECT hs2.test:8449 HTTP/1.0\r\n\r\n\x16\x03\x01")
            .await
            .unwrap();
        match head {
            Head::Connect(t) => {
                assert_eq!(t.host, "hs2.test");
                assert_eq!(t.port, 8449);
                assert_eq!(t.authority.as_str(), "hs2.test:8449");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(&rest[..], b"\x16\x03\x01");
    }

    #[tokio::test]
    async fn ipv6_and_case_are_normalised() {
        let (head, _) = head_of(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n")
            .await
            .unwrap();
        let Head::Connect(t) = head else { panic!() };
        assert_eq!(t.host, "[::1]");
        assert_eq!(t.bare_host(), "::1");
        let t = parse_target("HS2.Test:8449").unwrap();
        assert_eq!(t.host, "hs2.test");
    }

    #[tokio::test]
    async fn malformed_heads_are_told_apart() {
        for (input, expected) in [
            (
                &b"CONNECT  HTTP/1.1\r\n\r\n"[..],
                "Unable to parse HTTP message",
            ),
            (
                b"CONNECT hs2.test HTTP/1.1\r\n\r\n",
                "Unable to parse HTTP message: CONNECT target `hs2.test` lacks a port",
            ),
            (
                b"CONNECT user@h:1 HTTP/1.1\r\n\r\n",
                "Unable to parse HTTP message: CONNECT target `user@h:1` must not carry user information",
            ),
            (
                b"\x16\x03\x01\x00\x00garbage\r\n\r\n",
                "Unable to parse HTTP message",
            ),
            (
                b"CONNECT a:1 HTTP/1.1\r\n",
                "Unable to parse HTTP message: incomplete request head",
            ),
        ] {
            let err = head_of(input).await.unwrap_err().to_string();
            assert!(err.starts_with(expected), "{input:?}: {err}");
        }
        assert!(matches!(head_of(b"").await, Err(HeadError::Closed)));
    }

    #[tokio::test]
    async fn absolute_form_get_is_recognised_as_other() {
        let (head, _) = head_of(b"GET http://hs2.test/ HTTP/1.1\r\nHost: hs2.test\r\n\r\n")
            .await
            .unwrap();
        assert!(matches!(head, Head::Other { method } if method == "GET"));
    }

    #[tokio::test]
    async fn oversized_head_is_refused() {
        let mut input = b"CONNECT a:1 HTTP/1.1\r\n".to_vec();
        for i in 0..400 {
            input.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "y".repeat(20)).as_bytes());
        }
        let err = head_of(&input).await.unwrap_err().to_string();
        assert!(
            err.contains("too large") || err.contains("Unable to parse"),
            "{err}"
        );
    }
}
