//! Endpoint documents: OpenAPI 3 / Swagger 2 and plain `METHOD /path` lists.
//!
//! Every operation is classified with the proxy's own matcher ([`EndpointTable`]) and the TIM
//! endpoint blocks ([`policy::blocked_endpoint`], guest registration), so the verdict is the
//! one `serve` would give. Path parameters in a document (`{room_id}`) match the table's
//! parameters whatever their names: each is replaced by a percent-encoded placeholder, which
//! can only ever match a parameter segment (static segments never contain `%`).

use http::Method;
use serde_json::{Map, Value};

use super::locate::Pos;
use super::parse;
use super::{Checker, Sink, read_document};
use crate::error::MatrixError;
use crate::matrix::endpoints::{Classification, EndpointTable};
use crate::policy;

const OPENAPI_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// `METHOD` token: an HTTP method name in any case.
fn http_method(token: &str) -> Option<Method> {
    let upper = token.to_ascii_uppercase();
    OPENAPI_METHODS
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&upper))
        .then(|| Method::from_bytes(upper.as_bytes()).ok())
        .flatten()
}

/// One `METHOD /path` found on a line: method, path (with query), byte column of the method.
fn endpoint_on_line(line: &str) -> Option<(Method, &str, usize)> {
    let mut tokens = line
        .split([' ', '\t'])
        .scan(0usize, |offset, token| {
            let start = *offset;
            *offset += token.len() + 1;
            Some((start, token))
        })
        .filter(|(_, t)| !t.is_empty())
        .peekable();
    while let Some((start, token)) = tokens.next() {
        if let Some(method) = http_method(token)
            && let Some((_, path)) = tokens.peek()
            && path.starts_with('/')
        {
            return Some((method, *path, start));
        }
    }
    None
}

fn is_comment_or_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// A TSV header line (`api\tmethod\tpath\t…`), as in the v1.11 table.
fn is_tsv_header(line: &str) -> bool {
    line.contains('\t') && !line.contains('/') && line.to_ascii_lowercase().contains("method")
}

/// The first meaningful line (after comments and a TSV header) is `METHOD /path`.
pub fn looks_like_endpoint_list(text: &str) -> bool {
    if parse::looks_like_json(text) {
        return false;
    }
    let mut lines = text.lines().filter(|l| !is_comment_or_blank(l));
    match lines.next() {
        Some(first) if is_tsv_header(first) => {
            lines.next().is_some_and(|l| endpoint_on_line(l).is_some())
        }
        Some(first) => endpoint_on_line(first).is_some(),
        None => false,
    }
}

/// Check a plain endpoint list.
pub fn check_list(checker: &Checker, text: &str, sink: &mut Sink<'_>) {
    let mut first = true;
    let mut any = false;
    for (idx, line) in text.lines().enumerate() {
        if is_comment_or_blank(line) {
            continue;
        }
        let header = first && is_tsv_header(line);
        first = false;
        if header {
            continue;
        }
        let column = |byte: usize| line[..byte].chars().count() + 1;
        match endpoint_on_line(line) {
            Some((method, path, start)) => {
                any = true;
                let pos = Pos {
                    line: idx + 1,
                    column: column(start),
                };
                check_operation(checker, &method, path, Some(pos), sink);
            }
            None => {
                let start = line.len() - line.trim_start().len();
                sink.error(
                    Some(Pos {
                        line: idx + 1,
                        column: column(start),
                    }),
                    "endpoint-syntax",
                    format!("expected `METHOD /path`, got `{}`", line.trim()),
                );
            }
        }
    }
    if !any {
        sink.warning(None, "endpoint-syntax", "no endpoints in this list");
    }
}

/// Replace `{name}` segments by a placeholder that only a table parameter can match.
pub(crate) fn placeholder_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') && seg.len() > 2 {
                format!("%7B{}%7D", &seg[1..seg.len() - 1])
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn methods_of(table: &EndpointTable, template: &str) -> String {
    let mut methods: Vec<&str> = table
        .endpoints()
        .iter()
        .filter(|e| e.template == template)
        .map(|e| e.method.as_str())
        .collect();
    methods.sort_unstable();
    methods.join(", ")
}

