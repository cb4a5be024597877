//! The endpoints the inbound listener serves, compiled into one matcher per HTTP method:
//!
//! - the Matrix v1.11 table (`v1_11_endpoints.tsv`, a copy of the shared v1.11 table);
//! - a few endpoints of earlier Matrix versions served on purpose (`legacy_endpoints.tsv`, each
//!   with the reason);
//! - the operator's `inbound.extra_endpoints`;
//! - every one of them also under its alias spellings (`aliases.tsv`: `/_matrix/client/r0/…`
//!   for `/_matrix/client/v3/…`). An alias is another spelling of the same endpoint, not an
//!   endpoint of its own: it classifies to the canonical endpoint, so every rule keyed by that
//!   template applies, and nothing is reachable through an alias that the canonical path
//!   refuses.
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
/// Endpoints outside v1.11 served on purpose: the v1.11 columns plus `why`.
pub const LEGACY_TSV: &str = include_str!("legacy_endpoints.tsv");
/// Path prefixes that spell the same endpoints: `alias_prefix canonical_prefix why`.
pub const ALIASES_TSV: &str = include_str!("aliases.tsv");

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
    parse_endpoint_rows(text, 6)
}

/// Parse the legacy table: the v1.11 columns plus a non-empty `why`.
pub fn parse_legacy(text: &str) -> Result<Vec<Endpoint>, TableError> {
    parse_endpoint_rows(text, 7)
}

/// The data lines of a TSV (header skipped) as (1-based line number, columns).
fn tsv_rows(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(idx, line)| (idx + 1, line.split('\t').collect()))
}

