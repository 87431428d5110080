//! The planner: a pure function from what the cluster wants and what this node sees to
//! the actions that bring them together (FLOCKER-SPEC 10.3 to 10.5).
//!
//! Inputs ([`PlanInput`]): the configuration and the cluster state (from the control
//! service), this node's UUID, the locally observed volumes, and the current time (for
//! lease expiry). No clock, no I/O: the same inputs always give the same [`Plan`], which
//! is what lets the property tests drive it against a simulated backend.
//!
//! For each dataset that is configured on this node or has a visible volume:
//!
//! 1. **Desired state.** `Mounted` if this node is the dataset's primary and it is not
//!    deleted; `Deleted` if this node is the primary of a deleted dataset (only the
//!    primary destroys); otherwise `NonManifest` (detach, keep the data).
//! 2. **Discovered state.** The ownership registry (`blockdevice_owners`) picks the
//!    volume that holds the dataset: no entry and no volume is `NonExistent`; no entry
//!    but a volume is `Unregistered`; an entry whose volume this node cannot see is
//!    `Registered`; otherwise the registered volume's [`VolumeState`]. Volumes that the
//!    registry does not name are duplicates and are left alone.
//! 3. **One action** from the transition table ([`transition`]), e.g. `Mounted` ×
//!    `Unattached` is `AttachVolume`, `NonManifest` × `Mounted` is `Unmount`,
//!    `Mounted` × `AttachedElsewhere` waits for the other node to detach.
//! 4. **Safety.** A destructive action (unmount, detach, destroy) on a dataset that is
//!    *in use* on this node is withheld: the dataset is leased to this node (a lease
//!    that has not expired at `now`), or a container uses it — one the container agent
//!    reports running here, or, when the container agent's state is unknown, any
//!    container configured on this node (Flocker treated "unknown" as "unused",
//!    FLOCKER-SPEC 14.2 item 24). A lease never causes a mount; it only prevents
//!    giving the dataset up.
//!
//! A move therefore happens in two halves that need no coordination beyond the shared
//! storage: the old primary, no longer wanting the dataset, unmounts and detaches; the
//! new primary waits while the volume is attached elsewhere, then attaches and mounts.
//! Creation is create, register, attach, format, mount; deletion is unmount, detach,
//! destroy. Each step is one iteration, and each is idempotent.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::backend::{Observation, ObservedVolume, VolumeState, DEFAULT_SIZE};
use crate::model::{
    ClusterState, Configuration, DatasetAgentState, ManifestationState, Micros, NonManifestDataset,
};

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub node: Uuid,
    pub now: Micros,
    pub configuration: &'a Configuration,
    pub cluster: &'a ClusterState,
    pub observation: &'a Observation,
}

/// What this node wants for one dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Mounted { size: u64 },
    NonManifest,
    Deleted,
}

/// One idempotent step on one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateVolume { dataset_id: Uuid, size: u64 },
    RegisterVolume { dataset_id: Uuid, volume_id: String },
    AttachVolume { dataset_id: Uuid, volume_id: String },
    CreateFilesystem { dataset_id: Uuid, volume_id: String },
    Mount { dataset_id: Uuid, volume_id: String },
    Unmount { dataset_id: Uuid, volume_id: String },
    DetachVolume { dataset_id: Uuid, volume_id: String },
    DestroyVolume { dataset_id: Uuid, volume_id: String },
}

impl Action {
    pub fn dataset_id(&self) -> Uuid {
        match self {
            Action::CreateVolume { dataset_id, .. }
            | Action::RegisterVolume { dataset_id, .. }
            | Action::AttachVolume { dataset_id, .. }
            | Action::CreateFilesystem { dataset_id, .. }
            | Action::Mount { dataset_id, .. }
            | Action::Unmount { dataset_id, .. }
            | Action::DetachVolume { dataset_id, .. }
            | Action::DestroyVolume { dataset_id, .. } => *dataset_id,
        }
    }