/// Check one operation: `path` may carry a query string (used for the guest rule).
pub fn check_operation(
    checker: &Checker,
    method: &Method,
    path: &str,
    pos: Option<Pos>,
    sink: &mut Sink<'_>,
) {
    let (raw_path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let shown = format!("{method} {path}");
    let probe = placeholder_path(raw_path);
    let table = checker.table();
    match table.classify(method, &probe) {
        Classification::Matched { endpoint, .. } => {
            if !checker.options().matrix_only {
                if let Some(block) = policy::blocked_endpoint(&endpoint.template) {
                    sink.error(pos, block.rule, blocked_message(&shown, &block));
                    return;
                }
                if *method == Method::POST
                    && endpoint.template == "/_matrix/client/v3/register"
                    && let Err(block) = policy::guest::check_register(query)
                {
                    sink.error(pos, block.rule, blocked_message(&shown, &block));
                    return;
                }
            }
            if endpoint.deprecated {
                sink.warning(
                    pos,
                    "deprecated",
                    format!(
                        "`{shown}` is deprecated in Matrix v1.11 ({}); timproxy still forwards it",
                        endpoint.operation_id
                    ),
                );
            }
        }
        Classification::MethodNotAllowed { template } => {
            let e = MatrixError::method_not_allowed();
            sink.error(
                pos,
                e.rule,
                format!(
                    "`{shown}`: `{template}` is a Matrix v1.11 endpoint only for {}; timproxy answers {} {}",
                    methods_of(table, template),
                    e.status.as_u16(),
                    e.errcode
                ),
            );
        }
        Classification::NotFound => {
            let e = MatrixError::unrecognized_path();
            let sso_page = crate::inbound::sso::entries()
                .any(|entry| entry.split_whitespace().eq([method.as_str(), raw_path]));
            let hint = if sso_page {
                " (a Synapse single-sign-on page: allowed with inbound.sso_endpoints, the default for policy.flavour epa)"
            } else if raw_path.starts_with("/_synapse/") || raw_path == "/metrics" {
                " (homeserver-internal paths are never reachable through the inbound port)"
            } else {
                " (an operator can allow it with inbound.extra_endpoints)"
            };
            sink.error(
                pos,
                e.rule,
                format!(
                    "`{shown}` is not a Matrix v1.11 endpoint; timproxy answers {} {}{hint}",
                    e.status.as_u16(),
                    e.errcode
                ),
            );
        }
    }
}

fn blocked_message(shown: &str, block: &MatrixError) -> String {
    format!(
        "`{shown}` is blocked by TIM rule {}: timproxy answers {} {} \"{}\"",
        block.rule,
        block.status.as_u16(),
        block.errcode,
        block.error
    )
}

/// The path part of an OpenAPI 3 server URL, with `{variables}` replaced by their defaults.
fn server_prefix(server: &Value) -> Option<String> {
    let mut url = server.get("url")?.as_str()?.to_owned();
    if let Some(vars) = server.get("variables").and_then(Value::as_object) {
        for (name, var) in vars {
            if let Some(default) = var.get("default").and_then(Value::as_str) {
                url = url.replace(&format!("{{{name}}}"), default);
            }
        }
    }
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]).to_owned(),
        None if url.starts_with('/') => url,
        None => String::new(),
    };
    Some(path.trim_end_matches('/').to_owned())
}

/// The prefix from the first entry of a `servers` array, if any.
fn servers_prefix(obj: &Map<String, Value>) -> Option<String> {
    obj.get("servers")?
        .as_array()?
        .first()
        .and_then(server_prefix)
}