fn parse_endpoint_rows(text: &str, columns: usize) -> Result<Vec<Endpoint>, TableError> {
    let mut out = Vec::new();
    for (line, cols) in tsv_rows(text) {
        let err = |message: &str| TableError::Line {
            line,
            message: message.to_owned(),
        };
        if cols.len() != columns || cols.iter().any(|c| c.trim().is_empty()) {
            return Err(err(&format!(
                "expected {columns} non-empty tab-separated columns"
            )));
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

/// Another spelling of a group of endpoints: a path starting with `alias` is the endpoint whose
/// template starts with `canonical` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub alias: String,
    pub canonical: String,
}

/// Parse `alias_prefix canonical_prefix why`; both prefixes start and end with `/`.
pub fn parse_aliases(text: &str) -> Result<Vec<Alias>, TableError> {
    let mut out = Vec::new();
    for (line, cols) in tsv_rows(text) {
        let err = |message: &str| TableError::Line {
            line,
            message: message.to_owned(),
        };
        let [alias, canonical, why] = cols[..] else {
            return Err(err("expected 3 tab-separated columns"));
        };
        let is_prefix = |p: &str| p.starts_with('/') && p.ends_with('/') && p.len() > 1;
        if !is_prefix(alias) || !is_prefix(canonical) || why.trim().is_empty() {
            return Err(err("expected /alias/ /canonical/ and a reason"));
        }
        out.push(Alias {
            alias: alias.to_owned(),
            canonical: canonical.to_owned(),
        });
    }
    Ok(out)
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

/// The matcher of `method`, created on first use.
fn router_for<'r>(
    routers: &'r mut Vec<(Method, matchit::Router<usize>)>,
    method: &Method,
) -> &'r mut matchit::Router<usize> {
    let slot = match routers.iter().position(|(m, _)| m == method) {
        Some(slot) => slot,
        None => {
            routers.push((method.clone(), matchit::Router::new()));
            routers.len() - 1
        }
    };
    &mut routers[slot].1
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

/// `template` spelled with each alias whose canonical prefix it starts with.
fn alias_templates<'a>(
    template: &'a str,
    aliases: &'a [Alias],
) -> impl Iterator<Item = String> + 'a {
    aliases.iter().filter_map(move |a| {
        template
            .strip_prefix(a.canonical.as_str())
            .map(|rest| format!("{}{rest}", a.alias))
    })
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
    /// Compile `endpoints` without aliases; a duplicate (method, template) pair is kept once.
    pub fn new(endpoints: Vec<Endpoint>) -> Result<Self, TableError> {
        Self::with_aliases(endpoints, &[])
    }

    /// Compile `endpoints`, each also under its `aliases` spellings. An alias spelling that
    /// another endpoint already spells out (an operator's explicit `r0` extra, say) is left to
    /// that endpoint: explicit routes are inserted first and win.
    pub fn with_aliases(endpoints: Vec<Endpoint>, aliases: &[Alias]) -> Result<Self, TableError> {
        let mut routers: Vec<(Method, matchit::Router<usize>)> = Vec::new();
        let mut kept = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            if kept
                .iter()
                .any(|e: &Endpoint| e.method == endpoint.method && e.template == endpoint.template)
            {
                continue;
            }
            let router = router_for(&mut routers, &endpoint.method);
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
        for (index, endpoint) in kept.iter().enumerate() {
            let router = router_for(&mut routers, &endpoint.method);
            for spelling in alias_templates(&endpoint.template, aliases) {
                for route in routes_for(&spelling) {
                    match router.insert(route, index) {
                        Ok(()) | Err(matchit::InsertError::Conflict { .. }) => {}
                        Err(e) => {
                            return Err(TableError::Insert {
                                method: endpoint.method.to_string(),
                                template: spelling.clone(),
                                message: e.to_string(),
                            });
                        }
                    }
                }
            }
        }
        Ok(Self {
            endpoints: kept,
            routers,
        })
    }

    /// What the inbound listener serves: the v1.11 table, the legacy endpoints and `extra`
    /// entries (`"METHOD /path"`), each under the shipped aliases too.
    pub fn served(extra: &[String]) -> Result<Self, TableError> {
        let mut endpoints = parse_tsv(V1_11_TSV)?;
        endpoints.extend(parse_legacy(LEGACY_TSV)?);
        for entry in extra {
            endpoints.push(parse_extra(entry)?);
        }
        Self::with_aliases(endpoints, &parse_aliases(ALIASES_TSV)?)
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
        EndpointTable::served(&[]).unwrap()
    }

    #[test]
    fn shipped_table_has_191_unique_rows_and_16_legacy_ones() {
        let rows = parse_tsv(V1_11_TSV).unwrap();
        assert_eq!(rows.len(), 191);
        assert_eq!(parse_legacy(LEGACY_TSV).unwrap().len(), 16);
        assert_eq!(table().endpoints().len(), 207);
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
        let t = EndpointTable::served(&["get /_synapse/client/oidc/callback".to_owned()]).unwrap();
        assert_eq!(t.endpoints().len(), 208);
        assert!(matches!(
            t.classify(&Method::GET, "/_synapse/client/oidc/callback"),
            Classification::Matched { .. }
        ));
        assert!(parse_extra("GET").is_err());
        assert!(parse_extra("GET nopath").is_err());
    }

    /// A path for `template` with a distinct value per parameter.
    fn filled(template: &str) -> String {
        template
            .split('/')
            .enumerate()
            .map(|(i, seg)| {
                if seg.starts_with('{') {
                    format!("p{i}")
                } else {
                    seg.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[test]
    fn every_alias_spelling_classifies_to_its_canonical_endpoint() {
        let t = table();
        let aliases = parse_aliases(ALIASES_TSV).unwrap();
        let mut checked = 0;
        for endpoint in t.endpoints() {
            let canonical = filled(&endpoint.template);
            for spelling in alias_templates(&endpoint.template, &aliases) {
                let path = filled(&spelling);
                let (
                    Classification::Matched {
                        endpoint: found,
                        params,
                    },
                    Classification::Matched {
                        params: canonical_params,
                        ..
                    },
                ) = (
                    t.classify(&endpoint.method, &path),
                    t.classify(&endpoint.method, &canonical),
                )
                else {
                    panic!("{} {path} not matched", endpoint.method);
                };
                assert_eq!(found, endpoint, "{path}");
                assert_eq!(
                    params.to_vec(&path),
                    canonical_params.to_vec(&canonical),
                    "{path}"
                );
                checked += 1;
            }
        }
        // Every v3 client and media endpoint, the two legacy push-rule listings included.
        assert!(checked > 100, "{checked}");
    }

    #[test]
    fn r0_paths_are_their_v3_endpoints_and_nothing_else() {
        let t = table();
        for (method, path, template) in [
            (
                Method::GET,
                "/_matrix/client/r0/events",
                "/_matrix/client/v3/events",
            ),
            (
                Method::POST,
                "/_matrix/client/r0/createRoom",
                "/_matrix/client/v3/createRoom",
            ),
            (
                Method::GET,
                "/_matrix/media/r0/config",
                "/_matrix/media/v3/config",
            ),
            (
                Method::GET,
                "/_matrix/client/r0/pushrules/global/override/",
                "/_matrix/client/v3/pushrules/{scope}/{kind}/",
            ),
            (
                Method::PUT,
                "/_matrix/client/r0/rooms/%21r%3Ahs/state/m.room.join_rules",
                "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
            ),
        ] {
            assert_eq!(t.classify(&method, path).template(), template, "{path}");
        }
        // Endpoints that only exist under v1 or v3 have no r0 spelling; unstable paths (not
        // advertised: /versions empties unstable_features) are no alias either.
        for path in [
            "/_matrix/client/r0/rooms/%21r%3Ahs/threads",
            "/_matrix/client/unstable/createRoom",
            "/_matrix/client/r1/createRoom",
            "/_matrix/federation/r0/version",
        ] {
            assert_eq!(
                t.classify(&Method::GET, path),
                Classification::NotFound,
                "{path}"
            );
            assert_eq!(
                t.classify(&Method::POST, path),
                Classification::NotFound,
                "{path}"
            );
        }
        assert_eq!(
            t.classify(&Method::DELETE, "/_matrix/client/r0/createRoom"),
            Classification::MethodNotAllowed {
                template: "/_matrix/client/v3/createRoom"
            }
        );
    }

    #[test]
    fn legacy_key_and_push_rule_endpoints_are_served() {
        let t = table();
        for (path, api) in [
            ("/_matrix/key/v2/server/ed25519%3Aa", Api::ServerServer),
            (
                "/_matrix/key/v2/query/hs1.test/ed25519%3Aa",
                Api::ServerServer,
            ),
            ("/_matrix/client/v3/pushrules/global/", Api::ClientServer),
            (
                "/_matrix/client/v3/pushrules/global/room/",
                Api::ClientServer,
            ),
        ] {
            match t.classify(&Method::GET, path) {
                Classification::Matched { endpoint, .. } => assert_eq!(endpoint.api, api, "{path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        // Malformed push-rule paths reach the homeserver, which answers 400; only single
        // segments, so nothing beyond the push-rule handler is reachable.
        assert_eq!(
            t.classify(&Method::PUT, "/_matrix/client/v3/pushrules/global/room/")
                .template(),
            "/_matrix/client/v3/pushrules/{scope}/{kind}/"
        );
        for path in [
            "/_matrix/client/v3/pushrules",
            "/_matrix/client/v3/pushrules/global/override/x/enabled/more",
            "/_matrix/client/v3/pushrules/global/override/x/y/z",
        ] {
            assert_eq!(
                t.classify(&Method::GET, path),
                Classification::NotFound,
                "{path}"
            );
        }
    }

    #[test]
    fn an_explicit_route_wins_over_an_alias_spelling() {
        let extra = ["GET /_matrix/client/r0/events".to_owned()];
        let t = EndpointTable::served(&extra).unwrap();
        assert_eq!(
            t.classify(&Method::GET, "/_matrix/client/r0/events")
                .template(),
            "/_matrix/client/r0/events"
        );
        assert_eq!(
            t.classify(&Method::GET, "/_matrix/client/v3/events")
                .template(),
            "/_matrix/client/v3/events"
        );
    }

    #[test]
    fn alias_and_legacy_tables_are_checked() {
        assert!(parse_aliases("h\n/_matrix/client/r0/\t/_matrix/client/v3/\t\n").is_err());
        assert!(parse_aliases("h\n_matrix/client/r0\t/_matrix/client/v3/\twhy\n").is_err());
        assert!(parse_legacy("h\nclient-server\tGET\t/x\t-\tauth\top\n").is_err());
        assert!(parse_legacy("h\nclient-server\tGET\t/x\t-\tauth\top\t \n").is_err());
    }
}