    pub fn volume_id(&self) -> Option<&str> {
        match self {
            Action::CreateVolume { .. } => None,
            Action::RegisterVolume { volume_id, .. }
            | Action::AttachVolume { volume_id, .. }
            | Action::CreateFilesystem { volume_id, .. }
            | Action::Mount { volume_id, .. }
            | Action::Unmount { volume_id, .. }
            | Action::DetachVolume { volume_id, .. }
            | Action::DestroyVolume { volume_id, .. } => Some(volume_id),
        }
    }

    /// Unmount, detach and destroy: the actions that give a dataset up.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Action::Unmount { .. } | Action::DetachVolume { .. } | Action::DestroyVolume { .. }
        )
    }

    /// A short name for logs and failpoints.
    pub fn name(&self) -> &'static str {
        match self {
            Action::CreateVolume { .. } => "create",
            Action::RegisterVolume { .. } => "register",
            Action::AttachVolume { .. } => "attach",
            Action::CreateFilesystem { .. } => "mkfs",
            Action::Mount { .. } => "mount",
            Action::Unmount { .. } => "unmount",
            Action::DetachVolume { .. } => "detach",
            Action::DestroyVolume { .. } => "destroy",
        }
    }
}

/// Why a dataset needs no action now but is not where it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// The registry names a volume this node cannot see (storage not shared, or
    /// another node is creating it).
    VolumeNotVisible,
    /// Another instance holds the volume; it has to detach first.
    AttachedElsewhere { instance: String },
    /// Not wanted here any more, but leased to this node or used by a container here.
    InUse,
}

/// The outcome of one planning round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// At most one per dataset; independent of each other.
    pub actions: Vec<Action>,
    pub waiting: Vec<(Uuid, Waiting)>,
}

impl Plan {
    /// Whether the state may change without any news from the control service (another
    /// node detaching), so that it is worth looking again soon.
    pub fn expects_change(&self) -> bool {
        self.waiting.iter().any(|(_, w)| *w != Waiting::InUse)
    }
}

/// The discovered state of a dataset (FLOCKER-SPEC 10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovered<'a> {
    NonExistent,
    Unregistered(&'a ObservedVolume),
    Registered,
    Volume(&'a ObservedVolume),
}

/// One table cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Nothing,
    Wait(Waiting),
    Act(Action),
}

/// Plan one round for this node.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut plan = Plan::default();
    for dataset in datasets(input) {
        let desired = desired(input.configuration, input.node, dataset);
        let discovered = discover(input.configuration, input.observation, dataset);
        match transition(dataset, desired, discovered) {
            Step::Nothing => {}
            Step::Wait(why) => plan.waiting.push((dataset, why)),
            Step::Act(action) if action.is_destructive() && in_use(input, dataset) => {
                plan.waiting.push((dataset, Waiting::InUse))
            }
            Step::Act(action) => plan.actions.push(action),
        }
    }
    plan
}

/// Datasets configured with this node as primary, and datasets with a visible volume.
fn datasets(input: &PlanInput<'_>) -> BTreeSet<Uuid> {
    let configured = input
        .configuration
        .datasets
        .values()
        .filter(|d| d.primary == input.node)
        .filter_map(|d| Uuid::parse_str(&d.dataset_id).ok());
    let observed = input.observation.volumes.iter().map(|v| v.dataset_id);
    configured.chain(observed).collect()
}

/// FLOCKER-SPEC 10.3, before the in-use override (which [`plan`] applies).
pub fn desired(configuration: &Configuration, node: Uuid, dataset: Uuid) -> Desired {
    match configuration.datasets.get(&dataset.to_string()) {
        Some(d) if d.primary == node && d.deleted => Desired::Deleted,
        Some(d) if d.primary == node => Desired::Mounted {
            size: d.maximum_size.unwrap_or(DEFAULT_SIZE),
        },
        _ => Desired::NonManifest,
    }
}