/// Check an OpenAPI 3 or Swagger 2 document.
pub fn check_openapi(checker: &Checker, text: &str, sink: &mut Sink<'_>) {
    let Some((value, loc)) = read_document(text, sink) else {
        return;
    };
    let Some(doc) = value.as_object() else {
        sink.error(None, "openapi", "an OpenAPI document must be an object");
        return;
    };
    let global_prefix = if let Some(version) = doc.get("openapi") {
        if !version.as_str().is_some_and(|v| v.starts_with("3.")) {
            sink.warning(
                loc.locate(&["openapi"]),
                "openapi",
                format!("unsupported OpenAPI version {version}; read as OpenAPI 3"),
            );
        }
        if doc
            .get("servers")
            .and_then(Value::as_array)
            .is_some_and(|s| s.len() > 1)
        {
            sink.warning(
                loc.locate(&["servers"]),
                "openapi",
                "several servers: only the first one's path prefix is used",
            );
        }
        servers_prefix(doc).unwrap_or_default()
    } else {
        if doc.get("swagger").and_then(Value::as_str) != Some("2.0") {
            sink.warning(
                loc.locate(&["swagger"]),
                "openapi",
                "unsupported Swagger version; read as Swagger 2.0",
            );
        }
        doc.get("basePath")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned()
    };
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        sink.error(loc.locate(&["paths"]), "openapi", "no `paths` object");
        return;
    };
    let mut operations = 0;
    for (path, item) in paths {
        if path.starts_with("x-") {
            continue;
        }
        let item_pos = loc.locate(&["paths", path]);
        if !path.starts_with('/') {
            sink.error(
                item_pos,
                "openapi",
                format!("path `{path}` must start with `/`"),
            );
            continue;
        }
        let Some(item) = item.as_object() else {
            sink.error(
                item_pos,
                "openapi",
                format!("path item `{path}` must be an object"),
            );
            continue;
        };
        if item.contains_key("$ref") {
            sink.warning(
                item_pos,
                "openapi",
                format!("path item `{path}` is a $ref, which spec-check does not follow"),
            );
        }
        let item_prefix = servers_prefix(item).unwrap_or_else(|| global_prefix.clone());
        for (method, op) in item {
            if !OPENAPI_METHODS.contains(&method.as_str()) {
                continue;
            }
            let Some(parsed) = http_method(method) else {
                continue;
            };
            operations += 1;
            let prefix = op
                .as_object()
                .and_then(servers_prefix)
                .unwrap_or_else(|| item_prefix.clone());
            let full = format!("{prefix}{path}");
            let pos = loc.locate(&["paths", path, method]);
            check_operation(checker, &parsed, &full, pos, sink);
        }
    }
    if operations == 0 {
        sink.warning(
            loc.locate(&["paths"]),
            "openapi",
            "the document has no operations",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec_check::{Options, Severity};

    fn run(text: &str, f: fn(&Checker, &str, &mut Sink<'_>)) -> Vec<String> {
        let checker = Checker::new(Options::default()).unwrap();
        Sink::findings("t", |sink| f(&checker, text, sink))
    }

    #[test]
    fn endpoint_lines_are_found_in_plain_and_tsv_lines() {
        assert_eq!(endpoint_on_line("GET /a"), Some((Method::GET, "/a", 0)));
        assert_eq!(
            endpoint_on_line("client-server\tPOST\t/b\t-"),
            Some((Method::POST, "/b", 14))
        );
        assert!(endpoint_on_line("GET nothing").is_none());
        assert!(looks_like_endpoint_list(
            "# list\napi\tmethod\tpath\nclient-server\tGET\t/x\n"
        ));
        assert!(!looks_like_endpoint_list("hello world\n"));
    }

    #[test]
    fn parameter_names_do_not_matter_but_positions_do() {
        let d = run(
            "PUT /_matrix/client/v3/rooms/{room_id}/send/{type}/{txn}\n",
            check_list,
        );
        assert!(d.is_empty(), "{d:?}");
        let d = run("GET /_matrix/client/v3/{x}/sync\n", check_list);
        assert_eq!(d.len(), 1);
        assert!(d[0].contains("[unknown-endpoint]"), "{d:?}");
    }

    #[test]
    fn blocked_wrong_method_unknown_deprecated_and_guest() {
        let d = run(
            "GET /_matrix/media/v3/config\nDELETE /_matrix/client/v3/createRoom\nGET /_matrix/client/v1/auth_metadata\nGET /_matrix/client/v3/initialSync\nPOST /_matrix/client/v3/register?kind=guest\nPOST /_matrix/client/v3/register?kind=user\n",
            check_list,
        );
        assert_eq!(d.len(), 5, "{d:#?}");
        assert!(d[0].starts_with("t:1:1: error:") && d[0].ends_with("[A_26262]"));
        assert!(d[1].contains("only for POST") && d[1].ends_with("[method-not-allowed]"));
        assert!(d[2].ends_with("[unknown-endpoint]"));
        assert!(d[3].starts_with("t:4:1: warning:") && d[3].ends_with("[deprecated]"));
        assert!(d[4].ends_with("[guest-disabled]"));
    }

    #[test]
    fn openapi_servers_variables_and_basepath_prefix_the_paths() {
        let doc = "openapi: 3.1.0\nservers:\n  - url: '{protocol}://{host}{basePath}'\n    variables:\n      protocol: {default: https}\n      host: {default: x}\n      basePath: {default: /_matrix/client/v3}\npaths:\n  /sync:\n    get: {}\n  /login/get_token:\n    post: {servers: [{url: /_matrix/client/v1}]}\n";
        let d = run(doc, check_openapi);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(
            d[0].starts_with("t:12:5: error: `POST /_matrix/client/v1/login/get_token` is blocked"),
            "{d:?}"
        );
        assert!(d[0].ends_with("[get_token-disabled]"), "{d:?}");
        let swagger = r#"{"swagger":"2.0","basePath":"/_matrix/client/v3","paths":{"/sync":{"get":{}},"/nope":{"get":{}}}}"#;
        let d = run(swagger, check_openapi);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(d[0].contains("GET /_matrix/client/v3/nope"));
        let _ = Severity::Error;
    }
}
