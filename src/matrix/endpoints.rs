//! The Matrix v1.11 endpoint table (`src/matrix/v1_11_endpoints.tsv`, a copy of the shared v1.11 table) compiled into one
//! matcher per HTTP method.
//!
//! Matching runs on the **raw** request path, before any percent-decoding, so an encoded
//! `%2F` stays inside one segment and a room ID like `%21room%3Ahs1.test` is one parameter.
//! Matching is exact: a trailing slash is significant (`/pushrules/` is a v1.11 endpoint,
//! `/pushrules` is not), and an empty segment (`//`) never matches a parameter, so such paths
//! are unknown endpoints (404) rather than being normalised into something the homeserver
//! might read differently.

use http::Method;

/// The table shipped with the binary (a copy of the spec extract, kept as data).
pub const V1_11_TSV: &str = include_str!("v1_11_endpoints.tsv");

/// Which API an endpoint belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    ClientServer,
    ServerServer,
    /// Added by configuration (`inbound.extra_endpoints`) or the proxy itself.
    Extra,
}

/// One (method, path template) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub api: Api,
    pub method: Method,
    /// Path template with `{param}` placeholders, as in the spec.
    pub template: String,
    pub deprecated: bool,
    /// `open` endpoints need no authentication in the spec.
    pub open: bool,
    pub operation_id: String,
}

/// A problem in the table or in an extra endpoint definition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("endpoint table line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("extra endpoint {entry:?}: {message}")]
    Extra { entry: String, message: String },
    #[error("endpoint {method} {template}: {message}")]
    Insert {
        method: String,
        template: String,
        message: String,
    },
}

/// Parse a TSV with header `api method path deprecated security operation_id`.
pub fn parse_tsv(text: &str) -> Result<Vec<Endpoint>, TableError> {
    let mut out = Vec::new();
    for (idx, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let err = |message: &str| TableError::Line {
            line: idx + 1,
            message: message.to_owned(),
        };
        if cols.len() != 6 {
            return Err(err("expected 6 tab-separated columns"));
        }
        let api = match cols[0] {
            "client-server" => Api::ClientServer,
            "server-server" => Api::ServerServer,
            _ => return Err(err("unknown api")),
        };
        let method = Method::from_bytes(cols[1].as_bytes()).map_err(|_| err("bad method"))?;
        out.push(Endpoint {
            api,
            method,
            template: cols[2].to_owned(),
            deprecated: cols[3] != "-",
            open: cols[4] == "open",
            operation_id: cols[5].to_owned(),
        });
    }
    Ok(out)
}

/// The v1.11 endpoints.
pub fn v1_11() -> Vec<Endpoint> {
    // The file is part of the binary and covered by tests, so a parse error is a build defect;
    // still, never panic at runtime: an unparsable table yields no endpoints (everything 404).
    parse_tsv(V1_11_TSV).unwrap_or_default()
}

/// Parse `"METHOD /path/{param}"` from `inbound.extra_endpoints`.
pub fn parse_extra(entry: &str) -> Result<Endpoint, TableError> {
    let err = |message: &str| TableError::Extra {
        entry: entry.to_owned(),
        message: message.to_owned(),
    };
    let mut parts = entry.split_whitespace();
    let (Some(method), Some(path), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(err("expected \"METHOD /path\""));
    };
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| err("bad method"))?;
    if !path.starts_with('/') {
        return Err(err("path must start with '/'"));
    }
    Ok(Endpoint {
        api: Api::Extra,
        method,
        template: path.to_owned(),
        deprecated: false,
        open: false,
        operation_id: String::new(),
    })
}

/// Path parameters of a matched endpoint: names from the table, values as positions in the
/// classified path (still percent-encoded). Classification runs on every request; owned copies
/// of every name and value were allocations most requests never look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams<'t> {
    entries: Vec<(&'t str, std::ops::Range<usize>)>,
}

impl PathParams<'_> {
    /// The raw value of parameter `name` in `path`, the path that was classified.
    pub fn get<'p>(&self, path: &'p str, name: &str) -> Option<&'p str> {
        self.entries
            .iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, range)| path.get(range.clone()))
    }

    /// All parameters as owned (name, raw value) pairs, in template order.
    pub fn to_vec(&self, path: &str) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter_map(|(k, range)| Some(((*k).to_owned(), path.get(range.clone())?.to_owned())))
            .collect()
    }
}

