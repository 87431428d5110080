//! Every example of Flocker's `api_examples.yml`, driven over real HTTPS with client
//! certificates against a fresh control node each, with the node UUIDs substituted.
//!
//! Examples that need state a single request cannot create (leases, agent reports,
//! existing containers) get it set up first through the API or the agent protocol, as
//! Flocker's documentation harness did with its `requires` lists. Where the documentation
//! and the original code disagree (FLOCKER-SPEC section 14.3) the code's behaviour is
//! expected, and each such case is listed in `code_not_docs`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::Single;
use reqwest::Method;
use serde_json::{json, Value};

const ERA: &str = "56780f44-0499-4153-9352-92344b180021";

#[derive(Clone)]
struct Example {
    id: String,
    method: Method,
    path: String,
    body: Option<String>,
    status: u16,
    response: Option<Value>,
    requires: Vec<String>,
}

/// The documentation's JSON has trailing commas; drop them.
fn without_trailing_commas(text: &str) -> String {
    static TRAILING: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r",(\s*[\]}])").unwrap());
    TRAILING.replace_all(text.trim(), "$1").into_owned()
}

fn lenient_json(text: &str) -> Option<Value> {
    let cleaned = without_trailing_commas(text);
    if cleaned.is_empty() {
        return None;
    }
    Some(
        serde_json::from_str(&cleaned)
            .unwrap_or_else(|e| panic!("bad example JSON {cleaned}: {e}")),
    )
}