/// FLOCKER-SPEC 10.2: which volume holds the dataset, and in what state.
pub fn discover<'a>(
    configuration: &Configuration,
    observation: &'a Observation,
    dataset: Uuid,
) -> Discovered<'a> {
    let mut volumes = observation
        .volumes
        .iter()
        .filter(|v| v.dataset_id == dataset);
    match configuration.blockdevice_owners.get(&dataset) {
        Some(owner) => match volumes.find(|v| &v.volume_id == owner) {
            Some(v) => Discovered::Volume(v),
            None => Discovered::Registered,
        },
        // Several unregistered volumes (a crash, a race): offer the one most in use
        // here; the registry's first writer makes the others duplicates.
        None => volumes
            .min_by_key(|v| (registration_preference(&v.state), v.volume_id.clone()))
            .map_or(Discovered::NonExistent, Discovered::Unregistered),
    }
}

fn registration_preference(state: &VolumeState) -> u8 {
    match state {
        VolumeState::Mounted { .. } => 0,
        VolumeState::Attached { .. } => 1,
        VolumeState::AttachedNoFilesystem { .. } | VolumeState::AttachedNoDevice => 2,
        VolumeState::Unattached => 3,
        VolumeState::AttachedElsewhere { .. } => 4,
    }
}

/// The transition table (FLOCKER-SPEC 10.4): desired × discovered → one step.
pub fn transition(dataset: Uuid, desired: Desired, discovered: Discovered<'_>) -> Step {
    use VolumeState as S;
    let on = |v: &ObservedVolume, make: fn(Uuid, String) -> Action| {
        Step::Act(make(dataset, v.volume_id.clone()))
    };
    let register = |dataset_id, volume_id| Action::RegisterVolume {
        dataset_id,
        volume_id,
    };
    match (desired, discovered) {
        (Desired::Mounted { size }, Discovered::NonExistent) => Step::Act(Action::CreateVolume {
            dataset_id: dataset,
            size,
        }),
        (_, Discovered::NonExistent) => Step::Nothing,
        (Desired::Mounted { .. } | Desired::Deleted, Discovered::Unregistered(v)) => {
            on(v, register)
        }
        // Not wanted here: register only what this node holds (say, after the registry
        // was lost), so that it can then be given up.
        (Desired::NonManifest, Discovered::Unregistered(v)) if v.state.attached_here() => {
            on(v, register)
        }
        (Desired::NonManifest, Discovered::Unregistered(_)) => Step::Nothing,
        (Desired::Mounted { .. }, Discovered::Registered) => Step::Wait(Waiting::VolumeNotVisible),
        (_, Discovered::Registered) => Step::Nothing,
        (desired, Discovered::Volume(v)) => match (desired, &v.state) {
            (Desired::Mounted { .. }, S::Unattached | S::AttachedNoDevice) => {
                on(v, |dataset_id, volume_id| Action::AttachVolume {
                    dataset_id,
                    volume_id,
                })
            }
            (Desired::Mounted { .. }, S::AttachedNoFilesystem { .. }) => {
                on(v, |dataset_id, volume_id| Action::CreateFilesystem {
                    dataset_id,
                    volume_id,
                })
            }
            (Desired::Mounted { .. }, S::Attached { .. }) => {
                on(v, |dataset_id, volume_id| Action::Mount {
                    dataset_id,
                    volume_id,
                })
            }
            (Desired::Mounted { .. }, S::Mounted { .. }) => Step::Nothing,
            (Desired::Mounted { .. }, S::AttachedElsewhere { instance }) => {
                Step::Wait(Waiting::AttachedElsewhere {
                    instance: instance.clone(),
                })
            }
            (_, S::Mounted { .. }) => on(v, |dataset_id, volume_id| Action::Unmount {
                dataset_id,
                volume_id,
            }),
            (_, S::Attached { .. } | S::AttachedNoFilesystem { .. } | S::AttachedNoDevice) => {
                on(v, |dataset_id, volume_id| Action::DetachVolume {
                    dataset_id,
                    volume_id,
                })
            }
            (Desired::Deleted, S::Unattached) => {
                on(v, |dataset_id, volume_id| Action::DestroyVolume {
                    dataset_id,
                    volume_id,
                })
            }
            (_, S::Unattached | S::AttachedElsewhere { .. }) => Step::Nothing,
        },
    }
}

