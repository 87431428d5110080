//! From a validated request body to domain values: the second tier of edge validation.
//!
//! The JSON schema (see [`super::schema`]) has already checked types and shapes; what is
//! left are the inputs the schema lets through but Flocker then crashed on (a 500), each of
//! which gets a precise 400 here: out-of-range numbers, lease ids that are not UUIDs,
//! incomplete port mappings, empty image names, creating a dataset as deleted.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;
use crate::model::{Container, Dataset, Link, Micros, Port, RestartPolicy, Volume};

/// The largest lease duration accepted, in seconds (about 317 years).
pub const MAX_LEASE_SECONDS: f64 = 1e10;

/// Decode a JSON body of our own (non-Flocker) endpoints: admin and agent protocol.
pub fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("The request body could not be decoded: {e}")))
}

fn bad(text: impl Into<String>) -> ApiError {
    ApiError::BadRequest(text.into())
}

fn object(body: &Value) -> Result<&Map<String, Value>, ApiError> {
    body.as_object()
        .ok_or_else(|| bad("The request body must be a JSON object."))
}

/// A node or dataset UUID the schema has accepted (a v4 UUID in either case).
pub fn uuid_field(body: &Map<String, Value>, key: &str) -> Result<Uuid, ApiError> {
    body.get(key)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| bad(format!("\"{key}\" must be a UUID.")))
}