/// Result of classifying a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification<'t> {
    /// A known endpoint; `params` are raw (still percent-encoded) path segments.
    Matched {
        endpoint: &'t Endpoint,
        params: PathParams<'t>,
    },
    /// The path is known for other methods; `template` is the path template.
    MethodNotAllowed { template: &'t str },
    /// Not an endpoint the proxy serves.
    NotFound,
}

impl Classification<'_> {
    /// Endpoint template for logs and metrics (bounded label set).
    pub fn template(&self) -> &str {
        match self {
            Classification::Matched { endpoint, .. } => &endpoint.template,
            Classification::MethodNotAllowed { template } => template,
            Classification::NotFound => "unknown",
        }
    }
}

/// The routes registered for a template. A trailing `{stateKey}` may be empty (most state
/// events have the empty state key), which clients send as `…/{eventType}/` or `…/{eventType}`;
/// both spellings are registered for the same endpoint because a parameter never matches an
/// empty segment.
fn routes_for(template: &str) -> Vec<String> {
    match template.strip_suffix("/{stateKey}") {
        Some(prefix) => vec![template.to_owned(), format!("{prefix}/"), prefix.to_owned()],
        None => vec![template.to_owned()],
    }
}

/// Per-method matchers over the endpoint list.
pub struct EndpointTable {
    endpoints: Vec<Endpoint>,
    /// A handful of methods: a scan compares enum tags, where a map hashed the method on every
    /// request; the order is the table's, so `MethodNotAllowed` is deterministic too.
    routers: Vec<(Method, matchit::Router<usize>)>,
}

impl std::fmt::Debug for EndpointTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointTable")
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

