//! The agent protocol of `src/agent/protocol.rs`, driven by a small test agent that holds
//! a real node certificate: state reports and what the API shows of them, the long poll,
//! eras, identity from the certificate, state expiry, the block-device ownership registry
//! and malformed requests.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{wait_for, Single};
use flocker::agent::protocol::{ReportedState, StateReport};
use flocker::client::{Client, Reply};
use flocker::model::{
    Container, ContainerState, DatasetAgentState, Link, ManifestationState, NonManifestDataset,
    Port, RestartPolicy, Volume,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

fn u() -> String {
    Uuid::new_v4().to_string()
}

/// POST a report as the agent; the answer comes once it is committed.
async fn report(agent: &Client, report: &StateReport) -> Reply {
    let body = serde_json::to_value(report).unwrap();
    agent.post("/agent/v1/state", &body).await.unwrap()
}

async fn report_ok(agent: &Client, state: &StateReport) {
    let r = report(agent, state).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["applied"].as_u64().unwrap() > 0, "{}", r.body);
}

async fn cluster_view(agent: &Client, query: &str) -> Value {
    let r = agent
        .get(&format!("/agent/v1/cluster{query}"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body
}

fn generation(view: &Value) -> u64 {
    view["generation"].as_u64().expect("a generation")
}

/// A response list sorted by `key`, for order-insensitive comparison.
async fn list(s: &Single, path: &str, key: &str) -> Vec<Value> {
    let r = s.client.get(path).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.body);
    let mut items = r.body.as_array().cloned().unwrap();
    items.sort_by_key(|item| item[key].as_str().map(str::to_owned));
    items
}

async fn tag(s: &Single) -> String {
    s.client.datasets().await.unwrap().1
}

fn datasets(state: DatasetAgentState, era: Uuid) -> StateReport {
    StateReport {
        era,
        state: ReportedState::Datasets(Some(state)),
    }
}

fn containers(state: Vec<ContainerState>, era: Uuid) -> StateReport {
    StateReport {
        era,
        state: ReportedState::Containers(Some(state)),
    }
}

/// Two mounted datasets (one with a size), one unmounted dataset, their devices.
fn dataset_state(mounted: &[&str], unmounted: &str) -> DatasetAgentState {
    DatasetAgentState {
        manifestations: mounted
            .iter()
            .enumerate()
            .map(|(i, id)| ManifestationState {
                dataset_id: (*id).to_owned(),
                path: format!("/flocker/{id}"),
                maximum_size: (i == 0).then_some(67_108_864),
            })
            .collect(),
        nonmanifest: vec![NonManifestDataset {
            dataset_id: unmounted.to_owned(),
            maximum_size: Some(134_217_728),
        }],
        devices: mounted
            .iter()
            .enumerate()
            .map(|(i, id)| ((*id).to_owned(), format!("/dev/loop{i}")))
            .collect(),
    }
}

fn container(name: &str, volume: Option<&str>) -> Container {
    Container {
        name: name.to_owned(),
        // The reporting node wins over whatever the agent writes here.
        node_uuid: Uuid::new_v4(),
        image: "busybox:1.2".to_owned(),
        ports: vec![Port {
            internal: 80,
            external: 8080,
        }],
        links: vec![Link {
            alias: "db".to_owned(),
            local_port: 1234,
            remote_port: 5678,
        }],
        environment: BTreeMap::new(),
        restart_policy: RestartPolicy::Always,
        command_line: None,
        cpu_shares: Some(512),
        memory_limit: Some(104_857_600),
        swappiness: 0,
        volume: volume.map(|id| Volume {
            dataset_id: id.to_owned(),
            mountpoint: "/xxx/yyy".to_owned(),
        }),
    }
}

// Dataset and container reports show up in /v1/state/datasets, /v1/state/containers
// (with `running`), /v1/state/nodes (host 127.0.0.1) and /v1/state/nodes/by_era, and
// leave the configuration tag alone.
#[tokio::test]
async fn reports_show_in_the_state_endpoints() {
    let s = Single::start().await;
    let agent = s.agent_client(0);
    let node = s.pki.nodes[0].to_string();
    let era = Uuid::new_v4();
    let (m1, m2, nm) = (u(), u(), u());
    let tag_before = tag(&s).await;

    report_ok(&agent, &datasets(dataset_state(&[&m1, &m2], &nm), era)).await;
    let running = ContainerState {
        container: container("web", Some(&m1)),
        running: true,
    };
    let stopped = ContainerState {
        container: container("worker", None),
        running: false,
    };
    report_ok(&agent, &containers(vec![running, stopped], era)).await;

    let mut expected = vec![
        json!({"dataset_id": m1, "primary": node, "path": format!("/flocker/{m1}"),
               "maximum_size": 67108864}),
        json!({"dataset_id": m2, "primary": node, "path": format!("/flocker/{m2}")}),
        json!({"dataset_id": nm, "maximum_size": 134217728}),
    ];
    expected.sort_by_key(|d| d["dataset_id"].as_str().map(str::to_owned));
    assert_eq!(list(&s, "/v1/state/datasets", "dataset_id").await, expected);

    let web = json!({"name": "web", "node_uuid": node, "image": "busybox:1.2",
        "running": true, "restart_policy": {"name": "always"},
        "ports": [{"internal": 80, "external": 8080}],
        "links": [{"alias": "db", "local_port": 1234, "remote_port": 5678}],
        "cpu_shares": 512, "memory_limit": 104857600,
        "volumes": [{"dataset_id": m1, "mountpoint": "/xxx/yyy"}]});
    let mut worker = web.clone();
    worker["name"] = json!("worker");
    worker["running"] = json!(false);
    worker.as_object_mut().unwrap().remove("volumes");
    assert_eq!(
        list(&s, "/v1/state/containers", "name").await,
        vec![web, worker]
    );

    assert_eq!(
        list(&s, "/v1/state/nodes", "uuid").await,
        vec![json!({"host": "127.0.0.1", "uuid": node})]
    );
    let r = s
        .client
        .get(&format!("/v1/state/nodes/by_era/{era}"))
        .await
        .unwrap();
    assert_eq!((r.status, r.body), (StatusCode::OK, json!({"uuid": node})));
    let r = s
        .client
        .get(&format!("/v1/state/nodes/by_era/{}", u()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.description(), Some("No node found with given era."));

    // State is not configuration: the tag did not move.
    assert_eq!(tag(&s).await, tag_before);
    assert_eq!(
        list(&s, "/v1/configuration/datasets", "dataset_id").await,
        Vec::<Value>::new()
    );
    s.control.stop().await;
}

// A heartbeat (`"state": null`, in the documented wire form) keeps what the node
// reported, moves neither the generation nor the tag, and a part never reported stays
// unknown.
#[tokio::test]
async fn heartbeats_change_nothing_visible() {
    let s = Single::start().await;
    let agent = s.agent_client(0);
    let era = Uuid::new_v4();
    let (m1, nm) = (u(), u());
    report_ok(&agent, &datasets(dataset_state(&[&m1], &nm), era)).await;
    let before = cluster_view(&agent, "").await;
    let tag_before = tag(&s).await;
    let states = list(&s, "/v1/state/datasets", "dataset_id").await;

    for kind in ["datasets", "containers"] {
        let heartbeat = json!({"era": era, "kind": kind, "state": null});
        let r = agent.post("/agent/v1/state", &heartbeat).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let after = cluster_view(&agent, "").await;
    assert_eq!(generation(&after), generation(&before));
    assert_eq!(tag(&s).await, tag_before);
    assert_eq!(list(&s, "/v1/state/datasets", "dataset_id").await, states);
    // The container agent never reported: its part is unknown, not empty.
    assert_eq!(
        list(&s, "/v1/state/containers", "name").await,
        Vec::<Value>::new()
    );
    assert!(after["state"]["nodes"][s.pki.nodes[0].to_string()]["containers"].is_null());
    s.control.stop().await;
}

// A long poll returns well before its wait once the configuration changes through the
// API, carrying the change; with nothing changing it times out with the same generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_configuration_changes() {
    let s = Single::start().await;
    let agent = s.agent_client(0);
    let first = cluster_view(&agent, "").await;
    let g = generation(&first);
    assert_eq!(first["node_uuid"], s.pki.nodes[0].to_string());

    let started = Instant::now();
    let idle = cluster_view(&agent, &format!("?after={g}&wait=1")).await;
    let waited = started.elapsed();
    assert_eq!(generation(&idle), g, "nothing changed");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "a 1 s poll answered after {waited:?}"
    );

    let poller = agent.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let view = cluster_view(&poller, &format!("?after={g}&wait=10")).await;
        (view, started.elapsed())
    });
    let primary = u();
    let r = s
        .client
        .post("/v1/configuration/datasets", &json!({"primary": primary}))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["dataset_id"].as_str().unwrap().to_owned();
    let (view, waited) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("the long poll answers")
        .unwrap();
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    assert!(generation(&view) > g);
    assert_eq!(
        view["configuration"]["datasets"][&id]["primary"],
        json!(primary)
    );

    // A state report from another node wakes a poll too.
    let g = generation(&view);
    let poller = agent.clone();
    let poll = tokio::spawn(async move {
        let started = Instant::now();
        let view = cluster_view(&poller, &format!("?after={g}&wait=10")).await;
        (view, started.elapsed())
    });
    let other = s.agent_client(1);
    report_ok(&other, &containers(vec![], Uuid::new_v4())).await;
    let (view, waited) = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("the long poll answers")
        .unwrap();
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    assert!(generation(&view) > g);
    assert!(view["state"]["nodes"][s.pki.nodes[1].to_string()].is_object());
    s.control.stop().await;
}