/// Whether this node must not give the dataset up (see the module documentation).
pub fn in_use(input: &PlanInput<'_>, dataset: Uuid) -> bool {
    leased_here(input, dataset) || used_by_container(input, dataset)
}

fn leased_here(input: &PlanInput<'_>, dataset: Uuid) -> bool {
    input
        .configuration
        .leases
        .get(&dataset)
        .is_some_and(|lease| {
            lease.node_uuid == input.node && lease.expiration.is_none_or(|at| at >= input.now)
        })
}

fn used_by_container(input: &PlanInput<'_>, dataset: Uuid) -> bool {
    let uses = |volume: &Option<crate::model::Volume>| {
        volume
            .as_ref()
            .is_some_and(|v| Uuid::parse_str(&v.dataset_id).ok() == Some(dataset))
    };
    let reported = input
        .cluster
        .nodes
        .get(&input.node)
        .and_then(|n| n.containers.as_ref());
    match reported {
        Some(containers) => containers
            .iter()
            .any(|c| c.running && uses(&c.container.volume)),
        // Unknown is not "unused": the container agent may be down with containers
        // still running.
        None => input
            .configuration
            .containers
            .values()
            .any(|c| c.node_uuid == input.node && uses(&c.volume)),
    }
}

/// What this node reports (FLOCKER-SPEC 10.2, "shared state"): mounted datasets as
/// manifestations, datasets attached here but not mounted and datasets attached nowhere
/// as non-manifest, and the devices of datasets attached here. Duplicate volumes (not the
/// one the registry names) are left out. Sorted, so equal observations give equal reports.
pub fn observed_state(
    observation: &Observation,
    owners: &BTreeMap<Uuid, String>,
) -> DatasetAgentState {
    let mut manifest: BTreeMap<Uuid, ManifestationState> = BTreeMap::new();
    let mut nonmanifest: BTreeMap<Uuid, NonManifestDataset> = BTreeMap::new();
    let mut devices = BTreeMap::new();
    for v in &observation.volumes {
        if owners
            .get(&v.dataset_id)
            .is_some_and(|owner| owner != &v.volume_id)
        {
            continue;
        }
        let id = v.dataset_id.to_string();
        match &v.state {
            VolumeState::AttachedElsewhere { .. } => continue,
            VolumeState::Mounted { path, .. } => {
                manifest.insert(
                    v.dataset_id,
                    ManifestationState {
                        dataset_id: id.clone(),
                        path: path.to_string_lossy().into_owned(),
                        maximum_size: Some(v.size),
                    },
                );
            }
            _ => {
                nonmanifest.insert(
                    v.dataset_id,
                    NonManifestDataset {
                        dataset_id: id.clone(),
                        maximum_size: Some(v.size),
                    },
                );
            }
        }
        if let Some(device) = v.state.device() {
            devices.insert(id, device.to_owned());
        }
    }
    nonmanifest.retain(|d, _| !manifest.contains_key(d));
    DatasetAgentState {
        manifestations: manifest.into_values().collect(),
        nonmanifest: nonmanifest.into_values().collect(),
        devices,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dataset, Lease};

    const NODE: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);
    const D: Uuid = Uuid::from_u128(0xd);

    fn config(primary: Uuid, deleted: bool) -> Configuration {
        let mut c = Configuration::default();
        c.datasets.insert(
            D.to_string(),
            Dataset {
                dataset_id: D.to_string(),
                primary,
                deleted,
                maximum_size: None,
                metadata: Default::default(),
            },
        );
        c
    }

    fn volume(state: VolumeState) -> ObservedVolume {
        ObservedVolume {
            volume_id: "v1".into(),
            dataset_id: D,
            size: 1 << 26,
            state,
        }
    }

    fn plan_with(c: &Configuration, state: Option<VolumeState>) -> Plan {
        let observation = Observation {
            volumes: state.map(volume).into_iter().collect(),
        };
        plan(&PlanInput {
            node: NODE,
            now: 0,
            configuration: c,
            cluster: &ClusterState::default(),
            observation: &observation,
        })
    }

    fn registered(mut c: Configuration) -> Configuration {
        c.blockdevice_owners.insert(D, "v1".into());
        c
    }

    fn names(p: &Plan) -> Vec<&'static str> {
        p.actions.iter().map(Action::name).collect()
    }

    #[test]
    fn create_life_cycle() {
        let c = config(NODE, false);
        let p = plan_with(&c, None);
        assert_eq!(
            p.actions,
            vec![Action::CreateVolume {
                dataset_id: D,
                size: DEFAULT_SIZE
            }]
        );
        assert_eq!(
            names(&plan_with(&c, Some(VolumeState::Unattached))),
            ["register"]
        );
        let c = registered(c);
        let dev = || Some("/dev/loop9".to_owned());
        assert_eq!(
            names(&plan_with(&c, Some(VolumeState::Unattached))),
            ["attach"]
        );
        assert_eq!(
            names(&plan_with(&c, Some(VolumeState::AttachedNoDevice))),
            ["attach"]
        );
        assert_eq!(
            names(&plan_with(
                &c,
                Some(VolumeState::AttachedNoFilesystem { device: dev() })
            )),
            ["mkfs"]
        );
        assert_eq!(
            names(&plan_with(
                &c,
                Some(VolumeState::Attached { device: dev() })
            )),
            ["mount"]
        );
        let mounted = VolumeState::Mounted {
            device: dev(),
            path: "/flocker/x".into(),
        };
        assert_eq!(plan_with(&c, Some(mounted)), Plan::default());
    }

    #[test]
    fn the_new_primary_waits_for_the_old_one() {
        let c = registered(config(NODE, false));
        let p = plan_with(
            &c,
            Some(VolumeState::AttachedElsewhere {
                instance: "i".into(),
            }),
        );
        assert!(p.actions.is_empty());
        assert_eq!(
            p.waiting,
            vec![(
                D,
                Waiting::AttachedElsewhere {
                    instance: "i".into()
                }
            )]
        );
        assert!(p.expects_change());
        let p = plan_with(&c, None);
        assert_eq!(
            p.waiting,
            vec![(D, Waiting::VolumeNotVisible)],
            "never re-create a registered dataset"
        );
    }

    #[test]
    fn the_old_primary_gives_up_and_keeps_the_data() {
        let c = registered(config(OTHER, false));
        let mounted = VolumeState::Mounted {
            device: None,
            path: "/m".into(),
        };
        assert_eq!(names(&plan_with(&c, Some(mounted))), ["unmount"]);
        assert_eq!(
            names(&plan_with(&c, Some(VolumeState::Attached { device: None }))),
            ["detach"]
        );
        assert_eq!(
            names(&plan_with(&c, Some(VolumeState::AttachedNoDevice))),
            ["detach"]
        );
        assert_eq!(
            plan_with(&c, Some(VolumeState::Unattached)),
            Plan::default()
        );
        assert_eq!(plan_with(&c, None), Plan::default());
    }

    #[test]
    fn delete_life_cycle_only_on_the_primary() {
        let c = registered(config(NODE, true));
        let mounted = VolumeState::Mounted {
            device: None,
            path: "/m".into(),
        };
        assert_eq!(names(&plan_with(&c, Some(mounted))), ["unmount"]);
        assert_eq!(
            names(&plan_with(&c, Some(VolumeState::Attached { device: None }))),
            ["detach"]
        );
        assert_eq!(
            names(&plan_with(&c, Some(VolumeState::Unattached))),
            ["destroy"]
        );
        assert_eq!(plan_with(&c, None), Plan::default());
        let elsewhere = registered(config(OTHER, true));
        assert_eq!(
            plan_with(&elsewhere, Some(VolumeState::Unattached)),
            Plan::default()
        );
    }

    #[test]
    fn a_lease_here_blocks_giving_up_but_does_not_mount() {
        let mut c = registered(config(OTHER, true));
        c.leases.insert(
            D,
            Lease {
                dataset_id: D,
                node_uuid: NODE,
                expiration: Some(10),
            },
        );
        let mounted = VolumeState::Mounted {
            device: None,
            path: "/m".into(),
        };
        let p = plan_with(&c, Some(mounted.clone()));
        assert!(p.actions.is_empty());
        assert_eq!(p.waiting, vec![(D, Waiting::InUse)]);
        assert!(!p.expects_change());
        // Expired at `now`: no longer protects.
        let observation = Observation {
            volumes: vec![volume(mounted)],
        };
        let late = plan(&PlanInput {
            node: NODE,
            now: 11,
            configuration: &c,
            cluster: &ClusterState::default(),
            observation: &observation,
        });
        assert_eq!(names(&late), ["unmount"]);
        // Someone else's lease does not protect here.
        let mut c = registered(config(NODE, true));
        c.leases.insert(
            D,
            Lease {
                dataset_id: D,
                node_uuid: OTHER,
                expiration: None,
            },
        );
        assert_eq!(
            names(&plan_with(&c, Some(VolumeState::Unattached))),
            ["destroy"]
        );
    }

    #[test]
    fn duplicates_are_ignored_and_not_reported() {
        let mut c = config(NODE, false);
        c.blockdevice_owners.insert(D, "other-volume".into());
        let mounted = VolumeState::Mounted {
            device: Some("/dev/loop1".into()),
            path: "/m".into(),
        };
        let p = plan_with(&c, Some(mounted.clone()));
        assert!(p.actions.is_empty());
        let observation = Observation {
            volumes: vec![volume(mounted)],
        };
        assert_eq!(
            observed_state(&observation, &c.blockdevice_owners),
            DatasetAgentState::default()
        );
    }

    #[test]
    fn reports_mounted_attached_and_unattached_volumes() {
        let mk = |n: u128, state| ObservedVolume {
            volume_id: format!("v{n}"),
            dataset_id: Uuid::from_u128(n),
            size: 100 + n as u64,
            state,
        };
        let observation = Observation {
            volumes: vec![
                mk(3, VolumeState::Unattached),
                mk(
                    1,
                    VolumeState::Mounted {
                        device: Some("/dev/loop1".into()),
                        path: "/f/1".into(),
                    },
                ),
                mk(
                    2,
                    VolumeState::Attached {
                        device: Some("/dev/loop2".into()),
                    },
                ),
                mk(
                    4,
                    VolumeState::AttachedElsewhere {
                        instance: "x".into(),
                    },
                ),
            ],
        };
        let s = observed_state(&observation, &BTreeMap::new());
        assert_eq!(s.manifestations.len(), 1);
        assert_eq!(s.manifestations[0].path, "/f/1");
        assert_eq!(s.manifestations[0].maximum_size, Some(101));
        let non: Vec<_> = s.nonmanifest.iter().map(|d| d.dataset_id.clone()).collect();
        assert_eq!(
            non,
            [
                Uuid::from_u128(2).to_string(),
                Uuid::from_u128(3).to_string()
            ]
        );
        assert_eq!(s.devices.len(), 2);
    }
}
