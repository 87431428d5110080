//! The state machine transition: `apply(state, log index, command) -> outcome`.
//!
//! Pure and deterministic: no clock, randomness, environment or I/O. Every check that
//! depends on the state (collisions, "in use", leases, the configuration tag precondition)
//! is made here, atomically with the change, so the Raft log order alone decides which of
//! two racing writes wins. A rejected command changes nothing. The configuration version
//! moves to the command's log index only when the configuration really changed, which is
//! what makes "writes of an identical configuration keep the tag" hold.

use uuid::Uuid;

use super::command::{AgentReport, Command, Outcome, Precondition, Rejection};
use super::types::{Configuration, Container, Dataset, Lease, Micros, NodeState, State};

/// Apply one committed command at log `index`.
pub fn apply(state: &mut State, index: u64, command: &Command) -> Outcome {
    let outcome = match command {
        Command::CreateDataset {
            precondition,
            dataset,
        } => check(precondition, &state.config).and_then(|()| create_dataset(state, dataset)),
        Command::MoveDataset {
            precondition,
            dataset_id,
            primary,
        } => check(precondition, &state.config)
            .and_then(|()| move_dataset(&mut state.config, dataset_id, *primary)),
        Command::DeleteDataset {
            precondition,
            dataset_id,
        } => check(precondition, &state.config)
            .and_then(|()| delete_dataset(&mut state.config, dataset_id)),
        Command::CreateContainer { container } => create_container(&mut state.config, container),
        Command::MoveContainer { name, node_uuid } => {
            move_container(&mut state.config, name, *node_uuid)
        }
        Command::DeleteContainer { name } => delete_container(&mut state.config, name),
        Command::AcquireLease {
            dataset_id,
            node_uuid,
            expiration,
        } => acquire_lease(&mut state.config, *dataset_id, *node_uuid, *expiration),
        Command::ReleaseLease { dataset_id } => release_lease(&mut state.config, *dataset_id),
        Command::ExpireLeases { now } => expire_leases(&mut state.config, *now),
        Command::SetBlockDeviceOwner {
            dataset_id,
            blockdevice_id,
        } => set_owner(&mut state.config, *dataset_id, blockdevice_id),
        Command::ReportState {
            node,
            host,
            era,
            report,
            now,
        } => {
            let changed = report_state(state, *node, host, *era, report, *now);
            if changed {
                state.cluster.version = index;
            }
            return Outcome::Done;
        }
        Command::ExpireState { now, timeout } => {
            if expire_state(state, now.saturating_sub(*timeout)) {
                state.cluster.version = index;
            }
            return Outcome::Done;
        }
    };
    match outcome {
        Ok(Applied { outcome, changed }) => {
            if changed {
                state.config.version = index;
            }
            outcome
        }
        Err(rejection) => Outcome::Rejected(rejection),
    }
}

/// A successful configuration command: its outcome, and whether it changed anything.
struct Applied {
    outcome: Outcome,
    changed: bool,
}

impl Applied {
    fn changed(outcome: Outcome) -> Self {
        Applied {
            outcome,
            changed: true,
        }
    }
    fn unchanged(outcome: Outcome) -> Self {
        Applied {
            outcome,
            changed: false,
        }
    }
}

type Step = Result<Applied, Rejection>;

fn check(precondition: &Precondition, config: &Configuration) -> Result<(), Rejection> {
    if precondition.holds(config.version) {
        Ok(())
    } else {
        Err(Rejection::TagMismatch {
            current: config.version,
        })
    }
}

fn create_dataset(state: &mut State, dataset: &Dataset) -> Step {
    let config = &mut state.config;
    // Ids are never reusable, not even those of deleted datasets.
    if config.datasets.contains_key(&dataset.dataset_id) {
        return Err(Rejection::DatasetIdInUse);
    }
    config
        .datasets
        .insert(dataset.dataset_id.clone(), dataset.clone());
    Ok(Applied::changed(Outcome::Dataset(dataset.clone())))
}

/// Look a dataset up for update or delete: it must exist and not be deleted.
fn live_dataset<'a>(
    config: &'a mut Configuration,
    dataset_id: &str,
) -> Result<&'a mut Dataset, Rejection> {
    let dataset = config
        .datasets
        .get_mut(dataset_id)
        .ok_or(Rejection::DatasetNotFound)?;
    if dataset.deleted {
        return Err(Rejection::DatasetDeleted);
    }
    Ok(dataset)
}

