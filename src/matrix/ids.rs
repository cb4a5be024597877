//! Matrix identifiers, validated once at the edge so rules never re-parse strings.
//!
//! Only what the TIM rules need: a user ID's server name (everything after the first `:`,
//! port included, per the Matrix "Server Name" grammar) and a server-name check.

use std::fmt;

/// A user ID `@localpart:server.name[:port]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId {
    full: String,
    colon: usize,
}

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("user id must start with '@'")]
    MissingSigil,
    #[error("user id has no server name")]
    MissingServerName,
    #[error("invalid server name")]
    InvalidServerName,
    #[error("user id longer than 255 bytes")]
    TooLong,
}

impl UserId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() > 255 {
            return Err(IdError::TooLong);
        }
        let rest = s.strip_prefix('@').ok_or(IdError::MissingSigil)?;
        let colon = rest.find(':').ok_or(IdError::MissingServerName)? + 1;
        validate_server_name(&s[colon + 1..])?;
        Ok(Self {
            full: s.to_owned(),
            colon,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Server name with port, exactly as written.
    pub fn server_name(&self) -> &str {
        &self.full[self.colon + 1..]
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Whether two server names name the same homeserver: compared whole, port included, byte for
/// byte (Matrix spec, appendix "Server Name"). `hs.test`, `hs.test:8448` and `hs.test:8449` are
/// three servers, whatever they resolve to. This is the homeserver's own test (Synapse's
/// `is_mine` is string equality), so "local" means the same on both sides of the proxy: a user
/// the proxy took for remote while the homeserver took them for local would skip the invitee's
/// permission check; one the proxy took for local while the homeserver does not would be looked
/// up where it cannot be found.
///
/// The one deliberate exception is the TI federation list, which holds domains: list lookups
/// use the host part ([`crate::federation::list::domain_of`]), see `FederationList::get`.
pub fn same_server_name(a: &str, b: &str) -> bool {
    a == b
}

/// Check the Matrix server-name grammar: a DNS name, IPv4 literal or bracketed IPv6 literal,
/// optionally followed by `:port`.
pub fn validate_server_name(s: &str) -> Result<(), IdError> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']').ok_or(IdError::InvalidServerName)?;
        let inner = &rest[..end];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(IdError::InvalidServerName);
        }
        (None, &rest[end + 1..])
    } else {
        match s.find(':') {
            Some(idx) => (Some(&s[..idx]), &s[idx..]),
            None => (Some(s), ""),
        }
    };
    if let Some(host) = host
        && (host.is_empty()
            || host.len() > 255
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        return Err(IdError::InvalidServerName);
    }
    if !port.is_empty() {
        let digits = port.strip_prefix(':').ok_or(IdError::InvalidServerName)?;
        if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError::InvalidServerName);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_server_name_keeps_port_and_splits_at_first_colon() {
        let id = UserId::parse("@alice:hs1.test:8448").unwrap();
        assert_eq!(id.server_name(), "hs1.test:8448");
        assert_eq!(
            UserId::parse("@b:[::1]:80").unwrap().server_name(),
            "[::1]:80"
        );
    }

    #[test]
    fn server_names_are_compared_whole_with_their_port() {
        assert!(same_server_name("localhost:8800", "localhost:8800"));
        assert!(!same_server_name("localhost:8801", "localhost:8800"));
        assert!(!same_server_name("hs1.test", "hs1.test:8448"));
        assert!(!same_server_name("[::1]:8448", "[::1]"));
        // The homeserver compares bytes; so does the proxy.
        assert!(!same_server_name("HS1.test", "hs1.test"));
    }

    #[test]
    fn malformed_user_ids_are_refused() {
        assert_eq!(UserId::parse("alice:hs"), Err(IdError::MissingSigil));
        assert_eq!(UserId::parse("@alice"), Err(IdError::MissingServerName));
        assert_eq!(UserId::parse("@a:"), Err(IdError::InvalidServerName));
        assert_eq!(UserId::parse("@a:h s"), Err(IdError::InvalidServerName));
        assert_eq!(UserId::parse("@a:hs:port"), Err(IdError::InvalidServerName));
    }
}
