//! The container planner: a pure function from the configuration, this node's mounted
//! datasets and what the Docker engine shows to the actions that bring them together
//! (FLOCKER-SPEC 11). No clock, no I/O, no engine: the same inputs always give the same
//! [`Plan`], which is what the property tests below drive against a simulated engine.
//!
//! # Ownership
//!
//! A container belongs to this agent when it is named `flocker--<name>` **and** carries
//! the label `flocker.node=<this node's UUID>`. Containers named `flocker--*` with
//! another node's label (or none) are *foreign*: never stopped, removed or started here.
//! A foreign container holding the name a configured container needs makes the planner
//! wait (that is how a move between two agents sharing one engine hands the name over).
//!
//! # Rules
//!
//! Nothing happens while this node's dataset state is unknown (the dataset agent has not
//! reported): the planner could not tell which datasets are mounted here. Otherwise:
//!
//! 1. own containers that are not configured on this node are removed;
//! 2. a configured container that is absent is created and started, once its dataset (if
//!    any) is manifest here;
//! 3. an own container whose discovered form ([`discover`]) differs from the configured
//!    one ([`normalise`]), or whose bind mount is not the dataset's current mount path,
//!    is recreated (same precondition on the dataset);
//! 4. a stopped container is started again when its restart policy says so
//!    ([`should_start`]); a container that was created but never started is always
//!    started.
//!
//! Differences the engine cannot show are not differences: `swappiness` is never applied
//! nor compared (FLOCKER-SPEC 14.1 item 11), environment entries identical to the
//! image's own and a command line equal to the image's default are dropped on both sides,
//! zero CPU shares and memory limits mean "unset", and an `on-failure` policy without a
//! maximum (or with 0) is the same policy.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::model::{Configuration, Container, ContainerState, Link, ManifestationState, Port};
use crate::model::{RestartPolicy, Volume};

/// Docker names of Flocker containers: `flocker--<name>`.
pub const NAME_PREFIX: &str = "flocker--";
/// The label naming the node (agent) a container belongs to.
pub const NODE_LABEL: &str = "flocker.node";
/// The label naming the dataset bind-mounted into a container.
pub const DATASET_LABEL: &str = "flocker.dataset";

/// A `flocker--*` container as the engine shows it (already decoded from Docker's JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineContainer {
    pub id: String,
    /// Without Docker's leading `/`.
    pub docker_name: String,
    pub labels: BTreeMap<String, String>,
    /// The image as named at creation (`Config.Image`).
    pub image: String,
    /// `KEY=VALUE`, the image's variables included.
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    /// `host:container[:options]`.
    pub binds: Vec<String>,
    pub ports: Vec<Port>,
    pub cpu_shares: Option<u64>,
    pub memory: Option<u64>,
    pub restart_policy: RestartPolicy,
    pub running: bool,
    /// The engine is about to restart it (its own restart policy).
    pub restarting: bool,
    /// Started at least once (Docker status other than `created`).
    pub started: bool,
    pub exit_code: i64,
    /// Restarts made by the engine since the last explicit start.
    pub restart_count: u64,
    /// The image's own environment and default command.
    pub image_env: Vec<String>,
    pub image_cmd: Option<Vec<String>>,
}

/// Everything needed to create a container, engine-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    pub docker_name: String,
    pub image: String,
    /// `KEY=VALUE`, sorted: the configured variables and the link variables.
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub ports: Vec<Port>,
    /// Host address the ports are published on.
    pub publish_address: String,
    /// `host_path:mountpoint:Z`.
    pub bind: Option<String>,
    pub cpu_shares: Option<u64>,
    pub memory: Option<u64>,
    pub restart_policy: RestartPolicy,
    pub labels: BTreeMap<String, String>,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub node: Uuid,
    pub configuration: &'a Configuration,
    /// This node's mounted datasets; `None` while the dataset agent's state is unknown.
    pub manifestations: Option<&'a [ManifestationState]>,
    /// The address link variables point at (this node's address).
    pub link_host: &'a str,
    pub publish_address: &'a str,
    /// Every `flocker--*` container of the engine, whoever owns it.
    pub engine: &'a [EngineContainer],
    /// Restarts this agent made, by container id (for `on-failure` maximums).
    pub agent_restarts: &'a BTreeMap<String, u64>,
}

