//! The answer a request of the inbound listener gets, on its way from the phase that made it to
//! the connection that writes it.
//!
//! An answer the proxy makes itself keeps its fields in a `HeaderMap`. A homeserver answer
//! keeps them as received ([`RawFields`]) until something needs them as a map: an HTTP/1
//! client gets them as they are (see `http1::response`), and building a `HeaderMap` from them
//! and encoding it again was a sixth of a proxied request's instructions.
//!
//! [`Answer`] holds one form or the other, never both, and hands out the field map only after
//! turning the fields as received into it ([`Answer::headers_mut`], [`Answer::into_response`]).
//! So no code can read or edit an incomplete map, and an edit reaches HTTP/1 and h2 clients
//! alike; answers nobody edits still leave over HTTP/1 without a map ever being built.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::forward::Body;
use crate::framing::length_field;

/// The end-to-end fields of a homeserver answer as received: `name: value` lines, each ending
/// in CRLF, the hop-by-hop ones removed while the head was parsed (`super::upstream`).
///
/// The block is growable, so the fields the proxy adds (CORS) go in place, into room the
/// parser left for them.
#[derive(Debug, Clone)]
pub struct RawFields {
    block: BytesMut,
    /// The `Content-Length` the fields declare (none beside chunked framing).
    content_length: Option<u64>,
    has_date: bool,
    /// Which CORS fields the block holds (bits of `cors::field_bit`), so completing an answer's
    /// CORS fields reads no field line again.
    cors_fields: u8,
}

impl RawFields {
    /// Field lines as the answer parser kept them, with what it learned of them on the way.
    pub(crate) fn new(
        block: BytesMut,
        content_length: Option<u64>,
        has_date: bool,
        cors_fields: u8,
    ) -> Self {
        Self {
            block,
            content_length,
            has_date,
            cors_fields,
        }
    }

    /// The field lines, ready to be written.
    pub(crate) fn block(&self) -> &[u8] {
        &self.block
    }

    pub(crate) fn has_date(&self) -> bool {
        self.has_date
    }

    /// Which CORS fields are among them (bits of `cors::field_bit`).
    pub(crate) fn cors_fields(&self) -> u8 {
        self.cors_fields
    }

    /// Add one field line. Only for fields that neither frame the body nor concern the
    /// connection ([`Answer::append`] sees to that).
    fn append(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.block.extend_from_slice(name.as_str().as_bytes());
        self.block.extend_from_slice(b": ");
        self.block.extend_from_slice(value.as_bytes());
        self.block.extend_from_slice(b"\r\n");
        self.cors_fields |= super::cors::name_bit(name);
        self.has_date |= *name == header::DATE;
    }

    /// The same fields as a map, appended to `headers`.
    fn into_map(self, headers: &mut HeaderMap) {
        let block = self.block.freeze();
        for line in block.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let value = line[colon + 1..].trim_ascii();
            // Both were validated when the head was parsed.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_maybe_shared(block.slice_ref(value)),
            ) {
                headers.append(name, value);
            }
        }
    }
}

/// An answer's fields as they are now: as received from the homeserver, or in a map.
pub enum Fields<'a> {
    Raw(&'a RawFields),
    Map(&'a HeaderMap),
}

/// The answer to one request: status, version and body, and its fields either as received
/// from the homeserver or in a map (see the module documentation).
#[derive(Debug)]
pub struct Answer {
    /// Its field map is empty while `raw` holds the fields.
    response: Response<Body>,
    raw: Option<RawFields>,
}

impl From<Response<Body>> for Answer {
    /// An answer the proxy made itself.
    fn from(response: Response<Body>) -> Self {
        Self {
            response,
            raw: None,
        }
    }
}

impl Answer {
    /// A homeserver answer: its head (without fields) and its fields as received.
    pub(crate) fn relayed(parts: http::response::Parts, raw: RawFields, body: Body) -> Self {
        let mut response = Response::from_parts(parts, body);
        response.headers_mut().clear();
        Self {
            response,
            raw: Some(raw),
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The fields in whichever form they are now, to look at without turning them into a map.
    pub(crate) fn fields(&self) -> Fields<'_> {
        match &self.raw {
            Some(raw) => Fields::Raw(raw),
            None => Fields::Map(self.response.headers()),
        }
    }

    /// The `Content-Length` the answer declares.
    pub(crate) fn content_length(&self) -> Option<u64> {
        match &self.raw {
            Some(raw) => raw.content_length,
            None => length_field(self.response.headers()),
        }
    }

    /// The field map, complete: fields as received are turned into it first.
    pub(crate) fn headers_mut(&mut self) -> &mut HeaderMap {
        self.materialize();
        self.response.headers_mut()
    }

    /// Add a field, in place when the fields are as received: unless it frames the body or
    /// concerns the connection, which the map form keeps consistent.
    pub(crate) fn append(&mut self, name: HeaderName, value: HeaderValue) {
        match &mut self.raw {
            Some(raw)
                if name != header::CONTENT_LENGTH
                    && name != header::TRANSFER_ENCODING
                    && name != header::CONNECTION =>
            {
                raw.append(&name, &value);
            }
            _ => {
                self.headers_mut().append(name, value);
            }
        }
    }

    /// A plain response with every field in its map (for h2, and for code that rebuilds the
    /// answer).
    pub(crate) fn into_response(mut self) -> Response<Body> {
        self.materialize();
        self.response
    }

    /// The parts as the HTTP/1 writer needs them: the head, the fields as received if they are
    /// still so (the head's map is then empty), and the body.
    pub(crate) fn into_wire(self) -> (http::response::Parts, Option<RawFields>, Body) {
        let (parts, body) = self.response.into_parts();
        (parts, self.raw, body)
    }

    fn materialize(&mut self) {
        if let Some(raw) = self.raw.take() {
            raw.into_map(self.response.headers_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbound::forward::full;

    fn relayed(block: &'static str) -> Answer {
        let (parts, body) = Response::new(full("{}")).into_parts();
        Answer::relayed(parts, RawFields::new(block.into(), Some(2), false, 0), body)
    }

    #[test]
    fn the_map_is_complete_whenever_it_is_handed_out() {
        let mut answer =
            relayed("content-type: application/json\r\nset-cookie: a\r\nset-cookie: b\r\n");
        assert!(matches!(answer.fields(), Fields::Raw(_)));
        let headers = answer.headers_mut();
        assert_eq!(headers["content-type"], "application/json");
        let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a", "b"]);
        assert!(matches!(answer.fields(), Fields::Map(_)));
        // The declared length comes from the map now.
        assert_eq!(answer.content_length(), None);
        answer
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(2));
        assert_eq!(answer.content_length(), Some(2));
    }

    #[test]
    fn appended_fields_stay_raw_unless_they_frame_the_body() {
        let mut answer = relayed("content-type: application/json\r\n");
        answer.append(
            HeaderName::from_static("access-control-allow-origin"),
            HeaderValue::from_static("*"),
        );
        answer.append(header::DATE, HeaderValue::from_static("x"));
        let Fields::Raw(raw) = answer.fields() else {
            panic!("an ordinary field turned the fields into a map");
        };
        assert_eq!(
            raw.block(),
            b"content-type: application/json\r\naccess-control-allow-origin: *\r\ndate: x\r\n"
        );
        assert_eq!(
            raw.cors_fields(),
            super::super::cors::field_bit(b"access-control-allow-origin")
        );
        assert!(raw.has_date());
        answer.append(header::CONTENT_LENGTH, HeaderValue::from(2));
        let response = answer.into_response();
        assert_eq!(response.headers()["content-length"], "2");
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
    }
}
