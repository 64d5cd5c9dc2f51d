//! The fleet's deployment files as their readers see them (no cluster runs here, so the
//! Kubernetes manifest is parsed, not applied): the route files they carry are valid
//! frontgate configurations with the shared Redis, and the manifest wires what the fleet
//! relies on — one instance per node on the host network, cluster DNS for the Redis
//! Service, the route file mounted where the image's CMD reads it, `/healthz` probes on the
//! metrics port, and one Redis password on both sides.

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every document of the manifest.
fn manifest() -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/frontgate.yaml")).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .collect()
}

/// The manifest's object of `kind` named `name`.
fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}

#[test]
fn the_kubernetes_manifest_runs_one_instance_per_node_sharing_one_redis() {
    let docs = manifest();
    for doc in &docs {
        assert!(
            doc["apiVersion"].is_string() && doc["kind"].is_string(),
            "{doc:?}"
        );
        if doc["kind"] != "Namespace" {
            assert_eq!(doc["metadata"]["namespace"], "frontgate", "{doc:?}");
        }
    }
    let daemon = &object(&docs, "DaemonSet", "frontgate")["spec"];
    let pod = &daemon["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(
        pod["dnsPolicy"], "ClusterFirstWithHostNet",
        "the Redis URL names a Service"
    );
    assert_eq!(
        daemon["selector"]["matchLabels"],
        daemon["template"]["metadata"]["labels"]
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["args"],
        serde_yaml_ng::from_str::<Value>("[run, --config, /etc/frontgate/routes.yaml]").unwrap()
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], 9100, "{probe}");
    }
    let capabilities = &container["securityContext"]["capabilities"];
    assert_eq!(capabilities["add"][0], "NET_BIND_SERVICE");
    assert_eq!(capabilities["drop"][0], "ALL");

    // The route file is the Secret mounted at /etc/frontgate.
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/frontgate")
        .expect("the route file's mount");
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("its volume");
    let secret = text(&volume["secret"]["secretName"]);
    let routes = text(&object(&docs, "Secret", secret)["stringData"]["routes.yaml"]);
    let config = frontgate::config::parse(routes, "routes.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.metrics.map(|m| m.port()), Some(9100));
    assert!(
        !config.trusted_proxies.is_empty(),
        "the balancer's PROXY header is read"
    );
    assert!(config.state_dir.is_some());

    // The Redis URL reaches the Redis Service with the Redis password.
    let redis = config.redis.expect("state.redis");
    let service = object(&docs, "Service", "redis");
    let port = service["spec"]["ports"][0]["port"].as_u64().unwrap();
    let host = format!("redis.frontgate.svc.cluster.local:{port}");
    assert_eq!(redis.shown(), format!("redis://:***@{host}/0"));
    let password = text(&object(&docs, "Secret", "frontgate-redis")["stringData"]["password"]);
    assert_eq!(redis.url(), format!("redis://:{password}@{host}/0"));
    let redis_pod = &object(&docs, "Deployment", "redis")["spec"]["template"];
    assert_eq!(service["spec"]["selector"], redis_pod["metadata"]["labels"]);
    let redis_container = &redis_pod["spec"]["containers"][0];
    assert_eq!(redis_container["args"][0], "--requirepass");
    assert_eq!(redis_container["args"][1], "$(REDIS_PASSWORD)");
    let from = &redis_container["env"][0]["valueFrom"]["secretKeyRef"];
    assert_eq!(
        (&from["name"], &from["key"]),
        (&Value::from("frontgate-redis"), &Value::from("password"))
    );
}

#[test]
fn the_haproxy_deployments_route_file_is_valid_and_shares_redis() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/haproxy/frontgate.yaml");
    let config = frontgate::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.metrics.map(|m| m.port()),
        Some(9100),
        "haproxy.cfg checks :9100"
    );
    let haproxy = std::fs::read_to_string(repo().join("deploy/haproxy/haproxy.cfg")).unwrap();
    // HAProxy's address is trusted for the PROXY v2 header haproxy.cfg sends.
    assert_eq!(config.trusted_proxies, ["10.0.0.10/32".parse().unwrap()]);
    assert!(haproxy.contains("default-server inter 3s fall 2 rise 2 send-proxy-v2"));
    let redis = config.redis.expect("state.redis");
    assert_eq!(redis.shown(), "redis://:***@10.0.0.5:6379/0");
}