fn move_dataset(config: &mut Configuration, dataset_id: &str, primary: Option<Uuid>) -> Step {
    let in_use = config.volume_users.contains_key(dataset_id);
    let dataset = live_dataset(config, dataset_id)?;
    match primary {
        Some(node) if node != dataset.primary => {
            // Flocker crashed here (its node invariant broke); moving the container is the
            // way to move a mounted dataset.
            if in_use {
                return Err(Rejection::DatasetInUse);
            }
            dataset.primary = node;
            Ok(Applied::changed(Outcome::Dataset(dataset.clone())))
        }
        _ => Ok(Applied::unchanged(Outcome::Dataset(dataset.clone()))),
    }
}

fn delete_dataset(config: &mut Configuration, dataset_id: &str) -> Step {
    let in_use = config.volume_users.contains_key(dataset_id);
    let dataset = config
        .datasets
        .get_mut(dataset_id)
        .ok_or(Rejection::DatasetNotFound)?;
    if dataset.deleted {
        return Ok(Applied::unchanged(Outcome::Dataset(dataset.clone())));
    }
    if in_use {
        return Err(Rejection::DatasetInUse);
    }
    dataset.deleted = true;
    Ok(Applied::changed(Outcome::Dataset(dataset.clone())))
}

fn create_container(config: &mut Configuration, container: &Container) -> Step {
    if config.containers.contains_key(&container.name) {
        return Err(Rejection::ContainerNameExists);
    }
    if let Some(volume) = &container.volume {
        let dataset = config
            .datasets
            .get(&volume.dataset_id)
            .filter(|d| !d.deleted)
            .ok_or(Rejection::DatasetNotFound)?;
        if dataset.primary != container.node_uuid {
            return Err(Rejection::DatasetOnOtherNode);
        }
        if config.volume_users.contains_key(&volume.dataset_id) {
            return Err(Rejection::DatasetInUse);
        }
    }
    let mut requested_ports = std::collections::BTreeSet::new();
    for port in &container.ports {
        // Flocker missed duplicates inside one request; they collide just the same.
        if config.external_ports.contains_key(&port.external)
            || !requested_ports.insert(port.external)
        {
            return Err(Rejection::ExternalPortInUse);
        }
    }
    check_links(container)?;
    if let Some(volume) = &container.volume {
        config
            .volume_users
            .insert(volume.dataset_id.clone(), container.name.clone());
    }
    for port in &container.ports {
        config
            .external_ports
            .insert(port.external, container.name.clone());
    }
    let mut container = container.clone();
    container.links.sort();
    config
        .containers
        .insert(container.name.clone(), container.clone());
    Ok(Applied::changed(Outcome::Container(container)))
}

/// Links in request order: for each, the alias is checked before the local port. Aliases
/// are compared lower-cased, as they are stored (Flocker compared them as sent, so `DB`
/// and `db` became two identical links).
fn check_links(container: &Container) -> Result<(), Rejection> {
    let mut aliases = std::collections::BTreeSet::new();
    let mut local_ports = std::collections::BTreeSet::new();
    for link in &container.links {
        if !aliases.insert(link.alias.to_lowercase()) {
            return Err(Rejection::LinkAliasesNotUnique);
        }
        if !local_ports.insert(link.local_port) {
            return Err(Rejection::LinkLocalPortsNotUnique);
        }
    }
    Ok(())
}

fn move_container(config: &mut Configuration, name: &str, node: Uuid) -> Step {
    let container = config
        .containers
        .get_mut(name)
        .ok_or(Rejection::ContainerNotFound)?;
    if container.node_uuid == node {
        return Ok(Applied::unchanged(Outcome::Container(container.clone())));
    }
    container.node_uuid = node;
    let moved = container.clone();
    // The attached dataset follows its container.
    if let Some(volume) = &moved.volume {
        if let Some(dataset) = config.datasets.get_mut(&volume.dataset_id) {
            dataset.primary = node;
        }
    }
    Ok(Applied::changed(Outcome::Container(moved)))
}

