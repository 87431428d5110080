//! API conformance over real HTTPS with real client certificates: the checklist of
//! FLOCKER-SPEC section 13 and the error cases of sections 3.2 to 3.4. Each test starts its
//! own single-node control service on loopback port 0.

mod common;

use common::Single;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const DECODE_ERROR: &str =
    "The request body could not be decoded according to the value of the\nContent-Type header.";
const SCHEMA_ERROR: &str = "The provided JSON doesn't match the required schema.";

fn u() -> String {
    Uuid::new_v4().to_string()
}

fn sorted(mut list: Vec<Value>, key: &str) -> Vec<Value> {
    list.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
    list
}

async fn raw(s: &Single, method: Method, path: &str, body: &str) -> flocker::client::Reply {
    s.client
        .request(method, path, &[], Some(body.as_bytes().to_vec()))
        .await
        .unwrap()
}

#[tokio::test]
async fn version_and_routing() {
    let s = Single::start().await;
    let r = s.client.get("/v1/version").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.body["flocker"].is_string());

    let r = s.client.get("/v1/nonexistent").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.description().is_some());
    let r = s.client.get("/v1/configuration/datasets/").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND, "trailing slash");
    let r = s.client.get("/").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s.client.get("/v1/types.json").await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = raw(&s, Method::PUT, "/v1/configuration/datasets", "{}").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let allow = r.header("allow").expect("405 carries Allow").to_owned();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert!(r.description().is_some());
    let r = raw(&s, Method::PATCH, "/v1/version", "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    // HEAD works on GET routes (Flocker answered 400).
    let r = s
        .client
        .request(Method::HEAD, "/v1/version", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    // Query strings are ignored.
    let r = s.client.get("/v1/version?x=1").await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn body_decoding() {
    let s = Single::start().await;
    for body in ["not json", "", "{", "NaN", "{\"primary\": NaN}"] {
        let r = raw(&s, Method::POST, "/v1/configuration/datasets", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(r.body, json!({ "description": DECODE_ERROR }), "{body:?}");
    }
    // No Content-Type at all is fine.
    let body = json!({"primary": u()}).to_string().into_bytes();
    let r = s
        .client
        .request(
            Method::POST,
            "/v1/configuration/datasets",
            &[("content-type", "text/plain")],
            Some(body),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    // GET and DELETE with a JSON content type and no body are fine.
    let r = s
        .client
        .request(
            Method::GET,
            "/v1/configuration/datasets",
            &[("content-type", "application/json")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .client
        .request(
            Method::DELETE,
            "/v1/configuration/containers/nothere",
            &[("content-type", "application/json")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dataset_create() {
    let s = Single::start().await;
    let (n1, n2) = (u(), u());
    let r = s
        .client
        .post("/v1/configuration/datasets", &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.body,
        json!({"description": SCHEMA_ERROR, "errors": ["'primary' is a required property"]})
    );
    let r = s
        .client
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": n1, "junk": "garbage"}),
        )
        .await
        .unwrap();
    assert_eq!(
        r.body["errors"],
        json!(["Additional properties are not allowed (u'junk' was unexpected)"])
    );
    let r = s
        .client
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": n1, "maximum_size": 1}),
        )
        .await
        .unwrap();
    assert_eq!(
        r.body["errors"],
        json!([
            "1 is not a multiple of 1024",
            "1 is less than the minimum of 67108864"
        ])
    );

    // Minimal create: generated id, defaults.
    let r = s
        .client
        .post("/v1/configuration/datasets", &json!({"primary": n1}))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["dataset_id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.body,
        json!({"primary": n1, "metadata": {}, "deleted": false, "dataset_id": id})
    );
    Uuid::parse_str(&id).unwrap();

    // With everything; upper-case node and id are canonicalised to lower case.
    let given = u();
    let r = s
        .client
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": n2.to_uppercase(), "dataset_id": given.to_uppercase(),
                    "maximum_size": 45097156608u64, "metadata": {"name": "db", "owner": "alice"}}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.body,
        json!({"primary": n2, "dataset_id": given, "maximum_size": 45097156608u64,
               "metadata": {"name": "db", "owner": "alice"}, "deleted": false})
    );
    // maximum_size null: omitted.
    let r = s
        .client
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": n1, "maximum_size": null}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.body.get("maximum_size").is_none());

    // Collisions: same id (any case, any node) -> 409, nothing changes.
    let (before, tag_before) = s.client.datasets().await.unwrap();
    for (node, dataset_id) in [
        (&n2, given.clone()),
        (&n1, given.clone()),
        (&n1, given.to_uppercase()),
    ] {
        let r = s
            .client
            .post(
                "/v1/configuration/datasets",
                &json!({"primary": node, "dataset_id": dataset_id}),
            )
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.body,
            json!({"description": "The provided dataset_id is already in use."})
        );
    }
    let (after, tag_after) = s.client.datasets().await.unwrap();
    assert_eq!(sorted(before, "dataset_id"), sorted(after, "dataset_id"));
    assert_eq!(tag_before, tag_after);

    // Flocker crashed on these; we answer 400 and change nothing.
    for body in [
        json!({"primary": n1, "deleted": true}),
        json!({"primary": n1, "maximum_size": 18446744073709551616u128}),
    ] {
        let r = s
            .client
            .post("/v1/configuration/datasets", &body)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(r.description().is_some());
    }
    // deleted: false is accepted.
    let r = s
        .client
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": n1, "deleted": false}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn concurrent_creates_get_distinct_ids() {
    let s = Single::start().await;
    let node = u();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = s.client.clone();
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post("/v1/configuration/datasets", &json!({"primary": node}))
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::CREATED);
            r.body["dataset_id"].as_str().unwrap().to_owned()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16);
    let (list, _) = s.client.datasets().await.unwrap();
    assert_eq!(list.len(), 16);
}

#[tokio::test]
async fn conditional_requests() {
    let s = Single::start().await;
    let node = u();
    let (_, tag0) = s.client.datasets().await.unwrap();
    assert_eq!(tag0.len(), 32);
    assert!(tag0
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));

    let r = s
        .client
        .post_if(
            "/v1/configuration/datasets",
            &tag0,
            &json!({"primary": node}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["dataset_id"].as_str().unwrap().to_owned();
    let (_, tag1) = s.client.datasets().await.unwrap();
    assert_ne!(tag0, tag1);

    // The stale tag now fails, with the spec's body.
    let r = s
        .client
        .post_if(
            "/v1/configuration/datasets",
            &tag0,
            &json!({"primary": node}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.body,
        json!({"description": format!("Tag doesn't match. Required: {tag0}, current: {tag1}")})
    );
    let r = s
        .client
        .post_if(
            "/v1/configuration/datasets",
            "willnotmatch",
            &json!({"primary": node}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        r.description().unwrap(),
        format!("Tag doesn't match. Required: willnotmatch, current: {tag1}")
    );

    // The tag is checked before decoding, validation and lookup.
    let r = s
        .client
        .request(
            Method::POST,
            "/v1/configuration/datasets",
            &[("X-If-Configuration-Matches", &tag0)],
            Some(b"not json".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = s
        .client
        .post_if(
            &format!("/v1/configuration/datasets/{}", u()),
            "willnotmatch",
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);
    let r = s
        .client
        .request(
            Method::DELETE,
            &format!("/v1/configuration/datasets/{}", u()),
            &[("X-If-Configuration-Matches", "willnotmatch")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::PRECONDITION_FAILED);

    // Any one of several header values may match.
    let r = s
        .client
        .request(
            Method::POST,
            &format!("/v1/configuration/datasets/{id}"),
            &[
                ("X-If-Configuration-Matches", "nope"),
                ("X-If-Configuration-Matches", &tag1),
            ],
            Some(json!({"primary": u()}).to_string().into_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (_, tag2) = s.client.datasets().await.unwrap();
    let r = s
        .client
        .request(
            Method::DELETE,
            &format!("/v1/configuration/datasets/{id}"),
            &[("X-If-Configuration-Matches", &tag2)],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);

    // A write of an identical configuration keeps the tag.
    let (_, tag3) = s.client.datasets().await.unwrap();
    let r = s
        .client
        .delete(&format!("/v1/configuration/datasets/{id}"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let (_, tag4) = s.client.datasets().await.unwrap();
    assert_eq!(tag3, tag4);
    // Container and lease endpoints ignore the header.
    let r = s
        .client
        .post_if(
            "/v1/configuration/leases",
            "willnotmatch",
            &json!({"dataset_id": u(), "node_uuid": node, "expires": null}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn dataset_update_and_delete() {
    let s = Single::start().await;
    let (a, b) = (u(), u());
    let r = s
        .client
        .post(&format!("/v1/configuration/datasets/{}", u()), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, json!({"description": "Dataset not found."}));
    let r = s
        .client
        .delete(&format!("/v1/configuration/datasets/{}", u()))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, json!({"description": "Dataset not found."}));

    let r = s
        .client
        .post("/v1/configuration/datasets", &json!({"primary": a}))
        .await
        .unwrap();
    let id = r.body["dataset_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/configuration/datasets/{id}");

    let r = s
        .client
        .post(&path, &json!({"primary": "192.0.2.257"}))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["errors"].as_array().unwrap().len(), 2);
    let r = s.client.post(&path, &json!({})).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"dataset_id": id, "primary": a, "metadata": {}, "deleted": false})
    );
    let r = s.client.post(&path, &json!({"primary": b})).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"dataset_id": id, "primary": b, "metadata": {}, "deleted": false})
    );
    let (list, _) = s.client.datasets().await.unwrap();
    assert_eq!(
        list,
        vec![json!({"dataset_id": id, "primary": b, "metadata": {}, "deleted": false})]
    );
    // The path id is compared as-is.
    let upper = format!("/v1/configuration/datasets/{}", id.to_uppercase());
    let r = s.client.post(&upper, &json!({})).await.unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    let r = s.client.delete(&path).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let deleted = json!({"dataset_id": id, "primary": b, "metadata": {}, "deleted": true});
    assert_eq!(r.body, deleted);
    let again = s.client.delete(&path).await.unwrap();
    assert_eq!(
        (again.status, again.body),
        (StatusCode::OK, deleted.clone())
    );
    let r = s.client.post(&path, &json!({"primary": a})).await.unwrap();
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        r.body,
        json!({"description": "The dataset has been deleted."})
    );
    // Deleted datasets stay listed, and their ids can never be reused.
    let (list, _) = s.client.datasets().await.unwrap();
    assert_eq!(list, vec![deleted]);
    let r = s
        .client
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": a, "dataset_id": id}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CONFLICT);
}

async fn create_container(s: &Single, body: Value) -> flocker::client::Reply {
    s.client
        .post("/v1/configuration/containers", &body)
        .await
        .unwrap()
}

#[tokio::test]
async fn container_create_rules() {
    let s = Single::start().await;
    let (a, b) = (u(), u());
    let r = create_container(&s, json!({})).await;
    assert_eq!(
        r.body["errors"],
        json!([
            "'node_uuid' is a required property",
            "'name' is a required property",
            "'image' is a required property"
        ])
    );
    let r = create_container(&s, json!({"node_uuid": a, "name": "p", "image": "x"})).await;
    assert_eq!(
        r.body["errors"],
        json!(["u'p' does not match '^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$'"])
    );
    let r = create_container(
        &s,
        json!({"node_uuid": a, "name": "pg", "image": "x", "junk": 1}),
    )
    .await;
    assert_eq!(
        r.body["errors"],
        json!(["Additional properties are not allowed (u'junk' was unexpected)"])
    );
    let r = create_container(
        &s,
        json!({"node_uuid": a, "name": "pg", "image": "x", "ports": []}),
    )
    .await;
    assert_eq!(r.body["errors"], json!(["[] is too short"]));
    let r = create_container(&s, json!({"node_uuid": a, "name": "pg", "image": "x", "restart_policy": {"name": "sometimes"}})).await;
    assert_eq!(
        r.body["errors"],
        json!(["{u'name': u'sometimes'} is not valid under any of the given schemas"])
    );
    let r = create_container(
        &s,
        json!({"node_uuid": a, "name": "pg", "image": "x", "command_line": ["nc", 1234]}),
    )
    .await;
    assert_eq!(r.body["errors"], json!(["1234 is not of type 'string'"]));

    // Minimal.
    let r = create_container(
        &s,
        json!({"node_uuid": a, "name": "postgres", "image": "postgres"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.body,
        json!({"node_uuid": a, "name": "postgres", "image": "postgres:latest", "restart_policy": {"name": "never"}})
    );
    // Name collisions on the same and on another node.
    for node in [&a, &b] {
        let r = create_container(
            &s,
            json!({"node_uuid": node, "name": "postgres", "image": "x"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.body,
            json!({"description": "The container name already exists."})
        );
    }
    // Everything echoed.
    let full = json!({"node_uuid": b, "name": "web", "image": "nginx:1.2",
        "environment": {"A": "1"}, "restart_policy": {"name": "on-failure", "maximum_retry_count": 10},
        "cpu_shares": 512, "memory_limit": 262144000, "command_line": ["a", "bc"],
        "ports": [{"internal": 80, "external": 8080}],
        "links": [{"alias": "DB", "local_port": 1234, "remote_port": 5678}], "swappiness": 10});
    let r = create_container(&s, full.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let mut expected = full.clone();
    expected.as_object_mut().unwrap().remove("swappiness");
    expected["links"][0]["alias"] = json!("db");
    assert_eq!(r.body, expected);
    // External port already used, on either node.
    for node in [&a, &b] {
        let r = create_container(
            &s,
            json!({"node_uuid": node, "name": format!("x{node}"), "image": "x",
            "ports": [{"internal": 1, "external": 8080}]}),
        )
        .await;
        assert_eq!(r.status, StatusCode::CONFLICT);
        assert_eq!(
            r.body,
            json!({"description": "A specified external port is already in use."})
        );
    }
    // Link rules.
    let r = create_container(&s, json!({"node_uuid": a, "name": "l1", "image": "x", "links": [
        {"alias": "db", "local_port": 1, "remote_port": 2}, {"alias": "db", "local_port": 3, "remote_port": 4}]})).await;
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::CONFLICT,
            json!({"description": "Link aliases must be unique."})
        )
    );
    let r = create_container(&s, json!({"node_uuid": a, "name": "l2", "image": "x", "links": [
        {"alias": "a", "local_port": 1, "remote_port": 2}, {"alias": "b", "local_port": 1, "remote_port": 4}]})).await;
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::CONFLICT,
            json!({"description": "The local ports in a container's links must be unique."})
        )
    );
    // Inputs Flocker crashed on.
    for bad in [
        json!({"node_uuid": a, "name": "i1", "image": ""}),
        json!({"node_uuid": a, "name": "i2", "image": ":tag"}),
        json!({"node_uuid": a, "name": "i3", "image": "x", "ports": [{"internal": 80}]}),
        json!({"node_uuid": a, "name": "i4", "image": "x", "ports": [{"internal": 80, "external": 70000}]}),
    ] {
        let r = create_container(&s, bad.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = s.client.get("/v1/configuration/containers").await.unwrap();
    assert_eq!(r.body.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn containers_with_volumes_and_moves() {
    let s = Single::start().await;
    let (a, b) = (u(), u());
    let ds = s
        .client
        .post(
            "/v1/configuration/datasets",
            &json!({"primary": a, "maximum_size": 67108864}),
        )
        .await
        .unwrap();
    let id = ds.body["dataset_id"].as_str().unwrap().to_owned();
    let volume = |name: &str, node: &str, dataset: &str| json!({"node_uuid": node, "name": name, "image": "busybox", "volumes": [{"dataset_id": dataset, "mountpoint": "/data/"}]});
    let r = create_container(&s, volume("v0", &a, &u())).await;
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::NOT_FOUND,
            json!({"description": "Dataset not found."})
        )
    );
    let r = create_container(&s, volume("v0", &b, &id)).await;
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::CONFLICT,
            json!({"description": "The dataset is on another node."})
        )
    );
    let r = create_container(&s, volume("v1", &a, &id)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.body["volumes"],
        json!([{"dataset_id": id, "mountpoint": "/data"}])
    );
    let r = create_container(&s, volume("v2", &a, &id)).await;
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::CONFLICT,
            json!({"description": "The dataset is being used by another container."})
        )
    );
    // Moving or deleting a dataset under a container: Flocker crashed, we refuse.
    let r = s
        .client
        .post(
            &format!("/v1/configuration/datasets/{id}"),
            &json!({"primary": b}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = s
        .client
        .delete(&format!("/v1/configuration/datasets/{id}"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CONFLICT);

    // Moving the container moves its dataset.
    let r = s
        .client
        .post("/v1/configuration/containers/v1", &json!({"node_uuid": b}))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["node_uuid"], json!(b));
    let (list, tag) = s.client.datasets().await.unwrap();
    assert_eq!(list[0]["primary"], json!(b));
    // Same node: no change, same tag.
    let r = s
        .client
        .post("/v1/configuration/containers/v1", &json!({"node_uuid": b}))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.client.datasets().await.unwrap().1, tag);
    let r = s
        .client
        .post(
            "/v1/configuration/containers/nope",
            &json!({"node_uuid": b}),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::NOT_FOUND,
            json!({"description": "Container not found."})
        )
    );
    let r = s
        .client
        .post("/v1/configuration/containers/v1", &json!({}))
        .await
        .unwrap();
    assert_eq!(
        r.body["errors"],
        json!(["'node_uuid' is a required property"])
    );

    // Delete: 200 null; the dataset remains and is free again.
    let r = s
        .client
        .delete("/v1/configuration/containers/v1")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.raw[..], b"null");
    let r = s
        .client
        .delete("/v1/configuration/containers/v1")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::NOT_FOUND,
            json!({"description": "Container not found."})
        )
    );
    let r = create_container(&s, volume("v3", &b, &id)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    // A deleted dataset cannot be mounted.
    s.client
        .delete("/v1/configuration/containers/v3")
        .await
        .unwrap();
    s.client
        .delete(&format!("/v1/configuration/datasets/{id}"))
        .await
        .unwrap();
    let r = create_container(&s, volume("v4", &b, &id)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn leases() {
    let s = Single::start().await;
    let (a, b, d) = (u(), u(), u());
    let r = s
        .client
        .post(
            "/v1/configuration/leases",
            &json!({"dataset_id": "x", "node_uuid": a}),
        )
        .await
        .unwrap();
    assert_eq!(
        r.body["errors"],
        json!(["'expires' is a required property", "u'x' is too short"])
    );
    let r = s
        .client
        .post(
            "/v1/configuration/leases",
            &json!({"dataset_id": d, "node_uuid": a, "expires": "soon"}),
        )
        .await
        .unwrap();
    assert_eq!(
        r.body["errors"],
        json!(["u'soon' is not of type 'number', 'null'"])
    );

    let (_, tag0) = s.client.datasets().await.unwrap();
    let r = s
        .client
        .post(
            "/v1/configuration/leases",
            &json!({"dataset_id": d, "node_uuid": a, "expires": 60}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.body,
        json!({"dataset_id": d, "node_uuid": a, "expires": 60.0})
    );
    assert_eq!(&r.raw[..].windows(4).any(|w| w == b"60.0"), &true);
    let (_, tag1) = s.client.datasets().await.unwrap();
    assert_ne!(tag0, tag1, "lease changes move the tag");
    let r = s
        .client
        .post(
            "/v1/configuration/leases",
            &json!({"dataset_id": d, "node_uuid": b, "expires": 60}),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::CONFLICT,
            json!({"description": "Lease already held."})
        )
    );
    let r = s
        .client
        .post(
            "/v1/configuration/leases",
            &json!({"dataset_id": d, "node_uuid": a, "expires": null}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({"dataset_id": d, "node_uuid": a, "expires": null})
    );
    let r = s
        .client
        .post(
            "/v1/configuration/leases",
            &json!({"dataset_id": d, "node_uuid": a, "expires": 40}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);

    let r = s.client.get("/v1/configuration/leases").await.unwrap();
    let list = r.body.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let remaining = list[0]["expires"].as_f64().unwrap();
    assert!(remaining > 30.0 && remaining <= 40.0, "{remaining}");

    let r = s
        .client
        .delete(&format!("/v1/configuration/leases/{}", u()))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::NOT_FOUND,
            json!({"description": "Lease not found."})
        )
    );
    let r = s
        .client
        .delete("/v1/configuration/leases/not-a-uuid")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s
        .client
        .delete(&format!("/v1/configuration/leases/{d}"))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["node_uuid"], json!(a));
    assert!(r.body["expires"].as_f64().unwrap() <= 40.0);
    assert_eq!(
        s.client.get("/v1/configuration/leases").await.unwrap().body,
        json!([])
    );

    // Inputs Flocker crashed on: non-UUID 36-char id, absurd durations.
    for bad in [
        json!({"dataset_id": "x".repeat(36), "node_uuid": a, "expires": 1}),
        json!({"dataset_id": d, "node_uuid": a, "expires": 1e300}),
    ] {
        let r = s
            .client
            .post("/v1/configuration/leases", &bad)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let infinite = format!(r#"{{"dataset_id": "{d}", "node_uuid": "{a}", "expires": 1e400}}"#);
    let r = raw(&s, Method::POST, "/v1/configuration/leases", &infinite).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        s.client.get("/v1/configuration/leases").await.unwrap().body,
        json!([])
    );
}

#[tokio::test]
async fn leases_expire_and_move_the_tag() {
    let s = Single::start().await;
    let (a, d) = (u(), u());
    let r = s
        .client
        .post(
            "/v1/configuration/leases",
            &json!({"dataset_id": d, "node_uuid": a, "expires": 0.2}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED);
    let (_, tag) = s.client.datasets().await.unwrap();
    common::wait_for(
        "the lease to be swept",
        std::time::Duration::from_secs(10),
        || async {
            let r = s.client.get("/v1/configuration/leases").await.unwrap();
            (r.body == json!([])).then_some(())
        },
    )
    .await;
    assert_ne!(s.client.datasets().await.unwrap().1, tag);
}

#[tokio::test]
async fn state_endpoints_start_empty() {
    let s = Single::start().await;
    for path in [
        "/v1/state/datasets",
        "/v1/state/containers",
        "/v1/state/nodes",
    ] {
        let r = s.client.get(path).await.unwrap();
        assert_eq!((r.status, r.body), (StatusCode::OK, json!([])), "{path}");
    }
    let r = s
        .client
        .get(&format!("/v1/state/nodes/by_era/{}", u()))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body),
        (
            StatusCode::NOT_FOUND,
            json!({"description": "No node found with given era."})
        )
    );
    let r = s
        .client
        .get("/v1/state/nodes/by_era/garbage")
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn keep_alive_and_connection_close() {
    let s = Single::start().await;
    for _ in 0..5 {
        let r = s.client.get("/v1/version").await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
    }
    for _ in 0..3 {
        let r = s
            .client
            .request(Method::GET, "/v1/version", &[("connection", "close")], None)
            .await
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
    }
}
