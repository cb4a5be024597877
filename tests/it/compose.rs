//! `docker-compose.yml` cannot be started here (no Docker engine), so check that it agrees
//! with timproxy itself: every `TIMPROXY_*` variable is a real config key with a valid value,
//! published ports match the configured listeners, the health check is `check-health`, and
//! Synapse's `HTTPS_PROXY` points at the outbound listener.

use timproxy::config::Config;

fn compose() -> serde_yaml::Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .expect("docker-compose.yml");
    serde_yaml::from_str(&text).expect("valid YAML")
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

#[test]
fn compose_timproxy_environment_is_valid_config() {
    let doc = compose();
    let service = &doc["services"]["timproxy"];
    let env = env_of(service);
    assert!(env.iter().all(|(k, _)| k.starts_with("TIMPROXY_")));
    let config = Config::from_yaml_with_env("", "docker-compose.yml", &env).expect("env applies");
    assert!(config.database.url.starts_with("postgres://"));

    let ports: Vec<String> = service["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert!(ports.contains(&format!("{0}:{0}", config.inbound.listen.port())));
    assert!(ports.contains(&format!("{0}:{0}", config.info_api.listen.port())));
    for private in [config.outbound.listen.port(), config.admin.listen.port()] {
        assert!(
            !ports.iter().any(|p| p.starts_with(&format!("{private}:"))),
            "port {private} must not be published"
        );
    }
    let health: Vec<&str> = service["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&health[..3], ["CMD", "timproxy", "check-health"]);
    let url = health[health.iter().position(|a| *a == "--url").unwrap() + 1];
    assert_eq!(
        url,
        format!("http://127.0.0.1:{}", config.admin.listen.port())
    );

    let synapse_env = env_of(&doc["services"]["synapse"]);
    let proxy = synapse_env
        .iter()
        .find(|(k, _)| k == "HTTPS_PROXY")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(
        proxy,
        format!("http://timproxy:{}", config.outbound.listen.port())
    );
    assert_eq!(
        config.homeserver.url.as_str(),
        "http://synapse:8083/",
        "timproxy forwards to the synapse service"
    );
}

#[test]
fn dockerfile_healthcheck_uses_check_health() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(text.contains(r#"CMD ["timproxy", "check-health""#));
    assert!(text.contains("USER timproxy"));
}
