//! The federation `Authorization: X-Matrix origin=…,destination=…,key=…,sig=…` header.
//!
//! The proxy only needs `origin` and `destination` (Synapse verifies the signature), but the
//! whole header is parsed so a malformed one is refused rather than half-read. Values may be
//! quoted strings (with `\` escapes) or bare tokens; parameter names are case-insensitive,
//! the scheme too; unknown parameters are ignored as the spec asks.

/// A parsed X-Matrix header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XMatrix {
    pub origin: String,
    pub destination: Option<String>,
    pub key: Option<String>,
    pub sig: Option<String>,
}

/// Why a header is not usable X-Matrix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XMatrixError {
    #[error("authorization scheme is not X-Matrix")]
    Scheme,
    #[error("malformed X-Matrix parameters")]
    Syntax,
    #[error("X-Matrix header has no origin")]
    MissingOrigin,
}

impl XMatrix {
    pub fn parse(header: &str) -> Result<Self, XMatrixError> {
        let mut out = XMatrix::default();
        let mut origin = None;
        for (name, value) in parameters(header)? {
            match name.to_ascii_lowercase().as_str() {
                "origin" => origin = Some(value),
                "destination" => out.destination = Some(value),
                "key" => out.key = Some(value),
                "sig" => out.sig = Some(value),
                _ => {}
            }
        }
        out.origin = origin
            .filter(|o| !o.is_empty())
            .ok_or(XMatrixError::MissingOrigin)?;
        Ok(out)
    }

    /// Render with every value quoted (used by tests and fakes).
    pub fn render(&self) -> String {
        let mut parts = vec![format!("origin={}", quote(&self.origin))];
        for (name, value) in [
            ("destination", &self.destination),
            ("key", &self.key),
            ("sig", &self.sig),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name}={}", quote(v)));
            }
        }
        format!("X-Matrix {}", parts.join(","))
    }
}

fn quote(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// `name=value` pairs separated by commas, optional whitespace around them.
/// The `(name, value)` parameters of an X-Matrix header, without requiring any of them —
/// the outbound proxy needs only `destination`, the inbound side needs `origin` too.
pub fn parameters(header: &str) -> Result<Vec<(String, String)>, XMatrixError> {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    if !scheme.eq_ignore_ascii_case("X-Matrix") {
        return Err(XMatrixError::Scheme);
    }
    parse_params(rest)
}

fn parse_params(input: &str) -> Result<Vec<(String, String)>, XMatrixError> {
    let bytes = input.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && (bytes[*i] == b' ' || bytes[*i] == b'\t') {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            return Err(XMatrixError::Syntax);
        }
        let name = input[start..i].trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(XMatrixError::Syntax);
        }
        i += 1;
        skip_ws(&mut i);
        let value = if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let mut value = Vec::new();
            loop {
                match bytes.get(i) {
                    None => return Err(XMatrixError::Syntax),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let escaped = bytes.get(i + 1).ok_or(XMatrixError::Syntax)?;
                        value.push(*escaped);
                        i += 2;
                    }
                    Some(b) => {
                        value.push(*b);
                        i += 1;
                    }
                }
            }
            String::from_utf8(value).map_err(|_| XMatrixError::Syntax)?
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            input[start..i].trim().to_owned()
        };
        out.push((name.to_owned(), value));
        skip_ws(&mut i);
        match bytes.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(XMatrixError::Syntax),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_quoted_and_unquoted_params_in_any_order() {
        let h =
            r#"X-Matrix sig="ABC/+=",key="ed25519:1",destination=hs1.test:8448,origin=hs2.test"#;
        let x = XMatrix::parse(h).unwrap();
        assert_eq!(x.origin, "hs2.test");
        assert_eq!(x.destination.as_deref(), Some("hs1.test:8448"));
        assert_eq!(x.key.as_deref(), Some("ed25519:1"));
        assert_eq!(x.sig.as_deref(), Some("ABC/+="));
    }

    #[test]
    fn scheme_and_names_are_case_insensitive_and_escapes_work() {
        let x = XMatrix::parse(r#"x-matrix ORIGIN="a\"b", Key = k"#).unwrap();
        assert_eq!(x.origin, "a\"b");
        assert_eq!(x.key.as_deref(), Some("k"));
    }

    #[test]
    fn refuses_other_schemes_missing_origin_and_garbage() {
        assert_eq!(XMatrix::parse("Bearer abc"), Err(XMatrixError::Scheme));
        assert_eq!(
            XMatrix::parse("X-Matrix key=a"),
            Err(XMatrixError::MissingOrigin)
        );
        assert_eq!(
            XMatrix::parse("X-Matrix origin=\"unterminated"),
            Err(XMatrixError::Syntax)
        );
        assert_eq!(XMatrix::parse("X-Matrix origin"), Err(XMatrixError::Syntax));
    }

    proptest! {
        #[test]
        fn render_then_parse_round_trips(
            origin in "[a-z0-9.\\-:\"\\\\ ]{1,30}",
            dest in proptest::option::of("[a-z0-9.:]{1,20}"),
            key in proptest::option::of("ed25519:[a-zA-Z0-9_]{1,8}"),
            sig in proptest::option::of("[A-Za-z0-9+/=]{1,40}"),
        ) {
            let x = XMatrix { origin, destination: dest, key, sig };
            prop_assert_eq!(XMatrix::parse(&x.render()).unwrap(), x);
        }

        #[test]
        fn arbitrary_input_never_panics(s in ".{0,80}") {
            let _ = XMatrix::parse(&s);
            let _ = XMatrix::parse(&format!("X-Matrix {s}"));
        }
    }
}
