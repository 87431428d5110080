//! The Docker engine, through its API on a unix socket (the `bollard` crate).
//!
//! The client is made lazily and forgotten after any transport error, so the agent
//! survives the engine restarting (or starting after the agent): the next call connects
//! again and negotiates the API version again. Docker's answers (4xx, 5xx) are errors
//! of the action, not of the connection.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    PortBinding, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use tokio::sync::Mutex;

use super::planner::{ContainerSpec, EngineContainer, NAME_PREFIX};
use crate::model::{Port, RestartPolicy};

/// Where the engine listens by default.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds a container gets to stop before it is killed.
const STOP_TIMEOUT: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the Docker engine at {host} is unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("the Docker engine refused: {0}")]
    Refused(String),
}

/// A Docker engine on a unix socket.
pub struct DockerEngine {
    host: String,
    client: Mutex<Option<Docker>>,
}

fn socket_path(host: &str) -> &str {
    host.strip_prefix("unix://").unwrap_or(host)
}

/// Whether a Docker engine answers `GET /_ping` on `host` (`unix:///path` or a path)
/// within two seconds. Blocking and runtime-free, for supervisors such as
/// `flocker-cluster`.
pub fn docker_available(host: &str) -> bool {
    let ping = || -> std::io::Result<bool> {
        let mut stream = std::os::unix::net::UnixStream::connect(socket_path(host))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("OK"))
    };
    ping().unwrap_or(false)
}

impl DockerEngine {
    pub fn new(host: &str) -> Self {
        DockerEngine {
            host: host.to_owned(),
            client: Mutex::new(None),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    async fn client(&self) -> Result<Docker, EngineError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = Docker::connect_with_unix(
            &format!("unix://{}", socket_path(&self.host)),
            60,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| self.unreachable(e))?
        .negotiate_version()
        .await
        .map_err(|e| self.unreachable(e))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    fn unreachable(&self, e: DockerError) -> EngineError {
        EngineError::Unreachable {
            host: self.host.clone(),
            detail: e.to_string(),
        }
    }

    /// Classify `e`; a transport error makes the next call reconnect.
    async fn error(&self, e: DockerError) -> EngineError {
        match e {
            DockerError::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Refused(format!("{status_code}: {message}")),
            other => {
                *self.client.lock().await = None;
                self.unreachable(other)
            }
        }
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        let client = self.client().await?;
        match client.ping().await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(e).await),
        }
    }

    /// Every container named `flocker--*`, whichever node it belongs to.
    pub async fn observe(&self) -> Result<Vec<EngineContainer>, EngineError> {
        let client = self.client().await?;
        let filters = HashMap::from([("name".to_owned(), vec![NAME_PREFIX.to_owned()])]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let listed = match client.list_containers(Some(options)).await {
            Ok(listed) => listed,
            Err(e) => return Err(self.error(e).await),
        };
        let mut images: BTreeMap<String, (Vec<String>, Option<Vec<String>>)> = BTreeMap::new();
        let mut out = Vec::new();
        for summary in listed {
            let Some(id) = summary.id else { continue };
            let inspected = match client.inspect_container(&id, None).await {
                Ok(inspected) => inspected,
                // Removed between the listing and now.
                Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => continue,
                Err(e) => return Err(self.error(e).await),
            };
            let Some(mut container) = decode(inspected) else {
                continue;
            };
            if !container.docker_name.starts_with(NAME_PREFIX) {
                continue;
            }
            let image_id = summary.image_id.unwrap_or_else(|| container.image.clone());
            if !images.contains_key(&image_id) {
                let defaults = match client.inspect_image(&image_id).await {
                    Ok(image) => image
                        .config
                        .map(|c| (c.env.unwrap_or_default(), c.cmd))
                        .unwrap_or_default(),
                    Err(DockerError::DockerResponseServerError { .. }) => Default::default(),
                    Err(e) => return Err(self.error(e).await),
                };
                images.insert(image_id.clone(), defaults);
            }
            let (env, cmd) = images[&image_id].clone();
            container.image_env = env;
            container.image_cmd = cmd;
            out.push(container);
        }
        Ok(out)
    }

    /// Pull the image unless present, create the container and start it.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<(), EngineError> {
        let client = self.client().await?;
        self.ensure_image(&client, &spec.image).await?;
        let options = CreateContainerOptions {
            name: Some(spec.docker_name.clone()),
            ..Default::default()
        };
        let created = match client.create_container(Some(options), body(spec)).await {
            Ok(created) => created,
            Err(e) => return Err(self.error(e).await),
        };
        self.start(&created.id).await
    }

