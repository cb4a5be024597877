//! Property tests of the pure parsers and matchers behind the inbound rules: arbitrary input
//! never panics, and generated valid input is accepted and round-trips.

use http::Method;
use proptest::prelude::*;
use serde_json::{Map, Value};
use timproxy::config::Flavour;
use timproxy::matrix::endpoints::{Classification, EndpointTable, V1_11_TSV, parse_tsv};
use timproxy::matrix::ids::{UserId, validate_server_name};
use timproxy::matrix::x_matrix::XMatrix;
use timproxy::policy::permission_config::{ConfigKind, DefaultSetting, PermissionConfig, decide};

fn table() -> EndpointTable {
    EndpointTable::new(parse_tsv(V1_11_TSV).unwrap()).unwrap()
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::OPTIONS),
        "[A-Z]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

/// Paths built from table-like pieces and arbitrary text, so matches and near-misses both occur.
fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("_matrix".to_owned()),
        Just("client".to_owned()),
        Just("federation".to_owned()),
        Just("v3".to_owned()),
        Just("v1".to_owned()),
        Just("rooms".to_owned()),
        Just("state".to_owned()),
        Just(String::new()),
        any::<String>(),
        "[%a-zA-Z0-9{}*:!@#$.~-]{0,12}",
    ];
    prop_oneof![
        prop::collection::vec(segment, 0..10).prop_map(|s| format!("/{}", s.join("/"))),
        any::<String>(),
    ]
}

/// A non-empty segment without `/` — what a client may put where the template has `{param}`.
fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^/]{1,30}",
        "[!@$#][a-zA-Z0-9._=-]{1,20}(%3A|:)[a-z0-9.-]{1,20}",
        "(%[0-9A-F]{2}){1,8}",
    ]
}

/// A JSON value of bounded depth with permission-config-like keys mixed in.
fn json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("defaultSetting".to_owned()),
        Just("serverExceptions".to_owned()),
        Just("domainExceptions".to_owned()),
        Just("userExceptions".to_owned()),
        Just("groupExceptions".to_owned()),
        Just("groupName".to_owned()),
        Just("@alice:hs1.test".to_owned()),
        Just("hs2.test".to_owned()),
        any::<String>(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::from("allow all")),
        Just(Value::from("block all")),
        Just(Value::from("isInsuredPerson")),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,3}",
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        "\\[[0-9a-f]{1,4}(:[0-9a-f]{0,4}){1,7}\\]",
    ]
}