/// One step against the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop and remove an own container that is not configured here.
    Remove { name: String, id: String },
    /// Pull the image if absent, create and start.
    Create { name: String, spec: ContainerSpec },
    /// Remove, then create and start.
    Recreate {
        name: String,
        id: String,
        spec: ContainerSpec,
    },
    /// Start a stopped container again (its restart policy says so).
    Start {
        name: String,
        id: String,
        /// The engine's own restarts so far, added to the agent's count.
        engine_restarts: u64,
    },
}

impl Action {
    pub fn name(&self) -> &str {
        match self {
            Action::Remove { name, .. }
            | Action::Create { name, .. }
            | Action::Recreate { name, .. }
            | Action::Start { name, .. } => name,
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            Action::Remove { .. } => "remove",
            Action::Create { .. } => "create",
            Action::Recreate { .. } => "recreate",
            Action::Start { .. } => "start",
        }
    }
}

/// Why a configured container is not acted on yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// The dataset agent has not reported this node's datasets.
    DatasetStateUnknown,
    /// Its dataset is not mounted here (yet).
    DatasetNotManifest { name: String, dataset_id: String },
    /// Another node's container holds the Docker name (shared engine).
    NameHeldElsewhere { name: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub waiting: Vec<Waiting>,
}

/// What this node reports: its own containers as discovered, sorted by name.
pub fn observed_state(
    node: Uuid,
    engine: &[EngineContainer],
    manifestations: Option<&[ManifestationState]>,
) -> Vec<ContainerState> {
    let mut state: Vec<ContainerState> = engine
        .iter()
        .filter(|c| owned_by(c, node))
        .map(|c| ContainerState {
            container: discover(c, node, manifestations),
            running: c.running,
        })
        .collect();
    state.sort_by(|a, b| a.container.name.cmp(&b.container.name));
    state
}

fn owned_by(c: &EngineContainer, node: Uuid) -> bool {
    c.docker_name.starts_with(NAME_PREFIX)
        && c.labels.get(NODE_LABEL).map(String::as_str) == Some(node.to_string().as_str())
}

pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut plan = Plan::default();
    let Some(manifestations) = input.manifestations else {
        plan.waiting.push(Waiting::DatasetStateUnknown);
        return plan;
    };
    let mut own: BTreeMap<&str, &EngineContainer> = BTreeMap::new();
    let mut foreign: BTreeSet<&str> = BTreeSet::new();
    for c in input.engine {
        let Some(name) = c.docker_name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        if owned_by(c, input.node) {
            own.insert(name, c);
        } else {
            foreign.insert(name);
        }
    }
    let desired: BTreeMap<&str, &Container> = input
        .configuration
        .containers
        .values()
        .filter(|c| c.node_uuid == input.node)
        .map(|c| (c.name.as_str(), c))
        .collect();
    for (name, c) in &own {
        if !desired.contains_key(name) {
            plan.actions.push(Action::Remove {
                name: (*name).to_owned(),
                id: c.id.clone(),
            });
        }
    }
    for (name, wanted) in &desired {
        plan_one(
            input,
            manifestations,
            wanted,
            own.get(name).copied(),
            foreign.contains(name),
            &mut plan,
        );
    }
    plan
}

fn plan_one(
    input: &PlanInput<'_>,
    manifestations: &[ManifestationState],
    wanted: &Container,
    existing: Option<&EngineContainer>,
    held_elsewhere: bool,
    plan: &mut Plan,
) {
    let name = wanted.name.clone();
    let mount = match &wanted.volume {
        None => None,
        Some(volume) => match mount_path(manifestations, &volume.dataset_id) {
            Some(path) => Some(path),
            None => {
                plan.waiting.push(Waiting::DatasetNotManifest {
                    name,
                    dataset_id: volume.dataset_id.clone(),
                });
                return;
            }
        },
    };
    let spec = || {
        spec_for(
            wanted,
            mount,
            input.link_host,
            input.publish_address,
            input.node,
        )
    };
    let Some(existing) = existing else {
        if held_elsewhere {
            plan.waiting.push(Waiting::NameHeldElsewhere { name });
        } else {
            plan.actions.push(Action::Create { name, spec: spec() });
        }
        return;
    };
    let discovered = discover(existing, input.node, Some(manifestations));
    let normalised = normalise(wanted, &existing.image_env, existing.image_cmd.as_deref());
    let bind_ok = match (&wanted.volume, mount) {
        (Some(volume), Some(path)) => existing.binds.first().is_some_and(|b| {
            bind_parts(b).is_some_and(|(host, dest)| host == path && dest == volume.mountpoint)
        }),
        _ => existing.binds.is_empty(),
    };
    if discovered != normalised || !bind_ok {
        plan.actions.push(Action::Recreate {
            name,
            id: existing.id.clone(),
            spec: spec(),
        });
    } else if should_start(
        existing,
        input.agent_restarts.get(&existing.id).copied().unwrap_or(0),
    ) {
        plan.actions.push(Action::Start {
            name,
            id: existing.id.clone(),
            engine_restarts: existing.restart_count,
        });
    }
}

