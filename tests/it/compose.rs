//! `docker-compose.yml` cannot be started here (no Docker engine), so check that it agrees
//! with timproxy itself and with the files it mounts: every `TIMPROXY_*` variable is a real
//! config key with a valid value, published ports match the configured listeners, the health
//! check is `check-health`; Synapse's shipped `homeserver.yaml` listens where timproxy forwards,
//! sends federation through timproxy's outbound listener (`HTTPS_PROXY`) and trusts exactly the
//! CA timproxy intercepts with (`federation_custom_ca_list`, through the same volume); its
//! database is created in the PostgreSQL service; the registration-service stand-in serves the
//! federation list and support document at the paths timproxy asks for.

use std::path::{Path, PathBuf};

use timproxy::config::Config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn compose() -> serde_yaml::Value {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docker-compose.yml"))
        .expect("docker-compose.yml");
    serde_yaml::from_str(&text).expect("valid YAML")
}

fn service<'a>(doc: &'a serde_yaml::Value, name: &str) -> &'a serde_yaml::Value {
    let service = &doc["services"][name];
    assert!(
        service.is_mapping(),
        "no service {name} in docker-compose.yml"
    );
    service
}

fn env_of(service: &serde_yaml::Value) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .expect("environment mapping")
        .iter()
        .map(|(k, v)| {
            let value = match v {
                serde_yaml::Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
            };
            (k.as_str().unwrap().to_owned(), value)
        })
        .collect()
}

fn env_var(service: &serde_yaml::Value, key: &str) -> String {
    env_of(service)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("{key} not set"))
}

fn strings(value: &serde_yaml::Value) -> Vec<&str> {
    value
        .as_sequence()
        .map(|s| s.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default()
}

/// timproxy's configuration as the compose file sets it.
fn timproxy_config(doc: &serde_yaml::Value) -> Config {
    let env = env_of(service(doc, "timproxy"));
    assert!(env.iter().all(|(k, _)| k.starts_with("TIMPROXY_")));
    Config::from_yaml_with_env("", "docker-compose.yml", &env).expect("env applies")
}

/// Where a path inside a service's container comes from: a named volume or a bind-mounted
/// repository path (`./…`), plus the rest of the path below the mount point.
#[derive(Debug, PartialEq)]
enum Source {
    Volume(String, PathBuf),
    Repo(PathBuf),
}

fn resolve(service: &serde_yaml::Value, container_path: &Path) -> Source {
    let mut best: Option<(usize, Source)> = None;
    for mount in strings(&service["volumes"]) {
        let mut parts = mount.split(':');
        let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
            panic!("volume `{mount}` is not SOURCE:TARGET");
        };
        let Ok(rest) = container_path.strip_prefix(target) else {
            continue;
        };
        if best.as_ref().is_some_and(|(len, _)| *len >= target.len()) {
            continue;
        }
        let resolved = match source.strip_prefix("./") {
            // A file mount leaves no rest (joining "" would append a `/`).
            Some(relative) if rest.as_os_str().is_empty() => {
                Source::Repo(Path::new(ROOT).join(relative))
            }
            Some(relative) => Source::Repo(Path::new(ROOT).join(relative).join(rest)),
            None => Source::Volume(source.to_owned(), rest.to_owned()),
        };
        best = Some((target.len(), resolved));
    }
    best.map(|(_, s)| s)
        .unwrap_or_else(|| panic!("{container_path:?} is not on any mount of the service"))
}

fn repo_file(service: &serde_yaml::Value, container_path: &Path) -> PathBuf {
    match resolve(service, container_path) {
        Source::Repo(path) => path,
        other => panic!("{container_path:?} should come from the repository, not {other:?}"),
    }
}

fn port_of(url: &str) -> u16 {
    url::Url::parse(url)
        .unwrap()
        .port_or_known_default()
        .unwrap()
}

fn host_of(url: &url::Url) -> String {
    url.host_str().unwrap().to_owned()
}

