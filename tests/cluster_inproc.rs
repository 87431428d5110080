//! Several control nodes in one process, on real sockets: membership changes through the
//! admin API, writes on any node (forwarded to the leader), linearizable reads on any
//! node, and failover when the leader stops.

mod common;

use std::time::Duration;

use common::{settings, wait_for, Pki};
use flocker::client::Client;
use flocker::control::{self, Bootstrap, RunningControl};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

struct Node {
    control: Option<RunningControl>,
    client: Client,
}

async fn start(pki: &Pki, data: &std::path::Path, id: u64, bootstrap: Bootstrap) -> Node {
    let mut s = settings(pki, data);
    s.raft.id = id;
    s.bootstrap = bootstrap;
    let control = control::start(s).await.unwrap();
    let client = Client::new(&format!("https://{}", control.api_addr), &pki.user()).unwrap();
    Node {
        control: Some(control),
        client,
    }
}

async fn status(client: &Client) -> Value {
    client.get("/admin/v1/status").await.unwrap().body
}

/// Three nodes: 1 forms the cluster, 2 and 3 join through the admin API of node 2.
async fn three(tmp: &std::path::Path) -> (Pki, Vec<Node>) {
    let pki = Pki::create(&tmp.join("certs"), 1);
    let mut nodes = vec![start(&pki, &tmp.join("n1"), 1, Bootstrap::Single).await];
    for id in [2, 3] {
        nodes.push(start(&pki, &tmp.join(format!("n{id}")), id, Bootstrap::Join).await);
    }
    wait_for("node 1 to lead", Duration::from_secs(10), || async {
        (status(&nodes[0].client).await["leader"] == json!(1)).then_some(())
    })
    .await;
    for id in [2u64, 3] {
        let c = nodes[id as usize - 1].control.as_ref().unwrap();
        let body = json!({"id": id, "raft_addr": c.peer_addr.to_string(), "api_addr": c.api_addr.to_string()});
        // Sent to node 2 even for itself: a non-member forwards admin calls? No: it does not
        // know the leader yet, so send to the leader.
        let r = nodes[0]
            .client
            .post("/admin/v1/members", &body)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    let r = nodes[0]
        .client
        .request(
            reqwest::Method::PUT,
            "/admin/v1/voters",
            &[],
            Some(br#"{"voters": [1, 2, 3]}"#.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["voters"], json!([1, 2, 3]));
    (pki, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_serves_writes_and_linearizable_reads() {
    // Property: a write acknowledged by any node is visible to a configuration read that
    // starts afterwards on any other node, and conditional writes keep their semantics
    // through forwarding.
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, nodes) = three(tmp.path()).await;
    for round in 0..6 {
        let writer = &nodes[round % 3].client;
        let reader = &nodes[(round + 1) % 3].client;
        let primary = Uuid::new_v4().to_string();
        let r = writer
            .post("/v1/configuration/datasets", &json!({"primary": primary}))
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        let id = r.body["dataset_id"].clone();
        let (list, _) = reader.datasets().await.unwrap();
        assert!(
            list.iter().any(|d| d["dataset_id"] == id),
            "round {round}: read missed a write"
        );
    }
    // Tags agree on every node, and a stale tag fails on every node.
    let (_, tag) = nodes[0].client.datasets().await.unwrap();
    for node in &nodes {
        assert_eq!(node.client.datasets().await.unwrap().1, tag);
    }
    let r = nodes[1]
        .client
        .post_if(
            "/v1/configuration/datasets",
            &tag,
            &json!({"primary": Uuid::new_v4().to_string()}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    for node in &nodes {
        let r = node
            .client
            .post_if(
                "/v1/configuration/datasets",
                &tag,
                &json!({"primary": Uuid::new_v4().to_string()}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    }
    // Rejections travel through forwarding unchanged.
    let r = nodes[2]
        .client
        .delete(&format!("/v1/configuration/datasets/{}", Uuid::new_v4()))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::NOT_FOUND,
            json!({"description": "Dataset not found."})
        )
    );
    // Status on every node names the same leader and membership.
    for node in &nodes {
        let s = status(&node.client).await;
        assert_eq!(s["leader"], json!(1));
        assert_eq!(s["voters"], json!([1, 2, 3]));
    }
    for node in nodes {
        node.control.unwrap().stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_nothing_acknowledged_is_lost() {
    // Property: after the leader stops, the two others elect a new leader, serve writes,
    // and still hold every write acknowledged before.
    let tmp = tempfile::tempdir().unwrap();
    let (_pki, mut nodes) = three(tmp.path()).await;
    let mut acknowledged = Vec::new();
    for _ in 0..20 {
        let r = nodes[1]
            .client
            .post(
                "/v1/configuration/datasets",
                &json!({"primary": Uuid::new_v4().to_string()}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CREATED);
        acknowledged.push(r.body["dataset_id"].clone());
    }
    nodes[0].control.take().unwrap().stop().await;
    let started = std::time::Instant::now();
    let r = wait_for(
        "a write after failover",
        Duration::from_secs(15),
        || async {
            let r = nodes[2]
                .client
                .post(
                    "/v1/configuration/datasets",
                    &json!({"primary": Uuid::new_v4().to_string()}),
                )
                .await
                .ok()?;
            (r.status == StatusCode::CREATED).then_some(r)
        },
    )
    .await;
    acknowledged.push(r.body["dataset_id"].clone());
    eprintln!("first write after leader stop: {:?}", started.elapsed());
    for node in &nodes[1..] {
        let (list, _) = node.client.datasets().await.unwrap();
        for id in &acknowledged {
            assert!(list.iter().any(|d| &d["dataset_id"] == id), "lost {id}");
        }
    }
    // Remove the stopped node; the remaining two are the voters.
    let r = nodes[1].client.delete("/admin/v1/members/1").await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["voters"], json!([2, 3]));
    let r = nodes[1].client.delete("/admin/v1/members/2").await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = nodes[2].client.delete("/admin/v1/members/x").await.unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    for node in nodes.into_iter().filter_map(|n| n.control) {
        node.stop().await;
    }
}