impl EndpointTable {
    /// Compile `endpoints`; a duplicate (method, template) pair is kept once.
    pub fn new(endpoints: Vec<Endpoint>) -> Result<Self, TableError> {
        let mut routers: Vec<(Method, matchit::Router<usize>)> = Vec::new();
        let mut kept = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            if kept
                .iter()
                .any(|e: &Endpoint| e.method == endpoint.method && e.template == endpoint.template)
            {
                continue;
            }
            let slot = match routers.iter().position(|(m, _)| *m == endpoint.method) {
                Some(slot) => slot,
                None => {
                    routers.push((endpoint.method.clone(), matchit::Router::new()));
                    routers.len() - 1
                }
            };
            let router = &mut routers[slot].1;
            for route in routes_for(&endpoint.template) {
                router
                    .insert(route, kept.len())
                    .map_err(|e| TableError::Insert {
                        method: endpoint.method.to_string(),
                        template: endpoint.template.clone(),
                        message: e.to_string(),
                    })?;
            }
            kept.push(endpoint);
        }
        Ok(Self {
            endpoints: kept,
            routers,
        })
    }

    /// The v1.11 table plus `extra` entries (`"METHOD /path"`).
    pub fn v1_11_with_extras(extra: &[String]) -> Result<Self, TableError> {
        let mut endpoints = parse_tsv(V1_11_TSV)?;
        for entry in extra {
            endpoints.push(parse_extra(entry)?);
        }
        Self::new(endpoints)
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Classify a raw request path (no query string). The parameters of a match refer to
    /// `raw_path`.
    pub fn classify(&self, method: &Method, raw_path: &str) -> Classification<'_> {
        if raw_path.contains("//") {
            return Classification::NotFound;
        }
        if let Some((_, router)) = self.routers.iter().find(|(m, _)| m == method)
            && let Ok(found) = router.at(raw_path)
            && let Some(endpoint) = self.endpoints.get(*found.value)
        {
            let base = raw_path.as_ptr() as usize;
            let params = PathParams {
                entries: found
                    .params
                    .iter()
                    .map(|(k, v)| {
                        let start = (v.as_ptr() as usize).saturating_sub(base);
                        (k, start..start + v.len())
                    })
                    .collect(),
            };
            return Classification::Matched { endpoint, params };
        }
        for (other, router) in &self.routers {
            if other != method
                && let Ok(found) = router.at(raw_path)
                && let Some(endpoint) = self.endpoints.get(*found.value)
            {
                return Classification::MethodNotAllowed {
                    template: &endpoint.template,
                };
            }
        }
        Classification::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> EndpointTable {
        EndpointTable::v1_11_with_extras(&[]).unwrap()
    }

    #[test]
    fn shipped_table_has_191_unique_rows() {
        let rows = parse_tsv(V1_11_TSV).unwrap();
        assert_eq!(rows.len(), 191);
        assert_eq!(table().endpoints().len(), 191);
        assert_eq!(
            rows.iter().filter(|e| e.api == Api::ServerServer).count(),
            37
        );
    }

    #[test]
    fn encoded_slash_stays_inside_one_segment() {
        let t = table();
        match t.classify(
            &Method::GET,
            "/_matrix/client/v3/rooms/%21a%2Fb%3Ahs1.test/members",
        ) {
            Classification::Matched { endpoint, params } => {
                assert_eq!(
                    endpoint.template,
                    "/_matrix/client/v3/rooms/{roomId}/members"
                );
                assert_eq!(
                    params.to_vec("/_matrix/client/v3/rooms/%21a%2Fb%3Ahs1.test/members"),
                    vec![("roomId".into(), "%21a%2Fb%3Ahs1.test".into())]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn trailing_slash_and_double_slash_are_significant() {
        let t = table();
        assert!(matches!(
            t.classify(&Method::GET, "/_matrix/client/v3/pushrules/"),
            Classification::Matched { .. }
        ));
        assert_eq!(
            t.classify(&Method::GET, "/_matrix/client/v3/sync/"),
            Classification::NotFound
        );
        assert_eq!(
            t.classify(&Method::GET, "/_matrix/client/v3//sync"),
            Classification::NotFound
        );
        assert_eq!(
            t.classify(&Method::GET, "/_matrix/client/v3/rooms//members"),
            Classification::NotFound
        );
    }

    #[test]
    fn empty_state_key_matches_the_state_endpoint() {
        let t = table();
        for path in [
            "/_matrix/client/v3/rooms/%21r%3Ahs/state/m.room.join_rules/",
            "/_matrix/client/v3/rooms/%21r%3Ahs/state/m.room.join_rules",
            "/_matrix/client/v3/rooms/%21r%3Ahs/state/m.room.member/%40a%3Ahs",
        ] {
            assert_eq!(
                t.classify(&Method::PUT, path).template(),
                "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
                "{path}"
            );
        }
    }

    #[test]
    fn wrong_method_is_distinguished_from_unknown_path() {
        let t = table();
        assert_eq!(
            t.classify(&Method::DELETE, "/_matrix/client/v3/createRoom"),
            Classification::MethodNotAllowed {
                template: "/_matrix/client/v3/createRoom"
            }
        );
        assert_eq!(
            t.classify(&Method::GET, "/_matrix/client/v3/asdf"),
            Classification::NotFound
        );
        assert_eq!(
            t.classify(&Method::GET, "/_synapse/admin/v1/users"),
            Classification::NotFound
        );
        assert_eq!(
            t.classify(&Method::GET, "/metrics"),
            Classification::NotFound
        );
    }

    #[test]
    fn static_segments_win_over_parameters() {
        let t = table();
        assert_eq!(
            t.classify(&Method::GET, "/_matrix/federation/v1/query/directory")
                .template(),
            "/_matrix/federation/v1/query/directory"
        );
        assert_eq!(
            t.classify(&Method::GET, "/_matrix/federation/v1/query/other")
                .template(),
            "/_matrix/federation/v1/query/{queryType}"
        );
    }

    #[test]
    fn extra_endpoints_are_added_and_validated() {
        let t =
            EndpointTable::v1_11_with_extras(&["get /_synapse/client/oidc/callback".to_owned()])
                .unwrap();
        assert_eq!(t.endpoints().len(), 192);
        assert!(matches!(
            t.classify(&Method::GET, "/_synapse/client/oidc/callback"),
            Classification::Matched { .. }
        ));
        assert!(parse_extra("GET").is_err());
        assert!(parse_extra("GET nopath").is_err());
    }
}