fn mount_path<'m>(manifestations: &'m [ManifestationState], dataset: &str) -> Option<&'m str> {
    manifestations
        .iter()
        .find(|m| m.dataset_id == dataset)
        .map(|m| m.path.as_str())
}

/// Whether a stopped container must be started again: never started yet, or its
/// restart policy asks for it. `agent_restarts` are the starts this agent already made
/// after failures (they count against an `on-failure` maximum with the engine's own).
pub fn should_start(c: &EngineContainer, agent_restarts: u64) -> bool {
    if c.running || c.restarting {
        return false;
    }
    if !c.started {
        return true;
    }
    match c.restart_policy {
        RestartPolicy::Never => false,
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure {
            maximum_retry_count,
        } => {
            c.exit_code != 0
                && match maximum_retry_count.filter(|m| *m > 0) {
                    None => true,
                    Some(max) => agent_restarts.saturating_add(c.restart_count) < max,
                }
        }
    }
}

/// The Docker environment variables of a link, as Docker links used to inject them.
pub fn link_environment(link: &Link, host: &str) -> [(String, String); 4] {
    let base = format!("{}_PORT_{}_TCP", link.alias.to_uppercase(), link.local_port);
    [
        (base.clone(), format!("tcp://{host}:{}", link.remote_port)),
        (format!("{base}_ADDR"), host.to_owned()),
        (format!("{base}_PORT"), link.remote_port.to_string()),
        (format!("{base}_PROTO"), "tcp".to_owned()),
    ]
}

/// What to create for `c`, its dataset mounted at `mount` on this node.
pub fn spec_for(
    c: &Container,
    mount: Option<&str>,
    link_host: &str,
    publish_address: &str,
    node: Uuid,
) -> ContainerSpec {
    let mut env: BTreeMap<String, String> = c.environment.clone();
    for link in &c.links {
        env.extend(link_environment(link, link_host));
    }
    let mut labels = BTreeMap::from([(NODE_LABEL.to_owned(), node.to_string())]);
    let bind = match (&c.volume, mount) {
        (Some(volume), Some(path)) => {
            labels.insert(DATASET_LABEL.to_owned(), volume.dataset_id.clone());
            Some(format!("{path}:{}:Z", volume.mountpoint))
        }
        _ => None,
    };
    let mut ports = c.ports.clone();
    ports.sort_by_key(|p| (p.external, p.internal));
    ContainerSpec {
        docker_name: format!("{NAME_PREFIX}{}", c.name),
        image: c.image.clone(),
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        cmd: c.command_line.clone(),
        ports,
        publish_address: publish_address.to_owned(),
        bind,
        cpu_shares: c.cpu_shares.filter(|n| *n > 0),
        memory: c.memory_limit.filter(|n| *n > 0),
        restart_policy: c.restart_policy.clone(),
        labels,
    }
}

fn split_env(entry: &str) -> (String, String) {
    match entry.split_once('=') {
        Some((k, v)) => (k.to_owned(), v.to_owned()),
        None => (entry.to_owned(), String::new()),
    }
}

fn image_defaults(image_env: &[String]) -> BTreeSet<(String, String)> {
    image_env.iter().map(|e| split_env(e)).collect()
}

fn normal_policy(policy: &RestartPolicy) -> RestartPolicy {
    match policy {
        RestartPolicy::OnFailure {
            maximum_retry_count,
        } => RestartPolicy::OnFailure {
            maximum_retry_count: maximum_retry_count.filter(|m| *m > 0),
        },
        other => other.clone(),
    }
}