fn server_name() -> impl Strategy<Value = String> {
    (host(), prop::option::of(1u32..=65535))
        .prop_map(|(h, p)| p.map(|p| format!("{h}:{p}")).unwrap_or(h))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn classify_never_panics(method in method(), path in path()) {
        let table = table();
        let got = table.classify(&method, &path);
        // The label is always bounded: a template from the table or "unknown".
        let label = got.template();
        prop_assert!(label == "unknown" || table.endpoints().iter().any(|e| e.template == label));
    }

    #[test]
    fn filled_templates_classify_back(index in any::<prop::sample::Index>(),
                                      values in prop::collection::vec(param_value(), 8)) {
        let table = table();
        let endpoint = index.get(table.endpoints());
        let mut filled = Vec::new();
        let mut expected = Vec::new();
        for (i, segment) in endpoint.template.split('/').enumerate() {
            match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => {
                    let value = values[i % values.len()].clone();
                    expected.push((name.trim_start_matches('*').to_owned(), value.clone()));
                    filled.push(value);
                }
                None => filled.push(segment.to_owned()),
            }
        }
        let path = filled.join("/");
        match table.classify(&endpoint.method, &path) {
            Classification::Matched { endpoint: found, params } => {
                // Literal segments win over parameters in the matcher, so a value that spells
                // another endpoint's literal may select that endpoint; then the path must still
                // be a filling of the template found.
                if found.template == endpoint.template {
                    prop_assert_eq!(params.to_vec(&path), expected);
                } else {
                    prop_assert_eq!(found.method.clone(), endpoint.method.clone());
                    let shape: Vec<_> = found.template.split('/').collect();
                    let parts: Vec<_> = path.split('/').collect();
                    prop_assert_eq!(shape.len(), parts.len(), "{} for {}", found.template, path);
                    for (t, p) in shape.iter().zip(&parts) {
                        prop_assert!(t.starts_with('{') || t == p, "{} for {}", found.template, path);
                    }
                }
            }
            other => prop_assert!(false, "{} {} → {:?}", endpoint.method, path, other),
        }
    }

    #[test]
    fn permission_config_parser_never_panics(content in json(), inviter in server_name(),
                                             insurance in any::<bool>()) {
        let inviter = UserId::parse(&format!("@x:{inviter}")).unwrap();
        for kind in [ConfigKind::Pro, ConfigKind::Epa, ConfigKind::Legacy] {
            if let Ok(config) = PermissionConfig::parse(kind, &content) {
                let _ = config.allows(&inviter, insurance);
            }
            for default in [DefaultSetting::AllowAll, DefaultSetting::BlockAll] {
                let _ = decide(kind, Some(&content), default, &inviter, insurance);
                let _ = decide(kind, None, default, &inviter, insurance);
            }
        }
        for flavour in [Flavour::Pro, Flavour::Epa] {
            let _ = ConfigKind::lookup_order(flavour);
        }
    }

    #[test]
    fn valid_permission_configs_parse(block in any::<bool>(),
                                      servers in prop::collection::vec(server_name(), 0..4),
                                      localparts in prop::collection::vec("[a-z0-9._=-]{1,10}", 0..4),
                                      inviter in server_name()) {
        let default = if block { "block all" } else { "allow all" };
        let servers: Map<String, Value> =
            servers.iter().map(|s| (s.clone(), Value::Object(Map::new()))).collect();
        let users: Map<String, Value> = localparts
            .iter()
            .map(|l| (format!("@{l}:{inviter}"), Value::Object(Map::new())))
            .collect();
        let content = serde_json::json!({
            "defaultSetting": default,
            "serverExceptions": servers,
            "userExceptions": users,
        });
        let config = PermissionConfig::parse(ConfigKind::Pro, &content);
        prop_assert!(config.is_ok(), "{content} → {config:?}");
        let inviter_id = UserId::parse(&format!("@someone:{inviter}")).unwrap();
        let listed = servers.contains_key(&inviter);
        prop_assert_eq!(config.unwrap().allows(&inviter_id, false), listed == block);
    }

    #[test]
    fn id_parsers_never_panic(s in any::<String>()) {
        let _ = UserId::parse(&s);
        let _ = validate_server_name(&s);
        let _ = UserId::parse(&format!("@{s}"));
        let _ = UserId::parse(&format!("@a:{s}"));
        let _ = validate_server_name(&format!("[{s}"));
        let _ = XMatrix::parse(&s);
        let _ = XMatrix::parse(&format!("X-Matrix {s}"));
    }

    #[test]
    fn valid_ids_parse(localpart in "[a-z0-9._=/+-]{1,40}", server in server_name()) {
        prop_assert!(validate_server_name(&server).is_ok(), "{}", server);
        let id = format!("@{localpart}:{server}");
        let parsed = UserId::parse(&id);
        prop_assert!(parsed.is_ok(), "{} → {:?}", id, parsed);
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.server_name(), server.as_str());
        prop_assert_eq!(parsed.as_str(), id.as_str());
    }

    #[test]
    fn x_matrix_round_trips(origin in server_name(), destination in prop::option::of(server_name()),
                            key in "ed25519:[a-zA-Z0-9_]{1,8}",
                            sig in "[A-Za-z0-9+/]{1,40}") {
        let header = XMatrix { origin, destination, key, sig };
        let parsed = XMatrix::parse(&header.render());
        prop_assert_eq!(parsed.ok(), Some(header));
    }
}