fn delete_container(config: &mut Configuration, name: &str) -> Step {
    let container = config
        .containers
        .remove(name)
        .ok_or(Rejection::ContainerNotFound)?;
    if let Some(volume) = &container.volume {
        config.volume_users.remove(&volume.dataset_id);
    }
    for port in &container.ports {
        config.external_ports.remove(&port.external);
    }
    Ok(Applied::changed(Outcome::ContainerDeleted))
}

fn acquire_lease(
    config: &mut Configuration,
    dataset_id: Uuid,
    node_uuid: Uuid,
    expiration: Option<Micros>,
) -> Step {
    let created = match config.leases.get(&dataset_id) {
        // As in Flocker, an expired lease blocks other nodes until the sweeper removes it.
        Some(existing) if existing.node_uuid != node_uuid => return Err(Rejection::LeaseHeld),
        Some(_) => false,
        None => true,
    };
    let lease = Lease {
        dataset_id,
        node_uuid,
        expiration,
    };
    let changed = config.leases.get(&dataset_id) != Some(&lease);
    config.leases.insert(dataset_id, lease.clone());
    let outcome = Outcome::LeaseAcquired { lease, created };
    Ok(Applied { outcome, changed })
}

fn release_lease(config: &mut Configuration, dataset_id: Uuid) -> Step {
    let lease = config
        .leases
        .remove(&dataset_id)
        .ok_or(Rejection::LeaseNotFound)?;
    Ok(Applied::changed(Outcome::LeaseReleased(lease)))
}

fn expire_leases(config: &mut Configuration, now: Micros) -> Step {
    let before = config.leases.len();
    config.leases.retain(|_, lease| !lease.expired(now));
    let changed = config.leases.len() != before;
    Ok(Applied {
        outcome: Outcome::Done,
        changed,
    })
}

fn set_owner(config: &mut Configuration, dataset_id: Uuid, blockdevice_id: &str) -> Step {
    match config.blockdevice_owners.get(&dataset_id) {
        Some(owner) if owner == blockdevice_id => Ok(Applied::unchanged(Outcome::Done)),
        Some(_) => Err(Rejection::BlockDeviceAlreadyOwned),
        None => {
            config
                .blockdevice_owners
                .insert(dataset_id, blockdevice_id.to_owned());
            Ok(Applied::changed(Outcome::Done))
        }
    }
}

/// Merge one agent report; returns whether the visible cluster state changed (a pure
/// heartbeat only refreshes the report's age).
fn report_state(
    state: &mut State,
    node: Uuid,
    host: &str,
    era: Uuid,
    report: &AgentReport,
    now: Micros,
) -> bool {
    let cluster = &mut state.cluster;
    let mut changed = false;
    // A new era means the node rebooted: what it reported before is stale.
    if cluster.eras.get(&node) != Some(&era) {
        cluster.eras.insert(node, era);
        cluster.nodes.remove(&node);
        changed = true;
    }
    let entry = cluster.nodes.entry(node).or_insert_with(|| {
        changed = true;
        NodeState {
            host: host.to_owned(),
            datasets: None,
            containers: None,
            datasets_seen: now,
            containers_seen: now,
        }
    });
    if entry.host != host {
        entry.host = host.to_owned();
        changed = true;
    }
    match report {
        AgentReport::Datasets(datasets) => {
            entry.datasets_seen = now;
            if let Some(datasets) = datasets {
                if entry.datasets.as_ref() != Some(datasets) {
                    entry.datasets = Some(datasets.clone());
                    changed = true;
                }
            }
        }
        AgentReport::Containers(containers) => {
            entry.containers_seen = now;
            if let Some(containers) = containers {
                if entry.containers.as_ref() != Some(containers) {
                    entry.containers = Some(containers.clone());
                    changed = true;
                }
            }
        }
    }
    changed
}

/// Drop reports not refreshed since `cutoff`; a node with nothing left is removed (its era
/// stays, as in Flocker).
fn expire_state(state: &mut State, cutoff: Micros) -> bool {
    let mut changed = false;
    for node in state.cluster.nodes.values_mut() {
        if node.datasets_expired(cutoff) {
            node.datasets = None;
            changed = true;
        }
        if node.containers_expired(cutoff) {
            node.containers = None;
            changed = true;
        }
    }
    let before = state.cluster.nodes.len();
    state.cluster.nodes.retain(|_, node| {
        node.datasets.is_some() || node.containers.is_some() || !node.silent_since(cutoff)
    });
    changed || state.cluster.nodes.len() != before
}