/// The configured container as [`discover`] would find it once created.
pub fn normalise(c: &Container, image_env: &[String], image_cmd: Option<&[String]>) -> Container {
    let defaults = image_defaults(image_env);
    let mut links = c.links.clone();
    links.sort();
    links.dedup();
    let mut ports = c.ports.clone();
    ports.sort_by_key(|p| (p.external, p.internal));
    Container {
        environment: c
            .environment
            .iter()
            .filter(|(k, v)| !defaults.contains(&((*k).clone(), (*v).clone())))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        command_line: c
            .command_line
            .clone()
            .filter(|cmd| Some(cmd.as_slice()) != image_cmd),
        cpu_shares: c.cpu_shares.filter(|n| *n > 0),
        memory_limit: c.memory_limit.filter(|n| *n > 0),
        restart_policy: normal_policy(&c.restart_policy),
        swappiness: 0,
        links,
        ports,
        ..c.clone()
    }
}

/// `host:container[:options]` -> (host, container).
fn bind_parts(bind: &str) -> Option<(&str, &str)> {
    let mut parts = bind.split(':');
    Some((parts.next()?, parts.next()?))
}

/// The container as the engine shows it, in the configuration's terms (FLOCKER-SPEC 11,
/// "discovery"): links from the `<ALIAS>_PORT_<n>_TCP_PORT` variables, environment without
/// the image's own variables and the link variables, the volume from the first bind
/// mount (its dataset from the container's label, else from the mount path).
pub fn discover(
    c: &EngineContainer,
    node: Uuid,
    manifestations: Option<&[ManifestationState]>,
) -> Container {
    let defaults = image_defaults(&c.image_env);
    let mut environment: BTreeMap<String, String> = c
        .env
        .iter()
        .map(|e| split_env(e))
        .filter(|kv| !defaults.contains(kv))
        .collect();
    let mut links = Vec::new();
    for (key, value) in &environment {
        let Some(base) = key.strip_suffix("_TCP_PORT") else {
            continue;
        };
        let Some((alias, local)) = base.rsplit_once("_PORT_") else {
            continue;
        };
        if let (Ok(local_port), Ok(remote_port)) = (local.parse::<u16>(), value.parse::<u16>()) {
            if !alias.is_empty() {
                links.push(Link {
                    alias: alias.to_lowercase(),
                    local_port,
                    remote_port,
                });
            }
        }
    }
    for link in &links {
        for (key, _) in link_environment(link, "") {
            environment.remove(&key);
        }
    }
    links.sort();
    let volume = c
        .binds
        .first()
        .and_then(|b| bind_parts(b))
        .and_then(|(host, dest)| {
            let dataset = c.labels.get(DATASET_LABEL).cloned().or_else(|| {
                manifestations?
                    .iter()
                    .find(|m| m.path == host)
                    .map(|m| m.dataset_id.clone())
            })?;
            Some(Volume {
                dataset_id: dataset,
                mountpoint: dest.to_owned(),
            })
        });
    let mut ports = c.ports.clone();
    ports.sort_by_key(|p| (p.external, p.internal));
    Container {
        name: c
            .docker_name
            .strip_prefix(NAME_PREFIX)
            .unwrap_or(&c.docker_name)
            .to_owned(),
        node_uuid: node,
        image: c.image.clone(),
        ports,
        links,
        environment,
        restart_policy: normal_policy(&c.restart_policy),
        command_line: c
            .cmd
            .clone()
            .filter(|cmd| Some(cmd) != c.image_cmd.as_ref()),
        cpu_shares: c.cpu_shares.filter(|n| *n > 0),
        memory_limit: c.memory.filter(|n| *n > 0),
        swappiness: 0,
        volume,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    const DATASETS: [&str; 3] = [
        "11111111-1111-4111-8111-111111111111",
        "22222222-2222-4222-8222-222222222222",
        "33333333-3333-4333-8333-333333333333",
    ];
    const HOST: &str = "10.0.0.1";

    fn node() -> Uuid {
        Uuid::from_u128(1)
    }

    fn other() -> Uuid {
        Uuid::from_u128(2)
    }

    /// A Docker engine as far as the planner can tell.
    #[derive(Debug, Clone)]
    struct Sim {
        containers: Vec<EngineContainer>,
        image_env: Vec<String>,
        image_cmd: Option<Vec<String>>,
        next_id: u64,
    }

    impl Sim {
        fn create(&mut self, spec: &ContainerSpec) -> Result<(), String> {
            if self
                .containers
                .iter()
                .any(|c| c.docker_name == spec.docker_name)
            {
                return Err(format!("name {} in use", spec.docker_name));
            }
            // The engine merges the image's variables under the container's.
            let mut env: BTreeMap<String, String> =
                self.image_env.iter().map(|e| split_env(e)).collect();
            env.extend(spec.env.iter().map(|e| split_env(e)));
            self.next_id += 1;
            self.containers.push(EngineContainer {
                id: format!("id{}", self.next_id),
                docker_name: spec.docker_name.clone(),
                labels: spec.labels.clone(),
                image: spec.image.clone(),
                env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
                cmd: spec.cmd.clone().or_else(|| self.image_cmd.clone()),
                binds: spec.bind.iter().cloned().collect(),
                ports: spec.ports.clone(),
                cpu_shares: spec.cpu_shares,
                memory: spec.memory,
                restart_policy: spec.restart_policy.clone(),
                running: true,
                restarting: false,
                started: true,
                exit_code: 0,
                restart_count: 0,
                image_env: self.image_env.clone(),
                image_cmd: self.image_cmd.clone(),
            });
            Ok(())
        }

        fn apply(&mut self, action: &Action) -> Result<(), String> {
            match action {
                Action::Remove { id, .. } => self.containers.retain(|c| &c.id != id),
                Action::Create { spec, .. } => self.create(spec)?,
                Action::Recreate { id, spec, .. } => {
                    self.containers.retain(|c| &c.id != id);
                    self.create(spec)?;
                }
                Action::Start { id, .. } => {
                    let c = self
                        .containers
                        .iter_mut()
                        .find(|c| &c.id == id)
                        .ok_or("no such container")?;
                    c.running = true;
                    c.started = true;
                }
            }
            Ok(())
        }
    }

    #[derive(Debug, Clone)]
    struct World {
        configuration: Configuration,
        manifestations: Vec<ManifestationState>,
        sim: Sim,
    }

    fn policy() -> impl Strategy<Value = RestartPolicy> {
        prop_oneof![
            Just(RestartPolicy::Never),
            Just(RestartPolicy::Always),
            proptest::option::of(0u64..4).prop_map(|m| RestartPolicy::OnFailure {
                maximum_retry_count: m
            }),
        ]
    }

    fn container(name: &'static str) -> impl Strategy<Value = (Container, bool)> {
        (
            prop::bool::ANY,
            prop::sample::select(vec!["img:1", "img:2"]),
            proptest::collection::btree_map(
                prop::sample::select(vec!["A", "B", "PATH"]),
                prop::sample::select(vec!["1", "2", "/bin"]),
                0..3,
            ),
            // The API keeps aliases unique within a container.
            proptest::collection::btree_map(
                prop::sample::select(vec!["db", "cache"]),
                (1u16..4, 1u16..4),
                0..3,
            ),
            proptest::collection::vec((1u16..4, 1u16..100), 0..3),
            proptest::option::of(prop::sample::select(vec![vec!["run"], vec!["serve", "-x"]])),
            proptest::option::of(0u64..3),
            proptest::option::of(0u64..3),
            policy(),
            proptest::option::of((
                0usize..DATASETS.len(),
                prop::sample::select(vec!["/data", "/var/x"]),
            )),
        )
            .prop_map(
                move |(here, image, env, links, ports, cmd, cpu, mem, restart, volume)| {
                    let c = Container {
                        name: name.to_owned(),
                        node_uuid: if here { node() } else { other() },
                        image: image.to_owned(),
                        ports: ports
                            .into_iter()
                            .map(|(internal, external)| Port { internal, external })
                            .collect(),
                        links: links
                            .into_iter()
                            .map(|(alias, (local_port, remote_port))| Link {
                                alias: alias.to_owned(),
                                local_port,
                                remote_port,
                            })
                            .collect(),
                        environment: env
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect(),
                        restart_policy: restart,
                        command_line: cmd.map(|v| v.into_iter().map(str::to_owned).collect()),
                        cpu_shares: cpu.map(|n| n * 512),
                        memory_limit: mem.map(|n| n << 26),
                        swappiness: 3,
                        volume: volume.map(|(d, m)| Volume {
                            dataset_id: DATASETS[d].to_owned(),
                            mountpoint: m.to_owned(),
                        }),
                    };
                    (c, here)
                },
            )
    }

    fn world() -> impl Strategy<Value = World> {
        (
            NAMES.map(|n| proptest::option::of(container(n))),
            proptest::collection::vec(prop::bool::ANY, DATASETS.len()),
            proptest::collection::vec(
                prop::sample::select(vec!["PATH=/bin", "A=1", "HOME=/"]),
                0..3,
            ),
            proptest::option::of(Just(vec!["run".to_owned()])),
            // Leftovers in the engine: (name, owned here, garbage image).
            proptest::collection::vec(
                (0usize..NAMES.len(), prop::bool::ANY, prop::bool::ANY),
                0..4,
            ),
        )
            .prop_map(|(containers, mounted, image_env, image_cmd, leftovers)| {
                let mut configuration = Configuration::default();
                for (c, _) in containers.into_iter().flatten() {
                    configuration.containers.insert(c.name.clone(), c);
                }
                let manifestations = DATASETS
                    .iter()
                    .zip(mounted)
                    .filter(|(_, m)| *m)
                    .map(|(d, _)| ManifestationState {
                        dataset_id: (*d).to_owned(),
                        path: format!("/flocker/{d}"),
                        maximum_size: None,
                    })
                    .collect();
                let mut sim = Sim {
                    containers: Vec::new(),
                    image_env: image_env.into_iter().map(str::to_owned).collect(),
                    image_cmd,
                    next_id: 0,
                };
                for (i, here, garbage) in leftovers {
                    let owner = if here { node() } else { other() };
                    let spec = ContainerSpec {
                        docker_name: format!("{NAME_PREFIX}{}", NAMES[i]),
                        image: if garbage { "old:1" } else { "img:1" }.to_owned(),
                        env: vec!["OLD=1".to_owned()],
                        cmd: None,
                        ports: Vec::new(),
                        publish_address: "127.0.0.1".to_owned(),
                        bind: None,
                        cpu_shares: None,
                        memory: None,
                        restart_policy: RestartPolicy::Never,
                        labels: BTreeMap::from([(NODE_LABEL.to_owned(), owner.to_string())]),
                    };
                    let _ = sim.create(&spec);
                }
                World {
                    configuration,
                    manifestations,
                    sim,
                }
            })
    }

    fn plan_for(world: &World, restarts: &BTreeMap<String, u64>) -> Plan {
        plan(&PlanInput {
            node: node(),
            configuration: &world.configuration,
            manifestations: Some(&world.manifestations),
            link_host: HOST,
            publish_address: "127.0.0.1",
            engine: &world.sim.containers,
            agent_restarts: restarts,
        })
    }

    fn foreign(world: &World) -> Vec<EngineContainer> {
        world
            .sim
            .containers
            .iter()
            .filter(|c| !owned_by(c, node()))
            .cloned()
            .collect()
    }

    fn manifest(world: &World, c: &Container) -> bool {
        c.volume.as_ref().is_none_or(|v| {
            world
                .manifestations
                .iter()
                .any(|m| m.dataset_id == v.dataset_id)
        })
    }

    /// Plan and apply until nothing is left to do; panics after 5 rounds.
    fn converge(world: &mut World) {
        let restarts = BTreeMap::new();
        for _ in 0..5 {
            let plan = plan_for(world, &restarts);
            if plan.actions.is_empty() {
                return;
            }
            for action in &plan.actions {
                if let Action::Create { name, .. } | Action::Recreate { name, .. } = action {
                    let wanted = &world.configuration.containers[name];
                    assert!(
                        manifest(world, wanted),
                        "{name} created without its dataset"
                    );
                }
                world.sim.apply(action).unwrap();
            }
        }
        panic!(
            "no fixed point after 5 rounds: {:?}",
            plan_for(world, &restarts)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// From any engine, the plan reaches a fixed point in which exactly the
        /// containers configured here whose dataset is mounted here (and whose name no
        /// other node holds) run, each discovered back exactly as configured; other
        /// nodes' containers are never touched; nothing is created without its dataset.
        #[test]
        fn converges_to_the_configuration(mut world in world()) {
            let before = foreign(&world);
            converge(&mut world);
            prop_assert_eq!(foreign(&world), before.clone());
            let held: BTreeSet<String> = before.iter().map(|c| c.docker_name.clone()).collect();
            let state = observed_state(node(), &world.sim.containers, Some(&world.manifestations));
            let expected: Vec<Container> = world
                .configuration
                .containers
                .values()
                .filter(|c| c.node_uuid == node() && manifest(&world, c))
                .filter(|c| !held.contains(&format!("{NAME_PREFIX}{}", c.name)))
                .map(|c| normalise(c, &world.sim.image_env, world.sim.image_cmd.as_deref()))
                .collect();
            let found: Vec<Container> = state.iter().filter(|s| {
                // Leftovers waiting for their dataset stay until it is mounted.
                world.configuration.containers.get(&s.container.name).is_none_or(|c| manifest(&world, c))
            }).map(|s| s.container.clone()).collect();
            prop_assert_eq!(found, expected);
            prop_assert!(state.iter().all(|s| s.running));
        }

        /// Without the dataset agent's state nothing is done.
        #[test]
        fn unknown_datasets_mean_no_action(world in world()) {
            let p = plan(&PlanInput {
                node: node(),
                configuration: &world.configuration,
                manifestations: None,
                link_host: HOST,
                publish_address: "127.0.0.1",
                engine: &world.sim.containers,
                agent_restarts: &BTreeMap::new(),
            });
            prop_assert!(p.actions.is_empty());
            prop_assert_eq!(p.waiting, vec![Waiting::DatasetStateUnknown]);
        }

        /// Once converged, stopped containers are started again exactly when their
        /// restart policy says so, and never recreated for being stopped.
        #[test]
        fn stopped_containers_follow_their_policy(mut world in world(), exit in prop::sample::select(vec![0i64, 1, 137])) {
            converge(&mut world);
            for c in &mut world.sim.containers {
                if owned_by(c, node()) {
                    c.running = false;
                    c.exit_code = exit;
                }
            }
            let p = plan_for(&world, &BTreeMap::new());
            for c in world.sim.containers.iter().filter(|c| owned_by(c, node())) {
                let name = c.docker_name.strip_prefix(NAME_PREFIX).unwrap();
                let started = p.actions.iter().any(|a| matches!(a, Action::Start { id, .. } if id == &c.id));
                let wanted = world.configuration.containers.get(name).is_some_and(|w| w.node_uuid == node());
                let expected = wanted && match c.restart_policy {
                    RestartPolicy::Never => false,
                    RestartPolicy::Always => true,
                    // No retries made yet, so below any maximum.
                    RestartPolicy::OnFailure { .. } => exit != 0,
                };
                prop_assert_eq!(started, expected, "{:?}", c);
            }
            let only_starts = p.actions.iter().all(|a| matches!(a, Action::Start { .. }));
            prop_assert!(only_starts);
        }
    }

    #[test]
    fn on_failure_counts_engine_and_agent_restarts() {
        let mut world = Sim {
            containers: Vec::new(),
            image_env: Vec::new(),
            image_cmd: None,
            next_id: 0,
        };
        let c = Container {
            name: "x".into(),
            node_uuid: node(),
            image: "img:1".into(),
            ports: Vec::new(),
            links: Vec::new(),
            environment: BTreeMap::new(),
            restart_policy: RestartPolicy::OnFailure {
                maximum_retry_count: Some(3),
            },
            command_line: None,
            cpu_shares: None,
            memory_limit: None,
            swappiness: 0,
            volume: None,
        };
        world
            .create(&spec_for(&c, None, HOST, "127.0.0.1", node()))
            .unwrap();
        let e = &mut world.containers[0];
        e.running = false;
        e.exit_code = 1;
        e.restart_count = 2;
        assert!(should_start(e, 0));
        assert!(!should_start(e, 1));
        e.exit_code = 0;
        assert!(!should_start(e, 0), "a clean exit is not a failure");
        e.started = false;
        assert!(should_start(e, 9), "never started: always start");
    }

    #[test]
    fn links_become_docker_link_variables_and_back() {
        let link = Link {
            alias: "db".into(),
            local_port: 5432,
            remote_port: 15432,
        };
        let env: Vec<String> = link_environment(&link, "10.1.2.3")
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            env,
            [
                "DB_PORT_5432_TCP=tcp://10.1.2.3:15432",
                "DB_PORT_5432_TCP_ADDR=10.1.2.3",
                "DB_PORT_5432_TCP_PORT=15432",
                "DB_PORT_5432_TCP_PROTO=tcp"
            ]
        );
    }
}