    async fn ensure_image(&self, client: &Docker, image: &str) -> Result<(), EngineError> {
        match client.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(self.error(e).await),
        }
        let (repository, tag) = match image.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (image, "latest"),
        };
        tracing::info!(image, "pulling the image");
        let options = CreateImageOptions {
            from_image: Some(repository.to_owned()),
            tag: Some(tag.to_owned()),
            ..Default::default()
        };
        let mut progress = client.create_image(Some(options), None, None);
        while let Some(step) = progress.next().await {
            match step {
                Ok(info) => {
                    if let Some(detail) = info.error_detail {
                        return Err(EngineError::Refused(format!(
                            "pulling {image}: {}",
                            detail.message.unwrap_or_default()
                        )));
                    }
                }
                Err(e) => return Err(self.error(e).await),
            }
        }
        Ok(())
    }

    /// Start a container (already running is fine).
    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        let client = self.client().await?;
        match client.start_container(id, None).await {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.error(e).await),
        }
    }

    /// Stop (SIGTERM, then SIGKILL after 10 s) and remove a container; gone is fine.
    pub async fn remove(&self, id: &str) -> Result<(), EngineError> {
        let client = self.client().await?;
        let stop = StopContainerOptions {
            t: Some(STOP_TIMEOUT),
            ..Default::default()
        };
        match client.stop_container(id, Some(stop)).await {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => {}
            Err(e) => return Err(self.error(e).await),
        }
        let remove = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        match client.remove_container(id, Some(remove)).await {
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.error(e).await),
        }
    }
}

/// The creation request for `spec`.
fn body(spec: &ContainerSpec) -> ContainerCreateBody {
    let port_bindings = spec
        .ports
        .iter()
        .map(|p| {
            let binding = PortBinding {
                host_ip: Some(spec.publish_address.clone()),
                host_port: Some(p.external.to_string()),
            };
            (format!("{}/tcp", p.internal), Some(vec![binding]))
        })
        .collect::<HashMap<_, _>>();
    let (name, maximum_retry_count) = match spec.restart_policy {
        RestartPolicy::Never => (RestartPolicyNameEnum::NO, None),
        RestartPolicy::Always => (RestartPolicyNameEnum::ALWAYS, None),
        RestartPolicy::OnFailure {
            maximum_retry_count,
        } => (
            RestartPolicyNameEnum::ON_FAILURE,
            maximum_retry_count.map(|n| i64::try_from(n).unwrap_or(i64::MAX)),
        ),
    };
    let host_config = HostConfig {
        binds: spec.bind.clone().map(|b| vec![b]),
        port_bindings: Some(port_bindings),
        restart_policy: Some(bollard::models::RestartPolicy {
            name: Some(name),
            maximum_retry_count,
        }),
        memory: spec.memory.map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
        cpu_shares: spec
            .cpu_shares
            .map(|c| i64::try_from(c).unwrap_or(i64::MAX)),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.clone()),
        cmd: spec.cmd.clone(),
        exposed_ports: Some(
            spec.ports
                .iter()
                .map(|p| format!("{}/tcp", p.internal))
                .collect(),
        ),
        labels: Some(spec.labels.clone().into_iter().collect()),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// Docker's answer in the planner's terms; `None` without an id or a name.
fn decode(c: ContainerInspectResponse) -> Option<EngineContainer> {
    let id = c.id?;
    let docker_name = c.name?.trim_start_matches('/').to_owned();
    let config = c.config.unwrap_or_default();
    let host = c.host_config.unwrap_or_default();
    let state = c.state.unwrap_or_default();
    let mut ports: Vec<Port> = host
        .port_bindings
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, bindings)| {
            let internal = key.split('/').next()?.parse().ok()?;
            let external = bindings?.first()?.host_port.as_deref()?.parse().ok()?;
            Some(Port { internal, external })
        })
        .collect();
    ports.sort_by_key(|p| (p.external, p.internal));
    let policy = host.restart_policy.unwrap_or_default();
    let restart_policy = match policy.name {
        Some(RestartPolicyNameEnum::ALWAYS | RestartPolicyNameEnum::UNLESS_STOPPED) => {
            RestartPolicy::Always
        }
        Some(RestartPolicyNameEnum::ON_FAILURE) => RestartPolicy::OnFailure {
            maximum_retry_count: policy
                .maximum_retry_count
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0),
        },
        _ => RestartPolicy::Never,
    };
    let positive = |n: Option<i64>| n.and_then(|n| u64::try_from(n).ok()).filter(|n| *n > 0);
    Some(EngineContainer {
        id,
        docker_name,
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        image: config.image.unwrap_or_default(),
        env: config.env.unwrap_or_default(),
        cmd: config.cmd,
        binds: host.binds.unwrap_or_default(),
        ports,
        cpu_shares: positive(host.cpu_shares),
        memory: positive(host.memory),
        restart_policy,
        running: state.running.unwrap_or(false),
        restarting: state.restarting.unwrap_or(false),
        started: !matches!(state.status, Some(ContainerStateStatusEnum::CREATED)),
        exit_code: state.exit_code.unwrap_or(0),
        restart_count: positive(c.restart_count).unwrap_or(0),
        image_env: Vec::new(),
        image_cmd: None,
    })
}