/// Synapse's configuration file as the compose file mounts it.
fn synapse_config(doc: &serde_yaml::Value) -> serde_yaml::Value {
    let synapse = service(doc, "synapse");
    let path = repo_file(synapse, Path::new(&env_var(synapse, "SYNAPSE_CONFIG_PATH")));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn compose_timproxy_environment_is_valid_config() {
    let doc = compose();
    let config = timproxy_config(&doc);
    let service = service(&doc, "timproxy");
    assert!(config.database.url.starts_with("postgres://"));

    let ports = strings(&service["ports"]);
    assert!(ports.contains(&format!("{0}:{0}", config.inbound.listen.port()).as_str()));
    assert!(ports.contains(&format!("{0}:{0}", config.info_api.listen.port()).as_str()));
    for private in [config.outbound.listen.port(), config.admin.listen.port()] {
        assert!(
            !ports.iter().any(|p| p.starts_with(&format!("{private}:"))),
            "port {private} must not be published"
        );
    }
    let health = strings(&service["healthcheck"]["test"]);
    assert_eq!(&health[..3], ["CMD", "timproxy", "check-health"]);
    let url = health[health.iter().position(|a| *a == "--url").unwrap() + 1];
    assert_eq!(
        url,
        format!("http://127.0.0.1:{}", config.admin.listen.port())
    );
}

#[test]
fn synapse_listens_where_timproxy_forwards() {
    let doc = compose();
    let config = timproxy_config(&doc);
    let synapse = synapse_config(&doc);

    assert_eq!(host_of(&config.homeserver.url), "synapse");
    assert_eq!(
        synapse["server_name"].as_str(),
        Some(config.homeserver.server_name.as_str()),
        "Synapse's server_name and TIMPROXY_HOMESERVER__SERVER_NAME differ"
    );
    let port = config.homeserver.url.port_or_known_default().unwrap();
    let listeners = synapse["listeners"].as_sequence().expect("listeners");
    let listener = listeners
        .iter()
        .find(|l| l["port"].as_u64() == Some(u64::from(port)))
        .unwrap_or_else(|| panic!("no Synapse listener on {port}, where timproxy forwards"));
    assert_eq!(
        listener["tls"].as_bool(),
        Some(false),
        "timproxy speaks plain HTTP to it"
    );
    assert_eq!(listener["x_forwarded"].as_bool(), Some(true));
    let names: Vec<&str> = listener["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| strings(&r["names"]))
        .collect();
    assert!(
        names.contains(&"client") && names.contains(&"federation"),
        "{names:?}"
    );
    let binds = strings(&listener["bind_addresses"]);
    assert!(
        binds.iter().any(|b| *b == "0.0.0.0" || *b == "::"),
        "timproxy reaches Synapse over the compose network, not loopback: {binds:?}"
    );
    let synapse_service = service(&doc, "synapse");
    let health = strings(&synapse_service["healthcheck"]["test"]);
    let health_url = health.iter().find(|a| a.starts_with("http")).unwrap();
    assert_eq!(
        port_of(health_url),
        port,
        "Synapse's health check probes another port"
    );

    // Clients reach Synapse through timproxy's published inbound port.
    let public = synapse["public_baseurl"].as_str().unwrap();
    assert_eq!(port_of(public), config.inbound.listen.port());
}

#[test]
fn synapse_federates_only_through_timproxy_and_trusts_its_ca() {
    let doc = compose();
    let config = timproxy_config(&doc);
    let synapse = synapse_config(&doc);
    let synapse_service = service(&doc, "synapse");

    assert_eq!(
        env_var(synapse_service, "HTTPS_PROXY"),
        format!("http://timproxy:{}", config.outbound.listen.port())
    );
    assert!(
        config.outbound.listen.ip().is_unspecified(),
        "Synapse reaches the outbound listener over the compose network"
    );
    assert!(
        synapse_service["depends_on"]["timproxy"].is_mapping(),
        "timproxy must start before Synapse (Synapse backs off from a dead HTTPS_PROXY)"
    );

    // Synapse trusts exactly the CA timproxy signs its leaves with: the same file of the same
    // volume, written by the timproxy-ca service.
    assert_eq!(
        synapse["federation_verify_certificates"].as_bool(),
        Some(true)
    );
    let custom = strings(&synapse["federation_custom_ca_list"]);
    assert_eq!(custom.len(), 1, "{custom:?}");
    let synapse_ca = resolve(synapse_service, Path::new(custom[0]));
    let timproxy_ca = resolve(service(&doc, "timproxy"), &config.outbound.ca.cert_file);
    assert_eq!(synapse_ca, timproxy_ca, "Synapse trusts another CA file");
    assert!(matches!(timproxy_ca, Source::Volume(..)), "{timproxy_ca:?}");

    let maker = service(&doc, "timproxy-ca");
    let script = strings(&maker["command"]).join(" ");
    let out = script
        .split_once("gen-ca --out ")
        .map(|(_, dir)| dir.split_whitespace().next().unwrap())
        .expect("timproxy-ca runs gen-ca --out DIR");
    assert_eq!(
        resolve(maker, &Path::new(out).join("ca.crt")),
        timproxy_ca,
        "gen-ca writes the CA somewhere else"
    );
    assert_eq!(
        resolve(maker, &Path::new(out).join("ca.key")),
        resolve(service(&doc, "timproxy"), &config.outbound.ca.key_file)
    );
    // Keys come from federated servers; a key server outside the federation list is refused.
    assert_eq!(
        synapse["trusted_key_servers"].as_sequence().map(Vec::len),
        Some(0)
    );
}

#[test]
fn synapse_database_is_created_in_the_postgres_service() {
    let doc = compose();
    let synapse = synapse_config(&doc);
    let db = &synapse["database"];
    assert_eq!(db["name"].as_str(), Some("psycopg2"));
    let args = &db["args"];
    let host = args["host"].as_str().unwrap();
    let postgres = service(&doc, host);
    let init = strings(&postgres["volumes"])
        .into_iter()
        .filter_map(|m| m.split(':').nth(1))
        .find(|target| target.starts_with("/docker-entrypoint-initdb.d/"))
        .expect("an init script for Synapse's database");
    let sql = std::fs::read_to_string(repo_file(postgres, Path::new(init))).unwrap();
    let user = args["user"].as_str().unwrap();
    let password = args["password"].as_str().unwrap();
    let dbname = args["dbname"].as_str().unwrap();
    assert!(
        sql.contains(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'")),
        "{sql}"
    );
    let create = sql
        .lines()
        .find(|l| l.starts_with(&format!("CREATE DATABASE {dbname} ")))
        .unwrap_or_else(|| panic!("no CREATE DATABASE {dbname}:\n{sql}"));
    // Synapse refuses a database without the C collation.
    for part in [
        &format!("OWNER {user}") as &str,
        "LC_COLLATE 'C'",
        "LC_CTYPE 'C'",
        "TEMPLATE template0",
    ] {
        assert!(create.contains(part), "{create} lacks {part}");
    }
}

/// `alias` of the nginx `location` block opened by `opening` (e.g. `location = /x {`).
fn nginx_alias<'a>(conf: &'a str, opening: &str) -> &'a str {
    let block = conf
        .split_once(opening)
        .unwrap_or_else(|| panic!("nginx.conf has no `{opening}`"))
        .1;
    let block = block.split_once('}').unwrap().0;
    block
        .split_once("alias ")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map(|(alias, _)| alias.trim())
        .unwrap_or_else(|| panic!("`{opening}` has no alias"))
}

#[test]
fn registration_service_stand_in_serves_what_timproxy_asks_for() {
    let doc = compose();
    let config = timproxy_config(&doc);
    let rs = &config.registration_service;
    let name = host_of(&rs.url);
    let stand_in = service(&doc, &name);
    let conf_path = repo_file(stand_in, Path::new("/etc/nginx/conf.d/default.conf"));
    let conf = std::fs::read_to_string(conf_path).unwrap();
    let port = rs.url.port_or_known_default().unwrap();
    assert!(conf.contains(&format!("listen {port};")), "{conf}");

    let list_file = nginx_alias(&conf, &format!("location = {} {{", rs.federation_list_path));
    let list = std::fs::read(repo_file(stand_in, Path::new(list_file))).unwrap();
    let list = timproxy::federation::source::parse_list_json(&list).expect("a valid list");
    let own_domain = config.homeserver.server_name.split(':').next().unwrap();
    assert!(
        list.entries.iter().any(|e| e.domain == own_domain),
        "the own server {own_domain} is not in the federation list"
    );

    let support_dir = nginx_alias(
        &conf,
        &format!("location {}/ {{", rs.well_known_support_path),
    );
    let support = repo_file(
        stand_in,
        &Path::new(support_dir).join(&config.homeserver.server_name),
    );
    let support = std::fs::read(&support).unwrap_or_else(|e| panic!("{support:?}: {e}"));
    let support: serde_json::Value = serde_json::from_slice(&support).expect("JSON");
    assert!(support["contacts"].is_array() || support["support_page"].is_string());
}

#[test]
fn every_mounted_repository_file_exists() {
    let doc = compose();
    let gitignore = std::fs::read_to_string(Path::new(ROOT).join(".gitignore")).unwrap();
    for (name, service) in doc["services"].as_mapping().unwrap() {
        for mount in strings(&service["volumes"]) {
            let Some(relative) = mount.strip_prefix("./") else {
                continue;
            };
            let relative = relative.split(':').next().unwrap();
            if Path::new(ROOT).join(relative).exists() {
                continue;
            }
            // Operator-written secrets: created on the host, never committed.
            assert!(
                gitignore.lines().any(|l| l.trim_matches('/') == relative),
                "{name:?} mounts ./{relative}, which is neither in the repository nor git-ignored"
            );
        }
    }
}

#[test]
fn dockerfile_healthcheck_uses_check_health() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    assert!(text.contains(r#"CMD ["timproxy", "check-health""#));
    assert!(text.contains("USER timproxy"));
    // The timproxy-ca volume takes this directory's owner, so gen-ca can write into it.
    assert!(text.contains("install -d -o timproxy -g timproxy -m 0755 /var/lib/timproxy/ca"));
}