// A report with a new era first drops everything the node reported in its previous era;
// the era lookup follows.
#[tokio::test]
async fn a_new_era_drops_the_previous_state() {
    let s = Single::start().await;
    let agent = s.agent_client(0);
    let node = s.pki.nodes[0].to_string();
    let (old_era, new_era) = (Uuid::new_v4(), Uuid::new_v4());
    let (m1, nm) = (u(), u());
    report_ok(&agent, &datasets(dataset_state(&[&m1], &nm), old_era)).await;
    let web = ContainerState {
        container: container("web", None),
        running: true,
    };
    report_ok(&agent, &containers(vec![web], old_era)).await;
    assert_eq!(list(&s, "/v1/state/containers", "name").await.len(), 1);

    let m2 = u();
    report_ok(&agent, &datasets(dataset_state(&[&m2], &nm), new_era)).await;
    assert_eq!(
        list(&s, "/v1/state/containers", "name").await,
        Vec::<Value>::new(),
        "containers of the old era"
    );
    let ids: Vec<Value> = list(&s, "/v1/state/datasets", "dataset_id")
        .await
        .iter()
        .map(|d| d["dataset_id"].clone())
        .collect();
    let mut expected = vec![json!(m2), json!(nm)];
    expected.sort_by_key(|v| v.as_str().map(str::to_owned));
    assert_eq!(ids, expected);
    let r = s
        .client
        .get(&format!("/v1/state/nodes/by_era/{old_era}"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s
        .client
        .get(&format!("/v1/state/nodes/by_era/{new_era}"))
        .await
        .unwrap();
    assert_eq!((r.status, r.body), (StatusCode::OK, json!({"uuid": node})));
    s.control.stop().await;
}

// The node a report is about is the one the agent's certificate names: two certificates
// make two nodes, and a node UUID written into the body changes nothing.
#[tokio::test]
async fn node_identity_comes_from_the_certificate() {
    let s = Single::start().await;
    let (a, b) = (s.agent_client(0), s.agent_client(1));
    let (node_a, node_b) = (s.pki.nodes[0].to_string(), s.pki.nodes[1].to_string());

    // Agent A claims to be B; the claim is ignored.
    let mut claim = serde_json::to_value(containers(vec![], Uuid::new_v4())).unwrap();
    claim["node_uuid"] = json!(node_b);
    claim["node"] = json!(node_b);
    let r = a.post("/agent/v1/state", &claim).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        list(&s, "/v1/state/nodes", "uuid").await,
        vec![json!({"host": "127.0.0.1", "uuid": node_a})]
    );

    report_ok(&b, &datasets(dataset_state(&[&u()], &u()), Uuid::new_v4())).await;
    let mut expected = vec![
        json!({"host": "127.0.0.1", "uuid": node_a}),
        json!({"host": "127.0.0.1", "uuid": node_b}),
    ];
    expected.sort_by_key(|n| n["uuid"].as_str().map(str::to_owned));
    assert_eq!(list(&s, "/v1/state/nodes", "uuid").await, expected);
    assert_eq!(cluster_view(&a, "").await["node_uuid"], json!(node_a));
    assert_eq!(cluster_view(&b, "").await["node_uuid"], json!(node_b));
    // B's manifestation is listed under B.
    let states = list(&s, "/v1/state/datasets", "dataset_id").await;
    assert!(states
        .iter()
        .any(|d| d["primary"] == json!(node_b) && d["path"].is_string()));
    s.control.stop().await;
}

// State that is neither reported nor heartbeated for the expiry disappears from
// /v1/state/*, while the era lookup stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_nodes_expire() {
    let s = Single::start_with(|settings| settings.state_expiry = Duration::from_secs(2)).await;
    let agent = s.agent_client(0);
    let era = Uuid::new_v4();
    report_ok(&agent, &datasets(dataset_state(&[&u()], &u()), era)).await;
    let web = ContainerState {
        container: container("web", None),
        running: true,
    };
    // Taken before the last report is stamped, so the node cannot go sooner than 2 s
    // after it.
    let reported = Instant::now();
    report_ok(&agent, &containers(vec![web], era)).await;
    assert_eq!(list(&s, "/v1/state/nodes", "uuid").await.len(), 1);

    wait_for(
        "the silent node to expire",
        Duration::from_secs(20),
        || async {
            let nodes = s.client.get("/v1/state/nodes").await.unwrap().body;
            (nodes == json!([])).then_some(())
        },
    )
    .await;
    assert!(
        reported.elapsed() >= Duration::from_millis(1950),
        "expired after {:?}, before the 2 s expiry",
        reported.elapsed()
    );
    assert_eq!(
        list(&s, "/v1/state/datasets", "dataset_id").await,
        Vec::<Value>::new()
    );
    assert_eq!(
        list(&s, "/v1/state/containers", "name").await,
        Vec::<Value>::new()
    );
    let r = s
        .client
        .get(&format!("/v1/state/nodes/by_era/{era}"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "eras never expire");
    s.control.stop().await;
}

// The block-device ownership registry is first-writer-wins: 200, 200 again for the same
// volume, 409 for another; only the first registration moves the configuration tag.
#[tokio::test]
async fn blockdevice_owner_first_writer_wins() {
    let s = Single::start().await;
    let agent = s.agent_client(0);
    let dataset = u();
    let path = "/agent/v1/blockdevice-owner";
    let tag0 = tag(&s).await;
    let first = json!({"dataset_id": dataset, "blockdevice_id": "vol-1"});
    let r = agent.post(path, &first).await.unwrap();
    assert_eq!((r.status, r.body), (StatusCode::OK, json!({})));
    let tag1 = tag(&s).await;
    assert_ne!(tag1, tag0, "registration is configuration");

    let r = agent.post(path, &first).await.unwrap();
    assert_eq!((r.status, r.body), (StatusCode::OK, json!({})));
    let other = json!({"dataset_id": dataset, "blockdevice_id": "vol-2"});
    let r = agent.post(path, &other).await.unwrap();
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.description().is_some(), "{}", r.body);
    assert_eq!(tag(&s).await, tag1);

    let view = cluster_view(&agent, "").await;
    assert_eq!(
        view["configuration"]["blockdevice_owners"][&dataset],
        json!("vol-1")
    );
    // Another node's agent cannot take it over either.
    let r = s.agent_client(1).post(path, &other).await.unwrap();
    assert_eq!(r.status, StatusCode::CONFLICT);
    s.control.stop().await;
}

