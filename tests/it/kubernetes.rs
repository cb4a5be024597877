//! `deploy/kubernetes/` cannot be applied here (no cluster), so check that it agrees with
//! timproxy itself: the ConfigMap is a valid configuration, the container ports are its
//! listeners, the probes hit paths the admin listener answers on the port it binds (reachable
//! on the pod IP), no Service exposes the admin listener, the files the configuration names are
//! mounted, and the network policy keeps the admin port to the monitoring namespace.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use timproxy::admin::{self, AdminState};
use timproxy::config::Config;
use timproxy::metrics::Metrics;
use timproxy::shutdown;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");

/// Every document of every manifest the kustomization lists, by kind.
fn manifests() -> BTreeMap<String, Vec<serde_yaml::Value>> {
    let read = |name: &str| {
        std::fs::read_to_string(Path::new(DIR).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let kustomization: serde_yaml::Value =
        serde_yaml::from_str(&read("kustomization.yaml")).unwrap();
    let mut by_kind: BTreeMap<String, Vec<serde_yaml::Value>> = BTreeMap::new();
    for file in kustomization["resources"].as_sequence().unwrap() {
        let text = read(file.as_str().unwrap());
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document).unwrap();
            let kind = value["kind"].as_str().unwrap().to_owned();
            by_kind.entry(kind).or_default().push(value);
        }
    }
    by_kind
}

fn only<'a>(
    by_kind: &'a BTreeMap<String, Vec<serde_yaml::Value>>,
    kind: &str,
) -> &'a serde_yaml::Value {
    let all = &by_kind[kind];
    assert_eq!(all.len(), 1, "one {kind}");
    &all[0]
}

/// The pod's configuration: the ConfigMap's file plus the container's environment (secret
/// values stand in as placeholders of the right shape).
fn pod_config(
    by_kind: &BTreeMap<String, Vec<serde_yaml::Value>>,
    container: &serde_yaml::Value,
) -> Config {
    let text = only(by_kind, "ConfigMap")["data"]["timproxy.yaml"]
        .as_str()
        .unwrap();
    let env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|var| {
            let name = var["name"].as_str().unwrap().to_owned();
            let value = match var["value"].as_str() {
                Some(value) => value.to_owned(),
                None if name == "TIMPROXY_DATABASE__URL" => {
                    "postgres://secret@db/timproxy".to_owned()
                }
                None => panic!("no placeholder for the secret behind {name}"),
            };
            (name, value)
        })
        .collect();
    Config::from_yaml_with_env(text, "configmap.yaml", &env)
        .expect("the pod's configuration parses")
}

fn container_ports(container: &serde_yaml::Value) -> BTreeMap<String, u16> {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            let port = u16::try_from(p["containerPort"].as_u64().unwrap()).unwrap();
            (p["name"].as_str().unwrap().to_owned(), port)
        })
        .collect()
}

/// A `port` or `targetPort` value (a name or a number) as a container port number.
fn resolve(port: &serde_yaml::Value, named: &BTreeMap<String, u16>) -> u16 {
    match port.as_str() {
        Some(name) => *named
            .get(name)
            .unwrap_or_else(|| panic!("no container port named {name}")),
        None => u16::try_from(port.as_u64().unwrap()).unwrap(),
    }
}

#[tokio::test]
async fn kubernetes_manifests_agree_with_the_configuration_and_keep_admin_off_the_services() {
    let by_kind = manifests();
    let deployment = only(&by_kind, "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let config = pod_config(&by_kind, container);
    let ports = container_ports(container);

    // The container ports are the configured listeners.
    assert_eq!(ports["inbound"], config.inbound.listen.port());
    assert_eq!(ports["outbound"], config.outbound.listen.port());
    assert_eq!(ports["info-api"], config.info_api.listen.port());
    assert_eq!(ports["admin"], config.admin.listen.port());
    assert!(
        !config.admin.listen.ip().is_loopback(),
        "the kubelet probes the pod IP: admin.listen must not be loopback only"
    );
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];

    // Every probe hits the admin port, on a path the admin listener answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, signal) = shutdown::channel();
    let server = tokio::spawn(admin::serve(
        listener,
        Arc::new(AdminState::new(Metrics::new())),
        signal,
    ));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(
            resolve(&get["port"], &ports),
            config.admin.listen.port(),
            "{probe}"
        );
        let path = get["path"].as_str().unwrap();
        let status = http
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success(), "{probe} {path}: {status}");
    }
    trigger.trigger();
    server.await.unwrap().unwrap();

    // No Service reaches the admin listener; the outbound proxy has a Service of its own.
    let mut exposed = BTreeMap::new();
    for service in &by_kind["Service"] {
        let name = service["metadata"]["name"].as_str().unwrap();
        for port in service["spec"]["ports"].as_sequence().unwrap() {
            let target = resolve(&port["targetPort"], &ports);
            assert_ne!(
                target,
                config.admin.listen.port(),
                "Service {name} exposes the admin listener"
            );
            exposed.insert(target, name.to_owned());
        }
    }
    assert_eq!(exposed[&config.inbound.listen.port()], "timproxy");
    assert_eq!(exposed[&config.info_api.listen.port()], "timproxy");
    assert_eq!(exposed[&config.outbound.listen.port()], "timproxy-outbound");

    // The files the configuration names are mounted (config, CA, operator token, Synapse token).
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    let token_file = config
        .admin
        .token_file
        .clone()
        .expect("admin endpoints are token-guarded");
    let files = [
        Path::new(config_path).to_path_buf(),
        config.outbound.ca.cert_file.clone(),
        config.outbound.ca.key_file.clone(),
        token_file,
        config.homeserver.admin_token_file.clone().unwrap(),
    ];
    for file in files {
        assert!(
            mounts.iter().any(|m| file.starts_with(m)),
            "{} is not inside a mounted volume ({mounts:?})",
            file.display()
        );
    }

    // Only the monitoring namespace may reach the admin port.
    let policy = only(&by_kind, "NetworkPolicy");
    for rule in policy["spec"]["ingress"].as_sequence().unwrap() {
        let admits_admin = rule["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| resolve(&p["port"], &ports) == config.admin.listen.port());
        if admits_admin {
            let from = rule["from"]
                .as_sequence()
                .expect("the admin rule names its sources");
            assert_eq!(
                from[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                "monitoring"
            );
        }
    }
}
