//! The JSON shapes of section 4 of the spec: configuration and state views.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::model::{ClusterState, Container, Dataset, Lease, Micros, RestartPolicy};

pub fn dataset(d: &Dataset) -> Value {
    serde_json::to_value(DatasetJson(d)).expect("a dataset is valid JSON")
}

/// The dataset-config shape, serialized directly (no intermediate `Value`s): the full
/// list of 100k datasets is rendered from these.
pub struct DatasetJson<'a>(pub &'a Dataset);

impl serde::Serialize for DatasetJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let d = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("dataset_id", &d.dataset_id)?;
        map.serialize_entry("primary", &d.primary.hyphenated())?;
        map.serialize_entry("metadata", &d.metadata)?;
        map.serialize_entry("deleted", &d.deleted)?;
        if let Some(size) = d.maximum_size {
            map.serialize_entry("maximum_size", &size)?;
        }
        map.end()
    }
}

/// `GET /v1/configuration/datasets` as JSON bytes.
pub fn dataset_list(datasets: &std::collections::BTreeMap<String, Dataset>) -> Vec<u8> {
    struct List<'a>(&'a std::collections::BTreeMap<String, Dataset>);
    impl serde::Serialize for List<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.0.values().map(DatasetJson))
        }
    }
    serde_json::to_vec(&List(datasets)).expect("datasets are valid JSON")
}

pub fn restart_policy(policy: &RestartPolicy) -> Value {
    match policy {
        RestartPolicy::Never => json!({"name": "never"}),
        RestartPolicy::Always => json!({"name": "always"}),
        RestartPolicy::OnFailure {
            maximum_retry_count: None,
        } => json!({"name": "on-failure"}),
        RestartPolicy::OnFailure {
            maximum_retry_count: Some(n),
        } => json!({"name": "on-failure", "maximum_retry_count": n}),
    }
}

/// The container-config shape; `swappiness` is never returned (as in Flocker).
pub fn container(c: &Container) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("node_uuid".into(), json!(c.node_uuid.to_string()));
    object.insert("name".into(), json!(c.name));
    object.insert("image".into(), json!(c.image));
    object.insert("restart_policy".into(), restart_policy(&c.restart_policy));
    if !c.ports.is_empty() {
        let ports: Vec<Value> = c
            .ports
            .iter()
            .map(|p| json!({"internal": p.internal, "external": p.external}))
            .collect();
        object.insert("ports".into(), Value::Array(ports));
    }
    if !c.links.is_empty() {
        let links: Vec<Value> = c
            .links
            .iter()
            .map(|l| json!({"alias": l.alias, "local_port": l.local_port, "remote_port": l.remote_port}))
            .collect();
        object.insert("links".into(), Value::Array(links));
    }
    if !c.environment.is_empty() {
        object.insert("environment".into(), json!(c.environment));
    }
    if let Some(volume) = &c.volume {
        object.insert(
            "volumes".into(),
            json!([{"dataset_id": volume.dataset_id, "mountpoint": volume.mountpoint}]),
        );
    }
    if let Some(shares) = c.cpu_shares {
        object.insert("cpu_shares".into(), json!(shares));
    }
    if let Some(limit) = c.memory_limit {
        object.insert("memory_limit".into(), json!(limit));
    }
    if let Some(command_line) = &c.command_line {
        object.insert("command_line".into(), json!(command_line));
    }
    object
}

/// Seconds as a float, the way Flocker rendered lease times (`60` -> `60.0`).
pub fn seconds(micros: Micros) -> Value {
    json!(micros as f64 / 1_000_000.0)
}

/// A lease with `expires` relative to `now`.
pub fn lease(l: &Lease, now: Micros) -> Value {
    json!({
        "dataset_id": l.dataset_id.to_string(),
        "node_uuid": l.node_uuid.to_string(),
        "expires": l.expiration.map(|at| seconds(at - now)),
    })
}

/// `/v1/state/datasets`: manifest datasets per node, then the non-manifest ones (each
/// listed once, and not when some node has it mounted).
pub fn state_datasets(cluster: &ClusterState) -> Vec<Value> {
    let mut out = Vec::new();
    let mut manifest = std::collections::BTreeSet::new();
    for (node, state) in &cluster.nodes {
        let Some(datasets) = &state.datasets else {
            continue;
        };
        for m in &datasets.manifestations {
            manifest.insert(m.dataset_id.as_str());
            let mut object = Map::new();
            object.insert("dataset_id".into(), json!(m.dataset_id));
            object.insert("primary".into(), json!(node.to_string()));
            object.insert("path".into(), json!(m.path));
            if let Some(size) = m.maximum_size {
                object.insert("maximum_size".into(), json!(size));
            }
            out.push(Value::Object(object));
        }
    }
    let mut listed = std::collections::BTreeSet::new();
    for state in cluster.nodes.values() {
        let Some(datasets) = &state.datasets else {
            continue;
        };
        for d in &datasets.nonmanifest {
            if manifest.contains(d.dataset_id.as_str()) || !listed.insert(d.dataset_id.as_str()) {
                continue;
            }
            let mut object = Map::new();
            object.insert("dataset_id".into(), json!(d.dataset_id));
            if let Some(size) = d.maximum_size {
                object.insert("maximum_size".into(), json!(size));
            }
            out.push(Value::Object(object));
        }
    }
    out
}

/// `/v1/state/containers`: what the container agents report, with `running`.
pub fn state_containers(cluster: &ClusterState) -> Vec<Value> {
    let mut out = Vec::new();
    for (node, state) in &cluster.nodes {
        let Some(containers) = &state.containers else {
            continue;
        };
        for c in containers {
            let mut object = container(&c.container);
            object.insert("node_uuid".into(), json!(node.to_string()));
            object.insert("running".into(), json!(c.running));
            out.push(Value::Object(object));
        }
    }
    out
}

pub fn state_nodes(cluster: &ClusterState) -> Vec<Value> {
    cluster
        .nodes
        .iter()
        .map(|(uuid, state)| json!({"host": state.host, "uuid": uuid.to_string()}))
        .collect()
}

pub fn node_uuid(uuid: Uuid) -> Value {
    json!({ "uuid": uuid.to_string() })
}