fn load(nodes: &[String; 2]) -> BTreeMap<String, Example> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/flocker/api_examples.yml");
    let text = std::fs::read_to_string(&path).expect("api_examples.yml next to the repository");
    let text = text
        .replace("%(NODE_0)s", &nodes[0])
        .replace("%(NODE_1)s", &nodes[1]);
    // One example repeats its `doc` key (PyYAML keeps the last; serde_yaml refuses):
    // number the `doc` keys, which this test does not read.
    let mut count = 0;
    let text: String = text
        .lines()
        .map(|line| match line.strip_prefix("  doc:") {
            Some(rest) => {
                count += 1;
                format!("  doc_{count}:{rest}\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    let raw: Vec<serde_yaml::Value> = serde_yaml::from_str(&text).unwrap();
    let mut examples = BTreeMap::new();
    for item in raw {
        let id = item["id"].as_str().unwrap().trim().to_owned();
        let request = item["request"].as_str().unwrap();
        let (head, body) = request.split_once("\n\n").unwrap_or((request, ""));
        let mut words = head.lines().next().unwrap().split_whitespace();
        let method = Method::from_bytes(words.next().unwrap().as_bytes()).unwrap();
        let path = words.next().unwrap().to_owned();
        let response = item["response"].as_str().unwrap();
        let (status_line, response_body) = response.split_once("\n\n").unwrap_or((response, ""));
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let requires = item["requires"]
            .as_sequence()
            .map(|s| s.iter().map(|r| r.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        let body = (!body.trim().is_empty()).then(|| without_trailing_commas(body));
        examples.insert(
            id.clone(),
            Example {
                id,
                method,
                path,
                body,
                status,
                response: lenient_json(response_body),
                requires,
            },
        );
    }
    examples
}

async fn send(s: &Single, e: &Example) -> flocker::client::Reply {
    s.client
        .request(
            e.method.clone(),
            &e.path,
            &[],
            e.body.as_ref().map(|b| b.as_bytes().to_vec()),
        )
        .await
        .unwrap()
}

/// Run an example after its requirements and the state it assumes; the example's reply.
async fn run(
    s: &Single,
    all: &BTreeMap<String, Example>,
    id: &str,
    nodes: &[String; 2],
) -> Option<flocker::client::Reply> {
    let e = all.get(id)?;
    for r in &e.requires {
        Box::pin(run(s, all, r, nodes)).await;
    }
    set_up(s, id, nodes).await;
    Some(send(s, e).await)
}

async fn post(s: &Single, path: &str, body: Value) {
    let r = s.client.post(path, &body).await.unwrap();
    assert!(r.status.is_success(), "setup {path} {body}: {:?}", r.body);
}

async fn report(s: &Single, node: usize, era: &str, kind: &str, state: Value) {
    let agent = s.agent_client(node);
    let r = agent
        .post(
            "/agent/v1/state",
            &json!({"era": era, "kind": kind, "state": state}),
        )
        .await
        .unwrap();
    assert!(r.status.is_success(), "report: {:?}", r.body);
}

/// State that the example assumes and no single request can create.
async fn set_up(s: &Single, id: &str, nodes: &[String; 2]) {
    let [n0, n1] = nodes;
    let other_era = uuid::Uuid::new_v4().to_string();
    match id {
        "update dataset with primary" => {
            post(s, "/v1/configuration/datasets", json!({"primary": n0, "dataset_id": "886ed03a-5606-453a-94a9-a1cbaf35164c"})).await
        }
        // The documented response shows the dataset on NODE_1.
        "delete dataset" => {
            post(s, "/v1/configuration/datasets", json!({"primary": n1, "dataset_id": "886ed03a-5606-453a-94a9-a1cbaf35164c"})).await
        }
        "create container with attached volume" => {
            post(s, "/v1/configuration/datasets", json!({"primary": n1, "dataset_id": "886ed03a-5606-453a-94a9-a1cbaf35164c"})).await
        }
        "move container" | "remove a container" => {
            post(s, "/v1/configuration/containers", json!({"node_uuid": n0, "name": "webserver", "image": "nginx:latest"})).await
        }
        "get state datasets" => {
            let state = json!({
                "manifestations": [{"dataset_id": "47440eff-e933-4de0-b56c-d3469b61421f", "path": "/flocker/somearbitrarypath", "maximum_size": 1073741824u64}],
                "nonmanifest": [{"dataset_id": "886ed03a-5606-453a-94a9-a1cbaf35164c", "maximum_size": 1073741824u64}],
                "devices": {}
            });
            report(s, 0, ERA, "datasets", state).await
        }
        "get actual containers" => {
            let container = |name: &str, image: &str| json!({
                "name": name, "node_uuid": n0, "image": image, "ports": [], "links": [], "environment": {},
                "restart_policy": "Never", "command_line": null, "cpu_shares": null, "memory_limit": null,
                "swappiness": 0, "volume": null});
            let state = json!([
                {"container": container("webserver", "nginx:latest"), "running": false},
                {"container": container("database", "postgres:latest"), "running": true},
            ]);
            report(s, 0, ERA, "containers", state).await
        }
        "list known nodes" => {
            report(s, 0, ERA, "datasets", Value::Null).await;
            report(s, 1, &other_era, "datasets", Value::Null).await;
        }
        "get node by era" => report(s, 0, ERA, "datasets", Value::Null).await,
        "release a lease" => {
            post(s, "/v1/configuration/leases", json!({"dataset_id": "886ed03a-5606-453a-94a9-a1cbaf35164c", "node_uuid": n0, "expires": null})).await
        }
        "list leases" => {
            post(s, "/v1/configuration/leases", json!({"dataset_id": "886ed03a-5606-453a-94a9-a1cbaf35164c", "node_uuid": n0, "expires": null})).await;
            post(s, "/v1/configuration/leases", json!({"dataset_id": "47440eff-e933-4de0-b56c-d3469b61421f", "node_uuid": n1, "expires": 30})).await;
        }
        "acquire a lease that is already held" | "renew a lease" => {
            post(s, "/v1/configuration/leases", json!({"dataset_id": "47440eff-e933-4de0-b56c-d3469b61421f", "node_uuid": n1, "expires": 60})).await
        }
        _ => {}
    }
}

/// Where Flocker's code and its documentation disagree (FLOCKER-SPEC 14.3), the code wins.
fn code_not_docs(e: &mut Example) {
    match e.id.as_str() {
        "create dataset with duplicate dataset_id" => {
            e.response = Some(json!({"description": "The provided dataset_id is already in use."}))
        }
        "create container with duplicate name" => {
            e.response = Some(json!({"description": "The container name already exists."}))
        }
        "update dataset with primary" | "delete dataset" => {
            if let Some(Value::Object(o)) = &mut e.response {
                o.entry("metadata").or_insert(json!({}));
            }
        }
        "create container with swappiness" => {
            if let Some(Value::Object(o)) = &mut e.response {
                o.remove("swappiness");
            }
        }
        "create container with command line" => {
            e.status = 400;
            e.response = Some(json!({
                "description": "The provided JSON doesn't match the required schema.",
                "errors": ["1234 is not of type 'string'"]}));
        }
        "remove a container" => e.response = Some(Value::Null),
        // The version string is free-form; the documentation shows an old release.
        "get version" => e.response = Some(json!({"flocker": flocker::api::FLOCKER_VERSION})),
        // The documented response shows another id than the one requested.
        "create dataset with dataset_id" => {
            if let Some(Value::Object(o)) = &mut e.response {
                o.insert(
                    "dataset_id".into(),
                    json!("ad0a05dd-a1ed-449f-b44b-e1e2757bda00"),
                );
            }
        }
        _ => {}
    }
}

/// Generated ids and times are not comparable: blank them, and sort lists.
fn normalise(value: &Value, generated_ids: bool) -> Value {
    match value {
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(|v| normalise(v, generated_ids)).collect();
            items.sort_by_key(|v| v.to_string());
            Value::Array(items)
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "dataset_id" if generated_ids => json!("<generated>"),
                        "host" => json!("<host>"),
                        "expires" if v.is_number() => {
                            json!(v.as_f64().unwrap().round() as i64 / 10)
                        }
                        _ => normalise(v, generated_ids),
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_example() {
    let nodes = [
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    ];
    let all = load(&nodes);
    assert!(all.len() >= 35, "all examples parsed");
    let mut checked = 0;
    let mut failures: Vec<String> = Vec::new();
    for (id, example) in &all {
        // Each example against a fresh control node whose PKI has the same node UUIDs.
        let s = Single::start_with_nodes(&nodes).await;
        let mut expected = Example {
            requires: Vec::new(),
            ..example.clone()
        };
        code_not_docs(&mut expected);
        let reply = run(&s, &all, id, &nodes).await.expect("the example exists");
        if reply.status.as_u16() != expected.status {
            failures.push(format!("{id}: status {} {}", reply.status, reply.body));
        } else if let Some(body) = &expected.response {
            let request = expected.body.as_deref().unwrap_or("");
            let generated =
                expected.path == "/v1/configuration/datasets" && !request.contains("dataset_id");
            let got = if reply.raw.is_empty() {
                Value::Null
            } else {
                reply.body.clone()
            };
            let (got, want) = (normalise(&got, generated), normalise(body, generated));
            if got != want {
                failures.push(format!("{id}:\n  got  {got}\n  want {want}"));
            }
        }
        checked += 1;
        s.control.stop().await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(checked, all.len());
}