/// A non-negative integer that must fit in 63 bits (JSON clients in other languages lose
/// precision beyond that; Flocker had no bound at all).
fn size_field(value: &Value, key: &str) -> Result<u64, ApiError> {
    value
        .as_u64()
        .filter(|n| *n <= i64::MAX as u64)
        .ok_or_else(|| bad(format!("\"{key}\" must be at most {}.", i64::MAX)))
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /v1/configuration/datasets`: the dataset to create. `generated` is the id used
/// when the request names none.
pub fn dataset_create(body: &Value, generated: Uuid) -> Result<Dataset, ApiError> {
    let body = object(body)?;
    if body.get("deleted").and_then(Value::as_bool) == Some(true) {
        return Err(bad("A dataset cannot be created already deleted."));
    }
    let dataset_id = match body.get("dataset_id") {
        Some(_) => uuid_field(body, "dataset_id")?,
        None => generated,
    };
    let maximum_size = match body.get("maximum_size") {
        None | Some(Value::Null) => None,
        Some(size) => Some(size_field(size, "maximum_size")?),
    };
    Ok(Dataset {
        dataset_id: dataset_id.to_string(),
        primary: uuid_field(body, "primary")?,
        deleted: false,
        maximum_size,
        metadata: string_map(body.get("metadata")),
    })
}

/// `POST /v1/configuration/datasets/<id>`: the new primary, if any.
pub fn dataset_update(body: &Value) -> Result<Option<Uuid>, ApiError> {
    let body = object(body)?;
    match body.get("primary") {
        None => Ok(None),
        Some(_) => uuid_field(body, "primary").map(Some),
    }
}

/// `POST /v1/configuration/containers/<name>`.
pub fn container_move(body: &Value) -> Result<Uuid, ApiError> {
    uuid_field(object(body)?, "node_uuid")
}

/// `repository[:tag]`, split at the last colon, the tag defaulting to `latest`.
fn image(value: &str) -> Result<String, ApiError> {
    let (repository, tag) = match value.rsplit_once(':') {
        Some((repository, tag)) => (repository, tag),
        None => (value, "latest"),
    };
    if repository.is_empty() || tag.is_empty() {
        return Err(bad(
            "\"image\" must name a Docker image, such as \"nginx\" or \"nginx:1.25\".",
        ));
    }
    Ok(format!("{repository}:{tag}"))
}

fn port_number(value: Option<&Value>) -> Option<u16> {
    value
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
}

fn ports(value: Option<&Value>) -> Result<Vec<Port>, ApiError> {
    let mut ports = Vec::new();
    for item in value.and_then(Value::as_array).into_iter().flatten() {
        let internal = port_number(item.get("internal"));
        let external = port_number(item.get("external"));
        let (Some(internal), Some(external)) = (internal, external) else {
            return Err(bad(
                "Each port needs \"internal\" and \"external\", both from 1 to 65535.",
            ));
        };
        ports.push(Port { internal, external });
    }
    ports.sort_by_key(|p| (p.external, p.internal));
    Ok(ports)
}

/// Links in request order (apply checks their uniqueness in that order, then sorts them).
fn links(value: Option<&Value>) -> Vec<Link> {
    // The schema guarantees each item's shape and the port ranges.
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| {
            Some(Link {
                alias: item.get("alias")?.as_str()?.to_lowercase(),
                local_port: port_number(item.get("local_port"))?,
                remote_port: port_number(item.get("remote_port"))?,
            })
        })
        .collect()
}

fn restart_policy(value: Option<&Value>) -> Result<RestartPolicy, ApiError> {
    let Some(policy) = value else {
        return Ok(RestartPolicy::Never);
    };
    Ok(match policy.get("name").and_then(Value::as_str) {
        Some("always") => RestartPolicy::Always,
        // The schema bounds the count below only; a count too large to store must not
        // silently become "no maximum".
        Some("on-failure") => RestartPolicy::OnFailure {
            maximum_retry_count: match policy.get("maximum_retry_count") {
                Some(count) => Some(size_field(count, "maximum_retry_count")?),
                None => None,
            },
        },
        _ => RestartPolicy::Never,
    })
}

/// A normalised absolute path: `.`, `..`, empty segments and a trailing `/` resolved.
pub fn normalise_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `POST /v1/configuration/containers`. Link uniqueness is left to apply (it comes after
/// the name, volume and port checks).
pub fn container_create(body: &Value) -> Result<Container, ApiError> {
    let body = object(body)?;
    let image_text = body
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let volume = body
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|v| v.first())
        .map(|v| Volume {
            dataset_id: v
                .get("dataset_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            mountpoint: normalise_path(v.get("mountpoint").and_then(Value::as_str).unwrap_or("/")),
        });
    let memory_limit = match body.get("memory_limit") {
        Some(v) => Some(size_field(v, "memory_limit")?),
        None => None,
    };
    let container = Container {
        name: body
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        node_uuid: uuid_field(body, "node_uuid")?,
        image: image(image_text)?,
        ports: ports(body.get("ports"))?,
        links: links(body.get("links")),
        environment: string_map(body.get("environment")),
        restart_policy: restart_policy(body.get("restart_policy"))?,
        command_line: body
            .get("command_line")
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            }),
        cpu_shares: body.get("cpu_shares").and_then(Value::as_u64),
        memory_limit,
        swappiness: body
            .get("swappiness")
            .and_then(Value::as_u64)
            .and_then(|n| u8::try_from(n).ok())
            .unwrap_or(0),
        volume,
    };
    Ok(container)
}

/// `POST /v1/configuration/leases`: (dataset, node, requested seconds rounded to whole
/// microseconds).
pub fn lease(body: &Value) -> Result<(Uuid, Uuid, Option<Micros>), ApiError> {
    let body = object(body)?;
    let dataset_id = body
        .get("dataset_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| bad("\"dataset_id\" must be a UUID."))?;
    let node_uuid = uuid_field(body, "node_uuid")?;
    let duration = match body.get("expires") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let seconds = value
                .as_f64()
                .filter(|s| s.is_finite() && s.abs() <= MAX_LEASE_SECONDS)
                .ok_or_else(|| {
                    bad(format!(
                        "\"expires\" must be null or a number of seconds from -{MAX_LEASE_SECONDS:.0} to {MAX_LEASE_SECONDS:.0}."
                    ))
                })?;
            Some((seconds * 1_000_000.0).round() as Micros)
        }
    };
    Ok((dataset_id, node_uuid, duration))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn images_default_to_latest_and_split_at_the_last_colon() {
        assert_eq!(image("nginx").unwrap(), "nginx:latest");
        assert_eq!(image("busybox:1.2").unwrap(), "busybox:1.2");
        assert_eq!(
            image("clusterhq/redis:latest").unwrap(),
            "clusterhq/redis:latest"
        );
        assert!(image("").is_err());
        assert!(image(":tag").is_err());
        assert!(image("nginx:").is_err());
    }

    #[test]
    fn paths_are_normalised() {
        assert_eq!(normalise_path("/xxx/yyy/"), "/xxx/yyy");
        assert_eq!(normalise_path("/a/./b/../c"), "/a/c");
        assert_eq!(normalise_path("/"), "/");
        assert_eq!(normalise_path("/.."), "/");
    }

    #[test]
    fn ports_need_both_numbers_in_range() {
        assert!(ports(Some(&json!([{"internal": 80}]))).is_err());
        assert!(ports(Some(&json!([{"internal": 80, "external": 0}]))).is_err());
        assert!(ports(Some(&json!([{"internal": 80, "external": 70000}]))).is_err());
        let sorted = ports(Some(&json!([
            {"internal": 1, "external": 9},
            {"internal": 2, "external": 8}
        ])))
        .unwrap();
        assert_eq!(sorted[0].external, 8);
    }

    #[test]
    fn retry_counts_too_large_to_store_are_refused() {
        let policy = json!({"name": "on-failure", "maximum_retry_count": 5});
        assert_eq!(
            restart_policy(Some(&policy)).unwrap(),
            RestartPolicy::OnFailure {
                maximum_retry_count: Some(5)
            }
        );
        let huge: Value = serde_json::from_str(
            r#"{"name": "on-failure", "maximum_retry_count": 1000000000000000000000000000000}"#,
        )
        .unwrap();
        assert!(restart_policy(Some(&huge)).is_err());
    }

    #[test]
    fn lease_input_is_bounded() {
        let node = Uuid::new_v4().to_string();
        let ok =
            json!({"dataset_id": Uuid::new_v4().to_string(), "node_uuid": node, "expires": 1.5});
        assert_eq!(lease(&ok).unwrap().2, Some(1_500_000));
        let huge =
            json!({"dataset_id": Uuid::new_v4().to_string(), "node_uuid": node, "expires": 1e300});
        assert!(lease(&huge).is_err());
        let not_uuid = json!({"dataset_id": "x".repeat(36), "node_uuid": node, "expires": null});
        assert!(lease(&not_uuid).is_err());
    }
}