// Malformed reports, registrations and poll parameters get a 400 with a JSON
// description and change nothing.
#[tokio::test]
async fn malformed_agent_requests_are_refused() {
    let s = Single::start().await;
    let agent = s.agent_client(0);
    let era = u();
    let huge = "1000000000000000000000000000000";
    let before = generation(&cluster_view(&agent, "").await);
    let reports = [
        "".to_owned(),
        "not json".to_owned(),
        "{}".to_owned(),
        "null".to_owned(),
        "[]".to_owned(),
        r#"{"era": "x", "kind": "datasets", "state": null}"#.to_owned(),
        r#"{"kind": "datasets", "state": null}"#.to_owned(),
        format!(r#"{{"era": "{era}", "state": null}}"#),
        format!(r#"{{"era": "{era}", "kind": "bogus", "state": null}}"#),
        format!(r#"{{"era": "{era}", "kind": "datasets", "state": 5}}"#),
        format!(r#"{{"era": "{era}", "kind": "containers", "state": {{}}}}"#),
        format!(r#"{{"era": "{era}", "kind": "datasets", "state": {{"manifestations": []}}}}"#),
        format!(
            r#"{{"era": "{era}", "kind": "datasets", "state": {{"manifestations": [{{"dataset_id": "d"}}], "nonmanifest": [], "devices": {{}}}}}}"#
        ),
        format!(
            r#"{{"era": "{era}", "kind": "datasets", "state": {{"manifestations": [{{"dataset_id": "d", "path": "/p", "maximum_size": {huge}}}], "nonmanifest": [], "devices": {{}}}}}}"#
        ),
        format!(
            r#"{{"era": "{era}", "kind": "datasets", "state": {{"manifestations": [], "nonmanifest": [{{"dataset_id": "d", "maximum_size": -1}}], "devices": {{}}}}}}"#
        ),
        format!(r#"{{"era": "{era}", "kind": "containers", "state": [{{"running": true}}]}}"#),
        format!(
            r#"{{"era": "{era}", "kind": "datasets", "state": {}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
        format!(r#"{{"era": "{era}", "kind": "datasets", "state": NaN}}"#),
    ];
    let registrations = [
        "".to_owned(),
        "{}".to_owned(),
        r#"{"dataset_id": "x", "blockdevice_id": "vol"}"#.to_owned(),
        format!(r#"{{"dataset_id": "{era}"}}"#),
        format!(r#"{{"dataset_id": "{era}", "blockdevice_id": 7}}"#),
    ];
    let probes = reports.iter().map(|b| ("/agent/v1/state", b)).chain(
        registrations
            .iter()
            .map(|b| ("/agent/v1/blockdevice-owner", b)),
    );
    for (path, body) in probes {
        let r = agent
            .request(Method::POST, path, &[], Some(body.as_bytes().to_vec()))
            .await
            .unwrap();
        let shown: String = body.chars().take(200).collect();
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path} {shown}: {}",
            r.body
        );
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{path} {shown}"
        );
        assert!(r.description().is_some(), "{path} {shown}: {}", r.body);
    }
    for query in [
        "?after=abc",
        "?after=-1",
        "?wait=soon",
        &format!("?after={huge}"),
    ] {
        let r = agent
            .get(&format!("/agent/v1/cluster{query}"))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {:?}", r.raw);
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{query}"
        );
        assert!(r.description().is_some(), "{query}: {:?}", r.raw);
    }
    let r = agent.get("/agent/v1/nothing").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.description().is_some());

    assert_eq!(generation(&cluster_view(&agent, "").await), before);
    assert_eq!(
        list(&s, "/v1/state/nodes", "uuid").await,
        Vec::<Value>::new()
    );
    s.control.stop().await;
}
